-- The transactional outbox (issue 14): one event per committed change,
-- written by the transaction that makes the change, so an event exists if
-- and only if the change committed. Readers (GET /events, the webhook
-- dispatcher) page through it by id and resume after the last id they saw,
-- which is only safe if ids increase in commit order: a sequence alone
-- does not give that (a transaction can draw id 7, another draw 8 and
-- commit first; a reader that saw 8 would skip 7 for ever). So events_emit
-- takes a transaction-level advisory lock before it draws the id: writers
-- of events pass one at a time from that moment to their commit, and a
-- smaller id can never commit after a larger one. Writers call it last,
-- just before COMMIT, so the lock is held for the commit alone.
CREATE TABLE events (
    id         bigint PRIMARY KEY,
    type       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    data       jsonb NOT NULL
);
CREATE SEQUENCE events_id_seq AS bigint OWNED BY events.id;
CREATE INDEX events_created_at_idx ON events (created_at);
COMMENT ON TABLE events IS 'Outbox: one row per committed change (user/order/account/transfer .created), ids in commit order; read by GET /events and the webhook dispatcher, pruned after EVENTS_RETENTION_S.';

-- Inserts an event and wakes the listeners at commit (NOTIFY is delivered
-- only if the transaction commits). The lock key is arbitrary but fixed:
-- the bytes of 'h2pgevnt'.
CREATE FUNCTION events_emit(p_type text, p_data jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7508187118166240884);
    new_id := nextval('events_id_seq');
    INSERT INTO events (id, type, data) VALUES (new_id, p_type, p_data);
    PERFORM pg_notify('h2pg_events', new_id::text);
    RETURN new_id;
END
$$;
