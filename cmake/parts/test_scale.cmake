# Scaling out (tests/scale/): several h2pg processes behind nginx started
# together on a fresh database, the service behind a transaction-pooling
# PgBouncer, and reads sent to a streaming replica. Shell-driven: the real
# binary, Debian's nginx, pgbouncer and PostgreSQL 15 (installed by the
# scripts when missing). scale_transfers is the transfer-invariant client
# the scripts point at whatever topology they built.
#
# test_scale_replicas and test_scale_pgbouncer use DATABASE_URL
# (with-postgres.sh); test_scale_read_replica starts a primary and a replica
# of its own. The three share a lock: each puts the 2 cores under load.
if(BUILD_TESTING)
  add_executable(scale_transfers ${CMAKE_SOURCE_DIR}/tests/scale/transfers.c)
  target_link_libraries(scale_transfers PRIVATE PkgConfig::CURL PkgConfig::PQ PkgConfig::JANSSON Threads::Threads)

  foreach(t replicas pgbouncer read_replica)
    add_test(NAME test_scale_${t}
      COMMAND ${CMAKE_SOURCE_DIR}/tests/scale/${t}.sh $<TARGET_FILE:h2pg> $<TARGET_FILE:scale_transfers>)
    set_tests_properties(test_scale_${t} PROPERTIES LABELS integration TIMEOUT 600 RESOURCE_LOCK h2pg_scale)
  endforeach()
endif()
