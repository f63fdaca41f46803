-- Idempotency keys are kept for a retention window (IDEMPOTENCY_RETENTION_S,
-- 24 h by default) and no longer: a background task deletes the rows older
-- than that, oldest first, a batch at a time, and a claim treats such a row
-- as free. created_at (there since 0001) says how old a row is; this index
-- lets the pruner find the oldest rows without reading the whole table.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
COMMENT ON TABLE idempotency_keys IS 'Outcome (201 only) of a POST sent with an Idempotency-Key header, replayed when the same request is retried within the retention (IDEMPOTENCY_RETENTION_S); older rows are pruned.';
