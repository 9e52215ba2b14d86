//! The volume parts: 100,000 open incidents (memory, restart) and a
//! 10,000-incident storm for one person.

use super::*;

/// Events `from .. from + n`, each a new incident, posted in batches, one
/// after another.
async fn post_new(http: &reqwest::Client, url: &str, from: u64, n: u64, batch: u64) {
    for start in (from..from + n).step_by(batch as usize) {
        let (u, body) = request(Kind::Ours, url, "new", start, batch);
        let r = http
            .post(u)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        assert!(r.status().is_success(), "{}", r.status());
    }
}

pub async fn memory(hook: &str) {
    const N: usize = 100_000;
    println!("== memory: {N} open incidents in {N} groups (batches of 500)");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = start_branchguard(dir.path(), hook);
    let http = reqwest::Client::new();
    let watch = Stopwatch::start();
    post_new(&http, &t.url, 10_000_000, N as u64, 500).await;
    let loaded = watch.seconds();
    let db = dir_bytes(&t.dir.join("data"));
    println!(
        "loaded in {loaded:.1} s; RSS {:.0} MB; database {:.0} MB = {:.0} bytes per incident",
        rss_mb(t.child.id()),
        db as f64 / 1e6,
        db as f64 / N as f64
    );
    let _ = t.child.kill();
    let _ = t.child.wait();
    let watch = Stopwatch::start();
    let t2 = spawn_branchguard(dir.path());
    let listening = watch.seconds();
    let r = http
        .get(format!("{}/api/v1/incidents?status=open&limit=1", t2.url))
        .send()
        .await
        .expect("GET");
    assert!(r.status().is_success());
    let serving = watch.seconds();
    println!(
        "after kill -9 and restart: listening in {listening:.2} s, serving in {serving:.2} s; RSS {:.0} MB",
        rss_mb(t2.child.id())
    );
    // Every open incident through the API, a page of 1,000 at a time.
    let watch = Stopwatch::start();
    let (mut listed, mut cursor) = (0, None::<i64>);
    loop {
        let mut url = format!("{}/api/v1/incidents?status=open&limit=1000", t2.url);
        if let Some(c) = cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http
            .get(url)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("a page");
        listed += page["items"].as_array().map_or(0, Vec::len);
        match page["next"].as_i64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(listed, N, "every open incident listed");
    println!(
        "after listing all {listed} through the API (pages of 1,000, {:.1} s): RSS {:.0} MB",
        watch.seconds(),
        rss_mb(t2.child.id())
    );
    drop(t);
}

/// Every mail file in `dir` not yet in `seen`, parsed: (arrived at, size,
/// text part). A file being written (`.NAME.tmp`) is not a mail yet.
fn mail_files(
    dir: &Path,
    seen: &mut std::collections::HashSet<std::ffi::OsString>,
) -> Vec<(std::time::SystemTime, u64, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        let done = name
            .to_str()
            .is_some_and(|n| n.ends_with(".eml") && !n.starts_with('.'));
        if !done || seen.contains(&name) {
            continue;
        }
        let (Ok(raw), Ok(meta)) = (std::fs::read(e.path()), e.metadata()) else {
            continue;
        };
        seen.insert(name);
        let Ok(mail) = mailparse::parse_mail(&raw) else {
            continue;
        };
        fn text(m: &mailparse::ParsedMail) -> Option<String> {
            if m.ctype.mimetype == "text/plain" {
                return m.get_body().ok();
            }
            m.subparts.iter().find_map(text)
        }
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        out.push((modified, meta.len(), text(&mail).unwrap_or_default()));
    }
    out.sort_by_key(|m| m.0);
    out
}

pub async fn person() {
    const N: u64 = 10_000;
    const WINDOW_S: u64 = 10;
    println!("== person: {N} incidents for one person, digest window {WINDOW_S} s");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
    let branches: String = (0..BRANCHES)
        .map(|i| format!("  - {{ id: b{i}, name: Branch {i} }}\n"))
        .collect();
    let all: Vec<String> = (0..BRANCHES).map(|i| format!("b{i}")).collect();
    let all = all.join(", ");
    std::fs::write(
        dir.path().join("branchguard.yaml"),
        format!(
            "listen: 127.0.0.1:0\ntimezone: Asia/Shanghai\nwatch_files: false\nlimits: {{ requests_per_second: 1000000, burst: 1000000 }}\nnotify:\n  digest: {WINDOW_S}s\npeople:\n  - {{ id: duty, name: On duty, email: duty@bank.example, roles: [it-duty], branches: [{all}] }}\nbranches:\n{branches}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("playbooks/atm.yaml"),
        "id: atm\nname: ATM down\ntrigger: { kind: atm.down }\ngroup_by: [branch, atm]\nsteps:\n  - { id: fix, assignee: role:it-duty, deadline: 1h }\n",
    )
    .unwrap();
    let t = spawn_branchguard(dir.path());
    let http = reqwest::Client::new();
    let watch = Stopwatch::start();
    post_new(&http, &t.url, 0, N, 100).await;
    let posted = watch.seconds();
    let started =
        std::time::SystemTime::from(branchguard::clock::now()) - Duration::from_secs_f64(posted);
    let maildir = dir.path().join("data/mail");
    let ack = regex::Regex::new(r"Acknowledge this step:\s+(\S+)").unwrap();
    let mut links: Vec<String> = Vec::new();
    let mut mails = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while watch.seconds() < 120.0 {
        for m in mail_files(&maildir, &mut seen) {
            links.extend(ack.captures_iter(&m.2).map(|c| c[1].to_string()));
            mails.push(m);
        }
        if links.len() as u64 >= N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    mails.sort_by_key(|m| m.0);
    let done = watch.seconds();
    println!(
        "posted in {posted:.1} s; {} of {N} messages in {} emails after {done:.1} s",
        links.len(),
        mails.len()
    );
    let mut windows: std::collections::BTreeMap<u64, (usize, u64)> = Default::default();
    for (at, size, _) in &mails {
        let s = at
            .duration_since(started)
            .map_or(0, |d| d.as_secs() / WINDOW_S);
        let w = windows.entry(s).or_default();
        w.0 += 1;
        w.1 = w.1.max(*size);
    }
    for (w, (n, largest)) in &windows {
        println!(
            "   window {w} ({}-{} s): {n} emails, largest {:.1} MB",
            w * WINDOW_S,
            (w + 1) * WINDOW_S,
            *largest as f64 / 1e6
        );
    }
    // Every link opens its own page (a GET shows the confirmation).
    let distinct: std::collections::HashSet<&String> = links.iter().collect();
    let opened = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in links.chunks(links.len().div_ceil(16).max(1)) {
        let (http, url, opened) = (http.clone(), t.url.clone(), Arc::clone(&opened));
        let chunk: Vec<String> = chunk.to_vec();
        tasks.spawn(async move {
            for l in chunk {
                // The links name the configured public URL; the daemon
                // listens on a port of its own here.
                let path = l.find("/ack/").map_or("", |at| &l[at..]);
                if let Ok(r) = http.get(format!("{url}{path}")).send().await
                    && r.status().is_success()
                    && !path.is_empty()
                {
                    opened.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    println!(
        "   links: {} acknowledge links, {} distinct, {} open with 200",
        links.len(),
        distinct.len(),
        opened.load(Ordering::Relaxed)
    );
}
