-- Whose events they are (issue 15): GET /events shows administrators every
-- event and a user only the events about itself, its orders and accounts,
-- and the transfers that touch its accounts. Each event carries the users
-- it belongs to, so a stream filters by comparing two integers per event,
-- never by a query per event and subscriber: owner_id (the user created,
-- the owner of the order or account, the owner of a transfer's
-- from_account_id) and other_owner_id (the owner of a transfer's
-- to_account_id when that is another user). NULL: administrators only
-- (an event of a type this migration does not know, or whose rows are
-- gone).
--
-- They are set when the event is emitted, in the writer's own transaction:
-- it holds the rows it changed (a transfer has both accounts locked), so
-- the owners are those of the change, and an account's user_id never
-- changes afterwards. The sequencer only copies them.
ALTER TABLE events_pending ADD COLUMN owner_id bigint, ADD COLUMN other_owner_id bigint;
ALTER TABLE events ADD COLUMN owner_id bigint, ADD COLUMN other_owner_id bigint;
-- a user's catch-up (GET /events with Last-Event-ID or ?after=) reads its
-- events in id order from these, without walking everybody else's
CREATE INDEX events_owner_id_idx ON events (owner_id, id) WHERE owner_id IS NOT NULL;
CREATE INDEX events_other_owner_id_idx ON events (other_owner_id, id) WHERE other_owner_id IS NOT NULL;

-- The id at key k of an event's data, NULL unless it is a plain integer
-- (an emit must not fail on data it does not understand).
CREATE FUNCTION events_id_at(p jsonb, k text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p -> k) = 'number' AND (p ->> k) ~ '^[0-9]{1,18}$' THEN (p ->> k)::bigint END
$$;

CREATE FUNCTION events_owners(p_type text, p_data jsonb, OUT owner_id bigint, OUT other_owner_id bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    CASE p_type
    WHEN 'user.created' THEN
        owner_id := events_id_at(p_data, 'id');
    WHEN 'order.created', 'account.created' THEN
        owner_id := events_id_at(p_data, 'user_id');
    WHEN 'transfer.created' THEN
        SELECT a.user_id INTO owner_id FROM accounts a WHERE a.id = events_id_at(p_data, 'from_account_id');
        SELECT a.user_id INTO other_owner_id FROM accounts a WHERE a.id = events_id_at(p_data, 'to_account_id');
        IF owner_id IS NULL OR other_owner_id = owner_id THEN
            owner_id := coalesce(owner_id, other_owner_id);
            other_owner_id := NULL;
        END IF;
    ELSE
        NULL;
    END CASE;
END
$$;
COMMENT ON FUNCTION events_owners(text, jsonb) IS 'The users an event belongs to (GET /events shows it to them besides administrators): the user created, the owner of the order or account, the owners of a transfer''s two accounts.';

-- What the service's writers call, last in their transaction: they know
-- the owners from the rows they wrote or hold locked (routes/users.c,
-- orders.c, accounts.c; transfers.c through routes/idempotency.c), which
-- costs nothing more than the insert. A transfer within one user's
-- accounts belongs to that user once.
CREATE FUNCTION events_emit(p_type text, p_data jsonb, p_owner_id bigint, p_other_owner_id bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    entry bigint;
BEGIN
    INSERT INTO events_pending (type, data, owner_id, other_owner_id)
    VALUES (p_type, p_data, coalesce(p_owner_id, p_other_owner_id),
            CASE WHEN p_other_owner_id <> p_owner_id THEN p_other_owner_id END)
    RETURNING seq INTO entry;
    PERFORM pg_notify('h2pg_outbox', '');
    RETURN entry;
END
$$;

-- Any other writer (an older copy of the service during an upgrade, a
-- script): the owners worked out from the data, which for a transfer
-- costs two lookups of the accounts that the writers above avoid.
CREATE OR REPLACE FUNCTION events_emit(p_type text, p_data jsonb) RETURNS bigint
LANGUAGE sql AS $$
    SELECT events_emit(p_type, p_data, w.owner_id, w.other_owner_id) FROM events_owners(p_type, p_data) w
$$;

CREATE OR REPLACE FUNCTION events_sequence(p_limit int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    moved int;
BEGIN
    PERFORM pg_advisory_xact_lock(7508187118166240884);
    WITH taken AS (
        DELETE FROM events_pending
        WHERE seq IN (SELECT seq FROM events_pending ORDER BY seq LIMIT p_limit)
        RETURNING seq, type, created_at, data, owner_id, other_owner_id
    )
    INSERT INTO events (id, type, created_at, data, owner_id, other_owner_id)
    SELECT nextval('events_id_seq'), type, created_at, data, owner_id, other_owner_id
    FROM (SELECT * FROM taken ORDER BY seq) ordered;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved > 0 THEN
        PERFORM pg_notify('h2pg_events', '');
    END IF;
    RETURN moved;
END
$$;

-- Events from before this migration: their owners as an emit would have
-- found them (a transfer whose accounts are gone stays administrators').
UPDATE events_pending e SET (owner_id, other_owner_id) = (SELECT w.owner_id, w.other_owner_id FROM events_owners(e.type, e.data) w)
WHERE e.type IN ('user.created', 'order.created', 'account.created', 'transfer.created');
UPDATE events e SET (owner_id, other_owner_id) = (SELECT w.owner_id, w.other_owner_id FROM events_owners(e.type, e.data) w)
WHERE e.type IN ('user.created', 'order.created', 'account.created', 'transfer.created');
