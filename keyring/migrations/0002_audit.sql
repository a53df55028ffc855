-- 0002: the hash-chained audit log (keyring/audit/doc.go).

-- One row per event. hash = SHA-256 over the canonical encoding of the row
-- (keyring/audit/entry.go), including prev_hash = the previous row's hash
-- (32 zero bytes for seq 1). seq is gapless: 1, 2, 3, …
CREATE TABLE pgcloak.audit_log (
	seq       bigint PRIMARY KEY CHECK (seq >= 1),
	at        timestamptz NOT NULL,
	actor     text NOT NULL,          -- who, as the application says (--actor, OS user@host)
	db_user   text NOT NULL,          -- who, as the key store says (current_user)
	event     text NOT NULL CHECK (event <> ''),
	keyring   text NOT NULL DEFAULT '',
	version   integer NOT NULL DEFAULT 0 CHECK (version >= 0),
	details   jsonb NOT NULL DEFAULT '{}',
	prev_hash bytea NOT NULL CHECK (length(prev_hash) = 32),
	hash      bytea NOT NULL CHECK (length(hash) = 32)
);

CREATE INDEX audit_log_keyring ON pgcloak.audit_log (keyring, version) WHERE keyring <> '';

-- The chain head: the last entry's seq and hash, and the last checkpoint.
-- Maintained by the triggers below; Verify compares it with the log to see
-- a truncated tail.
CREATE TABLE pgcloak.audit_head (
	id                  boolean PRIMARY KEY DEFAULT true CHECK (id),
	seq                 bigint NOT NULL,
	hash                bytea NOT NULL CHECK (length(hash) = 32),
	last_checkpoint_seq bigint NOT NULL DEFAULT 0
);
INSERT INTO pgcloak.audit_head (id, seq, hash) VALUES (true, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- Checkpoints: mac = HMAC-SHA-256 under a DEK of the audit key ring over
-- (ring, version, seq, hash) (keyring/audit/checkpoint.go). Whoever can
-- unwrap that DEK (holds the KEK) can write one; nobody else can forge one.
CREATE TABLE pgcloak.audit_checkpoints (
	seq         bigint PRIMARY KEY CHECK (seq >= 1),
	hash        bytea NOT NULL CHECK (length(hash) = 32),
	keyring_id  integer NOT NULL,
	key_version integer NOT NULL CHECK (key_version >= 1),
	mac         bytea NOT NULL CHECK (length(mac) = 32),
	at          timestamptz NOT NULL DEFAULT now(),
	actor       text NOT NULL
);

-- Appends must extend the head (serialised by the writer's advisory lock
-- and by this row lock): the chain can never fork. SECURITY DEFINER so that
-- appending roles need INSERT on audit_log only, not UPDATE on the head.
CREATE FUNCTION pgcloak.audit_log_append() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
	head record;
BEGIN
	SELECT seq, hash INTO head FROM pgcloak.audit_head WHERE id FOR UPDATE;
	IF NEW.seq <> head.seq + 1 OR NEW.prev_hash <> head.hash THEN
		RAISE EXCEPTION 'pgcloak: audit entry % does not extend the chain head (seq %)', NEW.seq, head.seq
			USING ERRCODE = 'PGC05';
	END IF;
	UPDATE pgcloak.audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id;
	RETURN NEW;
END
$$;

CREATE TRIGGER audit_log_append BEFORE INSERT ON pgcloak.audit_log
	FOR EACH ROW EXECUTE FUNCTION pgcloak.audit_log_append();

CREATE FUNCTION pgcloak.audit_checkpoint_append() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
	head record;
	entry_hash bytea;
BEGIN
	SELECT seq, last_checkpoint_seq INTO head FROM pgcloak.audit_head WHERE id FOR UPDATE;
	SELECT hash INTO entry_hash FROM pgcloak.audit_log WHERE seq = NEW.seq;
	IF NEW.seq <= head.last_checkpoint_seq OR NEW.seq > head.seq OR entry_hash IS DISTINCT FROM NEW.hash THEN
		RAISE EXCEPTION 'pgcloak: checkpoint at seq % does not match the audit log', NEW.seq
			USING ERRCODE = 'PGC05';
	END IF;
	UPDATE pgcloak.audit_head SET last_checkpoint_seq = NEW.seq WHERE id;
	RETURN NEW;
END
$$;

CREATE TRIGGER audit_checkpoint_append BEFORE INSERT ON pgcloak.audit_checkpoints
	FOR EACH ROW EXECUTE FUNCTION pgcloak.audit_checkpoint_append();

-- Append-only. The owner or a superuser can still disable these triggers;
-- that is what the hash chain and the checkpoints are for.
CREATE FUNCTION pgcloak.audit_refuse_change() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
	RAISE EXCEPTION 'pgcloak: % is append-only (% refused)', TG_TABLE_NAME, TG_OP USING ERRCODE = 'PGC01';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON pgcloak.audit_log
	FOR EACH ROW EXECUTE FUNCTION pgcloak.audit_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON pgcloak.audit_log
	FOR EACH STATEMENT EXECUTE FUNCTION pgcloak.audit_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON pgcloak.audit_checkpoints
	FOR EACH ROW EXECUTE FUNCTION pgcloak.audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON pgcloak.audit_checkpoints
	FOR EACH STATEMENT EXECUTE FUNCTION pgcloak.audit_refuse_change();
CREATE TRIGGER audit_head_keep BEFORE DELETE ON pgcloak.audit_head
	FOR EACH ROW EXECUTE FUNCTION pgcloak.audit_refuse_change();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON pgcloak.audit_head
	FOR EACH STATEMENT EXECUTE FUNCTION pgcloak.audit_refuse_change();
