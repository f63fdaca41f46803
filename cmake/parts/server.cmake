target_sources(h2pg_core PRIVATE
  ${CMAKE_SOURCE_DIR}/server/arena.c ${CMAKE_SOURCE_DIR}/server/http.c ${CMAKE_SOURCE_DIR}/server/server.c ${CMAKE_SOURCE_DIR}/server/metrics.c ${CMAKE_SOURCE_DIR}/server/proxy.c
  ${CMAKE_SOURCE_DIR}/routes/routes.c ${CMAKE_SOURCE_DIR}/routes/health.c ${CMAKE_SOURCE_DIR}/routes/bench.c
  ${CMAKE_SOURCE_DIR}/routes/common.c ${CMAKE_SOURCE_DIR}/routes/users.c ${CMAKE_SOURCE_DIR}/routes/orders.c
  ${CMAKE_SOURCE_DIR}/routes/accounts.c ${CMAKE_SOURCE_DIR}/routes/export.c)

add_executable(h2pg ${CMAKE_SOURCE_DIR}/server/main.c)
target_link_libraries(h2pg PRIVATE h2pg_core)

if(BUILD_TESTING)
  h2pg_test(test_server_proxy SOURCES tests/server/test_proxy.c LIBS h2pg_core LABELS unit)
  h2pg_test(test_routes_common SOURCES tests/routes/test_common.c LIBS h2pg_core LABELS unit)
endif()
