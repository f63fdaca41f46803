#include "routes/retention.h"

#include <errno.h>
#include <string.h>

#include "aio/aio.h"
#include "base/log.h"

#define PRUNE_STATEMENT_DEADLINE AIO_SEC(30)

int64_t routes_retention_interval_ms(int64_t retention_s)
{
    int64_t ms = retention_s > INT64_MAX / 1000 ? INT64_MAX : retention_s * 1000;
    ms /= 4;
    return ms > 60000 ? 60000 : ms < 1000 ? 1000 : ms;
}

int routes_retention_prune(const routes_retention *r, int64_t *deleted)
{
    int64_t total = 0, n;
    int rc;
    do {
        PGresult *res = NULL;
        aio_timeout scope;
        aio_timeout_open(&scope, PRUNE_STATEMENT_DEADLINE);
        rc = db_exec(NULL, r->prune, DB_PARAMS(DB_INT8(r->retention_s()), DB_INT8(r->batch)), &res);
        aio_timeout_close(&scope);
        n = rc == 0 ? db_get_int(res, 0, 0) : 0;
        PQclear(res);
        total += n;
    } while (rc == 0 && n == r->batch);
    if (deleted != NULL)
        *deleted = total;
    return rc;
}

static int pruner_run(void *arg)
{
    const routes_retention *r = arg;
    db_failure failure;
    db_failure_open(&failure);
    int64_t interval = AIO_MSEC(routes_retention_interval_ms(r->retention_s()));
    long long interval_ms = (long long)(interval / AIO_MSEC(1));
    for (;;) {
        int64_t deleted = 0;
        int rc = routes_retention_prune(r, &deleted);
        if (rc == -ECANCELED)
            break;
        if (deleted > 0)
            log_info("%s: pruned %lld older than %lld s", r->what, (long long)deleted, (long long)r->retention_s());
        if (rc == 0)
            log_debug("%s: pruning pass done, %lld deleted; the next in %lld ms", r->what, (long long)deleted,
                      interval_ms);
        else if (rc == -EREMOTEIO)
            log_warn("%s: pruning failed: SQLSTATE %s: %s; next try in %lld ms", r->what, failure.sqlstate,
                     failure.message, interval_ms);
        else
            log_warn("%s: pruning failed: %s; next try in %lld ms", r->what, strerror(-rc), interval_ms);
        if (aio_sleep(interval) < 0)
            break;
    }
    db_failure_close(&failure);
    return 0;
}

aio_task *routes_retention_start(const routes_retention *r) { return aio_task_spawn(pruner_run, (void *)r); }

void routes_retention_stop(aio_task *task)
{
    if (task == NULL)
        return;
    aio_task_cancel(task);
    aio_task_join(task);
}
