/*
 * Copyright (C) helix authors
 *
 * W3C trace context.  A request to the gateway's endpoints belongs to the
 * trace its "traceparent" names, or to a new one made here; the gateway
 * is a span of its own in it (a new span id).  The answer carries the
 * gateway's traceparent, each provider call carries it with the client's
 * "tracestate" as it came, the completion log keeps the trace id, and
 * every error log line of the request ends with ", trace: <id>", so that
 * a slow or failed call can be found from an APM's trace.
 *
 * traceparent: "00-" 32 hex (trace id, not all zero) "-" 16 hex (parent
 * span, not all zero) "-" 2 hex (flags), lowercase; a version other than
 * 00 is read as far as 00 defines it (ff is invalid).  Anything else is
 * no traceparent: a new trace, sampled.  Ids made here come from a
 * per-worker generator seeded from the OpenSSL random generator: unique,
 * not secret, and cheap enough for every request.
 */


#include <openssl/rand.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_trace.h"


#define NGX_HTTP_HELIX_TRACESTATE_MAX  512     /* W3C: at least 512 kept */


static void ngx_http_helix_trace_parse(ngx_http_helix_trace_t *t,
    ngx_str_t *v);
static ngx_uint_t ngx_http_helix_trace_hex(u_char *p, size_t n);
static void ngx_http_helix_trace_random(u_char *hex, size_t n);
static u_char *ngx_http_helix_trace_log(ngx_http_request_t *r,
    ngx_http_request_t *sr, u_char *buf, size_t len);


static ngx_http_module_t  ngx_http_helix_trace_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


/* a module of its own: the slot of a request's trace */

ngx_module_t  ngx_http_helix_trace_module = {
    NGX_MODULE_V1,
    &ngx_http_helix_trace_module_ctx,      /* module context */
    NULL,                                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static uint64_t                 ngx_http_helix_trace_state;
static ngx_uint_t               ngx_http_helix_trace_seeded;
static ngx_http_log_handler_pt  ngx_http_helix_trace_next_log;


/*
 * The request's trace, begun at the first call (the access phase of the
 * API endpoints, or their content handler): NULL if "helix_trace off" or
 * out of memory.  The answer's traceparent header is added here.
 */

ngx_http_helix_trace_t *
ngx_http_helix_trace(ngx_http_request_t *r)
{
    u_char                     *p;
    ngx_str_t                   v;
    ngx_uint_t                  i;
    ngx_list_part_t            *part;
    ngx_table_elt_t            *h;
    ngx_http_helix_trace_t     *t;
    ngx_http_helix_loc_conf_t  *hlcf;

    r = r->main;

    t = ngx_http_get_module_ctx(r, ngx_http_helix_trace_module);
    if (t) {
        return t;
    }

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);
    if (!hlcf->trace) {
        return NULL;
    }

    t = ngx_pcalloc(r->pool, sizeof(ngx_http_helix_trace_t));
    if (t == NULL) {
        return NULL;
    }

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("traceparent") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "traceparent",
                               sizeof("traceparent") - 1) == 0)
        {
            if (!t->incoming) {
                ngx_http_helix_trace_parse(t, &h[i].value);
            }

        } else if (h[i].key.len == sizeof("tracestate") - 1
                   && ngx_strncasecmp(h[i].key.data,
                                      (u_char *) "tracestate",
                                      sizeof("tracestate") - 1) == 0
                   && t->tracestate.len == 0
                   && h[i].value.len <= NGX_HTTP_HELIX_TRACESTATE_MAX)
        {
            t->tracestate = h[i].value;
        }
    }

    if (!t->incoming) {
        /* a trace of our own, which the providers should record too */
        ngx_http_helix_trace_random(t->trace_id, 32);
        ngx_memcpy(t->flags, "01", 2);
        ngx_str_null(&t->tracestate);
    }

    ngx_http_helix_trace_random(t->span_id, 16);

    /* the tracestate only goes on with the traceparent it belongs to */

    for (i = 0; i < t->tracestate.len; i++) {
        if (t->tracestate.data[i] < 0x20 || t->tracestate.data[i] == 0x7f) {
            ngx_str_null(&t->tracestate);
            break;
        }
    }

    p = ngx_pnalloc(r->pool, NGX_HTTP_HELIX_TRACEPARENT_LEN);
    if (p == NULL) {
        return NULL;
    }

    v.data = p;
    v.len = ngx_sprintf(p, "00-%*s-%*s-%*s", (size_t) 32, t->trace_id,
                        (size_t) 16, t->span_id, (size_t) 2, t->flags)
            - p;

    t->traceparent = v;

    if (ngx_http_helix_add_header(r, "traceparent", &v) != NGX_OK) {
        return NULL;
    }

    ngx_http_set_ctx(r, t, ngx_http_helix_trace_module);

    /* every error log line of the request names the trace */

    if (r->log_handler != ngx_http_helix_trace_log) {
        ngx_http_helix_trace_next_log = r->log_handler;
        r->log_handler = ngx_http_helix_trace_log;
    }

    return t;
}


/* traceparent and tracestate of a provider call made for r */

ngx_int_t
ngx_http_helix_trace_headers(ngx_http_request_t *r, ngx_list_t *headers)
{
    ngx_table_elt_t         *h;
    ngx_http_helix_trace_t  *t;

    t = ngx_http_get_module_ctx(r->main, ngx_http_helix_trace_module);
    if (t == NULL) {
        return NGX_OK;
    }

    h = ngx_list_push(headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&h->key, "traceparent");
    h->value = t->traceparent;
    h->lowcase_key = (u_char *) "traceparent";
    h->hash = ngx_hash_key(h->lowcase_key, h->key.len);

    if (t->tracestate.len == 0) {
        return NGX_OK;
    }

    h = ngx_list_push(headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&h->key, "tracestate");
    h->value = t->tracestate;
    h->lowcase_key = (u_char *) "tracestate";
    h->hash = ngx_hash_key(h->lowcase_key, h->key.len);

    return NGX_OK;
}


/* the trace id of r, for the completion log: NULL if it has none */

ngx_str_t *
ngx_http_helix_trace_id(ngx_http_request_t *r, ngx_str_t *id)
{
    ngx_http_helix_trace_t  *t;

    t = ngx_http_get_module_ctx(r->main, ngx_http_helix_trace_module);
    if (t == NULL) {
        return NULL;
    }

    id->data = t->trace_id;
    id->len = 32;

    return id;
}


static void
ngx_http_helix_trace_parse(ngx_http_helix_trace_t *t, ngx_str_t *v)
{
    u_char  *p;

    p = v->data;

    /* 00 is exactly 55 bytes; a later version may add "-..." after */

    if (v->len < NGX_HTTP_HELIX_TRACEPARENT_LEN
        || (v->len > NGX_HTTP_HELIX_TRACEPARENT_LEN
            && (p[0] == '0' && p[1] == '0'))
        || (v->len > NGX_HTTP_HELIX_TRACEPARENT_LEN
            && p[NGX_HTTP_HELIX_TRACEPARENT_LEN] != '-')
        || !ngx_http_helix_trace_hex(p, 2)
        || (p[0] == 'f' && p[1] == 'f')
        || p[2] != '-' || p[35] != '-' || p[52] != '-'
        || !ngx_http_helix_trace_hex(p + 3, 32)
        || !ngx_http_helix_trace_hex(p + 36, 16)
        || !ngx_http_helix_trace_hex(p + 53, 2)
        || ngx_strncmp(p + 3, "00000000000000000000000000000000", 32) == 0
        || ngx_strncmp(p + 36, "0000000000000000", 16) == 0)
    {
        return;
    }

    ngx_memcpy(t->trace_id, p + 3, 32);
    ngx_memcpy(t->parent_id, p + 36, 16);
    ngx_memcpy(t->flags, p + 53, 2);
    t->incoming = 1;
}


/* lowercase hex only, as the W3C format says */

static ngx_uint_t
ngx_http_helix_trace_hex(u_char *p, size_t n)
{
    while (n--) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
            return 0;
        }

        p++;
    }

    return 1;
}


/* n hex digits, never all zero: splitmix64 over a random seed */

static void
ngx_http_helix_trace_random(u_char *hex, size_t n)
{
    size_t    i, j;
    uint64_t  z;

    static u_char  digits[] = "0123456789abcdef";

    if (!ngx_http_helix_trace_seeded) {
        if (RAND_bytes((u_char *) &ngx_http_helix_trace_state,
                       sizeof(uint64_t))
            != 1)
        {
            ngx_http_helix_trace_state = (uint64_t) ngx_pid << 32
                                         ^ (uint64_t) ngx_time();
        }

        ngx_http_helix_trace_seeded = 1;
    }

    for (i = 0; i < n; i += 16) {
        ngx_http_helix_trace_state += 0x9e3779b97f4a7c15ULL;

        z = ngx_http_helix_trace_state;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;

        z |= 1;   /* never all zero */

        for (j = 0; j < 16 && i + j < n; j++) {
            hex[i + j] = digits[(z >> (j * 4)) & 0xf];
        }
    }
}


/* nginx's own context of an error log line, then the trace */

static u_char *
ngx_http_helix_trace_log(ngx_http_request_t *r, ngx_http_request_t *sr,
    u_char *buf, size_t len)
{
    u_char                  *p;
    ngx_http_helix_trace_t  *t;

    p = ngx_http_helix_trace_next_log
        ? ngx_http_helix_trace_next_log(r, sr, buf, len) : buf;

    t = ngx_http_get_module_ctx(r->main, ngx_http_helix_trace_module);

    if (t && (size_t) (p - buf) < len) {
        p = ngx_snprintf(p, len - (p - buf), ", trace: %*s", (size_t) 32,
                         t->trace_id);
    }

    return p;
}
