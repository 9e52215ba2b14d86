//! What the store writes for new incidents, through the engine and the real
//! SQLite store as the daemon writes them (the storm benchmark's network:
//! 5,000 branches, one `atm` step for `role:it-duty` per incident): the
//! database's bytes per incident once 20,000 are open, by table and index,
//! and the WAL frames one commit writes when it opens 1 or 100 incidents
//! (read from the WAL's size, emptied before and not checkpointed between).
//! Prints figures, asserts nothing about them.
//!
//! Run: `cargo bench --bench store`

use std::path::Path;

use branchguard::engine::{Engine, Round};
use branchguard::event::{Event, Severity, Status};
use chrono::{DateTime, Utc};

const BRANCHES: usize = 5000;
const OPEN: usize = 20_000;
/// A WAL frame: a 24-byte header and a 4 KB page.
const FRAME: u64 = 24 + 4096;

fn network(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("playbooks"))?;
    std::fs::write(
        dir.join("playbooks/atm.yaml"),
        "id: atm\nname: ATM down\ntrigger: { kind: atm.down }\ngroup_by: [branch, atm]\nsteps:\n  - { id: fix, assignee: role:it-duty, deadline: 1h }\n",
    )?;
    let mut y =
        String::from("listen: 127.0.0.1:0\ntimezone: Asia/Shanghai\nwatch_files: false\npeople:\n");
    for r in 0..BRANCHES / 250 {
        let list: Vec<String> = (r * 250..(r + 1) * 250).map(|i| format!("b{i}")).collect();
        y.push_str(&format!(
            "  - {{ id: it{r}, name: IT {r}, email: it{r}@bank.example, roles: [it-duty], branches: [{}] }}\n",
            list.join(", ")
        ));
    }
    y.push_str("branches:\n");
    for i in 0..BRANCHES {
        y.push_str(&format!("  - {{ id: b{i}, name: Branch {i} }}\n"));
    }
    std::fs::write(dir.join("branchguard.yaml"), y)?;
    Ok(())
}

fn event(n: usize, now: DateTime<Utc>) -> Event {
    Event {
        kind: "atm.down".into(),
        branch: format!("b{}", n % BRANCHES),
        severity: Severity::Major,
        status: Status::Firing,
        labels: [("atm".to_string(), format!("atm-{n}"))].into(),
        summary: None,
        occurred_at: now,
        source: "api".into(),
    }
}

fn wal_bytes(db: &Path) -> u64 {
    std::fs::metadata(format!("{}-wal", db.display())).map_or(0, |m| m.len())
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    network(dir.path())?;
    let loaded = branchguard::config::load(&dir.path().join("branchguard.yaml"))
        .map_err(|d| anyhow::anyhow!("{d}"))?;
    let data = loaded.config.data_dir.clone();
    let mut store = branchguard::store::open(&loaded.config)?.writer;
    let db = data.join("branchguard.db");
    let now = branchguard::clock::now();
    let mut e = Engine::new(loaded, Vec::new(), 1, 1, now);
    let mut n = 0;
    let mut commit = |count: usize, e: &mut Engine| -> anyhow::Result<()> {
        let mut round = Round::default();
        let evs: Vec<_> = (n..n + count).map(|i| (event(i, now), now)).collect();
        n += count;
        e.ingest(evs, "api", now, &mut round);
        e.finish(now, &mut round);
        store.commit(&round)?;
        Ok(())
    };
    for _ in 0..OPEN / 500 {
        commit(500, &mut e)?;
    }
    let side = rusqlite::Connection::open(&db)?;
    side.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let size = std::fs::metadata(&db)?.len();
    println!(
        "{OPEN} open incidents: database {:.1} MB = {} bytes per incident",
        size as f64 / 1e6,
        size / OPEN as u64
    );
    // SQLite's `dbstat` table, where the build has it.
    let parts: rusqlite::Result<Vec<String>> = side
        .prepare(
            "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name HAVING SUM(pgsize) > 8192 ORDER BY 2 DESC",
        )
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .map(|r| r.map(|(name, b)| format!("{name} {}", b / OPEN as i64)))
                .collect()
        });
    match parts {
        Ok(parts) => println!(
            "  by table and index (bytes per incident): {}",
            parts.join(", ")
        ),
        Err(e) => println!("  (no breakdown: {e})"),
    }
    for (count, commits) in [(1usize, 20usize), (100, 3)] {
        side.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let before = wal_bytes(&db);
        for _ in 0..commits {
            commit(count, &mut e)?;
        }
        let frames = (wal_bytes(&db) - before).saturating_sub(32) / FRAME;
        println!(
            "a commit opening {count} incident(s): {:.1} WAL frames = {:.0} KB ({} commits)",
            frames as f64 / commits as f64,
            (frames * FRAME) as f64 / commits as f64 / 1024.0,
            commits
        );
    }
    Ok(())
}
