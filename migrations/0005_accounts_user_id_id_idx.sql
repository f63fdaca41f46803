-- A user's accounts are listed by keyset pagination on id
-- (GET /users/{id}/accounts, and the first 100 in GET /users/{id}), as
-- orders are: (user_id, id) reads a page straight from the index, where
-- (user_id) alone made each page fetch and sort all of the user's accounts.
-- It serves every lookup by user_id the old index did (the foreign key's
-- cascade, the lock of a user's accounts before a deletion), so that goes.
CREATE INDEX accounts_user_id_id_idx ON accounts (user_id, id);
DROP INDEX accounts_user_id_idx;
