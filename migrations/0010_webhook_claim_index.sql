-- The claim counts, per webhook, the deliveries in flight (pending with a
-- lease): with only webhook_deliveries_webhook_id_idx that walked every
-- delivery the webhook ever had, once per due row, and a claim under load
-- (16,000 pending, more delivered) took long enough to hold deliveries to
-- about 50 a second. Rows with a lease are the few in flight (and the
-- rare ones whose holder died); an outcome clears the lease.
CREATE INDEX webhook_deliveries_leased_idx ON webhook_deliveries (webhook_id)
    WHERE state = 'pending' AND lease_until IS NOT NULL;
