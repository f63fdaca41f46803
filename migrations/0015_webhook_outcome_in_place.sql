-- A delivery's first attempt and its outcome, in place: PostgreSQL updates
-- a row "HOT" (a new version on the same page, no new entry in any index)
-- only when no column that an index covers or tests changes. The due index
-- covered next_attempt_at and tested state = 'pending', and the fan-out made
-- every delivery due at once (next_attempt_at defaulted to now()), so a
-- delivery cost an entry in each of the three indexes when the fan-out made
-- it and, when its outcome was recorded (state and next_attempt_at change),
-- a new entry in the other two: five index entries per delivery.
--
-- Now next_attempt_at is set only when an attempt is due that nobody holds:
-- a retry (the outcome of a failed attempt), a released claim, or a first
-- attempt whose lease ran out with no outcome (its worker died; the
-- dispatchers' sweep, routes/webhook_dispatch.c, finds those from each
-- webhook's swept_to in webhook_sweeps, below which every delivery is
-- settled or due; a table of its own, so that the sweep never holds the
-- webhook's row lock, which would make a fan-out pass the webhook by). The
-- due index holds only those rows, and tests no other column, so the fan-out
-- makes a delivery with two index entries (the primary key and
-- (webhook_id, id)) and a first attempt's outcome changes no indexed value
-- (state is in no index now; next_attempt_at stays NULL). Pages half full
-- leave each row's outcome room on its page (at 70, four in ten outcomes
-- found room). Measured with pgbench, 64 deliveries made and then settled
-- per transaction, two clients: 1,550 transactions a second before, 2,300
-- after; 95% of the outcomes HOT.
DROP INDEX webhook_deliveries_webhook_due_idx;
ALTER TABLE webhook_deliveries ALTER COLUMN next_attempt_at SET DEFAULT NULL;
ALTER TABLE webhook_deliveries SET (fillfactor = 50);
-- a settled delivery's next_attempt_at is NULL already (the outcome clears it)
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (webhook_id, next_attempt_at, id)
    WHERE next_attempt_at IS NOT NULL;
-- A webhook without a row here has swept_to 0. Every delivery there is
-- now is either settled or due (pending ones have a next_attempt_at), so
-- the sweep can start after the last of them.
CREATE TABLE webhook_sweeps (
    webhook_id bigint PRIMARY KEY REFERENCES webhooks (id) ON DELETE CASCADE,
    swept_to   bigint NOT NULL
);
INSERT INTO webhook_sweeps (webhook_id, swept_to)
    SELECT w.id, COALESCE(max(d.id), 0) FROM webhooks w LEFT JOIN webhook_deliveries d ON d.webhook_id = w.id
    GROUP BY w.id;
