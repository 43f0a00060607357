/*
 * Copyright (C) helix authors
 *
 * The L2 value decoder (ngx_http_helix_l2_decode in
 * src/policy/ngx_http_helix_l2.c): whatever Redis holds under a cache key, as
 * one string reply.  Thin on purpose: when the value format changes,
 * only the call below does.
 */


#include "fuzz.h"
#include "../../src/policy/ngx_http_helix_l2.c"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char     *v;
    ngx_str_t   provider, body;

    static ngx_str_t  key = ngx_string("completion:openai:gpt-4o:0123");

    fuzz_init();

    /* an exact copy: ASan sees any read past the value */
    v = malloc(size ? size : 1);
    memcpy(v, data, size);

    if (ngx_http_helix_l2_decode(&key, v, size, &provider, &body) == NGX_OK) {
        /* what is served must lie inside the value */
        if (provider.data < v || provider.data + provider.len > v + size
            || body.data < v || body.data + body.len > v + size)
        {
            abort();
        }
    }

    free(v);

    return 0;
}
