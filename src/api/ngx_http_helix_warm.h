/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_WARM_H_INCLUDED_
#define _NGX_HTTP_HELIX_WARM_H_INCLUDED_


#include "ngx_http_helix.h"


ngx_int_t ngx_http_helix_warm_init_process(ngx_cycle_t *cycle);
void ngx_http_helix_warm_exit_process(ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_HELIX_WARM_H_INCLUDED_ */
