-- The fan-out reads the outbox per webhook, as far as the dispatchers can
-- take: each webhook keeps its own cursor (fanned_to, the last event id
-- turned into its deliveries), and a delivery row is made only when a
-- worker leases it. Before, one cursor for all webhooks (webhook_fanout)
-- made a row for every event and subscribed webhook at once: a receiver
-- that takes 2 s per delivery accumulated thousands of pending rows a
-- second, each an insert into every index of webhook_deliveries, and the
-- API paid for them (bench/webhooks.sh, slow receiver: p99 +10-15%).
-- Now a slow webhook's backlog stays in the outbox (events), which is
-- written anyway, and costs a row only when it is attempted.
--
-- Each fan-out locks the webhook rows it reads (FOR NO KEY UPDATE SKIP
-- LOCKED, routes/webhook_dispatch.c), so webhooks are fanned out one
-- statement at a time each, by any replica, and a webhook's delivery ids
-- grow with its event ids. With deliveries of different webhooks made by
-- different statements, ids no longer follow event ids across webhooks
-- (0013 relied on that): the deliveries page reads (webhook_id, id) again,
-- which takes the place of the unique (webhook_id, event_id) index. The
-- cursor under its row lock is what keeps a delivery from being made
-- twice, as the one cursor's lock was.
ALTER TABLE webhooks ADD COLUMN fanned_to bigint;
UPDATE webhooks SET fanned_to = GREATEST(after_event_id, (SELECT last_event_id FROM webhook_fanout));
ALTER TABLE webhooks ALTER COLUMN fanned_to SET NOT NULL;
DROP TABLE webhook_fanout;
CREATE INDEX webhook_deliveries_webhook_id_idx ON webhook_deliveries (webhook_id, id);
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_webhook_id_event_id_key;
