-- The service's own data. Tables and columns carry the names of the API's
-- JSON fields (users.email, orders.price_cents, ...), so an operator can read
-- the database without a map. Money is integer cents, never a float.

CREATE TABLE users (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    email      text NOT NULL CHECK (char_length(email) <= 320),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- named so the service can map a unique violation on it to 409
    CONSTRAINT users_email_key UNIQUE (email)
);
COMMENT ON TABLE users IS 'People who use the service; email is unique (409 on a duplicate).';

CREATE TABLE orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    item        text NOT NULL CHECK (char_length(item) BETWEEN 1 AND 200),
    quantity    integer NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    total_cents bigint NOT NULL CHECK (total_cents >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- a user's orders are listed by keyset pagination on id
CREATE INDEX orders_user_id_id_idx ON orders (user_id, id);
COMMENT ON TABLE orders IS 'Orders a user placed; deleted together with the user.';

CREATE TABLE accounts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- the last line of defence of the "no balance is ever negative" invariant
    balance_cents bigint NOT NULL CHECK (balance_cents >= 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_user_id_idx ON accounts (user_id);
COMMENT ON TABLE accounts IS 'Money accounts of a user; the balance moves only through transfers after the opening deposit.';

CREATE TABLE transfers (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NO ACTION on purpose: transfer history is never deleted, so an account
    -- that took part in a transfer cannot disappear under it
    from_account_id bigint NOT NULL REFERENCES accounts (id),
    to_account_id   bigint NOT NULL REFERENCES accounts (id),
    amount_cents    bigint NOT NULL CHECK (amount_cents > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (from_account_id <> to_account_id)
);
CREATE INDEX transfers_from_account_id_idx ON transfers (from_account_id);
CREATE INDEX transfers_to_account_id_idx ON transfers (to_account_id);
COMMENT ON TABLE transfers IS 'Money moved between two accounts; append-only history.';

CREATE TABLE idempotency_keys (
    key           text PRIMARY KEY,
    request_hash  text NOT NULL,
    status        integer NOT NULL,
    response_body text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE idempotency_keys IS 'First response to a POST sent with an Idempotency-Key header, replayed when the same request is retried.';
