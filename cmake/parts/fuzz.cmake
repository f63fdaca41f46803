# Fuzz targets for what parses untrusted bytes (fuzz/fuzz_<target>.c).
#
# Every build with tests, whatever the compiler, replays each target's seeds
# (fuzz/corpus/<target>) and every crash found so far
# (fuzz/regressions/<target>) through the target's checks with
# fuzz/replay.c: test_fuzz_replay_<target>. With H2PG_FUZZ=ON (clang and its
# libFuzzer runtime) each target is also built as a libFuzzer binary,
# fuzz_<target>, with the whole service code instrumented for coverage;
# scripts/fuzz.sh builds and runs them (with -DH2PG_SANITIZE=ON for ASan +
# UBSan).
set(H2PG_FUZZ_TARGETS router query body headers forwarded)

if(H2PG_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "H2PG_FUZZ=ON needs clang (libFuzzer): configure with -DCMAKE_C_COMPILER=clang "
                        "(scripts/fuzz.sh does)")
  endif()
  include(CheckCSourceCompiles)
  set(CMAKE_REQUIRED_FLAGS -fsanitize=fuzzer)
  set(CMAKE_REQUIRED_LINK_OPTIONS -fsanitize=fuzzer)
  check_c_source_compiles([[
    #include <stddef.h>
    #include <stdint.h>
    int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }
  ]] H2PG_HAVE_LIBFUZZER)
  unset(CMAKE_REQUIRED_FLAGS)
  unset(CMAKE_REQUIRED_LINK_OPTIONS)
  if(NOT H2PG_HAVE_LIBFUZZER)
    message(FATAL_ERROR "H2PG_FUZZ=ON: ${CMAKE_C_COMPILER} cannot link -fsanitize=fuzzer; "
                        "install libclang-rt-14-dev (scripts/deps.sh fuzz)")
  endif()
  # coverage feedback from all of the service's code; whatever links it
  # (the service, the tests) then links the coverage callbacks too
  target_compile_options(h2pg_core PRIVATE -fsanitize=fuzzer-no-link)
  target_link_options(h2pg_core INTERFACE -fsanitize=fuzzer-no-link)
  foreach(t ${H2PG_FUZZ_TARGETS})
    add_executable(fuzz_${t} ${CMAKE_SOURCE_DIR}/fuzz/fuzz_${t}.c)
    target_include_directories(fuzz_${t} PRIVATE ${CMAKE_SOURCE_DIR})
    target_compile_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(fuzz_${t} PRIVATE h2pg_core)
  endforeach()
  add_custom_target(fuzz_targets)
  list(TRANSFORM H2PG_FUZZ_TARGETS PREPEND fuzz_ OUTPUT_VARIABLE h2pg_fuzz_bins)
  add_dependencies(fuzz_targets ${h2pg_fuzz_bins})
endif()

if(BUILD_TESTING)
  foreach(t ${H2PG_FUZZ_TARGETS})
    add_executable(fuzz_replay_${t} ${CMAKE_SOURCE_DIR}/fuzz/replay.c ${CMAKE_SOURCE_DIR}/fuzz/fuzz_${t}.c)
    target_include_directories(fuzz_replay_${t} PRIVATE ${CMAKE_SOURCE_DIR})
    target_link_libraries(fuzz_replay_${t} PRIVATE h2pg_core)
    add_test(NAME test_fuzz_replay_${t}
             COMMAND fuzz_replay_${t} ${CMAKE_SOURCE_DIR}/fuzz/corpus/${t} ${CMAKE_SOURCE_DIR}/fuzz/regressions/${t})
    set_tests_properties(test_fuzz_replay_${t} PROPERTIES LABELS unit TIMEOUT 300)
  endforeach()
endif()
