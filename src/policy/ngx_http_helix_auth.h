/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_AUTH_H_INCLUDED_
#define _NGX_HTTP_HELIX_AUTH_H_INCLUDED_


#include "ngx_http_helix.h"


/* the API key a request came with: its name (completion log, tasks) */
ngx_str_t *ngx_http_helix_auth_key_name(ngx_http_request_t *r);

/* the API key a request came with (its budget), or NULL */
ngx_http_helix_api_key_t *ngx_http_helix_auth_api_key(ngx_http_request_t *r);

/* whose cache entries its answers are: "t:<tenant>", or "a:" (no key) */
ngx_str_t *ngx_http_helix_auth_scope(ngx_http_request_t *r);

/* the admin token on GET or DELETE of a task */
ngx_uint_t ngx_http_helix_auth_admin(ngx_http_request_t *r);


#endif /* _NGX_HTTP_HELIX_AUTH_H_INCLUDED_ */
