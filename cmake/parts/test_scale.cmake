# Scaling out (tests/scale/): several h2pg processes behind nginx started
# together on a fresh database, the service behind a transaction-pooling
# PgBouncer, reads sent to a streaming replica, and the primary killed
# under a transfer load and its synchronous standby promoted (failover).
# Shell-driven: the real binary, Debian's nginx, pgbouncer and PostgreSQL 15
# (installed by the scripts when missing). scale_transfers is the
# transfer-invariant client the scripts point at whatever topology they
# built.
#
# test_scale_replicas and test_scale_pgbouncer use DATABASE_URL
# (with-postgres.sh); test_scale_read_replica and test_scale_failover start a
# primary and a standby of their own. They share a lock: each puts the 2
# cores under load (and failover's timing bounds want the cores to itself).
if(BUILD_TESTING)
  add_executable(scale_transfers ${CMAKE_SOURCE_DIR}/tests/scale/transfers.c)
  target_link_libraries(scale_transfers PRIVATE PkgConfig::CURL PkgConfig::PQ PkgConfig::JANSSON Threads::Threads)

  foreach(t replicas pgbouncer read_replica failover)
    add_test(NAME test_scale_${t}
      COMMAND ${CMAKE_SOURCE_DIR}/tests/scale/${t}.sh $<TARGET_FILE:h2pg> $<TARGET_FILE:scale_transfers>)
    set_tests_properties(test_scale_${t} PROPERTIES LABELS integration TIMEOUT 600 RESOURCE_LOCK h2pg_scale)
  endforeach()
endif()
