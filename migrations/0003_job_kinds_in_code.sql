-- Job kinds are listed in bot/kinds.py, not in the schema: a new kind needs no table rebuild.
-- SQLite cannot drop a CHECK constraint, so jobs is rebuilt (sqlite.org/lang_altertable.html, "other
-- kinds of table schema changes"). Store.upgrade runs this with foreign keys off and checks them before
-- committing: with them on, dropping the old table would cascade into images.
-- params changes shape in new rows ({"render", "shown", "delivery"}); old flat rows are read as they are.

CREATE TABLE jobs_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,                -- a name in bot/kinds.py
    parent_id       INTEGER REFERENCES jobs(id),
    parent_index    INTEGER,                      -- which tile of the parent (1-4) a U/V/upscale came from
    user_id         INTEGER NOT NULL REFERENCES users(id),
    guild_id        INTEGER,                      -- NULL in DMs
    channel_id      INTEGER NOT NULL,
    prompt          TEXT NOT NULL,                -- as the member wrote it, parameters included
    params          TEXT NOT NULL,                -- JSON: bot/spec.py's JobSpec, everything needed to re-render
    seeds           TEXT NOT NULL,                -- JSON list, one per output image
    model           TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    progress        REAL NOT NULL DEFAULT 0,      -- 0..1
    error           TEXT,                         -- shown to the member when status is failed
    attempts        INTEGER NOT NULL DEFAULT 0,   -- renders started; bounded so a poison job cannot loop
    gpu_seconds     REAL NOT NULL DEFAULT 0,
    application_id  INTEGER,                      -- the interaction webhook that reports on this job
    interaction_token TEXT,
    token_expires_at TEXT,
    message_id      INTEGER,                      -- the message that shows progress and then the result
    result_channel_id INTEGER,                    -- where the result landed
    result_message_id INTEGER,
    delivered_at    TEXT,                         -- set once the member has been shown the final state
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    started_at      TEXT,
    finished_at     TEXT
);

INSERT INTO jobs_new SELECT * FROM jobs;

-- Ids are never reused, even those of jobs deleted at the end of the table.
UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'jobs') WHERE name = 'jobs_new';

DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

CREATE INDEX jobs_by_status ON jobs (status, id);
CREATE INDEX jobs_by_user ON jobs (user_id, status);
CREATE INDEX jobs_undelivered ON jobs (delivered_at) WHERE delivered_at IS NULL;
CREATE INDEX jobs_by_user_guild ON jobs (user_id, guild_id, created_at);  -- daily quotas
