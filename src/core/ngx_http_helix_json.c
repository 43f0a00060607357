/*
 * Copyright (C) helix authors
 *
 * JSON answers: every answer, errors included, is JSON; errors use
 * OpenAI's shape {"error": {"message", "type", "param", "code"}}.
 */


#include "ngx_http_helix.h"
#include "ngx_http_helix_json.h"


static ngx_int_t ngx_http_helix_send_body(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *body);


static ngx_str_t  ngx_http_helix_json_type =
    ngx_string("application/json");


ngx_int_t
ngx_http_helix_send_json(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body)
{
    r->headers_out.content_type = ngx_http_helix_json_type;
    r->headers_out.content_type_len = ngx_http_helix_json_type.len;

    return ngx_http_helix_send_body(r, status, body);
}


/* a 200 with the content type the caller has set */

ngx_int_t
ngx_http_helix_send_text(ngx_http_request_t *r, ngx_str_t *body)
{
    return ngx_http_helix_send_body(r, NGX_HTTP_OK, body);
}


static ngx_int_t
ngx_http_helix_send_body(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = body->len;

    if (r->method == NGX_HTTP_HEAD || body->len == 0) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* a response header whose key is a C string that outlives the request */

ngx_int_t
ngx_http_helix_add_header(ngx_http_request_t *r, char *key, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value = *value;

    return NGX_OK;
}


const char *
ngx_http_helix_error_type(ngx_uint_t status)
{
    switch (status) {
    case NGX_HTTP_UNAUTHORIZED:
        return "authentication_error";
    case NGX_HTTP_FORBIDDEN:
        return "permission_error";
    case NGX_HTTP_NOT_FOUND:
        return "not_found_error";
    case NGX_HTTP_TOO_MANY_REQUESTS:
        return "rate_limit_error";
    default:
        return status >= NGX_HTTP_INTERNAL_SERVER_ERROR
               ? "api_error" : "invalid_request_error";
    }
}


static ngx_http_helix_error_shape_pt
    ngx_http_helix_error_shapes[NGX_HTTP_HELIX_EPS];


void
ngx_http_helix_error_shape(ngx_uint_t endpoint,
    ngx_http_helix_error_shape_pt shape)
{
    if (endpoint < NGX_HTTP_HELIX_EPS) {
        ngx_http_helix_error_shapes[endpoint] = shape;
    }
}


/*
 * The message is built with nginx's formats (%V, %ui, ...) and escaped,
 * so that client input quoted in it cannot break the JSON.
 */

ngx_int_t
ngx_http_helix_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *param, const char *fmt, ...)
{
    u_char                         *p, *last;
    size_t                          len, plen;
    va_list                         args;
    ngx_str_t                       body;
    ngx_uint_t                      level;
    const char                     *type;
    ngx_http_helix_loc_conf_t      *hlcf;
    ngx_http_helix_error_shape_pt   shape;
    u_char                          msg[1024];

    va_start(args, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
    va_end(args);

    len = last - msg;
    plen = param ? ngx_strlen(param) : 0;
    type = ngx_http_helix_error_type(status);

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);
    shape = (hlcf->endpoint < NGX_HTTP_HELIX_EPS)
            ? ngx_http_helix_error_shapes[hlcf->endpoint] : NULL;

    if (shape) {
        level = status >= NGX_HTTP_INTERNAL_SERVER_ERROR ? NGX_LOG_ERR
                                                         : NGX_LOG_INFO;

        ngx_log_error(level, r->connection->log, 0, "helix: %ui %*s",
                      status, len, msg);

        if (shape(r->pool, &status, code, msg, len, &body) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_helix_send_json(r, status, &body);
    }

    body.len = sizeof("{\"error\":{\"message\":\"\",\"type\":\"\","
                      "\"param\":,\"code\":}}") - 1
               + len + ngx_escape_json(NULL, msg, len)
               + ngx_strlen(type)
               + (param ? plen + 2 + ngx_escape_json(NULL, (u_char *) param,
                                                     plen)
                        : 4)
               + (code ? ngx_strlen(code) + 2 : 4);

    body.data = ngx_pnalloc(r->pool, body.len);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body.data, "{\"error\":{\"message\":\"",
                   sizeof("{\"error\":{\"message\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, msg, len);
    p = ngx_sprintf(p, "\",\"type\":\"%s\",\"param\":", type);

    if (param) {
        *p++ = '"';
        p = (u_char *) ngx_escape_json(p, (u_char *) param, plen);
        *p++ = '"';

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    p = code ? ngx_sprintf(p, ",\"code\":\"%s\"}}", code)
             : ngx_cpymem(p, ",\"code\":null}}", sizeof(",\"code\":null}}")
                                                 - 1);

    body.len = p - body.data;

    level = status >= NGX_HTTP_INTERNAL_SERVER_ERROR ? NGX_LOG_ERR
                                                     : NGX_LOG_INFO;

    ngx_log_error(level, r->connection->log, 0, "helix: %ui %*s",
                  status, len, msg);

    return ngx_http_helix_send_json(r, status, &body);
}


static void
ngx_http_helix_json_cleanup(void *data)
{
    json_decref(data);
}


/* the pool owns the reference: no path can leak it */

ngx_int_t
ngx_http_helix_json_pool(ngx_pool_t *pool, json_t *json)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        json_decref(json);
        return NGX_ERROR;
    }

    cln->handler = ngx_http_helix_json_cleanup;
    cln->data = json;

    return NGX_OK;
}


typedef struct {
    ngx_pool_t  *pool;
    u_char      *data;
    size_t       len;
    size_t       cap;
} ngx_http_helix_json_out_t;


static int
ngx_http_helix_json_write(const char *buffer, size_t size, void *data)
{
    ngx_http_helix_json_out_t  *out = data;

    u_char  *p;
    size_t   cap;

    if (out->len + size > out->cap) {
        cap = ngx_max(out->cap * 2, out->len + size);

        p = ngx_pnalloc(out->pool, cap);
        if (p == NULL) {
            return -1;
        }

        if (out->len) {
            ngx_memcpy(p, out->data, out->len);
        }

        if (out->cap) {
            ngx_pfree(out->pool, out->data);
        }

        out->data = p;
        out->cap = cap;
    }

    ngx_memcpy(out->data + out->len, buffer, size);
    out->len += size;

    return 0;
}


/* serialised straight into the pool, without jansson's malloc'd copy */

ngx_int_t
ngx_http_helix_json_dump(ngx_pool_t *pool, json_t *json, ngx_str_t *s)
{
    ngx_http_helix_json_out_t  out;

    out.pool = pool;
    out.len = 0;
    out.cap = 1024;
    out.data = ngx_pnalloc(pool, out.cap);

    if (out.data == NULL
        || json_dump_callback(json, ngx_http_helix_json_write, &out,
                              JSON_COMPACT|JSON_PRESERVE_ORDER
                              |JSON_REAL_PRECISION(9))
           != 0)
    {
        return NGX_ERROR;
    }

    s->data = out.data;
    s->len = out.len;

    return NGX_OK;
}


/*
 * A copy of obj with the given keys first, in OpenAI's order, then the
 * rest: clients and people read the answers, and diff them.
 */

json_t *
ngx_http_helix_json_order(json_t *obj, const char **keys)
{
    json_t      *o, *v;
    const char  *k;

    o = json_object();
    if (o == NULL) {
        return NULL;
    }

    for ( /* void */ ; *keys; keys++) {
        v = json_object_get(obj, *keys);

        if (v && json_object_set(o, *keys, v) != 0) {
            json_decref(o);
            return NULL;
        }
    }

    json_object_foreach(obj, k, v) {
        if (json_object_get(o, k) == NULL && json_object_set(o, k, v) != 0) {
            json_decref(o);
            return NULL;
        }
    }

    return o;
}


/*
 * A body announced larger than max_request_body: discarded and answered
 * 413 before a byte of it is read.  NGX_DECLINED: go on.
 */

ngx_int_t
ngx_http_helix_body_check(ngx_http_request_t *r)
{
    off_t                        len;
    ngx_int_t                    rc;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    len = r->headers_in.content_length_n;

    if (len <= (off_t) hmcf->max_request_body) {
        return NGX_DECLINED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_helix_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                     "request_too_large", NULL,
                                     "request body of %O bytes is larger "
                                     "than max_request_body (%uz bytes)",
                                     len, hmcf->max_request_body);
}


/* a content handler's way on: the body in one buffer, then handler */

ngx_int_t
ngx_http_helix_body_read_start(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt handler)
{
    ngx_int_t  rc;

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* the client's request body: its length (0: none), its bytes in one piece */

size_t
ngx_http_helix_body_length(ngx_http_request_t *r)
{
    size_t        len;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    len = 0;

    if (r->request_body == NULL) {
        return 0;
    }

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? (size_t) (b->file_last - b->file_pos)
                          : (size_t) (b->last - b->pos);
    }

    return len;
}


ngx_int_t
ngx_http_helix_body_read(ngx_http_request_t *r, size_t len, ngx_str_t *body)
{
    u_char       *p;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = r->request_body->bufs->buf;

    if (r->request_body->bufs->next == NULL && !b->in_file) {
        body->data = b->pos;
        body->len = len;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;
    body->len = len;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                return NGX_ERROR;
            }

            p += n;

        } else {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    return NGX_OK;
}


/*
 * Server-Timing (W3C): where the answer came from, the gateway's own time
 * and the provider's, in milliseconds, e.g.
 * cache;desc="MISS", gw;dur=0.041, provider;dur=812.500
 */

ngx_int_t
ngx_http_helix_server_timing(ngx_http_request_t *r, ngx_str_t *cache,
    ngx_msec_t gw_us, ngx_msec_t provider_us, ngx_uint_t provider)
{
    u_char     *p;
    ngx_str_t   v;

    p = ngx_pnalloc(r->pool, sizeof("cache;desc=\"\", gw;dur=."
                                    ", provider;dur=.") - 1
                             + cache->len + 2 * (NGX_INT_T_LEN + 3));
    if (p == NULL) {
        return NGX_ERROR;
    }

    v.data = p;
    p = ngx_sprintf(p, "cache;desc=\"%V\", gw;dur=%ui.%03ui", cache,
                    (ngx_uint_t) (gw_us / 1000), (ngx_uint_t) (gw_us % 1000));

    if (provider) {
        p = ngx_sprintf(p, ", provider;dur=%ui.%03ui",
                        (ngx_uint_t) (provider_us / 1000),
                        (ngx_uint_t) (provider_us % 1000));
    }

    v.len = p - v.data;

    return ngx_http_helix_add_header(r, "Server-Timing", &v);
}


/*
 * The token of "Authorization: Bearer <token>", the one parser of it
 * (API keys, the admin token): the scheme in any case, the spaces after
 * it skipped.  NGX_DECLINED: no such header, another scheme, no token.
 */

ngx_int_t
ngx_http_helix_bearer(ngx_http_request_t *r, ngx_str_t *token)
{
    ngx_table_elt_t  *h;

    h = r->headers_in.authorization;

    if (h == NULL || h->value.len < sizeof("Bearer ") - 1
        || ngx_strncasecmp(h->value.data, (u_char *) "Bearer ",
                           sizeof("Bearer ") - 1) != 0)
    {
        return NGX_DECLINED;
    }

    token->data = h->value.data + sizeof("Bearer ") - 1;
    token->len = h->value.len - (sizeof("Bearer ") - 1);

    while (token->len && token->data[0] == ' ') {
        token->data++;
        token->len--;
    }

    return token->len ? NGX_OK : NGX_DECLINED;
}
