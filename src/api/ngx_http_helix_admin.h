/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_ADMIN_H_INCLUDED_
#define _NGX_HTTP_HELIX_ADMIN_H_INCLUDED_


#include "ngx_http_helix.h"


ngx_int_t ngx_http_helix_admin_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_helix_admin_init_process(ngx_cycle_t *cycle);


extern ngx_module_t  ngx_http_helix_admin_module;


#endif /* _NGX_HTTP_HELIX_ADMIN_H_INCLUDED_ */
