/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_SENTINEL_H_INCLUDED_
#define _NGX_HTTP_HELIX_SENTINEL_H_INCLUDED_


#include "ngx_http_helix.h"


/* the master is (now) at addr (numeric, a C string) and port */
typedef void (*ngx_http_helix_sentinel_pt)(u_char *addr, ngx_uint_t port);


ngx_int_t ngx_http_helix_sentinel_init(ngx_cycle_t *cycle,
    ngx_http_helix_redis_conf_t *conf, ngx_http_helix_sentinel_pt handler);
void ngx_http_helix_sentinel_ask(void);
void ngx_http_helix_sentinel_exit(void);


#endif /* _NGX_HTTP_HELIX_SENTINEL_H_INCLUDED_ */
