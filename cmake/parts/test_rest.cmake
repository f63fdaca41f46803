# The REST API, the transfer invariant under concurrent clients, and the
# streaming export, end to end against the real binary (tests/routes/).
# h2pg_test_support comes from test_service.cmake; link names are resolved
# when the build is generated, so the order of the parts does not matter.
if(BUILD_TESTING)
  foreach(t rest transfers export)
    h2pg_test(test_${t}
      SOURCES tests/routes/test_${t}.c
      LIBS h2pg_test_support h2pg_core
      LABELS integration
      TIMEOUT 900)
    target_link_libraries(test_${t} PRIVATE Threads::Threads)
    add_dependencies(test_${t} h2pg)
  endforeach()
endif()
