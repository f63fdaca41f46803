# Tests of the database layer: the pool and transactions against a real
# PostgreSQL (run through scripts/with-postgres.sh), conninfo without one.
if(BUILD_TESTING)
  h2pg_test(test_db_pool
    SOURCES tests/db/test_pool.c tests/support/pg.c
    LIBS h2pg_core Threads::Threads
    LABELS integration
    TIMEOUT 300)
  h2pg_test(test_db_tx
    SOURCES tests/db/test_tx.c tests/support/pg.c
    LIBS h2pg_core Threads::Threads
    LABELS integration
    TIMEOUT 300)
  h2pg_test(test_db_conninfo
    SOURCES tests/db/test_conninfo.c
    LIBS h2pg_core
    LABELS unit)
endif()
