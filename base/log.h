/* Process logging: one line per event on stderr, JSON by default or text
 * for humans (LOG_FORMAT). Thread-safe: a line is formatted into a local
 * buffer and written with a single write(2). Never awaits. */
#ifndef H2PG_BASE_LOG_H
#define H2PG_BASE_LOG_H

#include <stdbool.h>

enum base_log_level { BASE_LOG_DEBUG, BASE_LOG_INFO, BASE_LOG_WARN, BASE_LOG_ERROR };

/* Called once at start, before threads; the defaults are info and JSON. */
void base_log_init(enum base_log_level min_level, bool json);

bool base_log_enabled(enum base_log_level level);

/* Logs msg (printf format) at level. In JSON the line is
 * {"time":..., "level":..., "msg":...}. */
void base_log(enum base_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) (base_log_enabled(BASE_LOG_DEBUG) ? base_log(BASE_LOG_DEBUG, __VA_ARGS__) : (void)0)
#define log_info(...) base_log(BASE_LOG_INFO, __VA_ARGS__)
#define log_warn(...) base_log(BASE_LOG_WARN, __VA_ARGS__)
#define log_error(...) base_log(BASE_LOG_ERROR, __VA_ARGS__)

/* Appends s to out as the inside of a JSON string (escapes quotes,
 * backslashes and control bytes; a byte that is not part of well-formed
 * UTF-8 becomes \ufffd); returns the length it needs, like snprintf (out
 * is always terminated when cap > 0, and cut only between whole escapes
 * and characters). */
int base_log_json_escape(char *out, int cap, const char *s, int len);

#endif
