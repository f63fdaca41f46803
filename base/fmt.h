/* Formatting on the hot paths without printf: decimal integers, HTML
 * text and JSON strings. printf parses its format string and sets up a FILE for every call,
 * which on /fortunes (13 numbers a request) cost more than the escaping.
 *
 * Every function writes into caller memory that is large enough (the bound
 * each one names), adds no terminating NUL and returns the bytes written. */
#ifndef H2PG_BASE_FMT_H
#define H2PG_BASE_FMT_H

#include <stddef.h>
#include <stdint.h>

/* The most bytes base_fmt_i64 writes ("-9223372036854775808"). */
#define BASE_FMT_I64_MAX 20

/* v in decimal, a '-' first when negative. */
size_t base_fmt_i64(char *out, int64_t v);

/* The most bytes base_fmt_u64 writes ("18446744073709551615"). */
#define BASE_FMT_U64_MAX 20

/* v in decimal. */
size_t base_fmt_u64(char *out, uint64_t v);

/* The most bytes base_html_escape writes for len input bytes. */
#define BASE_HTML_ESCAPE_MAX(len) ((size_t)(len) * 6)

/* s[0..len) as HTML text: & < > " ' become &amp; &lt; &gt; &quot; &#39;,
 * every other byte is copied as it is (UTF-8 passes through). */
size_t base_html_escape(char *out, const char *s, size_t len);

/* The most bytes base_json_string writes for len input bytes. */
#define BASE_JSON_STRING_MAX(len) ((size_t)(len) * 6 + 2)

/* s[0..len) (valid UTF-8) as a JSON string, quotes included: '"' and '\\'
 * are escaped with a backslash, control characters below 0x20 as \b \f
 * \n \r \t or \u00XX; every other byte is copied as it is. */
size_t base_json_string(char *out, const char *s, size_t len);

#endif
