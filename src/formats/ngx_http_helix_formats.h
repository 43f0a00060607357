/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_FORMATS_H_INCLUDED_
#define _NGX_HTTP_HELIX_FORMATS_H_INCLUDED_


#include "ngx_http_helix.h"
#include "ngx_http_helix_codec.h"


/* the codec of a provider type (ngx_http_helix_provider_type_e) */
ngx_http_helix_codec_t *ngx_http_helix_formats_codec(ngx_uint_t type);

/* the codec of a client format's endpoint (endpoint_e), NULL: none */
ngx_http_helix_codec_t *ngx_http_helix_formats_client(ngx_uint_t endpoint);


#endif /* _NGX_HTTP_HELIX_FORMATS_H_INCLUDED_ */
