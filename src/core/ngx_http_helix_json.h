/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_JSON_H_INCLUDED_
#define _NGX_HTTP_HELIX_JSON_H_INCLUDED_


#include <jansson.h>

#include "ngx_http_helix.h"


ngx_int_t ngx_http_helix_send_json(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body);
ngx_int_t ngx_http_helix_send_text(ngx_http_request_t *r, ngx_str_t *body);
ngx_int_t ngx_http_helix_add_header(ngx_http_request_t *r, char *key,
    ngx_str_t *value);
ngx_int_t ngx_http_helix_bearer(ngx_http_request_t *r, ngx_str_t *token);
ngx_int_t ngx_http_helix_server_timing(ngx_http_request_t *r,
    ngx_str_t *cache, ngx_msec_t gw_us, ngx_msec_t provider_us,
    ngx_uint_t provider);
ngx_int_t ngx_http_helix_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *param, const char *fmt, ...);
const char *ngx_http_helix_error_type(ngx_uint_t status);

/*
 * An endpoint whose clients expect errors in another shape than OpenAI's
 * (a client format) registers how to build them: every error sent by
 * ngx_http_helix_send_error() on its locations takes that shape.
 */
typedef ngx_int_t (*ngx_http_helix_error_shape_pt)(ngx_pool_t *pool,
    ngx_uint_t *status, const char *code, u_char *msg, size_t len,
    ngx_str_t *body);

void ngx_http_helix_error_shape(ngx_uint_t endpoint,
    ngx_http_helix_error_shape_pt shape);
ngx_int_t ngx_http_helix_json_pool(ngx_pool_t *pool, json_t *json);
json_t *ngx_http_helix_json_order(json_t *obj, const char **keys);
ngx_int_t ngx_http_helix_json_dump(ngx_pool_t *pool, json_t *json,
    ngx_str_t *s);
ngx_int_t ngx_http_helix_body_check(ngx_http_request_t *r);
ngx_int_t ngx_http_helix_body_read_start(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt handler);
size_t ngx_http_helix_body_length(ngx_http_request_t *r);
ngx_int_t ngx_http_helix_body_read(ngx_http_request_t *r, size_t len,
    ngx_str_t *body);


#endif /* _NGX_HTTP_HELIX_JSON_H_INCLUDED_ */
