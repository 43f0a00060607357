/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_INFO_H_INCLUDED_
#define _NGX_HTTP_HELIX_INFO_H_INCLUDED_


#include "ngx_http_helix.h"


ngx_int_t ngx_http_helix_health_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_helix_provider_health_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_helix_models_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_helix_models_init(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf);


#endif /* _NGX_HTTP_HELIX_INFO_H_INCLUDED_ */
