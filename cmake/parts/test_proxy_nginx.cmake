# The service behind Debian's nginx with docker/nginx.conf, the proxy
# configuration docker/compose.yaml ships (tests/nginx/run.sh). Needs
# DATABASE_URL (with-postgres.sh); installs nginx when it is missing.
if(BUILD_TESTING)
  add_test(NAME test_proxy_nginx COMMAND ${CMAKE_SOURCE_DIR}/tests/nginx/run.sh $<TARGET_FILE:h2pg>)
  set_tests_properties(test_proxy_nginx PROPERTIES LABELS integration TIMEOUT 300)
endif()
