/* rules.h — an org's rules, parsed from orgs.config and evaluated (no I/O). */
#ifndef POOLD_RULES_H
#define POOLD_RULES_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

#define RULES_MAX 64 /* rules per org at most; more is a misconfiguration */

enum rule_type {
    RULE_MAX_PAYLOAD_BYTES,
    RULE_MIN_PAYLOAD_BYTES,
    RULE_HEX_PAYLOAD,
    RULE_ID_PREFIX,
    RULE_FORBIDDEN_SUBSTRING,
    RULE__COUNT
};

struct rule {
    enum rule_type type;
    long long num; /* for the byte-count rules */
    char *str;     /* for id_prefix / forbidden_substring; owned */
    size_t str_len;
};

/* Sized to its rules, not to RULES_MAX: every pooled service holds one. */
struct ruleset {
    size_t n;
    struct rule *rule; /* n rules in config order; malloc'd, owned */
};

/* The rule type's name as in the config ("max_payload_bytes", ...). */
const char *rule_type_str(enum rule_type type);

/* Parse a type name; false if unknown. */
bool rule_type_parse(const char *name, enum rule_type *out);

/*
 * Parse orgs.config ({"rules": [...]}, given as JSON text of len bytes) into
 * rs, which is overwritten (clear it first if it held rules). Returns
 * POOLD_OK, POOLD_ERR_MISCONFIGURED with err naming the rule (index and type)
 * that is wrong, or POOLD_ERR_NOMEM. On error rs holds nothing to free.
 */
POOLD_MUSTCHECK int rules_parse(const char *json, size_t len,
                                struct ruleset *rs, char *err, size_t errlen);

/* Deep-copy src into dst (dst is overwritten, not freed). Returns POOLD_OK,
 * or POOLD_ERR_NOMEM with dst empty. */
POOLD_MUSTCHECK int rules_copy(struct ruleset *dst, const struct ruleset *src);

/* Free the strings inside rs and empty it. Accepts an empty ruleset. */
void rules_clear(struct ruleset *rs);

struct rules_verdict {
    unsigned checks; /* rules evaluated */
    unsigned nfailed;
    enum rule_type failed[RULES_MAX]; /* failing rules' types, config order */
};

/* The failed rules as a PostgreSQL text[] literal, {a,b} (the names need
 * no quoting), into buf of len >= RULES_FAILED_LITERAL_MAX; its length. */
#define RULES_FAILED_LITERAL_MAX (RULES_MAX * 24 + 3)
size_t rules_failed_literal(const struct rules_verdict *v, char *buf,
                            size_t len);

/* Parse such a literal (as stored) back into v's failed rules. A name
 * this poold does not know (a newer or older one's) is skipped: returns
 * how many were, the first of them in unknown. */
unsigned rules_failed_parse(const char *s, struct rules_verdict *v,
                            char *unknown, size_t unknown_len);

/* Evaluate every rule on a message. Pure. */
void rules_eval(const struct ruleset *rs, const char *id, size_t id_len,
                const char *payload, size_t payload_len,
                struct rules_verdict *out);

#endif
