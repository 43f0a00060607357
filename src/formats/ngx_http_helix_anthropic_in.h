/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_ANTHROPIC_IN_H_INCLUDED_
#define _NGX_HTTP_HELIX_ANTHROPIC_IN_H_INCLUDED_


#include "ngx_http_helix_codec.h"


/* the client direction of the Anthropic codec (see the codec table) */

ngx_int_t ngx_http_helix_anthropic_request_in(ngx_pool_t *pool,
    json_t *body, json_t **req, ngx_str_t *err);
ngx_int_t ngx_http_helix_anthropic_answer_out(ngx_pool_t *pool,
    json_t *answer, json_t **out);
ngx_int_t ngx_http_helix_anthropic_error_out(ngx_pool_t *pool,
    ngx_uint_t *status, const char *code, u_char *msg, size_t len,
    ngx_str_t *body);
ngx_http_helix_stream_out_t *ngx_http_helix_anthropic_stream_out_open(
    ngx_pool_t *pool, ngx_str_t *id, ngx_str_t *model);
ngx_int_t ngx_http_helix_anthropic_stream_out(
    ngx_http_helix_stream_out_t *s, ngx_http_helix_delta_t *d);


#endif /* _NGX_HTTP_HELIX_ANTHROPIC_IN_H_INCLUDED_ */
