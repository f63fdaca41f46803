-- An email names one user whatever its case: U1@EXAMPLE.COM and
-- u1@example.com are the same address to everyone who sends mail, so they
-- are the same to the unique index too (a duplicate is 409). lower() follows
-- the database's collation, as every comparison of text here does.
--
-- Users created before this may hold emails that differ only in case; the
-- index cannot be built over them, and which of the users keeps the address
-- is not the migration's to decide: it stops, saying how to find them.
DO $$
DECLARE
    clashes bigint;
BEGIN
    SELECT count(*) INTO clashes FROM (SELECT FROM users GROUP BY lower(email) HAVING count(*) > 1) c;
    IF clashes > 0 THEN
        RAISE EXCEPTION '% email(s) belong to more than one user when case is ignored; list them with '
            '"SELECT lower(email), array_agg(id ORDER BY id) FROM users GROUP BY 1 HAVING count(*) > 1", give each '
            'user an email of its own, then migrate again', clashes;
    END IF;
END
$$;

-- The index replaces the constraint 0001 made; like it, a violation is
-- SQLSTATE 23505, which the service answers with 409.
ALTER TABLE users DROP CONSTRAINT users_email_key;
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
COMMENT ON TABLE users IS 'People who use the service; email is unique, compared case-insensitively (409 on a duplicate).';
