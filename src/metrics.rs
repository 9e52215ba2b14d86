//! Every Prometheus metric (docs/API.md lists them) is defined and updated here, and nowhere
//! else: the engine reports what a round decided, the API what it refused.
//!
//! **Invariant:** label values come from configuration (playbook and step ids,
//! branches) or small fixed sets — never incident ids or free text.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::Loaded;
use crate::engine::Round;

pub struct Metrics {
    registry: Registry,
    events_received: IntCounterVec,
    events_rejected: IntCounterVec,
    events_unmatched: IntCounter,
    events_silenced: IntCounter,
    incidents_opened: IntCounterVec,
    incidents_open: IntGaugeVec,
    steps_overdue: IntCounterVec,
    escalations: IntCounterVec,
    step_response: HistogramVec,
    step_done: HistogramVec,
    steps_done: IntCounterVec,
    incident_duration: HistogramVec,
    notifications: IntCounterVec,
    outbox_pending: IntGauge,
    ha_leader: IntGauge,
    ha_epoch: IntGauge,
    config_reloads: IntCounterVec,
    playbooks_loaded: IntGauge,
    commit_seconds: Histogram,
    drill_runs: IntCounterVec,
    drill_score: prometheus::GaugeVec,
    probe_up: IntGaugeVec,
    probe_duration: Histogram,
    host_cpu: prometheus::Gauge,
    host_memory_used: IntGauge,
    host_disk_free: IntGaugeVec,
    outbox_oldest: prometheus::Gauge,
    last_reload_ok: prometheus::Gauge,
    requests_denied: IntCounterVec,
    roster_gap: prometheus::GaugeVec,
}

/// Why a request was refused, as `requests_denied_total{reason}` counts it.
pub const DENIAL_REASONS: [&str; 6] = [
    "unauthorized",
    "forbidden",
    "out_of_scope",
    "rate_limited",
    "cross_site",
    "link_refused",
];

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help).namespace("branchguard"), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    c
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help)
            .namespace("branchguard")
            .buckets(buckets),
        labels,
    )
    .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(h.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    h
}

// Metric definitions are fixed at compile time; a failure here is a programming error.
static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let r = Registry::new();
    let events_unmatched = IntCounter::with_opts(
        Opts::new("events_unmatched_total", "Events that matched no playbook")
            .namespace("branchguard"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(events_unmatched.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let incidents_open = IntGaugeVec::new(
        Opts::new("incidents_open", "Open incidents").namespace("branchguard"),
        &["playbook", "tier"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(incidents_open.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let outbox_pending = IntGauge::with_opts(
        Opts::new("outbox_pending", "Notifications not yet delivered").namespace("branchguard"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(outbox_pending.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let ha_leader = IntGauge::with_opts(
        Opts::new(
            "ha_leader",
            "1 on the leader of an active/standby group, 0 on a standby",
        )
        .namespace("branchguard"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(ha_leader.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let ha_epoch = IntGauge::with_opts(
        Opts::new(
            "ha_epoch",
            "The group's leadership epoch as this node last saw it (rises at each takeover)",
        )
        .namespace("branchguard"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(ha_epoch.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let playbooks_loaded = IntGauge::with_opts(
        Opts::new("playbooks_loaded", "Playbooks in force").namespace("branchguard"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(playbooks_loaded.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let commit_seconds = Histogram::with_opts(
        HistogramOpts::new(
            "store_commit_seconds",
            "Time to write one round (group commit)",
        )
        .namespace("branchguard")
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(commit_seconds.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    // People answer in seconds to hours: 5 s to 2 h.
    let response_buckets = vec![
        5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    ];
    let duration_buckets = vec![
        60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0, 259200.0,
    ];
    Metrics {
        events_received: counter(&r, "events_received_total", "Events accepted", &["source"]),
        events_rejected: counter(&r, "events_rejected_total", "Events refused", &["reason"]),
        events_unmatched,
        events_silenced: {
            let c = IntCounter::with_opts(
                Opts::new(
                    "events_silenced_total",
                    "Events a silence or maintenance window held back",
                )
                .namespace("branchguard"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            r.register(Box::new(c.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            c
        },
        incidents_opened: counter(
            &r,
            "incidents_opened_total",
            "Incidents opened",
            &["playbook", "drill"],
        ),
        incidents_open,
        steps_overdue: counter(
            &r,
            "steps_overdue_total",
            "Steps past their deadline",
            &["playbook", "step"],
        ),
        escalations: counter(&r, "escalations_total", "Escalations sent", &["playbook"]),
        step_response: histogram(
            &r,
            "step_response_seconds",
            "First acknowledgement minus notification",
            &["playbook", "step"],
            response_buckets.clone(),
        ),
        step_done: histogram(
            &r,
            "step_done_seconds",
            "Notified to done, for steps people finish",
            &["playbook", "step"],
            response_buckets,
        ),
        steps_done: counter(
            &r,
            "steps_done_total",
            "Steps people finished, by their deadline or after it",
            &["playbook", "step", "deadline"],
        ),
        incident_duration: histogram(
            &r,
            "incident_duration_seconds",
            "Opened to resolved",
            &["playbook"],
            duration_buckets,
        ),
        notifications: counter(
            &r,
            "notifications_total",
            "Notification deliveries",
            &["channel", "outcome"],
        ),
        outbox_pending,
        ha_leader,
        ha_epoch,
        config_reloads: counter(
            &r,
            "config_reloads_total",
            "Configuration loads",
            &["result"],
        ),
        playbooks_loaded,
        commit_seconds,
        drill_runs: counter(
            &r,
            "drill_runs_total",
            "Drill runs by result: passed, failed, aborted, missed",
            &["drill", "result"],
        ),
        drill_score: {
            let g = prometheus::GaugeVec::new(
                Opts::new(
                    "drill_score",
                    "Score of the last finished run of a drill at a branch (0-100)",
                )
                .namespace("branchguard"),
                &["drill", "branch"],
            )
            .unwrap_or_else(|e| panic!("{e}"));
            r.register(Box::new(g.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            g
        },
        probe_up: {
            let g = IntGaugeVec::new(
                Opts::new(
                    "probe_up",
                    "1 when the last check of a branch system succeeded, else 0",
                )
                .namespace("branchguard"),
                &["branch", "system", "region"],
            )
            .unwrap_or_else(|e| panic!("{e}"));
            r.register(Box::new(g.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            g
        },
        probe_duration: {
            let h = Histogram::with_opts(
                HistogramOpts::new("probe_duration_seconds", "How long one probe check took")
                    .namespace("branchguard")
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ]),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            r.register(Box::new(h.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            h
        },
        host_cpu: {
            let g = prometheus::Gauge::with_opts(
                Opts::new(
                    "host_cpu_usage_ratio",
                    "CPU in use on the daemon's host (0-1)",
                )
                .namespace("branchguard"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            r.register(Box::new(g.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            g
        },
        host_memory_used: {
            let g = IntGauge::with_opts(
                Opts::new(
                    "host_memory_used_bytes",
                    "Memory in use on the daemon's host",
                )
                .namespace("branchguard"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            r.register(Box::new(g.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            g
        },
        host_disk_free: {
            let g = IntGaugeVec::new(
                Opts::new(
                    "host_disk_free_bytes",
                    "Free space per mount on the daemon's host",
                )
                .namespace("branchguard"),
                &["mount"],
            )
            .unwrap_or_else(|e| panic!("{e}"));
            r.register(Box::new(g.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            g
        },
        outbox_oldest: {
            let g = prometheus::Gauge::with_opts(
                Opts::new(
                    "outbox_oldest_pending_seconds",
                    "Age of the oldest notification not yet delivered (0 when none)",
                )
                .namespace("branchguard"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            r.register(Box::new(g.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            g
        },
        last_reload_ok: {
            let g = prometheus::Gauge::with_opts(
                Opts::new(
                    "config_last_reload_success_timestamp_seconds",
                    "When the configuration was last loaded successfully (Unix time)",
                )
                .namespace("branchguard"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            r.register(Box::new(g.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            g
        },
        roster_gap: {
            let g = prometheus::GaugeVec::new(
                Opts::new(
                    "roster_gap_seconds",
                    "Seconds in the next 7 days when nobody is on duty in a roster (each second once, however many branches it covers)",
                )
                .namespace("branchguard"),
                &["roster"],
            )
            .unwrap_or_else(|e| panic!("{e}"));
            r.register(Box::new(g.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            g
        },
        requests_denied: {
            let c = counter(
                &r,
                "requests_denied_total",
                "HTTP requests refused: unauthorized (401), forbidden (403), out_of_scope (another branch's, 404), rate_limited (429), cross_site",
                &["reason"],
            );
            for reason in DENIAL_REASONS {
                c.with_label_values(&[reason]);
            }
            c
        },
        registry: {
            let build = IntGaugeVec::new(
                Opts::new("build_info", "The running version (always 1)").namespace("branchguard"),
                &["version"],
            )
            .unwrap_or_else(|e| panic!("{e}"));
            build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
            r.register(Box::new(build))
                .unwrap_or_else(|e| panic!("{e}"));
            // CPU, resident memory, open file descriptors of this process.
            #[cfg(target_os = "linux")]
            r.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .unwrap_or_else(|e| panic!("{e}"));
            r
        },
    }
});

fn get() -> &'static Metrics {
    &METRICS
}

/// Each roster's gap time ahead, as of a scrape; rosters no longer loaded
/// leave the metric.
pub fn roster_gaps(gaps: &[(String, f64)]) {
    let m = get();
    m.roster_gap.reset();
    for (roster, secs) in gaps {
        m.roster_gap.with_label_values(&[roster]).set(*secs);
    }
}

/// One probe check: how long it took, and whether the system answered.
pub fn probe_checked(branch: &str, system: &str, region: &str, seconds: f64, up: bool) {
    let m = get();
    m.probe_duration.observe(seconds);
    m.probe_up
        .with_label_values(&[branch, system, region])
        .set(i64::from(up));
}

/// One sample of the daemon's host: CPU in use (0-1), memory in use, and
/// each mount's free bytes.
pub fn host_sampled<'a>(
    cpu_ratio: f64,
    memory_used: u64,
    disks_free: impl Iterator<Item = (&'a String, u64)>,
) {
    let m = get();
    m.host_cpu.set(cpu_ratio);
    m.host_memory_used
        .set(i64::try_from(memory_used).unwrap_or(i64::MAX));
    for (mount, free) in disks_free {
        m.host_disk_free
            .with_label_values(&[mount.as_str()])
            .set(i64::try_from(free).unwrap_or(i64::MAX));
    }
}

/// How long one group commit took.
pub fn commit_took(seconds: f64) {
    get().commit_seconds.observe(seconds);
}

/// Notifications not yet delivered, and how long the oldest has waited.
pub fn outbox_pending(n: u64, oldest_seconds: f64) {
    let m = get();
    m.outbox_pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    m.outbox_oldest.set(oldest_seconds.max(0.0));
}

/// This node's role in its active/standby group.
pub fn ha_role(leader: bool, epoch: i64) {
    let m = get();
    m.ha_leader.set(i64::from(leader));
    m.ha_epoch.set(epoch);
}

/// Sources are free text on the wire; only known ones become label values.
fn source_label(s: &str) -> &'static str {
    match s {
        "probe" => "probe",
        "host" => "host",
        "api" => "api",
        "alertmanager" => "alertmanager",
        "spool" => "spool",
        "drill" => "drill",
        "cli" => "cli",
        _ => "other",
    }
}

pub fn record_round(round: &Round) {
    let m = get();
    for e in round.events.iter().filter(|e| e.rejected.is_none()) {
        m.events_received
            .with_label_values(&[source_label(&e.event.source)])
            .inc();
    }
    m.events_unmatched.inc_by(round.stats.unmatched);
    m.events_silenced.inc_by(round.stats.silenced);
    for (pb, drill) in &round.stats.opened {
        m.incidents_opened
            .with_label_values(&[pb.as_str(), if *drill { "true" } else { "false" }])
            .inc();
    }
    for pb in &round.stats.escalations {
        m.escalations.with_label_values(&[pb.as_str()]).inc();
    }
    for (pb, step) in &round.stats.overdue {
        m.steps_overdue
            .with_label_values(&[pb.as_str(), step.as_str()])
            .inc();
    }
    for (pb, step, secs, met) in &round.stats.done {
        m.step_done
            .with_label_values(&[pb.as_str(), step.as_str()])
            .observe(*secs);
        m.steps_done
            .with_label_values(&[
                pb.as_str(),
                step.as_str(),
                if *met { "met" } else { "missed" },
            ])
            .inc();
    }
    for (pb, step, secs) in &round.stats.responses {
        m.step_response
            .with_label_values(&[pb.as_str(), step.as_str()])
            .observe(*secs);
    }
    for (channel, outcome) in &round.stats.notifications {
        let channel = channel.as_str();
        m.notifications.with_label_values(&[channel, outcome]).inc();
    }
    for (drill, result, scores) in &round.stats.drills {
        m.drill_runs
            .with_label_values(&[drill.as_str(), result])
            .inc();
        for (branch, score) in scores {
            m.drill_score
                .with_label_values(&[drill.as_str(), branch.as_str()])
                .set(*score);
        }
    }
    for (pb, secs) in &round.stats.resolved {
        m.incident_duration
            .with_label_values(&[pb.as_str()])
            .observe(*secs);
    }
}

/// Sets the open-incident gauge to the engine's counts of real incidents open
/// now: (playbook, tier, count). Called when the counts changed.
pub fn open_incidents<'a>(counts: impl Iterator<Item = (&'a str, u8, i64)>) {
    let m = get();
    m.incidents_open.reset();
    for (playbook, tier, n) in counts {
        m.incidents_open
            .with_label_values(&[playbook, &tier.to_string()])
            .set(n);
    }
}

/// A refused HTTP request (`reason` is one of [`DENIAL_REASONS`]).
pub fn request_denied(reason: &'static str) {
    get().requests_denied.with_label_values(&[reason]).inc();
}

pub fn event_rejected(reason: &'static str) {
    get().events_rejected.with_label_values(&[reason]).inc();
}

/// Every series whose labels the configuration names, at zero, so that
/// `increase()` and absence alerts work before the first event of a kind.
fn known_series(loaded: &Loaded) {
    let m = get();
    for result in ["success", "failure"] {
        m.config_reloads.with_label_values(&[result]);
    }
    for source in [
        "probe",
        "host",
        "api",
        "alertmanager",
        "spool",
        "drill",
        "cli",
        "other",
    ] {
        m.events_received.with_label_values(&[source]);
    }
    for reason in [
        "malformed",
        "invalid",
        "missing_branch",
        "unknown_branch",
        "too_large",
        "forbidden",
    ] {
        m.events_rejected.with_label_values(&[reason]);
    }
    for channel in ["email", "webhook"] {
        for outcome in ["delivered", "retry", "failed"] {
            m.notifications.with_label_values(&[channel, outcome]);
        }
    }
    for pb in &loaded.playbooks {
        for drill in ["true", "false"] {
            m.incidents_opened.with_label_values(&[&pb.id, drill]);
        }
        m.escalations.with_label_values(&[&pb.id]);
        for s in &pb.steps {
            m.steps_overdue.with_label_values(&[&pb.id, &s.id]);
            for deadline in ["met", "missed"] {
                m.steps_done.with_label_values(&[&pb.id, &s.id, deadline]);
            }
        }
    }
    for d in &loaded.drills {
        for result in ["passed", "failed", "aborted", "missed"] {
            m.drill_runs.with_label_values(&[&d.id, result]);
        }
    }
}

pub fn config_loaded(loaded: &Loaded, ok: bool) {
    let m = get();
    if ok {
        known_series(loaded);
    }
    m.config_reloads
        .with_label_values(&[if ok { "success" } else { "failure" }])
        .inc();
    if ok {
        m.playbooks_loaded.set(loaded.playbooks.len() as i64);
        m.last_reload_ok
            .set(crate::clock::now().timestamp_millis() as f64 / 1000.0);
    }
}

/// The Prometheus text format of everything above.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&get().registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
