-- 0001: key rings and key versions (DESIGN.md §5, keyring/doc.go).
-- Applied by keyring.Migrate in one transaction, under an advisory lock.
-- Every object is schema-qualified; functions pin search_path.

DO $$
BEGIN
	IF current_setting('server_encoding') <> 'UTF8' THEN
		RAISE EXCEPTION 'pgcloak: the key store database must use UTF8 encoding, not %',
			current_setting('server_encoding');
	END IF;
END $$;

-- A key ring: the versions of one key, for one purpose. The id and the
-- name are bound into every wrapped DEK's associated data and the id into
-- every ciphertext header, so neither ever changes and rings are never
-- deleted.
CREATE TABLE pgcloak.keyrings (
	id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name           text NOT NULL UNIQUE
	               CHECK (name ~ '^[a-z0-9][a-z0-9_:./-]{0,62}$'),
	purpose        text NOT NULL CHECK (purpose IN ('encryption', 'search', 'audit')),
	classification text NOT NULL DEFAULT '',
	environment    text NOT NULL DEFAULT '',
	kek_name       text NOT NULL CHECK (kek_name <> ''), -- KEK that wraps new versions
	created_at     timestamptz NOT NULL DEFAULT now(),
	created_by     text NOT NULL CHECK (created_by <> ''),
	updated_at     timestamptz NOT NULL DEFAULT now(),
	updated_by     text NOT NULL CHECK (updated_by <> '')
);

-- One row per DEK version. The row outlives its key: once deleted, the
-- wrapped DEK is NULL (crypto-shredding) and the row stays as a tombstone
-- that says who destroyed it and when.
CREATE TABLE pgcloak.key_versions (
	keyring_id       integer NOT NULL REFERENCES pgcloak.keyrings (id) ON DELETE RESTRICT,
	version          integer NOT NULL CHECK (version >= 1),
	state            text NOT NULL CHECK (state IN
	                 ('active', 'decrypt_only', 'retired', 'pending_deletion', 'deleted', 'disabled')),
	wrapped_dek      bytea,
	dek_format       text NOT NULL DEFAULT 'pgcloak/dek/v1', -- associated-data encoding (keyring/dek.go)
	kek_name         text NOT NULL CHECK (kek_name <> ''),  -- KEK that wrapped wrapped_dek
	kek_key_id       text NOT NULL DEFAULT '',              -- provider's key id/label, when it tells
	created_at       timestamptz NOT NULL DEFAULT now(),
	created_by       text NOT NULL CHECK (created_by <> ''),
	activated_at     timestamptz,
	state_changed_at timestamptz NOT NULL DEFAULT now(),
	state_changed_by text NOT NULL CHECK (state_changed_by <> ''),
	state_changed_role text NOT NULL DEFAULT session_user, -- database role, set by the trigger
	state_reason     text NOT NULL DEFAULT '',
	prior_state      text,        -- state before pending_deletion (restored on cancel)
	deletion_after   timestamptz, -- end of the deletion window
	deleted_at       timestamptz,
	rewrapped_at     timestamptz,
	encryptions      bigint NOT NULL DEFAULT 0 CHECK (encryptions >= 0), -- approximate
	PRIMARY KEY (keyring_id, version),
	CHECK ((state = 'deleted') = (wrapped_dek IS NULL)),
	CHECK (state <> 'pending_deletion' OR deletion_after IS NOT NULL),
	CHECK (state IN ('pending_deletion', 'deleted') OR deletion_after IS NULL),
	CHECK ((state = 'deleted') = (deleted_at IS NOT NULL))
);

-- At most one active version per key ring, whatever writes the table.
CREATE UNIQUE INDEX key_versions_one_active ON pgcloak.key_versions (keyring_id)
	WHERE state = 'active';

-- The lifecycle as a table (keyring/state.go holds the same table).
CREATE FUNCTION pgcloak.transition_allowed(from_state text, to_state text)
RETURNS boolean LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog
AS $$
	SELECT (from_state, to_state) IN (
		('active', 'decrypt_only'), ('active', 'disabled'),
		('decrypt_only', 'retired'), ('decrypt_only', 'disabled'),
		('retired', 'decrypt_only'), ('retired', 'pending_deletion'), ('retired', 'disabled'),
		('pending_deletion', 'retired'), ('pending_deletion', 'disabled'), ('pending_deletion', 'deleted'),
		('disabled', 'decrypt_only'), ('disabled', 'retired'), ('disabled', 'pending_deletion'))
$$;

CREATE FUNCTION pgcloak.keyrings_guard() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
	IF TG_OP = 'DELETE' THEN
		RAISE EXCEPTION 'pgcloak: key ring % cannot be deleted: its id appears in ciphertext headers', OLD.name
			USING ERRCODE = 'PGC01';
	END IF;
	IF NEW.id <> OLD.id OR NEW.name <> OLD.name OR NEW.purpose <> OLD.purpose
		OR NEW.created_at <> OLD.created_at OR NEW.created_by <> OLD.created_by THEN
		RAISE EXCEPTION 'pgcloak: key ring %: id, name, purpose and creation data never change', OLD.name
			USING ERRCODE = 'PGC01';
	END IF;
	NEW.updated_at := now();
	RETURN NEW;
END
$$;

CREATE TRIGGER keyrings_guard BEFORE UPDATE OR DELETE ON pgcloak.keyrings
	FOR EACH ROW EXECUTE FUNCTION pgcloak.keyrings_guard();

-- The lifecycle rules, enforced for every writer (the API checks them
-- first and gives friendlier errors). Times come from the key store's
-- clock (now() = transaction start).
CREATE FUNCTION pgcloak.key_versions_guard() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
	last_version integer;
BEGIN
	IF TG_OP = 'DELETE' THEN
		RAISE EXCEPTION 'pgcloak: key version %/% cannot be deleted: schedule deletion to destroy the key; the row stays as a tombstone',
			OLD.keyring_id, OLD.version USING ERRCODE = 'PGC01';
	END IF;

	IF TG_OP = 'INSERT' THEN
		IF NEW.state <> 'active' THEN
			RAISE EXCEPTION 'pgcloak: a new key version is created active, not %', NEW.state
				USING ERRCODE = 'PGC02';
		END IF;
		SELECT max(version) INTO last_version FROM pgcloak.key_versions WHERE keyring_id = NEW.keyring_id;
		IF NEW.version <> coalesce(last_version, 0) + 1 THEN
			RAISE EXCEPTION 'pgcloak: key ring % must get version % next, not % (version numbers are never reused)',
				NEW.keyring_id, coalesce(last_version, 0) + 1, NEW.version USING ERRCODE = 'PGC01';
		END IF;
		NEW.created_at := now();
		NEW.activated_at := now();
		NEW.state_changed_at := now();
		NEW.state_changed_by := NEW.created_by;
		NEW.state_changed_role := session_user;
		NEW.encryptions := 0;
		NEW.prior_state := NULL;
		NEW.deletion_after := NULL;
		NEW.deleted_at := NULL;
		NEW.rewrapped_at := NULL;
		RETURN NEW;
	END IF;

	-- UPDATE
	IF OLD.state = 'deleted' THEN
		IF NEW IS DISTINCT FROM OLD THEN
			RAISE EXCEPTION 'pgcloak: key version %/% was destroyed at %; it can be neither changed nor restored',
				OLD.keyring_id, OLD.version, OLD.deleted_at USING ERRCODE = 'PGC01';
		END IF;
		RETURN NEW;
	END IF;
	IF NEW.keyring_id <> OLD.keyring_id OR NEW.version <> OLD.version
		OR NEW.created_at IS DISTINCT FROM OLD.created_at OR NEW.created_by IS DISTINCT FROM OLD.created_by
		OR NEW.activated_at IS DISTINCT FROM OLD.activated_at OR NEW.dek_format <> OLD.dek_format THEN
		RAISE EXCEPTION 'pgcloak: key version %/%: identity and creation data never change', OLD.keyring_id, OLD.version
			USING ERRCODE = 'PGC01';
	END IF;
	IF NEW.encryptions < OLD.encryptions THEN
		RAISE EXCEPTION 'pgcloak: key version %/%: the encryption counter only grows', OLD.keyring_id, OLD.version
			USING ERRCODE = 'PGC01';
	END IF;

	IF NEW.state = OLD.state THEN
		IF NEW.state_changed_at IS DISTINCT FROM OLD.state_changed_at
			OR NEW.state_changed_by IS DISTINCT FROM OLD.state_changed_by
			OR NEW.state_changed_role IS DISTINCT FROM OLD.state_changed_role
			OR NEW.state_reason IS DISTINCT FROM OLD.state_reason
			OR NEW.prior_state IS DISTINCT FROM OLD.prior_state
			OR NEW.deletion_after IS DISTINCT FROM OLD.deletion_after
			OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at THEN
			RAISE EXCEPTION 'pgcloak: key version %/%: state metadata changes only with a state transition',
				OLD.keyring_id, OLD.version USING ERRCODE = 'PGC01';
		END IF;
		IF NEW.wrapped_dek IS DISTINCT FROM OLD.wrapped_dek OR NEW.kek_name <> OLD.kek_name
			OR NEW.kek_key_id <> OLD.kek_key_id THEN
			-- re-wrap (kek rotate); destroying the key is only the transition to deleted
			NEW.rewrapped_at := now();
		ELSIF NEW.rewrapped_at IS DISTINCT FROM OLD.rewrapped_at THEN
			RAISE EXCEPTION 'pgcloak: key version %/%: rewrapped_at changes only with the wrapped DEK',
				OLD.keyring_id, OLD.version USING ERRCODE = 'PGC01';
		END IF;
		RETURN NEW;
	END IF;

	-- a state transition
	IF NOT pgcloak.transition_allowed(OLD.state, NEW.state) THEN
		RAISE EXCEPTION 'pgcloak: key version %/%: % -> % is not an allowed transition',
			OLD.keyring_id, OLD.version, OLD.state, NEW.state USING ERRCODE = 'PGC02';
	END IF;
	IF NEW.kek_name <> OLD.kek_name OR NEW.kek_key_id <> OLD.kek_key_id
		OR (NEW.state <> 'deleted' AND NEW.wrapped_dek IS DISTINCT FROM OLD.wrapped_dek) THEN
		RAISE EXCEPTION 'pgcloak: key version %/%: the wrapped DEK does not change in a state transition',
			OLD.keyring_id, OLD.version USING ERRCODE = 'PGC01';
	END IF;
	NEW.state_changed_at := now();
	NEW.state_changed_role := session_user;
	NEW.rewrapped_at := OLD.rewrapped_at;

	IF NEW.state = 'pending_deletion' THEN
		IF NEW.deletion_after IS NULL
			OR NEW.deletion_after < now() + interval '168 hours'
			OR NEW.deletion_after > now() + interval '720 hours' THEN
			RAISE EXCEPTION 'pgcloak: key version %/%: the deletion window must end 7 to 30 days from now',
				OLD.keyring_id, OLD.version USING ERRCODE = 'PGC03';
		END IF;
		NEW.prior_state := OLD.state;
		NEW.deleted_at := NULL;
	ELSIF NEW.state = 'deleted' THEN
		IF OLD.deletion_after IS NULL OR OLD.deletion_after > now() THEN
			RAISE EXCEPTION 'pgcloak: key version %/%: its deletion window ends at %',
				OLD.keyring_id, OLD.version, OLD.deletion_after USING ERRCODE = 'PGC03';
		END IF;
		IF NEW.wrapped_dek IS NOT NULL THEN
			RAISE EXCEPTION 'pgcloak: key version %/%: deleting a version destroys its wrapped DEK',
				OLD.keyring_id, OLD.version USING ERRCODE = 'PGC01';
		END IF;
		NEW.deletion_after := OLD.deletion_after;
		NEW.deleted_at := now();
		NEW.prior_state := NULL;
	ELSE
		NEW.deletion_after := NULL;
		NEW.deleted_at := NULL;
		NEW.prior_state := NULL;
	END IF;
	RETURN NEW;
END
$$;

CREATE TRIGGER key_versions_guard BEFORE INSERT OR UPDATE OR DELETE ON pgcloak.key_versions
	FOR EACH ROW EXECUTE FUNCTION pgcloak.key_versions_guard();

CREATE FUNCTION pgcloak.key_versions_refuse_truncate() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
	RAISE EXCEPTION 'pgcloak: % cannot be truncated', TG_TABLE_NAME USING ERRCODE = 'PGC01';
END
$$;

CREATE TRIGGER key_versions_no_truncate BEFORE TRUNCATE ON pgcloak.key_versions
	FOR EACH STATEMENT EXECUTE FUNCTION pgcloak.key_versions_refuse_truncate();
CREATE TRIGGER keyrings_no_truncate BEFORE TRUNCATE ON pgcloak.keyrings
	FOR EACH STATEMENT EXECUTE FUNCTION pgcloak.key_versions_refuse_truncate();

-- A version may leave the active state only when another one of its ring
-- became active in the same transaction (rotation, compromise response).
-- Checked at commit, because the old version must be demoted before the
-- new one is inserted (key_versions_one_active).
CREATE FUNCTION pgcloak.key_versions_keep_active() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pgcloak.key_versions
	               WHERE keyring_id = NEW.keyring_id AND state = 'active') THEN
		RAISE EXCEPTION 'pgcloak: key ring % would have no active version: version % leaves active only when a new version is activated in the same transaction (rotate)',
			NEW.keyring_id, NEW.version USING ERRCODE = 'PGC04';
	END IF;
	RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER key_versions_keep_active AFTER UPDATE OF state ON pgcloak.key_versions
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
	WHEN (OLD.state = 'active' AND NEW.state <> 'active')
	EXECUTE FUNCTION pgcloak.key_versions_keep_active();

-- Every new version and every state change is announced to other proxies
-- (LISTEN pgcloak_keys), delivered at commit. Payload:
-- '<keyring name>:<version>:<state>'; ring names may contain ':', so parse
-- from the right. A payload is a hint to re-read, never trusted as data.
CREATE FUNCTION pgcloak.key_versions_notify() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
	ring text;
BEGIN
	SELECT name INTO ring FROM pgcloak.keyrings WHERE id = NEW.keyring_id;
	PERFORM pg_notify('pgcloak_keys', ring || ':' || NEW.version || ':' || NEW.state);
	RETURN NULL;
END
$$;

CREATE TRIGGER key_versions_notify_insert AFTER INSERT ON pgcloak.key_versions
	FOR EACH ROW EXECUTE FUNCTION pgcloak.key_versions_notify();
CREATE TRIGGER key_versions_notify_state AFTER UPDATE OF state ON pgcloak.key_versions
	FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
	EXECUTE FUNCTION pgcloak.key_versions_notify();
