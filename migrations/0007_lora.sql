-- Members' own LoRAs, trained by /tune: a short style code names each one (`--lora CODE`). The file lies
-- under DATA_DIR/loras/<member>/; its size counts against the server's /config lora_storage_mb for that member.

CREATE TABLE style_codes (
    code TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    guild_id INTEGER,
    job_id INTEGER REFERENCES jobs (id) ON DELETE SET NULL,
    path TEXT NOT NULL UNIQUE,
    bytes INTEGER NOT NULL,
    created_at TEXT NOT NULL
);

CREATE INDEX style_codes_by_user ON style_codes (user_id, created_at);
