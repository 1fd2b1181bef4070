-- /config: who changed what, when; what moderation refused; which images the safety checker flagged.
-- guild_settings (0001) stays the table of current values; this keeps the record of changes.

CREATE TABLE config_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order of the changes
    guild_id    INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    old_value   TEXT,                             -- JSON; NULL: it was at its default
    new_value   TEXT,                             -- JSON; NULL: reset to the default
    changed_by  INTEGER NOT NULL,                 -- Discord user id
    changed_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX config_history_by_guild ON config_history (guild_id, id);

CREATE TABLE moderation_log (                     -- prompts refused for a banned word or pattern
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id    INTEGER NOT NULL,
    channel_id  INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    prompt      TEXT NOT NULL,
    matched     TEXT NOT NULL,                    -- the word or /pattern/ that matched
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX moderation_log_by_guild ON moderation_log (guild_id, id);

ALTER TABLE images ADD COLUMN flagged INTEGER NOT NULL DEFAULT 0;  -- 1: the safety checker flagged it

CREATE INDEX jobs_by_user_guild ON jobs (user_id, guild_id, created_at);  -- daily quotas
