-- Fast and Relax modes (/fast, /relax, --fast, --relax). A job records the mode it was queued in:
-- the queue starts Fast jobs first, and a member's Fast jobs this month count against the server's
-- /config fast_hours. Jobs from before this migration were all drawn as soon as possible: fast.

ALTER TABLE jobs ADD COLUMN mode TEXT NOT NULL DEFAULT 'fast' CHECK (mode IN ('fast', 'relax'));

-- Fast time used this month, and Relax time used recently, per member.
CREATE INDEX jobs_by_user_mode ON jobs (user_id, mode, created_at);
