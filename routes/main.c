/* h2pg: the service's entry point. */
#include <stdio.h>

#include "routes/app.h"

int main(int argc, char **argv)
{
    server_app app;
    if (routes_app(&app) < 0) {
        fprintf(stderr, "h2pg: out of memory\n");
        return 1;
    }
    return server_main(argc, argv, &app);
}
