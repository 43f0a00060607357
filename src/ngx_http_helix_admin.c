/*
 * Copyright (C) helix authors
 *
 * Admin endpoints: POST /v1/admin/cache/clear (all, or {"pattern": ...})
 * and POST /v1/admin/cache/cleanup (expired entries), behind the admin
 * token of helix.yaml (admin.token), which no API key can stand in for.
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_cache.h"


static void ngx_http_helix_admin_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_helix_admin_auth(ngx_http_request_t *r);


ngx_int_t
ngx_http_helix_admin_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_helix_admin_auth(r);

    if (rc != NGX_OK) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_HTTP_UNAUTHORIZED) {
            return ngx_http_helix_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                             "missing_admin_token", NULL,
                                             "the admin API needs "
                                             "\"Authorization: Bearer "
                                             "<admin token>\"");
        }

        return ngx_http_helix_send_error(r, NGX_HTTP_FORBIDDEN,
                                         "invalid_admin_token", NULL,
                                         rc == NGX_DECLINED
                                         ? "the admin API is off (no "
                                           "admin.token in helix.yaml)"
                                         : "wrong admin token");
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_helix_admin_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * NGX_OK, or why not: NGX_HTTP_UNAUTHORIZED (no Bearer token),
 * NGX_HTTP_FORBIDDEN (wrong), NGX_DECLINED (no admin token configured).
 */

/* a comparison whose time does not tell how much of the token matched */

static ngx_uint_t
ngx_http_helix_token_equal(ngx_str_t *a, ngx_str_t *b)
{
    size_t  i;
    u_char  diff;

    diff = (a->len != b->len);

    for (i = 0; i < a->len; i++) {
        diff |= a->data[i] ^ b->data[i % (b->len ? b->len : 1)];
    }

    return diff == 0 && b->len != 0;
}


static ngx_int_t
ngx_http_helix_admin_auth(ngx_http_request_t *r)
{
    ngx_str_t                    token;
    ngx_table_elt_t             *h;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    h = r->headers_in.authorization;

    if (h == NULL || h->value.len < sizeof("Bearer ") - 1
        || ngx_strncasecmp(h->value.data, (u_char *) "Bearer ",
                           sizeof("Bearer ") - 1) != 0)
    {
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (hmcf->admin_token.len == 0) {
        return NGX_DECLINED;
    }

    token.data = h->value.data + sizeof("Bearer ") - 1;
    token.len = h->value.len - (sizeof("Bearer ") - 1);

    if (!ngx_http_helix_token_equal(&token, &hmcf->admin_token)) {
        return NGX_HTTP_FORBIDDEN;
    }

    return NGX_OK;
}


static void
ngx_http_helix_admin_body(ngx_http_request_t *r)
{
    u_char                      *p;
    size_t                       len;
    json_t                      *req, *pat;
    ngx_str_t                    body, pattern, *pp;
    ngx_uint_t                   n;
    ngx_buf_t                   *b;
    json_error_t                 jerr;
    ngx_http_helix_loc_conf_t   *hlcf;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);

    pp = NULL;
    ngx_str_null(&pattern);
    b = (r->request_body && r->request_body->bufs)
        ? r->request_body->bufs->buf : NULL;

    if (hlcf->endpoint == NGX_HTTP_HELIX_EP_CACHE_CLEAR && b
        && !b->in_file && b->last > b->pos)
    {
        if (r->request_body->bufs->next) {
            ngx_http_finalize_request(r,
                ngx_http_helix_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                          "request_too_large", NULL,
                                          "the admin request body is too "
                                          "large"));
            return;
        }

        req = json_loadb((char *) b->pos, b->last - b->pos, 0, &jerr);

        if (req == NULL || ngx_http_helix_json_pool(r->pool, req) != NGX_OK) {
            ngx_http_finalize_request(r,
                ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "invalid_json", NULL,
                                          "request body is not valid JSON: "
                                          "%s", jerr.text));
            return;
        }

        pat = json_object_get(req, "pattern");

        if (pat && !json_is_string(pat)) {
            ngx_http_finalize_request(r,
                ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "invalid_type", "pattern",
                                          "\"pattern\" must be a string "
                                          "like \"completion:claude:*\""));
            return;
        }

        if (pat) {
            pattern.data = (u_char *) json_string_value(pat);
            pattern.len = json_string_length(pat);
            pp = &pattern;
        }
    }

    n = 0;

    if (hmcf->cache_sh) {
        n = (hlcf->endpoint == NGX_HTTP_HELIX_EP_CACHE_CLEAR)
            ? ngx_http_helix_cache_clear(hmcf, pp)
            : ngx_http_helix_cache_cleanup(hmcf);
    }

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "helix: admin %s removed %ui cache entries%s%V",
                  hlcf->endpoint == NGX_HTTP_HELIX_EP_CACHE_CLEAR
                  ? "clear" : "cleanup", n, pp ? " matching " : "",
                  pp ? pp : &pattern);

    len = sizeof("{\"removed\":,\"tiers\":{\"l1\":},\"pattern\":\"\"}")
          + 2 * NGX_INT_T_LEN + (pp ? pp->len * 6 : 4);

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    body.data = p;
    p = ngx_sprintf(p, "{\"removed\":%ui,\"tiers\":{\"l1\":%ui},\"pattern\":",
                    n, n);

    if (pp) {
        *p++ = '"';
        p = (u_char *) ngx_escape_json(p, pp->data, pp->len);
        *p++ = '"';

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    *p++ = '}';
    body.len = p - body.data;

    ngx_http_finalize_request(r,
                              ngx_http_helix_send_json(r, NGX_HTTP_OK, &body));
}
