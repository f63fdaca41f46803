# GET /openapi.json: routes/openapi.c serves openapi/openapi.json, which a
# generated source embeds byte for byte. The build regenerates it whenever
# the document (or the script) changes, and fails on a document that is not
# JSON. tests/openapi checks the document with an OpenAPI 3.1 validator and
# a running server against it.

set(H2PG_OPENAPI_JSON ${CMAKE_SOURCE_DIR}/openapi/openapi.json)
set(H2PG_OPENAPI_C ${CMAKE_BINARY_DIR}/generated/routes/openapi_embedded.c)
add_custom_command(
  OUTPUT ${H2PG_OPENAPI_C}
  COMMAND ${CMAKE_COMMAND} -DINPUT=${H2PG_OPENAPI_JSON} -DOUTPUT=${H2PG_OPENAPI_C} -DSYMBOL=routes_openapi__document
          -P ${CMAKE_SOURCE_DIR}/cmake/embed_openapi.cmake
  DEPENDS ${H2PG_OPENAPI_JSON} ${CMAKE_SOURCE_DIR}/cmake/embed_openapi.cmake
  COMMENT "Embedding openapi/openapi.json"
  VERBATIM)

target_sources(h2pg_core PRIVATE ${CMAKE_SOURCE_DIR}/routes/openapi.c ${H2PG_OPENAPI_C})

if(BUILD_TESTING)
  # Node.js and the validators from npm (tests/openapi/package-lock.json);
  # run.sh installs what is missing and needs DATABASE_URL (with-postgres.sh).
  add_test(NAME test_openapi COMMAND ${CMAKE_SOURCE_DIR}/tests/openapi/run.sh $<TARGET_FILE:h2pg>)
  set_tests_properties(test_openapi PROPERTIES LABELS integration TIMEOUT 600)
endif()
