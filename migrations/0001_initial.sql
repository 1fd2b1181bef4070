-- Members, servers, jobs and their images. Timestamps are UTC ISO-8601 text.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,              -- Discord user id
    settings    TEXT NOT NULL DEFAULT '{}',       -- JSON: /settings choices (aspect, quality, stylize, remix)
    suffix      TEXT NOT NULL DEFAULT '',         -- /prefer suffix, appended to every prompt
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE user_options (                       -- /prefer option set NAME VALUE: --NAME expands to VALUE
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE guilds (
    id          INTEGER PRIMARY KEY,              -- Discord guild id
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE guild_settings (                     -- /config: one row per key an admin changed
    guild_id    INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,                    -- JSON
    updated_by  INTEGER NOT NULL,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (guild_id, key)
);

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL CHECK (kind IN ('imagine', 'variation', 'upscale', 'reroll')),
    parent_id       INTEGER REFERENCES jobs(id),
    parent_index    INTEGER,                      -- which tile of the parent (1-4) a U/V/upscale came from
    user_id         INTEGER NOT NULL REFERENCES users(id),
    guild_id        INTEGER,                      -- NULL in DMs
    channel_id      INTEGER NOT NULL,
    prompt          TEXT NOT NULL,                -- as the member wrote it, parameters included
    params          TEXT NOT NULL,                -- JSON: the render request, everything needed to re-render
    seeds           TEXT NOT NULL,                -- JSON list, one per tile
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

CREATE INDEX jobs_by_status ON jobs (status, id);
CREATE INDEX jobs_by_user ON jobs (user_id, status);
CREATE INDEX jobs_undelivered ON jobs (delivered_at) WHERE delivered_at IS NULL;

CREATE TABLE images (                             -- our own copy of every tile: Discord's CDN URLs expire
    job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,                 -- 1-4 as on the U/V buttons
    path        TEXT NOT NULL,                    -- relative to DATA_DIR
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    seed        INTEGER NOT NULL,
    PRIMARY KEY (job_id, idx)
);

CREATE TABLE meta (                               -- small facts about this installation
    key         TEXT PRIMARY KEY,                 -- e.g. 'commands_hash': what was last synced to Discord
    value       TEXT NOT NULL
);
