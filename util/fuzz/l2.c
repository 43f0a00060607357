/*
 * Copyright (C) helix authors
 *
 * The L2 value decoder (ngx_http_helix_l2_decode in
 * src/ngx_http_helix_gateway.c): whatever Redis holds under a cache key,
 * as one string reply.  Thin on purpose: when the value format changes,
 * only the call below does.
 */


#include "fuzz.h"
#include "../../src/ngx_http_helix_gateway.c"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_str_t    provider, body;
    redisReply   v;

    fuzz_init();

    ngx_memzero(&v, sizeof(redisReply));
    v.type = REDIS_REPLY_STRING;
    v.len = size;

    /* an exact copy: ASan sees any read past the value */
    v.str = malloc(size ? size : 1);
    memcpy(v.str, data, size);

    if (ngx_http_helix_l2_decode(&v, &provider, &body) == NGX_OK) {
        /* what is served must lie inside the value */
        if (provider.data < (u_char *) v.str
            || provider.data + provider.len > (u_char *) v.str + size
            || body.data < (u_char *) v.str
            || body.data + body.len > (u_char *) v.str + size)
        {
            abort();
        }
    }

    free(v.str);

    return 0;
}
