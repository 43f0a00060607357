/*
 * Copyright (C) helix authors
 *
 * A strict JSON scanner (RFC 8259: UTF-8 checked, escapes and surrogate
 * pairs checked, no trailing bytes) that leaves the document where it is
 * and records its values as a flat array of tokens in the pool.
 *
 * jansson's own parser reads a character at a time through a stream and
 * builds the tree with an allocation per value; on the gateway's hot path
 * that was most of the cost of a request.  With tokens, answers that go
 * to the client as they came are checked without a tree at all, and where
 * a tree is needed ngx_http_helix_jtree() builds it directly.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <math.h>

#include "ngx_http_helix_jscan.h"


#define NGX_HTTP_HELIX_JSCAN_NUMBER_MAX  64


typedef struct {
    ngx_str_t               text;
    ngx_uint_t              type;
} ngx_http_helix_jlit_t;


/* an object's key, unescaped, for the duplicate check */

typedef struct {
    u_char                 *data;
    size_t                  len;
    uint32_t                tok;
} ngx_http_helix_jkey_t;


static ngx_http_helix_jlit_t  ngx_http_helix_jliterals[] = {
    { ngx_string("true"), NGX_HTTP_HELIX_JTRUE },
    { ngx_string("false"), NGX_HTTP_HELIX_JFALSE },
    { ngx_string("null"), NGX_HTTP_HELIX_JNULL }
};


/* printable ASCII other than '"' and '\\' */
static const u_char  ngx_http_helix_jplain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
    /* 0x80 and above: UTF-8, checked one sequence at a time */
};


static ngx_int_t ngx_http_helix_jscan_push(ngx_http_helix_jdoc_t *doc,
    ngx_pool_t *pool, ngx_uint_t *cap, ngx_uint_t type, u_char *start);
static u_char *ngx_http_helix_jscan_string(ngx_http_helix_jdoc_t *doc,
    u_char *p, u_char *end, ngx_uint_t flags, ngx_uint_t *escaped);
static u_char *ngx_http_helix_jscan_number(ngx_http_helix_jdoc_t *doc,
    u_char *p, u_char *end, ngx_uint_t *real);
static ngx_int_t ngx_http_helix_jscan_hex(u_char *p, uint32_t *cp);
static ngx_int_t ngx_http_helix_jscan_unique(ngx_http_helix_jdoc_t *doc,
    ngx_pool_t *pool, ngx_uint_t obj, ngx_http_helix_jkey_t **keys,
    ngx_uint_t *nkeys);
static int ngx_libc_cdecl ngx_http_helix_jkey_cmp(const void *one,
    const void *two);
static ngx_int_t ngx_http_helix_jscan_fail(ngx_http_helix_jdoc_t *doc,
    u_char *p, const char *err);
static size_t ngx_http_helix_junescape(u_char *dst, u_char *src, size_t len);


#define ngx_http_helix_jscan_ws(p, end)                                       \
    while (p < end                                                            \
           && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))          \
    {                                                                         \
        p++;                                                                  \
    }


ngx_int_t
ngx_http_helix_jscan(ngx_pool_t *pool, u_char *data, size_t len,
    ngx_uint_t flags, ngx_http_helix_jdoc_t *doc)
{
    u_char                 *p, *end;
    uint32_t                stack[NGX_HTTP_HELIX_JSCAN_MAX_DEPTH];
    ngx_int_t               rc;
    ngx_uint_t              depth, cap, escaped, real, top, nkeys;
    ngx_http_helix_jtok_t  *t;
    ngx_http_helix_jlit_t  *lit;
    ngx_http_helix_jkey_t  *keys;

    ngx_memzero(doc, sizeof(ngx_http_helix_jdoc_t));

    keys = NULL;
    nkeys = 0;

    doc->data = data;
    doc->len = len;

    if (len >= 0xffffffff) {
        return ngx_http_helix_jscan_fail(doc, data, "document too large");
    }

    /* a token per 8 bytes covers ordinary documents without regrowing */
    cap = len / 8 + 8;

    doc->tok = ngx_palloc(pool, cap * sizeof(ngx_http_helix_jtok_t));
    if (doc->tok == NULL) {
        doc->nomem = 1;
        return NGX_ERROR;
    }

    p = data;
    end = data + len;
    depth = 0;

    ngx_http_helix_jscan_ws(p, end);

value:

    if (p == end) {
        return ngx_http_helix_jscan_fail(doc, p, "premature end of input");
    }

    if (depth) {
        doc->tok[stack[depth - 1]].size++;
    }

    switch (*p) {

    case '{':
    case '[':
        if (depth == NGX_HTTP_HELIX_JSCAN_MAX_DEPTH) {
            return ngx_http_helix_jscan_fail(doc, p, "too deeply nested");
        }

        if (ngx_http_helix_jscan_push(doc, pool, &cap,
                                      *p == '{' ? NGX_HTTP_HELIX_JOBJECT
                                                : NGX_HTTP_HELIX_JARRAY,
                                      p)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        stack[depth++] = (uint32_t) (doc->ntok - 1);
        p++;

        ngx_http_helix_jscan_ws(p, end);

        if (p < end && (*p == '}' || *p == ']')) {
            goto close;
        }

        if (doc->tok[stack[depth - 1]].type == NGX_HTTP_HELIX_JARRAY) {
            goto value;
        }

        goto key;

    case '"':
        if (ngx_http_helix_jscan_push(doc, pool, &cap,
                                      NGX_HTTP_HELIX_JSTRING, p + 1)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        p = ngx_http_helix_jscan_string(doc, p + 1, end, flags, &escaped);
        if (p == NULL) {
            return NGX_ERROR;
        }

        t = &doc->tok[doc->ntok - 1];
        t->len = (uint32_t) (p - data) - t->start;
        t->escaped = (u_char) escaped;
        p++;
        break;

    case 't':
    case 'f':
    case 'n':
        lit = &ngx_http_helix_jliterals[*p == 't' ? 0 : (*p == 'f' ? 1 : 2)];

        if ((size_t) (end - p) < lit->text.len
            || ngx_strncmp(p, lit->text.data, lit->text.len) != 0)
        {
            goto literal;
        }

        if (ngx_http_helix_jscan_push(doc, pool, &cap, lit->type, p)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        p += lit->text.len;
        break;

    default:
        if (*p != '-' && (*p < '0' || *p > '9')) {
            return ngx_http_helix_jscan_fail(doc, p, "invalid token");
        }

        if (ngx_http_helix_jscan_push(doc, pool, &cap,
                                      NGX_HTTP_HELIX_JINTEGER, p)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        t = &doc->tok[doc->ntok - 1];

        p = ngx_http_helix_jscan_number(doc, p, end, &real);
        if (p == NULL) {
            return NGX_ERROR;
        }

        t->len = (uint32_t) (p - data) - t->start;

        if (real) {
            t->type = NGX_HTTP_HELIX_JREAL;
        }
    }

    /* a scalar is complete */

    doc->tok[doc->ntok - 1].next = (uint32_t) doc->ntok;

after:

    ngx_http_helix_jscan_ws(p, end);

    if (depth == 0) {
        if (p != end) {
            return ngx_http_helix_jscan_fail(doc, p, "end of input expected");
        }

        return NGX_OK;
    }

    if (p == end) {
        return ngx_http_helix_jscan_fail(doc, p, "premature end of input");
    }

    if (*p == ',') {
        p++;
        ngx_http_helix_jscan_ws(p, end);

        if (doc->tok[stack[depth - 1]].type == NGX_HTTP_HELIX_JARRAY) {
            goto value;
        }

        goto key;
    }

close:

    if (p == end) {
        return ngx_http_helix_jscan_fail(doc, p, "premature end of input");
    }

    top = stack[depth - 1];

    if (*p != (doc->tok[top].type == NGX_HTTP_HELIX_JOBJECT ? '}' : ']')) {
        return ngx_http_helix_jscan_fail(doc, p,
                                doc->tok[top].type == NGX_HTTP_HELIX_JOBJECT
                                ? "',' or '}' expected"
                                : "',' or ']' expected");
    }

    if ((flags & NGX_HTTP_HELIX_JSCAN_UNIQUE)
        && doc->tok[top].type == NGX_HTTP_HELIX_JOBJECT)
    {
        rc = ngx_http_helix_jscan_unique(doc, pool, top, &keys, &nkeys);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    p++;
    doc->tok[top].len = (uint32_t) (p - data) - doc->tok[top].start;
    doc->tok[top].next = (uint32_t) doc->ntok;
    depth--;

    goto after;

key:

    if (p == end) {
        return ngx_http_helix_jscan_fail(doc, p, "premature end of input");
    }

    if (*p != '"') {
        return ngx_http_helix_jscan_fail(doc, p, "string or '}' expected");
    }

    if (ngx_http_helix_jscan_push(doc, pool, &cap, NGX_HTTP_HELIX_JSTRING,
                                  p + 1)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * never "\u0000" in a key, whatever the flags (as jansson): code that
     * reads keys as C strings would take "model\u0000x" for "model"
     */

    p = ngx_http_helix_jscan_string(doc, p + 1, end,
                                    flags & ~NGX_HTTP_HELIX_JSCAN_ALLOW_NUL,
                                    &escaped);
    if (p == NULL) {
        return NGX_ERROR;
    }

    t = &doc->tok[doc->ntok - 1];
    t->len = (uint32_t) (p - data) - t->start;
    t->escaped = (u_char) escaped;
    t->next = (uint32_t) doc->ntok;
    p++;

    ngx_http_helix_jscan_ws(p, end);

    if (p == end) {
        return ngx_http_helix_jscan_fail(doc, p, "premature end of input");
    }

    if (*p != ':') {
        return ngx_http_helix_jscan_fail(doc, p, "':' expected");
    }

    p++;
    ngx_http_helix_jscan_ws(p, end);

    goto value;

literal:

    return ngx_http_helix_jscan_fail(doc, p, "invalid token");
}


static ngx_int_t
ngx_http_helix_jscan_push(ngx_http_helix_jdoc_t *doc, ngx_pool_t *pool,
    ngx_uint_t *cap, ngx_uint_t type, u_char *start)
{
    ngx_http_helix_jtok_t  *t;

    if (doc->ntok == *cap) {
        t = ngx_palloc(pool, *cap * 2 * sizeof(ngx_http_helix_jtok_t));
        if (t == NULL) {
            doc->nomem = 1;
            return NGX_ERROR;
        }

        ngx_memcpy(t, doc->tok, *cap * sizeof(ngx_http_helix_jtok_t));
        doc->tok = t;
        *cap *= 2;
    }

    t = &doc->tok[doc->ntok++];

    t->start = (uint32_t) (start - doc->data);
    t->len = 0;
    t->next = 0;
    t->size = 0;
    t->type = (u_char) type;
    t->escaped = 0;

    return NGX_OK;
}


/* p is after the opening quote; returns the closing quote */

static u_char *
ngx_http_helix_jscan_string(ngx_http_helix_jdoc_t *doc, u_char *p,
    u_char *end, ngx_uint_t flags, ngx_uint_t *escaped)
{
    u_char    c;
    uint32_t  cp, lo;
    uint64_t  w;

    *escaped = 0;

    while (p < end) {

        /* the common case: a run of printable ASCII, 8 bytes a step */

        while (end - p >= 8) {
            ngx_memcpy(&w, p, 8);

            /* a byte < 0x20, '"', '\\' or >= 0x80 in the word? */
            if (((w - 0x2020202020202020ULL)
                 | ((w ^ 0x2222222222222222ULL) - 0x0101010101010101ULL)
                 | ((w ^ 0x5c5c5c5c5c5c5c5cULL) - 0x0101010101010101ULL)
                 | w)
                & 0x8080808080808080ULL)
            {
                break;
            }

            p += 8;
        }

        while (p < end && ngx_http_helix_jplain[*p]) {
            p++;
        }

        if (p == end) {
            break;
        }

        c = *p;

        if (c == '"') {
            return p;
        }

        if (c < 0x20) {
            ngx_http_helix_jscan_fail(doc, p, "control character in string");
            return NULL;
        }

        if (c == '\\') {
            *escaped = 1;

            if (end - p < 2) {
                break;
            }

            switch (p[1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n':
            case 'r': case 't':
                p += 2;
                continue;

            case 'u':
                break;

            default:
                ngx_http_helix_jscan_fail(doc, p, "invalid escape");
                return NULL;
            }

            if (end - p < 6) {
                break;
            }

            if (ngx_http_helix_jscan_hex(p + 2, &cp) != NGX_OK) {
                ngx_http_helix_jscan_fail(doc, p, "invalid \\u escape");
                return NULL;
            }

            if (cp == 0 && !(flags & NGX_HTTP_HELIX_JSCAN_ALLOW_NUL)) {
                ngx_http_helix_jscan_fail(doc, p,
                                          "\\u0000 is not allowed");
                return NULL;
            }

            if (cp >= 0xdc00 && cp <= 0xdfff) {
                ngx_http_helix_jscan_fail(doc, p,
                                          "invalid Unicode (lone low "
                                          "surrogate)");
                return NULL;
            }

            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (end - p < 12) {
                    if (end - p > 6 && p[6] != '\\') {
                        goto lone;
                    }

                    break;
                }

                if (p[6] != '\\' || p[7] != 'u'
                    || ngx_http_helix_jscan_hex(p + 8, &lo) != NGX_OK
                    || lo < 0xdc00 || lo > 0xdfff)
                {
                    goto lone;
                }

                p += 12;
                continue;
            }

            p += 6;
            continue;
        }

        /* UTF-8: shortest form, no surrogates, at most U+10FFFF */

        if (c >= 0xc2 && c <= 0xdf) {
            if (end - p < 2) {
                break;
            }

            if ((p[1] & 0xc0) != 0x80) {
                goto utf8;
            }

            p += 2;
            continue;
        }

        if (c >= 0xe0 && c <= 0xef) {
            if (end - p < 3) {
                break;
            }

            if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80
                || (c == 0xe0 && p[1] < 0xa0)
                || (c == 0xed && p[1] > 0x9f))
            {
                goto utf8;
            }

            p += 3;
            continue;
        }

        if (c >= 0xf0 && c <= 0xf4) {
            if (end - p < 4) {
                break;
            }

            if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80
                || (p[3] & 0xc0) != 0x80
                || (c == 0xf0 && p[1] < 0x90)
                || (c == 0xf4 && p[1] > 0x8f))
            {
                goto utf8;
            }

            p += 4;
            continue;
        }

        goto utf8;
    }

    ngx_http_helix_jscan_fail(doc, end, "premature end of input");
    return NULL;

lone:

    ngx_http_helix_jscan_fail(doc, p, "invalid Unicode (lone high surrogate)");
    return NULL;

utf8:

    ngx_http_helix_jscan_fail(doc, p, "invalid UTF-8 in string");
    return NULL;
}


static u_char *
ngx_http_helix_jscan_number(ngx_http_helix_jdoc_t *doc, u_char *p,
    u_char *end, ngx_uint_t *real)
{
    u_char  *digits;

    *real = 0;

    if (*p == '-') {
        p++;
    }

    if (p == end) {
        goto truncated;
    }

    if (*p == '0') {
        p++;

    } else if (*p >= '1' && *p <= '9') {
        digits = p;

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p - digits >= 19) {
            doc->bigint = 1;
        }

    } else {
        goto invalid;
    }

    if (p < end && *p == '.') {
        *real = 1;
        p++;

        if (p == end) {
            goto truncated;
        }

        if (*p < '0' || *p > '9') {
            goto invalid;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        *real = 1;
        p++;

        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }

        if (p == end) {
            goto truncated;
        }

        if (*p < '0' || *p > '9') {
            goto invalid;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    return p;

truncated:

    ngx_http_helix_jscan_fail(doc, p, "premature end of input");
    return NULL;

invalid:

    ngx_http_helix_jscan_fail(doc, p, "invalid number");
    return NULL;
}


static ngx_int_t
ngx_http_helix_jscan_hex(u_char *p, uint32_t *cp)
{
    u_char      c;
    ngx_uint_t  i;

    *cp = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];

        if (c >= '0' && c <= '9') {
            c -= '0';

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            c = (c | 0x20) - 'a' + 10;

        } else {
            return NGX_ERROR;
        }

        *cp = (*cp << 4) | c;
    }

    return NGX_OK;
}


/*
 * The object at index obj, complete: NGX_DECLINED when two of its keys
 * are equal once unescaped.  A client's {"model":"a","model":"b"} would
 * otherwise be read one way here (the last one) and maybe another way by
 * a provider that gets the bytes as they came.  keys is scratch space
 * kept across the objects of one document.
 */

static ngx_int_t
ngx_http_helix_jscan_unique(ngx_http_helix_jdoc_t *doc, ngx_pool_t *pool,
    ngx_uint_t obj, ngx_http_helix_jkey_t **keys, ngx_uint_t *nkeys)
{
    u_char                 *buf;
    uint32_t                e, m, n, dup;
    ngx_http_helix_jkey_t  *k;
    ngx_http_helix_jtok_t  *t;

    n = doc->tok[obj].size;

    if (n < 2) {
        return NGX_OK;
    }

    if (n > *nkeys) {
        k = ngx_palloc(pool, n * sizeof(ngx_http_helix_jkey_t));
        if (k == NULL) {
            doc->nomem = 1;
            return NGX_ERROR;
        }

        *keys = k;
        *nkeys = n;
    }

    k = *keys;
    e = (uint32_t) obj + 1;

    for (m = 0; m < n; m++) {
        t = &doc->tok[e];

        k[m].tok = e;

        if (t->escaped) {
            buf = ngx_pnalloc(pool, t->len);
            if (buf == NULL) {
                doc->nomem = 1;
                return NGX_ERROR;
            }

            k[m].data = buf;
            k[m].len = ngx_http_helix_junescape(buf, doc->data + t->start,
                                                t->len);

        } else {
            k[m].data = doc->data + t->start;
            k[m].len = t->len;
        }

        e = doc->tok[e + 1].next;
    }

    ngx_qsort(k, n, sizeof(ngx_http_helix_jkey_t), ngx_http_helix_jkey_cmp);

    /* equal keys sort in document order: report the first repeat */

    dup = 0;

    for (m = 1; m < n; m++) {
        if (k[m].len == k[m - 1].len
            && ngx_memcmp(k[m].data, k[m - 1].data, k[m].len) == 0
            && (dup == 0 || k[m].tok < dup))
        {
            dup = k[m].tok;
        }
    }

    if (dup) {
        return ngx_http_helix_jscan_fail(doc,
                                         doc->data + doc->tok[dup].start - 1,
                                         "duplicate object key");
    }

    return NGX_OK;
}


static int ngx_libc_cdecl
ngx_http_helix_jkey_cmp(const void *one, const void *two)
{
    int                           rc;
    const ngx_http_helix_jkey_t  *a, *b;

    a = one;
    b = two;

    rc = ngx_memcmp(a->data, b->data, ngx_min(a->len, b->len));

    if (rc != 0) {
        return rc;
    }

    if (a->len != b->len) {
        return a->len < b->len ? -1 : 1;
    }

    return a->tok < b->tok ? -1 : (a->tok > b->tok);
}


static ngx_int_t
ngx_http_helix_jscan_fail(ngx_http_helix_jdoc_t *doc, u_char *p,
    const char *err)
{
    u_char  *q;

    doc->err = err;
    doc->pos = p - doc->data;
    doc->truncated = (p == doc->data + doc->len);
    doc->line = 1;
    doc->column = 1;

    for (q = doc->data; q < p; q++) {
        if (*q == '\n') {
            doc->line++;
            doc->column = 1;

        } else if ((*q & 0xc0) != 0x80) {
            doc->column++;
        }
    }

    return NGX_DECLINED;
}


/* the last member named key of the object at index obj, or 0 */

ngx_uint_t
ngx_http_helix_jget(ngx_http_helix_jdoc_t *doc, ngx_uint_t obj,
    const char *key)
{
    u_char                  buf[64];
    size_t                  klen, n;
    uint32_t                i, m, found;
    ngx_http_helix_jtok_t  *t;

    if (obj >= doc->ntok || doc->tok[obj].type != NGX_HTTP_HELIX_JOBJECT) {
        return 0;
    }

    klen = ngx_strlen(key);
    found = 0;
    i = (uint32_t) obj + 1;

    for (m = 0; m < doc->tok[obj].size; m++) {
        t = &doc->tok[i];

        if (!t->escaped) {
            if (t->len == klen
                && ngx_memcmp(doc->data + t->start, key, klen) == 0)
            {
                found = i + 1;
            }

        } else if (t->len <= sizeof(buf)) {
            n = ngx_http_helix_junescape(buf, doc->data + t->start, t->len);

            if (n == klen && ngx_memcmp(buf, key, klen) == 0) {
                found = i + 1;
            }
        }

        i = doc->tok[i + 1].next;
    }

    return found;
}


ngx_int_t
ngx_http_helix_jint(ngx_http_helix_jdoc_t *doc, ngx_uint_t i, int64_t *n)
{
    u_char                  buf[NGX_HTTP_HELIX_JSCAN_NUMBER_MAX];
    char                   *last;
    ngx_http_helix_jtok_t  *t;

    if (i == 0 || i >= doc->ntok) {
        return NGX_DECLINED;
    }

    t = &doc->tok[i];

    if (t->type != NGX_HTTP_HELIX_JINTEGER || t->len >= sizeof(buf)) {
        return NGX_DECLINED;
    }

    ngx_memcpy(buf, doc->data + t->start, t->len);
    buf[t->len] = '\0';

    errno = 0;
    *n = strtoll((char *) buf, &last, 10);

    if (errno == ERANGE) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* dst has room for len bytes: an escape never decodes longer than itself */

static size_t
ngx_http_helix_junescape(u_char *dst, u_char *src, size_t len)
{
    u_char    *d, *end;
    uint32_t   cp, lo;

    d = dst;
    end = src + len;

    while (src < end) {
        if (*src != '\\') {
            *d++ = *src++;
            continue;
        }

        switch (src[1]) {
        case 'b': *d++ = '\b'; src += 2; continue;
        case 'f': *d++ = '\f'; src += 2; continue;
        case 'n': *d++ = '\n'; src += 2; continue;
        case 'r': *d++ = '\r'; src += 2; continue;
        case 't': *d++ = '\t'; src += 2; continue;
        case 'u': break;
        default: *d++ = src[1]; src += 2; continue;
        }

        /* checked by the scanner */
        (void) ngx_http_helix_jscan_hex(src + 2, &cp);
        src += 6;

        if (cp >= 0xd800 && cp <= 0xdbff) {
            (void) ngx_http_helix_jscan_hex(src + 2, &lo);
            src += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }

        if (cp < 0x80) {
            *d++ = (u_char) cp;

        } else if (cp < 0x800) {
            *d++ = (u_char) (0xc0 | (cp >> 6));
            *d++ = (u_char) (0x80 | (cp & 0x3f));

        } else if (cp < 0x10000) {
            *d++ = (u_char) (0xe0 | (cp >> 12));
            *d++ = (u_char) (0x80 | ((cp >> 6) & 0x3f));
            *d++ = (u_char) (0x80 | (cp & 0x3f));

        } else {
            *d++ = (u_char) (0xf0 | (cp >> 18));
            *d++ = (u_char) (0x80 | ((cp >> 12) & 0x3f));
            *d++ = (u_char) (0x80 | ((cp >> 6) & 0x3f));
            *d++ = (u_char) (0x80 | (cp & 0x3f));
        }
    }

    return d - dst;
}


static json_t *
ngx_http_helix_jtree_string(ngx_http_helix_jdoc_t *doc,
    ngx_http_helix_jtok_t *t, u_char *buf)
{
    size_t  n;

    if (!t->escaped) {
        return json_stringn_nocheck((char *) doc->data + t->start, t->len);
    }

    n = ngx_http_helix_junescape(buf, doc->data + t->start, t->len);

    return json_stringn_nocheck((char *) buf, n);
}


/*
 * The jansson tree of the value at index i.  NULL: out of memory, or a
 * number jansson cannot hold (doc->err says which).
 */

json_t *
ngx_http_helix_jtree(ngx_http_helix_jdoc_t *doc, ngx_uint_t i)
{
    u_char                  nbuf[NGX_HTTP_HELIX_JSCAN_NUMBER_MAX], *buf;
    char                   *last;
    double                  d;
    json_t                 *j, *v;
    size_t                  n;
    int64_t                 k;
    uint32_t                m, e;
    ngx_http_helix_jtok_t  *t, *kt;

    t = &doc->tok[i];
    buf = NULL;

    switch (t->type) {

    case NGX_HTTP_HELIX_JOBJECT:
        j = json_object();
        if (j == NULL) {
            return NULL;
        }

        e = (uint32_t) i + 1;

        for (m = 0; m < t->size; m++) {
            kt = &doc->tok[e];

            v = ngx_http_helix_jtree(doc, e + 1);
            if (v == NULL) {
                json_decref(j);
                return NULL;
            }

            if (kt->escaped) {
                buf = ngx_alloc(kt->len + 1, ngx_cycle->log);
                if (buf == NULL) {
                    json_decref(v);
                    json_decref(j);
                    return NULL;
                }

                n = ngx_http_helix_junescape(buf, doc->data + kt->start,
                                             kt->len);
                buf[n] = '\0';

                if (json_object_setn_new_nocheck(j, (char *) buf, n, v)
                    != 0)
                {
                    ngx_free(buf);
                    json_decref(j);
                    return NULL;
                }

                ngx_free(buf);

            } else if (json_object_setn_new_nocheck(j,
                                         (char *) doc->data + kt->start,
                                         kt->len, v)
                       != 0)
            {
                json_decref(j);
                return NULL;
            }

            e = doc->tok[e + 1].next;
        }

        return j;

    case NGX_HTTP_HELIX_JARRAY:
        j = json_array();
        if (j == NULL) {
            return NULL;
        }

        e = (uint32_t) i + 1;

        for (m = 0; m < t->size; m++) {
            v = ngx_http_helix_jtree(doc, e);

            if (v == NULL || json_array_append_new(j, v) != 0) {
                json_decref(j);
                return NULL;
            }

            e = doc->tok[e].next;
        }

        return j;

    case NGX_HTTP_HELIX_JSTRING:
        if (!t->escaped) {
            return ngx_http_helix_jtree_string(doc, t, NULL);
        }

        buf = ngx_alloc(t->len + 1, ngx_cycle->log);
        if (buf == NULL) {
            return NULL;
        }

        j = ngx_http_helix_jtree_string(doc, t, buf);
        ngx_free(buf);

        return j;

    case NGX_HTTP_HELIX_JINTEGER:
        if (ngx_http_helix_jint(doc, i, &k) != NGX_OK) {
            doc->err = "too big integer";
            doc->pos = t->start;
            return NULL;
        }

        return json_integer((json_int_t) k);

    case NGX_HTTP_HELIX_JREAL:
        if (t->len >= sizeof(nbuf)) {
            buf = ngx_alloc(t->len + 1, ngx_cycle->log);
            if (buf == NULL) {
                return NULL;
            }

        } else {
            buf = nbuf;
        }

        ngx_memcpy(buf, doc->data + t->start, t->len);
        buf[t->len] = '\0';

        errno = 0;
        d = strtod((char *) buf, &last);

        if (buf != nbuf) {
            ngx_free(buf);
        }

        if (errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL)) {
            doc->err = "real number overflow";
            doc->pos = t->start;
            return NULL;
        }

        return json_real(d);

    case NGX_HTTP_HELIX_JTRUE:
        return json_true();

    case NGX_HTTP_HELIX_JFALSE:
        return json_false();

    default:
        return json_null();
    }
}


/*
 * What json_loadb() gives, faster: an object or array, NULL with doc->err
 * set when the text is not JSON, NULL with doc->nomem set when memory ran
 * out.
 */

json_t *
ngx_http_helix_jload(ngx_pool_t *pool, u_char *data, size_t len,
    ngx_uint_t flags, ngx_http_helix_jdoc_t *doc)
{
    json_t     *j;
    ngx_int_t   rc;

    rc = ngx_http_helix_jscan(pool, data, len, flags, doc);

    if (rc != NGX_OK) {
        return NULL;
    }

    if (doc->tok[0].type != NGX_HTTP_HELIX_JOBJECT
        && doc->tok[0].type != NGX_HTTP_HELIX_JARRAY)
    {
        ngx_http_helix_jscan_fail(doc, data + doc->tok[0].start,
                                  "'[' or '{' expected");
        return NULL;
    }

    j = ngx_http_helix_jtree(doc, 0);

    if (j == NULL && doc->err == NULL) {
        doc->nomem = 1;
    }

    return j;
}
