-- The claim no longer counts the leases every worker holds per webhook:
-- each worker limits its own attempts per webhook and tells the claim what
-- it holds (routes/webhook_dispatch.c). The index of leased rows that the
-- count used cost an index entry per claim, and because lease_until was in
-- its predicate, no claim could be a HOT update; without it, setting a
-- lease touches no indexed column.
DROP INDEX webhook_deliveries_leased_idx;
