/*
 * Copyright (C) helix authors
 *
 * Differential check of src/core/ngx_http_helix_jscan.c against jansson's own
 * parser: every seed document and a few hundred thousand mutations of
 * them must be accepted or refused by both, and when accepted give equal
 * trees.  Run by "make check-json" (a development tool, not a test).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>

#include "ngx_http_helix_jscan.h"


volatile ngx_cycle_t  *ngx_cycle;


void *
ngx_palloc(ngx_pool_t *pool, size_t size)
{
    void  *p;

    p = malloc(size);

    /* the pool is a list of what to free at the end of one document */
    if (p != NULL) {
        void  **cell = malloc(2 * sizeof(void *));

        cell[0] = p;
        cell[1] = pool->d.last;
        pool->d.last = (u_char *) cell;
    }

    return p;
}


void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    return ngx_palloc(pool, size);
}


void *
ngx_alloc(size_t size, ngx_log_t *log)
{
    return malloc(size);
}


static void
pool_reset(ngx_pool_t *pool)
{
    void  **cell, **next;

    for (cell = (void **) pool->d.last; cell; cell = next) {
        next = cell[1];
        free(cell[0]);
        free(cell);
    }

    pool->d.last = NULL;
}


static const char  *seeds[] = {
    "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":"
        "\"Hello there, benchmark\"}],\"max_tokens\":50}",
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":"
        "1795725492,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"Mock answer\","
        "\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":30,"
        "\"total_tokens\":37},\"system_fingerprint\":\"fp_mock\"}",
    "[1, -0, 0.5, -1.25e+10, 1E-3, 9223372036854775807, "
        "-9223372036854775808, true, false, null, [], {}, [[[]]]]",
    "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\u20ac\\ud83d\\ude00\","
        "\"k\\u0041y\":1, \"\\u00e9\":2, \"a\":1, \"a\":2}",
    "{\"utf8\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xed\x9f\xbf "
        "\xef\xbf\xbf \xf4\x8f\xbf\xbf\"}",
    " \t\r\n{ \"a\" : [ 1 , 2 ] , \"b\" : { } } \n",
    "{\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":"
        "[0.1,-0.2,3e-5]}],\"usage\":{\"prompt_tokens\":3}}",
    "{\"big\":12345678901234567890, \"real\":1e400}",
    "{\"nul\":\"a\\u0000b\"}",
    "{\"model\":\"a\",\"model\\u0000x\":\"b\",\"m\\u006fdel\":1}",
    "{\"o\":{\"k\":1,\"j\":{\"k\":2}},\"p\":[{\"k\":1},{\"k\":2}]}",
    "{\"deep\":[[[[[[[[[[[[[[[[[[[[{\"x\":[1]}]]]]]]]]]]]]]]]]]]]]}",
};


static const char  alphabet[] =
    "{}[]\",:\\/ 0123456789-+.eEtrufalsn\t\r\nabu\x80\xc3\xa9\xed\xa0\xf0"
    "\x9f\xff\x01";


static unsigned long  state = 88172645463325252UL;


static unsigned long
rnd(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}


static ngx_uint_t  accepted;


static int
check(ngx_pool_t *pool, u_char *data, size_t len, ngx_uint_t flags)
{
    json_t                 *a, *b;
    json_error_t            e;
    ngx_uint_t              nul;
    ngx_http_helix_jdoc_t   doc;

    nul = flags & NGX_HTTP_HELIX_JSCAN_ALLOW_NUL;

    a = json_loadb((char *) data, len,
                   (nul ? JSON_ALLOW_NUL : 0)
                   | ((flags & NGX_HTTP_HELIX_JSCAN_UNIQUE)
                      ? JSON_REJECT_DUPLICATES : 0), &e);
    b = ngx_http_helix_jload(pool, data, len, flags, &doc);

    /* jansson reads past a raw NUL byte; RFC 8259 does not allow one */
    if (a && b == NULL && memchr(data, '\0', len) != NULL) {
        json_decref(a);
        pool_reset(pool);
        return 0;
    }

    if ((a == NULL) != (b == NULL) || (a && !json_equal(a, b))) {
        fprintf(stderr, "MISMATCH (flags %d): jansson %s (%s), "
                "jscan %s (%s at %d)\n  input (%d bytes): ",
                (int) flags, a ? "ok" : "refused", a ? "" : e.text,
                b ? "ok" : "refused", b ? "" : doc.err, (int) doc.pos,
                (int) len);
        fwrite(data, 1, len, stderr);
        fputc('\n', stderr);
        json_decref(a);
        json_decref(b);
        pool_reset(pool);
        return 1;
    }

    accepted += (a != NULL);

    json_decref(a);
    json_decref(b);
    pool_reset(pool);

    return 0;
}


int
main(int argc, char **argv)
{
    u_char      buf[4096];
    size_t      len, slen, n, i, pos;
    ngx_uint_t  s, k, iterations, failures, checked;
    ngx_pool_t  pool;

    static ngx_cycle_t  cycle;

    ngx_cycle = &cycle;
    iterations = argc > 1 ? (ngx_uint_t) atoi(argv[1]) : 200000;
    failures = 0;
    checked = 0;
    ngx_memzero(&pool, sizeof(ngx_pool_t));

    for (s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        slen = strlen(seeds[s]);

        /* every prefix: truncations at every byte */
        for (len = 0; len <= slen; len++) {
            /* ALLOW_NUL and UNIQUE, each way */
            for (k = 0; k < 4; k++) {
                failures += check(&pool, (u_char *) seeds[s], len, k);
                checked++;
            }
        }
    }

    for (k = 0; k < iterations; k++) {
        s = rnd() % (sizeof(seeds) / sizeof(seeds[0]));
        len = strlen(seeds[s]);
        memcpy(buf, seeds[s], len);

        for (n = 1 + rnd() % 4; n; n--) {
            pos = len ? rnd() % len : 0;

            switch (rnd() % 4) {
            case 0:     /* replace */
                if (len) {
                    buf[pos] = alphabet[rnd() % (sizeof(alphabet) - 1)];
                }
                break;

            case 1:     /* insert */
                if (len < sizeof(buf) - 1) {
                    memmove(buf + pos + 1, buf + pos, len - pos);
                    buf[pos] = alphabet[rnd() % (sizeof(alphabet) - 1)];
                    len++;
                }
                break;

            case 2:     /* delete */
                if (len) {
                    memmove(buf + pos, buf + pos + 1, len - pos - 1);
                    len--;
                }
                break;

            default:    /* random byte */
                if (len) {
                    buf[pos] = (u_char) rnd();
                }
            }
        }

        failures += check(&pool, buf, len, rnd() % 4);
        checked++;
    }

    /* nesting: both refuse what neither can hold, accept the rest */
    for (i = 0; i < 600; i++) {
        buf[i] = '[';
        buf[1200 - i - 1] = ']';
    }

    n = 0;
    for (len = 1; len <= 500; len += 499) {
        failures += check(&pool, buf + 600 - len, 2 * len, 0);
        n++;
    }

    printf("jscan-fuzz: %lu documents checked (%lu valid JSON), "
           "%lu mismatches\n", (unsigned long) (checked + n),
           (unsigned long) accepted, (unsigned long) failures);

    return failures ? 1 : 0;
}
