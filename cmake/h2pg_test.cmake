# h2pg_test(name SOURCES <paths relative to the repo root> LIBS <targets> [LABELS ..] [TIMEOUT s])
# Every test is a Check program registered with CTest.
function(h2pg_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  set(srcs)
  foreach(src ${T_SOURCES})
    list(APPEND srcs ${CMAKE_SOURCE_DIR}/${src})
  endforeach()
  add_executable(${name} ${srcs})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/tests)
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CHECK)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "${T_LABELS}"
    ENVIRONMENT "CK_DEFAULT_TIMEOUT=60")
endfunction()

