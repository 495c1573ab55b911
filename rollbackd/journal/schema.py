"""The journal's tables, and one migration script per schema version."""

from __future__ import annotations

SCHEMA_VERSION = 3


SCHEMA_V1 = """
CREATE TABLE signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    signal TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    observed_at TEXT NOT NULL,
    value REAL,
    threshold REAL,
    labels TEXT NOT NULL,
    summary TEXT NOT NULL,
    accepted INTEGER NOT NULL,
    note TEXT NOT NULL
);
CREATE INDEX signals_key ON signals (key);
CREATE INDEX signals_target ON signals (namespace, name, observed_at);

CREATE TABLE unresolved_alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    alertname TEXT NOT NULL,
    labels TEXT NOT NULL,
    reason TEXT NOT NULL
);

CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    signal_key TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    action TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    from_revision INTEGER,
    to_revision INTEGER,
    rollback_id TEXT
);
CREATE INDEX decisions_rollback ON decisions (rollback_id);
CREATE INDEX decisions_target ON decisions (namespace, name, at);

CREATE TABLE rollbacks (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    phase TEXT NOT NULL,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT,
    from_revision INTEGER,
    to_revision INTEGER,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX rollbacks_target ON rollbacks (namespace, name, started_at);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollback_id TEXT,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_rollback ON events (rollback_id, at);

CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    rollback_id TEXT,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    resolves INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    summary TEXT NOT NULL,
    channel TEXT NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX notifications_dedup ON notifications (dedup_key);
CREATE INDEX notifications_rollback ON notifications (rollback_id);
"""

# Version 2: the journal becomes the durable queue and the page outbox.
# - signals.decided_at / decision_id: an accepted signal with no decision yet
#   is replayed at start and on election (``undecided_signals``).
# - unresolved_alerts keeps one row per fingerprint with a count, so the same
#   unmappable alert delivered 200 times is one row, not 200.
# - outbox: every page meant for a channel, until delivered or too old.
SCHEMA_V2 = """
ALTER TABLE signals ADD COLUMN decided_at TEXT;
ALTER TABLE signals ADD COLUMN decision_id INTEGER;
-- Signals from before version 2 were handled (or lost) by the process that
-- took them; replaying days-old signals now would page about the past.
UPDATE signals SET decided_at = observed_at;
CREATE INDEX signals_undecided ON signals (id) WHERE accepted = 1 AND decided_at IS NULL;
CREATE INDEX signals_decision ON signals (decision_id);

CREATE TABLE unresolved_alerts_v2 (
    fingerprint TEXT PRIMARY KEY,
    first_at TEXT NOT NULL,
    at TEXT NOT NULL,
    count INTEGER NOT NULL,
    alertname TEXT NOT NULL,
    labels TEXT NOT NULL,
    reason TEXT NOT NULL
);
INSERT INTO unresolved_alerts_v2 (fingerprint, first_at, at, count, alertname, labels, reason)
    SELECT fingerprint, MIN(at), MAX(at), COUNT(*), alertname, labels, reason
    FROM unresolved_alerts GROUP BY fingerprint;
DROP TABLE unresolved_alerts;
ALTER TABLE unresolved_alerts_v2 RENAME TO unresolved_alerts;
CREATE INDEX unresolved_alerts_at ON unresolved_alerts (at);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    resolves INTEGER NOT NULL,
    severity TEXT NOT NULL,
    rollback_id TEXT,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    finished_at TEXT,
    UNIQUE (channel, dedup_key, kind, resolves)
);
CREATE INDEX outbox_pending ON outbox (channel, id) WHERE state = 'pending';
CREATE INDEX outbox_created ON outbox (created_at);

-- What a record is: a rollback, a dry run (would-be rollback) or an escalation
-- with no rollback, so every decision that pages is listed, and history
-- (cooldown, in flight, restored revisions) counts real rollbacks only.
ALTER TABLE rollbacks ADD COLUMN kind TEXT NOT NULL DEFAULT 'rollback';
UPDATE rollbacks SET kind = 'dry_run' WHERE phase = 'DRY_RUN';
CREATE INDEX rollbacks_kind ON rollbacks (kind, namespace, name, started_at);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_target ON events (namespace, name, kind, at);
CREATE INDEX notifications_at ON notifications (at);
CREATE INDEX decisions_at ON decisions (at);
"""

# Version 3: a polled signal keeps how far back its evidence may reach
# (Signal.evidence_since), so a replayed one is attributed the same way.
SCHEMA_V3 = """
ALTER TABLE signals ADD COLUMN evidence_since TEXT;
"""

# One entry per schema version: the script that brings version i-1 to i.
MIGRATIONS: tuple[str, ...] = (SCHEMA_V1, SCHEMA_V2, SCHEMA_V3)
