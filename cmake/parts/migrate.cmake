# Schema migrations: db/migrate.c plus a generated source that embeds every
# migrations/*.sql into the binary, so `h2pg migrate` needs no files at run time.

# CONFIGURE_DEPENDS re-runs the glob at build time, so an added or removed
# migration file reconfigures without anyone touching a CMakeLists.
file(GLOB H2PG_MIGRATION_FILES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/migrations/*.sql)
list(SORT H2PG_MIGRATION_FILES)

# The list is a dependency of the generated source too: removing a file
# leaves every remaining input older than the output, and only the list's
# new timestamp makes the build regenerate it. Rewritten only on change.
set(H2PG_MIGRATION_DIR_OUT ${CMAKE_BINARY_DIR}/generated/db)
set(H2PG_MIGRATION_LIST ${H2PG_MIGRATION_DIR_OUT}/migrations.list)
string(REPLACE ";" "\n" h2pg_migration_list_text "${H2PG_MIGRATION_FILES}")
set(h2pg_migration_list_text "${h2pg_migration_list_text}\n")
set(h2pg_migration_list_old "")
if(EXISTS ${H2PG_MIGRATION_LIST})
  file(READ ${H2PG_MIGRATION_LIST} h2pg_migration_list_old)
endif()
if(NOT h2pg_migration_list_old STREQUAL h2pg_migration_list_text)
  file(WRITE ${H2PG_MIGRATION_LIST} "${h2pg_migration_list_text}")
endif()

set(H2PG_MIGRATIONS_C ${H2PG_MIGRATION_DIR_OUT}/migrations_embedded.c)
add_custom_command(
  OUTPUT ${H2PG_MIGRATIONS_C}
  COMMAND ${CMAKE_COMMAND} -DLIST=${H2PG_MIGRATION_LIST} -DOUTPUT=${H2PG_MIGRATIONS_C}
          -P ${CMAKE_SOURCE_DIR}/cmake/embed_migrations.cmake
  DEPENDS ${H2PG_MIGRATION_FILES} ${H2PG_MIGRATION_LIST} ${CMAKE_SOURCE_DIR}/cmake/embed_migrations.cmake
  COMMENT "Embedding migrations/*.sql"
  VERBATIM)

target_sources(h2pg_core PRIVATE ${CMAKE_SOURCE_DIR}/db/migrate.c ${H2PG_MIGRATIONS_C})

if(BUILD_TESTING)
  # The benchmark spec's fortunes, which migrations/0002_benchmark.sql must
  # reproduce byte for byte. The spec lives beside the repository here; point
  # this elsewhere on other machines. If it is missing the test fails.
  set(h2pg_fortunes_default "")
  foreach(candidate ${CMAKE_SOURCE_DIR}/spec/fortunes.tsv ${CMAKE_SOURCE_DIR}/../shared/spec/fortunes.tsv)
    if(h2pg_fortunes_default STREQUAL "" AND EXISTS ${candidate})
      get_filename_component(h2pg_fortunes_default ${candidate} REALPATH)
    endif()
  endforeach()
  set(H2PG_FORTUNES_TSV "${h2pg_fortunes_default}" CACHE FILEPATH "The TechEmpower fortunes.tsv of the API spec")

  h2pg_test(test_db_migrate
    SOURCES tests/db/test_migrate.c tests/support/pg.c
    LIBS h2pg_core Threads::Threads
    LABELS integration
    TIMEOUT 300)
  target_compile_definitions(test_db_migrate PRIVATE
    H2PG_FORTUNES_TSV="${H2PG_FORTUNES_TSV}"
    H2PG_MIGRATIONS_DIR="${CMAKE_SOURCE_DIR}/migrations")
endif()
