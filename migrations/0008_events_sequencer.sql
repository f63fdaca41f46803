-- Event ids in commit order without a lock on the writers' path.
--
-- 0006 made ids increase in commit order with a transaction-level advisory
-- lock that every writer took in events_emit and held to its commit: the
-- writers of events passed one at a time, and measured with pgbench
-- (POST /transfers' statements, 32 clients, 2 cores) that cut the
-- throughput from 6,365 to 1,903 transactions/s; in the service, POST
-- /transfers fell from 4,331 to 2,475 requests/s. Under load a waiter that
-- is granted the lock must still get a CPU to use it, and everybody behind
-- it waits too.
--
-- Now a writer only inserts its event into events_pending (no lock, no id
-- yet) and sends a NOTIFY that its commit delivers. A sequencer (a task of
-- the service; any number of copies may run one, they take turns on the
-- advisory lock) moves what is pending into events, drawing the ids as it
-- goes, in one transaction per batch, and then notifies h2pg_events. As
-- sequencer transactions run one at a time, each id is larger than every
-- id committed before it: a reader that has seen id N has seen every
-- event below N that will ever exist, so "every event after N" (GET
-- /events, the webhook dispatcher) never skips one. An event exists if and
-- only if its change committed: a pending row is written in the change's
-- own transaction, and the move keeps it (same type, data and created_at,
-- the time of the change).
CREATE TABLE events_pending (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    data       jsonb NOT NULL
);
COMMENT ON TABLE events_pending IS 'Outbox entries committed but not yet numbered: events_sequence moves them into events, ids in commit order.';

-- Called by writers, last in their transaction. Returns the pending
-- entry's number (not the event id, which is drawn later).
CREATE OR REPLACE FUNCTION events_emit(p_type text, p_data jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    entry bigint;
BEGIN
    INSERT INTO events_pending (type, data) VALUES (p_type, p_data) RETURNING seq INTO entry;
    PERFORM pg_notify('h2pg_outbox', '');
    RETURN entry;
END
$$;

-- Moves up to p_limit pending entries, oldest first, into events; returns
-- how many. One caller at a time (the lock is held to the commit), so ids
-- increase in commit order across every copy of the service.
CREATE FUNCTION events_sequence(p_limit int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    moved int;
BEGIN
    PERFORM pg_advisory_xact_lock(7508187118166240884);
    WITH taken AS (
        DELETE FROM events_pending
        WHERE seq IN (SELECT seq FROM events_pending ORDER BY seq LIMIT p_limit)
        RETURNING seq, type, created_at, data
    )
    INSERT INTO events (id, type, created_at, data)
    SELECT nextval('events_id_seq'), type, created_at, data
    FROM (SELECT * FROM taken ORDER BY seq) ordered;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved > 0 THEN
        PERFORM pg_notify('h2pg_events', '');
    END IF;
    RETURN moved;
END
$$;
