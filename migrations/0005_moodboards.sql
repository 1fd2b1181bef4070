-- Moodboards (/moodboard create|add|list|delete): pictures a member collects, usable as one style
-- (`--sref mb:NAME`). The pictures are our stored copies under DATA_DIR/inputs, never pruned.

CREATE TABLE moodboards (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL,
    name        TEXT NOT NULL,                    -- lower case, as typed after `mb:`
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (user_id, name)
);

CREATE TABLE moodboard_pictures (
    moodboard_id INTEGER NOT NULL REFERENCES moodboards(id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL,                -- 1, 2, … in the order added
    path         TEXT NOT NULL,                   -- relative to DATA_DIR
    name         TEXT NOT NULL,                   -- the member's filename, or "job 12 picture 3"
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    PRIMARY KEY (moodboard_id, idx)
);
