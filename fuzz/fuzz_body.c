/* Request bodies: routes_input_body (Content-Type, JSON, nesting, UTF-8,
 * NUL, duplicate keys) and the validator of every JSON body of the
 * contract: POST /users, PATCH /users/{id}, POST /users/{id}/orders,
 * POST /accounts, POST /transfers.
 *
 * Input: one byte, then the body. The byte's low 3 bits choose the body
 * (0..4 as listed; 5..7: the input holds "Content-Type\nbody" and bits 3..5
 * choose the body); bit 6 puts an error in the errors array beforehand.
 * Checks:
 * - the Content-Type verdict (415) is a reference's; a failure leaves no
 *   object and a NUL-terminated detail;
 * - an accepted body is an object, was valid UTF-8 without a NUL byte, its
 *   real nesting equals routes_json_depth and is at most
 *   ROUTES_MAX_JSON_DEPTH, and it survives a dump and a strict re-parse;
 * - a validator returns true exactly when it appended no error; it
 *   appends exactly one {field, message} per field a reference finds
 *   wrong (written from the contract in /work/shared/spec/API.md, an
 *   email's characters included), plus
 *   the cross-field errors (quantity times price overflows, the same
 *   account twice, an empty PATCH); what it fills in on success is the
 *   body's own values, within the contract's ranges. */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>

#include <jansson.h>

#include "fuzz/fuzz.h"
#include "routes/input.h"

enum { USER_CREATE, USER_PATCH, ORDER, ACCOUNT, TRANSFER, NBODIES };

/* ---- references ---- */

static bool ref_is_json(const char *ct)
{
    if (ct == NULL)
        return false;
    size_t i = strspn(ct, " ");
    static const char want[] = "application/json";
    for (size_t k = 0; k < sizeof(want) - 1; k++, i++)
        if (tolower((unsigned char)ct[i]) != want[k])
            return false;
    i += strspn(ct + i, " ");
    return ct[i] == '\0' || ct[i] == ';';
}

/* Strict UTF-8 (no overlong forms, no surrogates, at most U+10FFFF);
 * *chars gets the number of code points. */
static bool ref_utf8(const char *p, size_t n, size_t *chars)
{
    const unsigned char *s = (const unsigned char *)p;
    *chars = 0;
    for (size_t i = 0; i < n; (*chars)++) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0)
            need = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            need = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            need = 3, cp = c & 0x07, min = 0x10000;
        else
            return false;
        if (n - i <= need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += need + 1;
    }
    return true;
}

static int depth(const json_t *v)
{
    int d = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            int c = depth(x);
            d = c > d ? c : d;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            int c = depth(x);
            d = c > d ? c : d;
        }
    } else {
        return 0;
    }
    return d + 1;
}

/* The characters an email must not hold (API.md: "no spaces or control
 * characters"): Unicode's Cc (U+0000..U+001F, U+007F..U+009F) and its
 * White_Space property (U+0020, U+0085, U+00A0, U+1680, U+2000..U+200A,
 * U+2028, U+2029, U+202F, U+205F, U+3000), as ranges. */
static const uint32_t email_forbidden[][2] = {
    {0x0000, 0x001f}, {0x0020, 0x0020}, {0x007f, 0x009f}, {0x00a0, 0x00a0}, {0x1680, 0x1680},
    {0x2000, 0x200a}, {0x2028, 0x2029}, {0x202f, 0x202f}, {0x205f, 0x205f}, {0x3000, 0x3000},
};

/* Exactly one '@' with something on both sides, none of the characters
 * above; s is valid UTF-8 (jansson's strings are). */
static bool ref_email(const char *s, size_t len)
{
    size_t ats = 0;
    for (size_t i = 0; i < len; i++)
        ats += s[i] == '@';
    if (ats != 1 || s[0] == '@' || s[len - 1] == '@')
        return false;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        /* the code point at i, and its length: from the lead byte's ones */
        size_t n = u[i] < 0x80 ? 1 : u[i] < 0xe0 ? 2 : u[i] < 0xf0 ? 3 : 4;
        uint32_t cp = n == 1 ? u[i] : u[i] & (0x7f >> n);
        for (size_t k = 1; k < n; k++)
            cp = cp << 6 | (u[i + k] & 0x3f);
        for (size_t r = 0; r < sizeof(email_forbidden) / sizeof(email_forbidden[0]); r++)
            if (cp >= email_forbidden[r][0] && cp <= email_forbidden[r][1])
                return false;
        i += n;
    }
    return true;
}

/* A field's state: ABSENT (missing, or null when optional), BAD or OK. */
enum { ABSENT, BAD, OK };

static int ref_string(json_t *body, const char *field, bool required, size_t max, bool email)
{
    json_t *v = json_object_get(body, field);
    if (v == NULL || (json_is_null(v) && !required))
        return required ? BAD : ABSENT;
    if (!json_is_string(v))
        return BAD;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v), chars;
    FUZZ_CHECK(ref_utf8(s, len, &chars)); /* jansson's strings are */
    if (chars < 1 || chars > max)
        return BAD;
    if (email && !ref_email(s, len))
        return BAD;
    return OK;
}

static int ref_int(json_t *body, const char *field, int64_t min, int64_t max)
{
    json_t *v = json_object_get(body, field);
    if (v == NULL || !json_is_integer(v))
        return BAD;
    json_int_t x = json_integer_value(v);
    return x >= min && x <= max ? OK : BAD;
}

static int64_t int_of(json_t *body, const char *field) { return json_integer_value(json_object_get(body, field)); }

/* ---- the checks ---- */

struct want {
    const char *field;
    int count; /* errors expected about it */
};

static void check_errors(json_t *errors, size_t before, const struct want *want, size_t nwant)
{
    int total = 0;
    for (size_t k = 0; k < nwant; k++)
        total += want[k].count;
    FUZZ_CHECK(json_array_size(errors) == before + (size_t)total);
    for (size_t k = 0; k < nwant; k++) {
        int seen = 0;
        for (size_t i = before; i < json_array_size(errors); i++) {
            json_t *e = json_array_get(errors, i);
            const char *field = json_string_value(json_object_get(e, "field"));
            const char *message = json_string_value(json_object_get(e, "message"));
            FUZZ_CHECK(json_is_object(e) && json_object_size(e) == 2 && field != NULL && message != NULL);
            FUZZ_CHECK(message[0] != '\0');
            seen += strcmp(field, want[k].field) == 0;
        }
        FUZZ_CHECK(seen == want[k].count);
    }
}

static void check_string_out(json_t *body, const char *field, const char *s, size_t len)
{
    json_t *v = json_object_get(body, field);
    if (v == NULL || json_is_null(v)) {
        FUZZ_CHECK(s == NULL && len == 0);
    } else {
        /* the body's own string, not a copy */
        FUZZ_CHECK(s == json_string_value(v) && len == json_string_length(v));
    }
}

static void check_user(json_t *body, bool create, json_t *errors, size_t before)
{
    routes_user_input in;
    bool ok = routes_input_user(body, create, &in, errors);
    int name = ref_string(body, "name", create, 200, false);
    int email = ref_string(body, "email", create, 320, true);
    bool empty = !create && name == ABSENT && email == ABSENT;
    struct want want[] = {{"name", (name == BAD) + empty}, {"email", email == BAD}};
    check_errors(errors, before, want, 2);
    FUZZ_CHECK(ok == (json_array_size(errors) == before));
    FUZZ_CHECK(ok == (name != BAD && email != BAD && !empty));
    if (ok) {
        check_string_out(body, "name", in.name, in.name_len);
        check_string_out(body, "email", in.email, in.email_len);
        FUZZ_CHECK(!create || (in.name != NULL && in.email != NULL));
    }
}

static void check_order(json_t *body, json_t *errors, size_t before)
{
    routes_order_input in;
    bool ok = routes_input_order(body, &in, errors);
    int item = ref_string(body, "item", true, 200, false);
    int quantity = ref_int(body, "quantity", 1, 10000);
    int price = ref_int(body, "price_cents", 0, INT64_MAX);
    __int128 total = (__int128)int_of(body, "quantity") * int_of(body, "price_cents");
    bool overflow = quantity == OK && price == OK && total > INT64_MAX;
    struct want want[] = {{"item", item == BAD}, {"quantity", quantity == BAD}, {"price_cents", (price == BAD) + overflow}};
    check_errors(errors, before, want, 3);
    FUZZ_CHECK(ok == (json_array_size(errors) == before));
    FUZZ_CHECK(ok == (item == OK && quantity == OK && price == OK && !overflow));
    if (ok) {
        check_string_out(body, "item", in.item, in.item_len);
        FUZZ_CHECK(in.quantity == int_of(body, "quantity") && in.quantity >= 1 && in.quantity <= 10000);
        FUZZ_CHECK(in.price_cents == int_of(body, "price_cents") && in.price_cents >= 0);
        FUZZ_CHECK(in.total_cents == total);
    }
}

static void check_account(json_t *body, json_t *errors, size_t before)
{
    routes_account_input in;
    bool ok = routes_input_account(body, &in, errors);
    int user = ref_int(body, "user_id", 1, INT64_MAX);
    int balance = ref_int(body, "balance_cents", 0, INT64_MAX);
    struct want want[] = {{"user_id", user == BAD}, {"balance_cents", balance == BAD}};
    check_errors(errors, before, want, 2);
    FUZZ_CHECK(ok == (json_array_size(errors) == before));
    FUZZ_CHECK(ok == (user == OK && balance == OK));
    if (ok)
        FUZZ_CHECK(in.user_id == int_of(body, "user_id") && in.balance_cents == int_of(body, "balance_cents"));
}

static void check_transfer(json_t *body, json_t *errors, size_t before)
{
    routes_transfer_input in;
    bool ok = routes_input_transfer(body, &in, errors);
    int from = ref_int(body, "from_account_id", 1, INT64_MAX);
    int to = ref_int(body, "to_account_id", 1, INT64_MAX);
    int amount = ref_int(body, "amount_cents", 1, INT64_MAX);
    bool same = from == OK && to == OK && int_of(body, "from_account_id") == int_of(body, "to_account_id");
    struct want want[] = {{"from_account_id", from == BAD}, {"to_account_id", (to == BAD) + same},
                          {"amount_cents", amount == BAD}};
    check_errors(errors, before, want, 3);
    FUZZ_CHECK(ok == (json_array_size(errors) == before));
    FUZZ_CHECK(ok == (from == OK && to == OK && amount == OK && !same));
    if (ok) {
        FUZZ_CHECK(in.from_account_id == int_of(body, "from_account_id") && in.from_account_id >= 1);
        FUZZ_CHECK(in.to_account_id == int_of(body, "to_account_id") && in.to_account_id >= 1);
        FUZZ_CHECK(in.amount_cents == int_of(body, "amount_cents") && in.amount_cents >= 1);
        FUZZ_CHECK(in.from_account_id != in.to_account_id);
    }
}

static void check_accepted(json_t *v, const char *body, size_t len)
{
    FUZZ_CHECK(json_is_object(v));
    size_t chars;
    FUZZ_CHECK(ref_utf8(body, len, &chars));
    FUZZ_CHECK(memchr(body, '\0', len) == NULL);
    FUZZ_CHECK(depth(v) == routes_json_depth(body, len) && depth(v) <= ROUTES_MAX_JSON_DEPTH);
    char *text = json_dumps(v, JSON_COMPACT);
    FUZZ_CHECK(text != NULL);
    json_error_t err;
    json_t *again = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    FUZZ_CHECK(again != NULL && json_equal(v, again));
    json_decref(again);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool seeded;
    if (!seeded) {
        json_object_seed(1); /* the same hash order on every run */
        seeded = true;
    }
    if (size == 0)
        return 0;
    int kind = data[0] & 7;
    bool prefilled = data[0] & 0x40;
    char *ct;
    const uint8_t *rest = data + 1;
    size_t rest_len = size - 1;
    if (kind < NBODIES) {
        ct = fuzz_strndup("application/json", 16);
    } else {
        const uint8_t *nl = memchr(rest, '\n', rest_len);
        size_t ct_len = nl ? (size_t)(nl - rest) : rest_len;
        ct = fuzz_strndup(rest, ct_len); /* a NUL inside ends it, as in a header's C string */
        rest += nl ? ct_len + 1 : ct_len;
        rest_len -= nl ? ct_len + 1 : ct_len;
        kind = (data[0] >> 3 & 7) % NBODIES;
    }
    char *body = fuzz_dup(rest, rest_len);

    json_t *v = (json_t *)&v; /* must be overwritten */
    char detail[256];
    memset(detail, 'x', sizeof(detail));
    int rc = routes_input_body(ct, rest_len ? body : NULL, rest_len, &v, detail, sizeof(detail));
    FUZZ_CHECK(rc == 0 || rc == -ENOTSUP || rc == -EINVAL);
    FUZZ_CHECK((rc == -ENOTSUP) == !ref_is_json(ct));
    if (rc < 0) {
        FUZZ_CHECK(v == NULL && detail[0] != '\0' && memchr(detail, '\0', sizeof(detail)) != NULL);
    } else {
        check_accepted(v, body, rest_len);
        json_t *errors = json_array();
        if (prefilled)
            routes_error(errors, "earlier", "an error already there");
        size_t before = json_array_size(errors);
        switch (kind) {
        case USER_CREATE: check_user(v, true, errors, before); break;
        case USER_PATCH: check_user(v, false, errors, before); break;
        case ORDER: check_order(v, errors, before); break;
        case ACCOUNT: check_account(v, errors, before); break;
        default: check_transfer(v, errors, before); break;
        }
        json_decref(errors);
        json_decref(v);
    }
    free(body);
    free(ct);
    return 0;
}
