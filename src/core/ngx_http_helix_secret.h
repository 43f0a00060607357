/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_SECRET_H_INCLUDED_
#define _NGX_HTTP_HELIX_SECRET_H_INCLUDED_


#include "ngx_http_helix.h"


/* the shortest API key or admin token helix.yaml may hold */
#define NGX_HTTP_HELIX_SECRET_MIN_LEN  32


ngx_uint_t ngx_http_helix_secret_equal(ngx_str_t *given, ngx_str_t *secret);

ngx_int_t ngx_http_helix_internal_init(ngx_conf_t *cf);
ngx_int_t ngx_http_helix_internal_sign(ngx_pool_t *pool, ngx_str_t *uri,
    ngx_str_t *task, ngx_str_t *key_name, ngx_str_t *addr, ngx_str_t *tenant,
    ngx_msec_t lifetime, ngx_str_t *value);
ngx_int_t ngx_http_helix_internal_verify(ngx_http_request_t *r,
    ngx_str_t *value, ngx_str_t *task, ngx_str_t *key_name, ngx_str_t *addr,
    ngx_str_t *tenant);

char *ngx_http_helix_loopback(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_helix_loopback_check(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf);


#endif /* _NGX_HTTP_HELIX_SECRET_H_INCLUDED_ */
