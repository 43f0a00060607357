/*
 * Copyright (C) helix authors
 *
 * The JSON scanner (src/core/ngx_http_helix_jscan.c): a document in every mode
 * (flags from the first byte), then lookups and the jansson tree of what
 * it accepted.  util/jscan-fuzz.c ("make check-json") compares its
 * verdicts with jansson's; this one looks for memory errors.
 */


#include "fuzz.h"
#include "ngx_http_helix_jscan.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                 *copy;
    json_t                 *j;
    int64_t                 n;
    ngx_uint_t              flags, i, k;
    ngx_pool_t             *pool;
    ngx_http_helix_jdoc_t   doc;

    static const char  *keys[] = { "model", "choices", "message", "usage",
                                   "error", "embedding", "data", "" };

    fuzz_init();

    if (size == 0) {
        return 0;
    }

    flags = data[0] & (NGX_HTTP_HELIX_JSCAN_ALLOW_NUL
                       | NGX_HTTP_HELIX_JSCAN_UNIQUE);
    data++;
    size--;

    pool = fuzz_pool();

    /* an exact copy: ASan sees any read past the document */
    copy = malloc(size ? size : 1);
    memcpy(copy, data, size);

    if (ngx_http_helix_jscan(pool, copy, size, flags, &doc) == NGX_OK) {

        for (i = 0; i < doc.ntok; i++) {
            (void) ngx_http_helix_jint(&doc, i, &n);

            if (doc.tok[i].type == NGX_HTTP_HELIX_JOBJECT) {
                for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
                    (void) ngx_http_helix_jget(&doc, i, keys[k]);
                }
            }
        }

        j = ngx_http_helix_jtree(&doc, 0);
        json_decref(j);
    }

    j = ngx_http_helix_jload(pool, copy, size, flags, &doc);
    json_decref(j);

    free(copy);
    ngx_destroy_pool(pool);

    return 0;
}
