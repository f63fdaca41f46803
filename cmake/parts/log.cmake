target_sources(h2pg_core PRIVATE ${CMAKE_SOURCE_DIR}/server/log.c)
