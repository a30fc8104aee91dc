"""The event store's tables, in ``faultlens.db``.

Issues are found by ``(project_id, hash)`` through ``issue_hashes`` rather than a
column on ``issues``, so that merging issues is a matter of pointing more hashes at
one issue. Event bodies are kept as zstd-compressed JSON: events are read whole or
not at all, and the columns that queries need sit beside the blob.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    grouping_version TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS project_keys (
    public_key TEXT PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);

CREATE TABLE IF NOT EXISTS api_tokens (
    token_hash TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS issues (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    culprit TEXT NOT NULL,
    level TEXT NOT NULL,
    status TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    count INTEGER NOT NULL,
    user_count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS issues_by_last_seen ON issues (project_id, last_seen);
CREATE INDEX IF NOT EXISTS issues_by_first_seen ON issues (project_id, first_seen);
CREATE INDEX IF NOT EXISTS issues_by_count ON issues (project_id, count);

CREATE TABLE IF NOT EXISTS issue_hashes (
    project_id INTEGER NOT NULL,
    hash TEXT NOT NULL,
    issue_id INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    PRIMARY KEY (project_id, hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS issue_hashes_by_issue ON issue_hashes (issue_id);

CREATE TABLE IF NOT EXISTS issue_users (
    issue_id INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    user_key TEXT NOT NULL,
    PRIMARY KEY (issue_id, user_key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS issue_hourly (
    issue_id INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    hour INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (issue_id, hour)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS issue_tags (
    issue_id INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (issue_id, key, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS issue_tags_by_value ON issue_tags (key, value);

CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    issue_id INTEGER REFERENCES issues(id) ON DELETE CASCADE,
    timestamp REAL NOT NULL,
    received REAL NOT NULL,
    level TEXT NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (project_id, event_id)
);
CREATE INDEX IF NOT EXISTS events_by_issue ON events (issue_id, timestamp);

CREATE TABLE IF NOT EXISTS attachments (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    attachment_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    blob TEXT NOT NULL,
    UNIQUE (project_id, event_id, blob)
);

CREATE TABLE IF NOT EXISTS dead_letters (
    inbox_id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    received_at REAL NOT NULL,
    error TEXT NOT NULL,
    kind TEXT NOT NULL,
    encoding TEXT NOT NULL,
    body BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS feedback (
    project_id INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    received REAL NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (project_id, event_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS replay_segments (
    project_id INTEGER NOT NULL,
    replay_id TEXT NOT NULL,
    segment_id INTEGER NOT NULL,
    received REAL NOT NULL,
    event BLOB NOT NULL,
    blob TEXT NOT NULL,
    PRIMARY KEY (project_id, replay_id, segment_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS counters (
    project_id INTEGER NOT NULL,
    hour INTEGER NOT NULL,
    name TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (project_id, hour, name)
) WITHOUT ROWID;
"""
