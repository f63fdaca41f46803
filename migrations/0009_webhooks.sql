-- Webhooks: subscriptions to the events outbox (0006), and one delivery
-- row per (webhook, event) that a dispatcher on any replica claims with a
-- lease, so several replicas share the work and a replica that dies
-- mid-delivery loses nothing: its lease runs out and another takes over.
CREATE TABLE webhooks (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url        text NOT NULL CHECK (length(url) <= 2048),
    events     text[] NOT NULL CHECK (cardinality(events) > 0),
    secret     text NOT NULL,
    disabled   boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- the last event id at creation: the webhook gets only later events
    after_event_id bigint NOT NULL DEFAULT 0
);

CREATE TABLE webhook_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        bigint NOT NULL,
    type            text NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    next_attempt_at timestamptz DEFAULT now(),
    delivered_at    timestamptz,
    lease_until     timestamptz,
    UNIQUE (webhook_id, event_id)
);
-- the claim: due pending rows, oldest first; small, since settled rows leave it
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at, id) WHERE state = 'pending';
-- the deliveries page of one webhook is served by the UNIQUE index's
-- leading column plus the primary key
CREATE INDEX webhook_deliveries_webhook_id_idx ON webhook_deliveries (webhook_id, id);

-- How far the fan-out has read the outbox. One row; a dispatcher locks it
-- (FOR UPDATE) for its fan-out step, so one replica at a time turns events
-- into deliveries, and a crash mid-step rolls the cursor back with the rows.
CREATE TABLE webhook_fanout (
    only_row      boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_event_id bigint NOT NULL
);
INSERT INTO webhook_fanout (last_event_id) SELECT COALESCE(max(id), 0) FROM events;
