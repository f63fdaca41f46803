# Hostile clients against the real binary (tests/routes/test_hostile.c):
# slowloris, unfinished bodies, oversized heads and bodies, pipelining,
# clients that read nothing, bad bytes and numbers, deep and duplicate JSON,
# each while a well-behaved client is served and the server's RSS watched.
if(BUILD_TESTING)
  h2pg_test(test_hostile
    SOURCES tests/routes/test_hostile.c
    LIBS h2pg_test_support
    LABELS integration
    TIMEOUT 600)
  target_link_libraries(test_hostile PRIVATE Threads::Threads)
  add_dependencies(test_hostile h2pg)
endif()
