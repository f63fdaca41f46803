# Deadlines, cancellation, pool limits and backstops (tests/routes/
# test_deadlines.c), and database outages under load against a PostgreSQL
# of the test's own that it stops and starts (tests/routes/test_outage.c,
# tests/support/pgctl.c). Both measure times that matter to the contract,
# so they run alone rather than beside other tests.
if(BUILD_TESTING)
  h2pg_test(test_deadlines
    SOURCES tests/routes/test_deadlines.c
    LIBS h2pg_test_support
    LABELS integration
    TIMEOUT 900)
  target_link_libraries(test_deadlines PRIVATE Threads::Threads)
  add_dependencies(test_deadlines h2pg)

  h2pg_test(test_outage
    SOURCES tests/routes/test_outage.c tests/support/pgctl.c
    LIBS h2pg_test_support
    LABELS integration
    TIMEOUT 900)
  target_link_libraries(test_outage PRIVATE Threads::Threads)
  add_dependencies(test_outage h2pg)

  set_tests_properties(test_deadlines test_outage PROPERTIES RUN_SERIAL TRUE)
endif()
