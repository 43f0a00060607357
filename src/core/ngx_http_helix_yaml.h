/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_YAML_H_INCLUDED_
#define _NGX_HTTP_HELIX_YAML_H_INCLUDED_


#include "ngx_http_helix.h"


ngx_int_t ngx_http_helix_yaml_defaults(ngx_pool_t *pool,
    ngx_http_helix_main_conf_t *hmcf);
char *ngx_http_helix_yaml_load(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf, ngx_str_t *file);
ngx_int_t ngx_http_helix_parse_duration(u_char *p, size_t len,
    ngx_msec_t *ms);
ngx_int_t ngx_http_helix_parse_size(u_char *p, size_t len, size_t *size);


#endif /* _NGX_HTTP_HELIX_YAML_H_INCLUDED_ */
