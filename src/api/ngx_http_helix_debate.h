/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_DEBATE_H_INCLUDED_
#define _NGX_HTTP_HELIX_DEBATE_H_INCLUDED_


#include "ngx_http_helix.h"


/* POST /v1/debates */
ngx_int_t ngx_http_helix_debate_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_HELIX_DEBATE_H_INCLUDED_ */
