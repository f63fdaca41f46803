target_sources(h2pg_core PRIVATE ${CMAKE_SOURCE_DIR}/server/config.c)
if(BUILD_TESTING)
  h2pg_test(test_server_config SOURCES tests/server/test_config.c LIBS h2pg_core LABELS unit)
endif()
