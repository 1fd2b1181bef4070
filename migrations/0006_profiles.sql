-- Profiles (`--p`): ❤️ / 👎 under a picture record what a member likes; `--p` freezes their liked
-- pictures into a profile code, `--p CODE` draws with that code's pictures as one style (any member
-- may use a code they were shown). Pictures are our stored copies under DATA_DIR/inputs.

CREATE TABLE ratings (
    user_id     INTEGER NOT NULL,
    job_id      INTEGER NOT NULL,
    idx         INTEGER NOT NULL,                 -- the picture of the job, 1-4
    liked       INTEGER NOT NULL CHECK (liked IN (0, 1)),
    path        TEXT NOT NULL,                    -- our copy of the picture, relative to DATA_DIR
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    rated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (user_id, job_id, idx)
);
CREATE INDEX ratings_liked ON ratings (user_id, liked, rated_at);

CREATE TABLE profile_codes (
    code        INTEGER PRIMARY KEY,              -- shown as `--p CODE`
    user_id     INTEGER NOT NULL,                 -- whose likes it froze
    pictures    TEXT NOT NULL,                    -- JSON list of InputImage fields, in order
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX profile_codes_by_user ON profile_codes (user_id, pictures);
