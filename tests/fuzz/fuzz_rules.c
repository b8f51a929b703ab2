/* fuzz_rules.c — libFuzzer target: any bytes as an org's config, then the
 * parsed rules evaluated on a message cut from the same input. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input is "config \n id \n payload": readable seeds, and the fuzzer
 * mutates each part on its own. */
static size_t cut_line(const char *p, size_t len)
{
    const char *nl = memchr(p, '\n', len);
    return nl ? (size_t)(nl - p) : len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ruleset rs;
    struct rules_verdict v;
    char err[256];
    const char *p = (const char *)data;
    size_t cfg_len = cut_line(p, size);
    const char *id = p + cfg_len + (cfg_len < size);
    size_t rest = size - (size_t)(id - p);
    size_t id_len = cut_line(id, rest);
    const char *payload = id + id_len + (id_len < rest);
    size_t payload_len = rest - (size_t)(payload - id);

    memset(&rs, 0, sizeof rs);
    if (rules_parse(p, cfg_len, &rs, err, sizeof err) != POOLD_OK)
        return 0;
    rules_eval(&rs, id, id_len, payload, payload_len, &v);
    if (v.nfailed > v.checks || v.checks != rs.n)
        __builtin_trap();
    rules_clear(&rs);
    return 0;
}
