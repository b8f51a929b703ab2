/* rules.c — an org's rules: parsed once from orgs.config, evaluated purely */
#define _GNU_SOURCE /* memmem: glibc's is linear time (two-way) */
#include "rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jsonfast.h"

/* Levels of arrays and objects a config may nest before it is read (the
 * admin API takes 32 in its config; this bounds what SQL stored). */
#define RULES_DEPTH_MAX 64

/* What a rule's "value" must be (VALUE_NONEMPTY: a string but ""). */
enum rule_value_kind { VALUE_NONE, VALUE_COUNT, VALUE_STRING, VALUE_NONEMPTY };

/* The end of the error naming a rule whose value is not of its kind. */
static const char *const value_wanted[] = {
    [VALUE_NONE] = "takes no \"value\"",
    [VALUE_COUNT] = "\"value\" must be a non-negative integer",
    [VALUE_STRING] = "\"value\" must be a string",
    /* Every payload contains "": as a forbidden substring it would mean
     * "fail everything", which nobody writes on purpose. */
    [VALUE_NONEMPTY] = "\"value\" must be a non-empty string",
};

static const struct {
    const char *name;
    enum rule_value_kind kind;
} rule_table[RULE__COUNT] = {
    [RULE_MAX_PAYLOAD_BYTES] = {"max_payload_bytes", VALUE_COUNT},
    [RULE_MIN_PAYLOAD_BYTES] = {"min_payload_bytes", VALUE_COUNT},
    [RULE_HEX_PAYLOAD] = {"hex_payload", VALUE_NONE},
    [RULE_ID_PREFIX] = {"id_prefix", VALUE_STRING},
    [RULE_FORBIDDEN_SUBSTRING] = {"forbidden_substring", VALUE_NONEMPTY},
};

const char *rule_type_str(enum rule_type type)
{
    if ((unsigned)type >= RULE__COUNT)
        return "unknown";
    return rule_table[type].name;
}

bool rule_type_parse(const char *name, enum rule_type *out)
{
    for (unsigned i = 0; i < RULE__COUNT; i++) {
        if (strcmp(name, rule_table[i].name) == 0) {
            *out = (enum rule_type)i;
            return true;
        }
    }
    return false;
}

size_t rules_failed_literal(const struct rules_verdict *v, char *buf,
                            size_t len)
{
    size_t o = 0;

    buf[o++] = '{';
    for (unsigned i = 0; i < v->nfailed; i++) {
        int n = snprintf(buf + o, len - o, "%s%s", i ? "," : "",
                         rule_type_str(v->failed[i]));
        if (n < 0 || (size_t)n >= len - o - 1)
            abort(); /* the buffer is sized for RULES_MAX longest names */
        o += (size_t)n;
    }
    buf[o++] = '}';
    buf[o] = '\0';
    return o;
}

unsigned rules_failed_parse(const char *s, struct rules_verdict *v,
                            char *unknown, size_t unknown_len)
{
    unsigned skipped = 0;
    char name[64];

    v->nfailed = 0;
    if (*s == '{')
        s++;
    while (*s != '\0' && *s != '}') {
        size_t n = strcspn(s, ",}");
        enum rule_type t;

        snprintf(name, sizeof name, "%.*s", (int)n, s);
        if (rule_type_parse(name, &t) && v->nfailed < RULES_MAX)
            v->failed[v->nfailed++] = t;
        else if (skipped++ == 0 && unknown_len > 0)
            snprintf(unknown, unknown_len, "%s", name);
        s += n;
        if (*s == ',')
            s++;
    }
    return skipped;
}

void rules_clear(struct ruleset *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        free(rs->rule[i].str);
    free(rs->rule);
    rs->rule = NULL;
    rs->n = 0;
}

int rules_copy(struct ruleset *dst, const struct ruleset *src)
{
    dst->n = 0;
    dst->rule = NULL;
    if (src->n == 0)
        return POOLD_OK;
    dst->rule = calloc(src->n, sizeof *dst->rule);
    if (dst->rule == NULL)
        return POOLD_ERR_NOMEM;
    for (size_t i = 0; i < src->n; i++) {
        dst->rule[i] = src->rule[i];
        dst->rule[i].str = NULL;
        dst->n = i + 1;
        if (src->rule[i].str != NULL) {
            dst->rule[i].str = malloc(src->rule[i].str_len + 1);
            if (dst->rule[i].str == NULL) {
                rules_clear(dst);
                return POOLD_ERR_NOMEM;
            }
            memcpy(dst->rule[i].str, src->rule[i].str,
                   src->rule[i].str_len + 1);
        }
    }
    return POOLD_OK;
}

/* Fill r's value from v (NULL when the rule has no "value"). */
static int rule_set_value(struct rule *r, const json_t *v, size_t idx,
                          char *err, size_t errlen)
{
    const char *name = rule_table[r->type].name;
    enum rule_value_kind kind = rule_table[r->type].kind;

    switch (kind) {
    case VALUE_NONE:
        if (v != NULL && !json_is_null(v))
            goto wrong;
        return POOLD_OK;
    case VALUE_COUNT:
        /* A real (4096.0) or a bool is a typo, not a size: reject it. */
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            goto wrong;
        r->num = json_integer_value(v);
        return POOLD_OK;
    case VALUE_STRING:
    case VALUE_NONEMPTY:
        if (!json_is_string(v) ||
            (kind == VALUE_NONEMPTY && json_string_length(v) == 0))
            goto wrong;
        r->str_len = json_string_length(v);
        r->str = malloc(r->str_len + 1);
        if (r->str == NULL)
            return POOLD_ERR_NOMEM;
        /* JSON_ALLOW_NUL is off, so the string has no NUL inside. */
        memcpy(r->str, json_string_value(v), r->str_len + 1);
        return POOLD_OK;
    }
wrong:
    snprintf(err, errlen, "rules[%zu] (type \"%s\"): %s", idx, name,
             value_wanted[kind]);
    return POOLD_ERR_MISCONFIGURED;
}

static int rule_parse_one(const json_t *obj, size_t idx, struct rule *r,
                          char *err, size_t errlen)
{
    const json_t *type;

    if (!json_is_object(obj)) {
        snprintf(err, errlen, "rules[%zu]: must be an object", idx);
        return POOLD_ERR_MISCONFIGURED;
    }
    type = json_object_get(obj, "type");
    if (!json_is_string(type)) {
        snprintf(err, errlen, "rules[%zu]: \"type\" must be a string", idx);
        return POOLD_ERR_MISCONFIGURED;
    }
    if (!rule_type_parse(json_string_value(type), &r->type)) {
        snprintf(err, errlen, "rules[%zu] (type \"%.64s\"): unknown rule type",
                 idx, json_string_value(type));
        return POOLD_ERR_MISCONFIGURED;
    }
    return rule_set_value(r, json_object_get(obj, "value"), idx, err, errlen);
}

/* The "rules" array of a config object; *out NULL when there is none. */
static int rules_array(const json_t *root, const json_t **out, char *err,
                       size_t errlen)
{
    const json_t *arr;

    if (!json_is_object(root)) {
        snprintf(err, errlen, "config must be a JSON object");
        return POOLD_ERR_MISCONFIGURED;
    }
    arr = json_object_get(root, "rules");
    *out = NULL;
    if (arr == NULL)
        return POOLD_OK; /* {} : no rules */
    if (!json_is_array(arr)) {
        snprintf(err, errlen, "config \"rules\" must be an array");
        return POOLD_ERR_MISCONFIGURED;
    }
    if (json_array_size(arr) > RULES_MAX) {
        snprintf(err, errlen, "config has %zu rules, at most %d allowed",
                 json_array_size(arr), RULES_MAX);
        return POOLD_ERR_MISCONFIGURED;
    }
    *out = arr;
    return POOLD_OK;
}

int rules_parse(const char *json, size_t len, struct ruleset *rs, char *err,
                size_t errlen)
{
    json_error_t jerr;
    const json_t *arr;
    json_t *root;
    int rc;

    size_t values, depth;

    rs->n = 0;
    rs->rule = NULL;
    /* jansson reads by recursion: a config stored by SQL may nest deeper
     * than a request thread's stack holds. */
    jsonfast_measure(json, len, &values, &depth);
    if (depth > RULES_DEPTH_MAX) {
        snprintf(err, errlen, "config is nested deeper than %d levels",
                 RULES_DEPTH_MAX);
        return POOLD_ERR_MISCONFIGURED;
    }
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(err, errlen,
                 "config is not valid JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        return POOLD_ERR_MISCONFIGURED;
    }
    rc = rules_array(root, &arr, err, errlen);
    if (rc != POOLD_OK || arr == NULL || json_array_size(arr) == 0)
        goto out;
    rs->rule = calloc(json_array_size(arr), sizeof rs->rule[0]);
    if (rs->rule == NULL) {
        rc = POOLD_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        /* Count the rule first: a half-filled one is freed by rules_clear. */
        rs->n = i + 1;
        rc = rule_parse_one(json_array_get(arr, i), i, &rs->rule[i], err,
                            errlen);
        if (rc != POOLD_OK)
            break;
    }
out:
    if (rc == POOLD_ERR_NOMEM)
        snprintf(err, errlen, "out of memory parsing config");
    if (rc != POOLD_OK)
        rules_clear(rs);
    json_decref(root);
    return rc;
}

/* The bytes [0-9a-fA-F], whatever the locale (isxdigit() follows
 * LC_CTYPE). A table, not strchr() on a digit string per byte: about 4x
 * faster on a 128-digit payload, where the check ran for 4 % of a batch's
 * CPU. */
static const unsigned char hex_digit[256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1,
    ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['A'] = 1, ['B'] = 1,
    ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1};

/* An even-length string of hex digits; the empty payload qualifies. Every
 * byte is looked at (no early exit to mispredict). */
static bool is_hex(const char *s, size_t len)
{
    unsigned ok = len % 2 == 0;

    for (size_t i = 0; i < len; i++)
        ok &= hex_digit[(unsigned char)s[i]];
    return ok != 0;
}

static bool rule_fails(const struct rule *r, const char *id, size_t id_len,
                       const char *payload, size_t payload_len)
{
    switch (r->type) {
    case RULE_MAX_PAYLOAD_BYTES:
        return (unsigned long long)payload_len > (unsigned long long)r->num;
    case RULE_MIN_PAYLOAD_BYTES:
        return (unsigned long long)payload_len < (unsigned long long)r->num;
    case RULE_HEX_PAYLOAD:
        return !is_hex(payload, payload_len);
    case RULE_ID_PREFIX:
        return id_len < r->str_len || memcmp(id, r->str, r->str_len) != 0;
    case RULE_FORBIDDEN_SUBSTRING: /* str_len > 0: rules_parse says so */
        return memmem(payload, payload_len, r->str, r->str_len) != NULL;
    case RULE__COUNT:
        break;
    }
    abort(); /* rules_parse never stores another type */
}

void rules_eval(const struct ruleset *rs, const char *id, size_t id_len,
                const char *payload, size_t payload_len,
                struct rules_verdict *out)
{
    out->checks = 0;
    out->nfailed = 0;
    for (size_t i = 0; i < rs->n && i < RULES_MAX; i++) {
        out->checks++;
        if (rule_fails(&rs->rule[i], id, id_len, payload, payload_len))
            out->failed[out->nfailed++] = rs->rule[i].type;
    }
}
