# routes/input.c: what clients send the REST handlers, parsed and validated
# without a request or a database (the handlers and fuzz/ both call it).
target_sources(h2pg_core PRIVATE ${CMAKE_SOURCE_DIR}/routes/input.c)
