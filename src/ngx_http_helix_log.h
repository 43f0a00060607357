/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_LOG_H_INCLUDED_
#define _NGX_HTTP_HELIX_LOG_H_INCLUDED_


#include "ngx_http_helix.h"


ngx_int_t ngx_http_helix_log_init(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf);
ngx_int_t ngx_http_helix_log_init_process(ngx_cycle_t *cycle);
void ngx_http_helix_log_exit_process(ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_HELIX_LOG_H_INCLUDED_ */
