-- 0003: re-encryption job records (issue 6). The table only; the engine
-- that fills it is `pgcloak reencrypt`. One job rewrites one column of one
-- table from older versions of a key ring to to_version, in primary-key
-- order, resumable from last_pk.
CREATE TABLE pgcloak.reencrypt_jobs (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	keyring_id   integer NOT NULL REFERENCES pgcloak.keyrings (id) ON DELETE RESTRICT,
	from_version integer CHECK (from_version >= 1),  -- NULL: every version older than to_version
	to_version   integer NOT NULL CHECK (to_version >= 1),
	table_name   text NOT NULL,                      -- schema-qualified, as configured
	column_name  text NOT NULL,
	pk_columns   text[] NOT NULL CHECK (cardinality(pk_columns) >= 1),
	state        text NOT NULL DEFAULT 'pending'
	             CHECK (state IN ('pending', 'running', 'paused', 'done', 'failed', 'cancelled')),
	dry_run      boolean NOT NULL DEFAULT false,
	forced       boolean NOT NULL DEFAULT false,     -- started with --force (audited)
	last_pk      jsonb,                              -- cursor: the last primary key done, as a JSON array of text values
	rows_total   bigint CHECK (rows_total >= 0),     -- estimate at start; NULL until counted
	rows_done    bigint NOT NULL DEFAULT 0 CHECK (rows_done >= 0),
	rows_skipped bigint NOT NULL DEFAULT 0 CHECK (rows_skipped >= 0), -- changed concurrently (compare-and-swap lost)
	batch_size   integer CHECK (batch_size >= 1),
	owner        text,                               -- instance that runs it (host:pid)
	heartbeat_at timestamptz,                        -- a stale heartbeat lets another instance resume
	error        text NOT NULL DEFAULT '',
	created_at   timestamptz NOT NULL DEFAULT now(),
	created_by   text NOT NULL CHECK (created_by <> ''),
	started_at   timestamptz,
	updated_at   timestamptz NOT NULL DEFAULT now(),
	finished_at  timestamptz,
	CHECK (from_version IS NULL OR from_version < to_version)
);

-- At most one unfinished job per column.
CREATE UNIQUE INDEX reencrypt_jobs_one_open ON pgcloak.reencrypt_jobs (table_name, column_name)
	WHERE state IN ('pending', 'running', 'paused');
CREATE INDEX reencrypt_jobs_keyring ON pgcloak.reencrypt_jobs (keyring_id, state);
