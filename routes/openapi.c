/* GET /openapi.json: the OpenAPI 3.1 document of the whole API. It is
 * openapi/openapi.json, embedded at build time (routes/CMakeLists.txt)
 * and served byte for byte, so what clients fetch is what the repository
 * holds and what tests/openapi validates. */
#include <stddef.h>

#include "routes/handler.h"

/* Defined by the generated openapi_embedded.c: the document's bytes (plus a
 * NUL that the length leaves out). */
extern const char routes_openapi__document[];
extern const size_t routes_openapi__document_len;

static int openapi_json(server_req *r)
{
    server_respond(r, 200, "application/json", routes_openapi__document, routes_openapi__document_len);
    return 0;
}

ROUTES({.method = "GET", .pattern = "/openapi.json", .handler = openapi_json, .immediate = true, .open = true});
