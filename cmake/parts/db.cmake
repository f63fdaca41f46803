target_sources(h2pg_core PRIVATE
  ${CMAKE_SOURCE_DIR}/db/db.c ${CMAKE_SOURCE_DIR}/db/conn.c ${CMAKE_SOURCE_DIR}/db/conninfo.c
  ${CMAKE_SOURCE_DIR}/db/pool.c ${CMAKE_SOURCE_DIR}/db/tx.c)
