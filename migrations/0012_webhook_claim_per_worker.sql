-- The claim no longer counts the leases every worker holds per webhook:
-- each worker limits its own attempts per webhook and tells the claim how
-- many of each webhook's deliveries it holds (routes/webhook_dispatch.c).
-- The claim reads each enabled webhook's oldest due deliveries, as many
-- as that worker may still take of it: a webhook at its limit costs no
-- reading, and a long backlog of one webhook no longer hides the others'
-- due deliveries from a claim that read the oldest due rows of all
-- webhooks together (and stopped after a window of them).
--
-- The index of leased rows that the count used cost an index entry per
-- claim and, with lease_until in its predicate, made every claim a non-HOT
-- update; without it, setting a lease touches no indexed column.
DROP INDEX webhook_deliveries_leased_idx;
DROP INDEX webhook_deliveries_due_idx;
CREATE INDEX webhook_deliveries_webhook_due_idx ON webhook_deliveries (webhook_id, next_attempt_at, id)
    WHERE state = 'pending';
-- Room on each page for the claim's new row version, so that it can stay
-- on the page (a HOT update, no index entries); the fan-out fills pages
-- otherwise to the brim.
ALTER TABLE webhook_deliveries SET (fillfactor = 70);
