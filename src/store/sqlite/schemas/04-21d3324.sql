-- The schema made by branchguard at commit 21d3324 (2026-11-24), the first
-- version that made it; kept to test migrating a database it made.

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    branch TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    labels TEXT NOT NULL,
    summary TEXT,
    source TEXT NOT NULL,
    matched INTEGER NOT NULL,
    incidents TEXT NOT NULL,
    rejected TEXT
);
CREATE INDEX IF NOT EXISTS events_branch ON events (branch, id);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, id);
CREATE TABLE IF NOT EXISTS playbook_versions (
    playbook TEXT NOT NULL,
    version TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (playbook, version)
);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    playbook TEXT NOT NULL,
    playbook_version TEXT NOT NULL,
    branch TEXT NOT NULL,
    tier INTEGER NOT NULL,
    status TEXT NOT NULL,
    drill INTEGER NOT NULL,
    group_key TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    resolved_at TEXT,
    live INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_live ON incidents (live);
CREATE INDEX IF NOT EXISTS incidents_status ON incidents (status, id);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    incident INTEGER,
    at TEXT NOT NULL,
    what TEXT NOT NULL,
    by TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_incident ON history (incident, id);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    incident INTEGER NOT NULL,
    step TEXT,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    recipient TEXT NOT NULL,
    person TEXT,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    link TEXT,
    payload TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    delivered_at TEXT,
    failed_at TEXT,
    last_error TEXT,
    link_until TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_incident ON outbox (incident, id);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    entity TEXT NOT NULL,
    what TEXT NOT NULL,
    by TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
