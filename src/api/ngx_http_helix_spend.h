/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_SPEND_H_INCLUDED_
#define _NGX_HTTP_HELIX_SPEND_H_INCLUDED_


#include "ngx_http_helix.h"


ngx_int_t ngx_http_helix_spend_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_helix_admin_keys_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_HELIX_SPEND_H_INCLUDED_ */
