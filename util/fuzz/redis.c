/*
 * Copyright (C) helix authors
 *
 * Redis replies as the module gets them: bytes from the server through
 * hiredis's reader (redisReader, as the async context uses it), fed in
 * pieces of a chosen size, then each reply through the module's code that
 * interprets it: the global rate limit script's answer
 * (ngx_http_helix_limit_reply) and the L2 lookup's answer, read both
 * as an MGET's and as the single-flight script's
 * (ngx_http_helix_l2_result, which decodes the value it finds).  The
 * first byte: the piece size and the number of candidates.
 */


#include "fuzz.h"
#include <hiredis/hiredis.h>
#include "../../src/policy/ngx_http_helix_limit.c"
#include "../../src/policy/ngx_http_helix_l2.c"


/*
 * hiredis 0.14 (Debian 12) allocates an aggregate's element array from
 * its header, before any element has come ("*650010650" callocs 5 GB):
 * a limit of hiredis, not of the module (noted in the fuzzing report), so
 * inputs that declare more than 4096 elements are not tried.
 */

static ngx_uint_t
fuzz_huge_aggregate(const uint8_t *p, size_t size)
{
    size_t  i, n;

    for (i = 0; i < size; i++) {
        if ((i == 0 || p[i - 1] == '\n')
            && (p[i] == '*' || p[i] == '%' || p[i] == '~' || p[i] == '>'
                || p[i] == '|'))
        {
            for (n = 0, i++; i < size && p[i] >= '0' && p[i] <= '9'; i++) {
                n = n * 10 + (p[i] - '0');

                if (n > 4096) {
                    return 1;
                }
            }
        }
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    void                           *reply;
    size_t                          piece, i, n, off;
    ngx_http_helix_l2_result_t      l2;
    ngx_str_t                       keys[8];
    ngx_uint_t                      candidates;
    redisReply                     *r;
    redisReader                    *reader;
    ngx_http_helix_limit_result_t   res;

    fuzz_init();

    if (size < 1) {
        return 0;
    }

    piece = (data[0] & 0x1f) + 1;
    candidates = (data[0] >> 5) + 1;

    for (i = 0; i < candidates; i++) {
        ngx_str_set(&keys[i], "completion:openai:gpt-4o:0123");
    }

    data++;
    size--;

    if (fuzz_huge_aggregate(data, size)) {
        return 0;
    }

    reader = redisReaderCreate();
    if (reader == NULL) {
        return 0;
    }

    for (off = 0; off <= size; off += piece) {
        n = ngx_min(piece, size - off);

        if (n && redisReaderFeed(reader, (const char *) data + off, n)
                 != REDIS_OK)
        {
            break;
        }

        for ( ;; ) {
            reply = NULL;

            if (redisReaderGetReply(reader, &reply) != REDIS_OK) {
                goto done;
            }

            if (reply == NULL) {
                break;
            }

            r = reply;

            (void) ngx_http_helix_limit_reply(r, &res);

            /* as ngx_http_helix_l2_done reads an MGET or the lookup
               script's answer */

            ngx_http_helix_l2_result(r, keys, candidates, 0, &l2);
            ngx_http_helix_l2_result(r, keys, candidates, 1, &l2);

            freeReplyObject(reply);
        }
    }

done:

    redisReaderFree(reader);

    return 0;
}
