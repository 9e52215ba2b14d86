//! Chat robots' formats against the real daemon: one message to a WeCom, a
//! DingTalk, a Feishu and a Slack receiver, each checking the body and (for
//! DingTalk and Feishu) the signature as the service documents it; the robot
//! tokens in the URLs stay out of the history.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::sinks::{Hook, HookServer};
use common::{Daemon, Fixture, wait_for};
use hmac::{KeyInit, Mac};

const WAIT: Duration = Duration::from_secs(30);

fn b64_hmac(key: &[u8], msg: &[u8]) -> String {
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(msg);
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

fn one(server: &HookServer, what: &str) -> Hook {
    wait_for(WAIT, what, || server.requests().into_iter().next())
}

/// Within an hour of now, as DingTalk and Feishu require.
fn recent(secs: i64) -> bool {
    (branchguard::clock::now().timestamp() - secs).abs() < 3600
}

#[test]
fn each_robot_gets_its_own_body_and_signature_and_no_token_is_recorded() {
    let servers: Vec<HookServer> = (0..4).map(|_| HookServer::start(&[])).collect();
    let f = Fixture::engine();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    let hooks = format!(
        "  webhooks:\n    ops-centre: {{ url: \"http://127.0.0.1:9/hook\" }}\n    wecom: {{ url: \"{}?key=WECOM-KEY-1\", format: wecom }}\n    ding: {{ url: \"{}?access_token=DING-TOKEN-1\", format: dingtalk, secret_env: BG_DING_SECRET }}\n    feishu: {{ url: \"{}\", format: feishu, secret_env: BG_FEISHU_SECRET }}\n    slack: {{ url: \"{}\", format: slack }}\n",
        servers[0].url, servers[1].url, servers[2].url, servers[3].url
    );
    f.write(
        "branchguard.yaml",
        &cfg.replace(
            "  webhooks:\n    ops-centre: { url: \"http://127.0.0.1:9/hook\" }\n",
            &hooks,
        ),
    );
    f.write(
        "playbooks/robots.yaml",
        "id: robots\nname: Robots\ntrigger: { kind: robot.test }\nsteps:\n  - id: tell\n    action: { notify: [channel:wecom, channel:ding, channel:feishu, channel:slack] }\n    deadline: 5m\n",
    );
    let env = [
        ("BG_DING_SECRET", "SECdingtalk0123456789"),
        ("BG_FEISHU_SECRET", "feishu-secret-abc"),
    ];
    // Without the secrets in the environment, the configuration is refused
    // where it names them.
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "notify.webhooks.ding.secret_env: the environment variable BG_DING_SECRET is not set"
        ),
        "{out:?}"
    );
    let d = Daemon::start_with_env(&f, &env);
    let (code, b) = d.post(
        "/api/v1/events",
        r#"{"kind":"robot.test","branch":"br-a","summary":"网点核心系统故障"}"#,
    );
    assert_eq!(code, 202, "{b}");
    let id = b["incidents"][0].as_i64().unwrap();

    let wecom = one(&servers[0], "the WeCom robot");
    assert!(wecom.uri.ends_with("?key=WECOM-KEY-1"), "{}", wecom.uri);
    assert_eq!(wecom.body["msgtype"], "text", "{}", wecom.body);
    let text = wecom.body["text"]["content"].as_str().unwrap();
    assert!(
        text.starts_with("NOTICE Branch A: tell\nFor your information."),
        "{text}"
    );

    let ding = one(&servers[1], "the DingTalk robot");
    let url = reqwest::Url::parse(&format!("http://x{}", ding.uri)).unwrap();
    let q: std::collections::BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["access_token"], "DING-TOKEN-1");
    let ts: i64 = q["timestamp"].parse().unwrap();
    assert!(recent(ts / 1000), "{ts}");
    assert_eq!(
        q["sign"],
        b64_hmac(
            env[0].1.as_bytes(),
            format!("{ts}\n{}", env[0].1).as_bytes()
        ),
        "DingTalk: HmacSHA256(secret, timestamp + \\n + secret), Base64"
    );
    assert_eq!(ding.body["msgtype"], "text");
    assert!(
        ding.body["text"]["content"]
            .as_str()
            .unwrap()
            .contains("NOTICE")
    );

    let feishu = one(&servers[2], "the Feishu robot");
    let ts: i64 = feishu.body["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(recent(ts), "{ts}");
    assert_eq!(
        feishu.body["sign"].as_str().unwrap(),
        b64_hmac(format!("{ts}\n{}", env[1].1).as_bytes(), b""),
        "Feishu: HmacSHA256(key: timestamp + \\n + secret, empty message), Base64"
    );
    assert_eq!(feishu.body["msg_type"], "text");
    assert!(
        feishu.body["content"]["text"]
            .as_str()
            .unwrap()
            .contains("NOTICE")
    );

    let slack = one(&servers[3], "the Slack webhook");
    assert!(
        slack.body["text"].as_str().unwrap().starts_with("NOTICE"),
        "{}",
        slack.body
    );

    // Delivered, and recorded without the robots' tokens.
    let inc = wait_for(WAIT, "four deliveries", || {
        let inc = d.incident(id);
        (common::history(&inc, "notification.delivered").len() >= 4).then_some(inc)
    });
    let all = inc.to_string();
    for secret in [
        "WECOM-KEY-1",
        "DING-TOKEN-1",
        "SECdingtalk",
        "feishu-secret",
    ] {
        assert!(!all.contains(secret), "{secret} in the incident: {all}");
    }
    assert!(!d.log().contains("DING-TOKEN-1"));
}

#[test]
fn formats_and_secrets_that_cannot_work_are_named_at_their_place() {
    let f = Fixture::engine();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace(
            "  webhooks:\n    ops-centre: { url: \"http://127.0.0.1:9/hook\" }\n",
            "  webhooks:\n    ops-centre: { url: \"http://127.0.0.1:9/hook\" }\n    a: { url: \"http://127.0.0.1:9/a\", format: wechat }\n    b: { url: \"http://127.0.0.1:9/b\", format: wecom, secret_env: HOME }\n",
        ),
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    let lines = out.error_lines();
    assert!(
        lines.iter().any(|l| l.starts_with("branchguard.yaml:13:47: notify.webhooks.a.format: unknown format `wechat`: expected wecom, dingtalk, feishu or slack")),
        "{}",
        out.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l
                .contains("notify.webhooks.b.secret_env: only DingTalk and Feishu robots sign")),
        "{}",
        out.stderr
    );
}
