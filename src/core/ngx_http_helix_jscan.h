/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_JSCAN_H_INCLUDED_
#define _NGX_HTTP_HELIX_JSCAN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>


#define NGX_HTTP_HELIX_JSCAN_MAX_DEPTH  512

/* flags */
#define NGX_HTTP_HELIX_JSCAN_ALLOW_NUL  0x01   /* "\u0000" in strings */
#define NGX_HTTP_HELIX_JSCAN_UNIQUE     0x02   /* refuse duplicate keys */


typedef enum {
    NGX_HTTP_HELIX_JOBJECT = 1,
    NGX_HTTP_HELIX_JARRAY,
    NGX_HTTP_HELIX_JSTRING,
    NGX_HTTP_HELIX_JINTEGER,
    NGX_HTTP_HELIX_JREAL,
    NGX_HTTP_HELIX_JTRUE,
    NGX_HTTP_HELIX_JFALSE,
    NGX_HTTP_HELIX_JNULL
} ngx_http_helix_jtype_e;


/*
 * One value of a scanned document.  Tokens are in document order; an
 * object's members follow it as key, value, key, value...; "next" is the
 * index of the first token after the value and everything inside it, so
 * a lookup skips whole subtrees.
 */

typedef struct {
    uint32_t                    start;    /* strings: after the quote */
    uint32_t                    len;      /* strings: up to the quote */
    uint32_t                    next;
    uint32_t                    size;     /* members or elements */
    u_char                      type;
    u_char                      escaped;  /* a string with backslashes */
} ngx_http_helix_jtok_t;


typedef struct {
    u_char                     *data;
    size_t                      len;
    ngx_http_helix_jtok_t      *tok;
    ngx_uint_t                  ntok;

    /* why not, when scanning failed */
    const char                 *err;
    size_t                      pos;
    ngx_uint_t                  line;
    ngx_uint_t                  column;
    unsigned                    truncated:1;
    unsigned                    nomem:1;

    /* an integer of 19 digits or more: it may not fit in 64 bits */
    unsigned                    bigint:1;
} ngx_http_helix_jdoc_t;


ngx_int_t ngx_http_helix_jscan(ngx_pool_t *pool, u_char *data, size_t len,
    ngx_uint_t flags, ngx_http_helix_jdoc_t *doc);
ngx_uint_t ngx_http_helix_jget(ngx_http_helix_jdoc_t *doc, ngx_uint_t obj,
    const char *key);
ngx_int_t ngx_http_helix_jint(ngx_http_helix_jdoc_t *doc, ngx_uint_t i,
    int64_t *n);
json_t *ngx_http_helix_jtree(ngx_http_helix_jdoc_t *doc, ngx_uint_t i);
json_t *ngx_http_helix_jload(ngx_pool_t *pool, u_char *data, size_t len,
    ngx_uint_t flags, ngx_http_helix_jdoc_t *doc);


#endif /* _NGX_HTTP_HELIX_JSCAN_H_INCLUDED_ */
