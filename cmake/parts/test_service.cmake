# The service end to end: the real binary, started by the tests as a child
# process and spoken to over real sockets (tests/support/http.c, server.c).
if(BUILD_TESTING)
  if(NOT CURL_FOUND)
    message(FATAL_ERROR "the integration tests need libcurl (apt-get install libcurl4-openssl-dev)")
  endif()

  # Shared by every integration test of the running service. pg.c is also
  # compiled straight into test_db_migrate (cmake/parts/migrate.cmake); no
  # target links both, so its symbols are never defined twice.
  add_library(h2pg_test_support STATIC
    ${CMAKE_SOURCE_DIR}/tests/support/pg.c
    ${CMAKE_SOURCE_DIR}/tests/support/http.c
    ${CMAKE_SOURCE_DIR}/tests/support/server.c)
  target_include_directories(h2pg_test_support PUBLIC ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/tests)
  target_link_libraries(h2pg_test_support PUBLIC PkgConfig::CURL PkgConfig::PQ PkgConfig::JANSSON PkgConfig::CHECK)
  target_compile_definitions(h2pg_test_support PRIVATE H2PG_BINARY="$<TARGET_FILE:h2pg>")

  h2pg_test(test_service
    SOURCES tests/routes/test_service.c
    LIBS h2pg_test_support h2pg_core
    LABELS integration
    TIMEOUT 600)
  add_dependencies(test_service h2pg)
  target_compile_definitions(test_service PRIVATE H2PG_MIGRATIONS_DIR="${CMAKE_SOURCE_DIR}/migrations")
endif()
