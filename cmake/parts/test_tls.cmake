# HTTPS and HTTP/2 (TLS_CERT_FILE / TLS_KEY_FILE) end to end: the real
# binary, a certificate the test makes with the openssl command, libcurl.
if(BUILD_TESTING)
  h2pg_test(test_tls
    SOURCES tests/routes/test_tls.c
    LIBS h2pg_test_support
    LABELS integration
    TIMEOUT 300)
  add_dependencies(test_tls h2pg)
endif()
