/* Rows as JSON by column name, and the timestamp format they use. */
#include <assert.h>
#include <stdio.h>
#include <time.h>

#include "db/db.h"
#include "db/oid.h"

size_t db_format_timestamp(int64_t us, char *out)
{
    if (us == INT64_MAX || us == INT64_MIN)
        return (size_t)sprintf(out, "%s", us > 0 ? "infinity" : "-infinity");
    int64_t sec = us / 1000000, frac = us % 1000000;
    if (frac < 0) { /* before 1970: floor, so the fraction counts forward */
        frac += 1000000;
        sec -= 1;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        return (size_t)sprintf(out, "invalid");
    return (size_t)snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
}

static json_t *value_json(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return json_null();
    switch (PQftype(r, col)) {
    case DB_OID_INT2:
    case DB_OID_INT4:
    case DB_OID_INT8:
        return json_integer(db_get_int(r, row, col));
    case DB_OID_BOOL:
        return json_boolean(db_get_bool(r, row, col));
    case DB_OID_TIMESTAMP:
    case DB_OID_TIMESTAMPTZ: {
        char buf[32];
        size_t len = db_format_timestamp(db_get_timestamp(r, row, col), buf);
        return json_stringn_nocheck(buf, len);
    }
    default: {
        int len;
        const char *s = db_get_text(r, row, col, &len); /* asserts a text type */
        return json_stringn_nocheck(s, (size_t)len); /* the database holds valid UTF-8 */
    }
    }
}

json_t *db_row_json(const PGresult *r, int row)
{
    json_t *o = json_object();
    int ncols = PQnfields(r);
    for (int col = 0; o != NULL && col < ncols; col++) {
        if (json_object_set_new_nocheck(o, PQfname(r, col), value_json(r, row, col)) < 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

json_t *db_rows_json(const PGresult *r)
{
    json_t *a = json_array();
    int n = PQntuples(r);
    for (int row = 0; a != NULL && row < n; row++) {
        if (json_array_append_new(a, db_row_json(r, row)) < 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}
