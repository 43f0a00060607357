/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_ANTHROPIC_H_INCLUDED_
#define _NGX_HTTP_HELIX_ANTHROPIC_H_INCLUDED_


#include "ngx_http_helix_codec.h"


/* Anthropic Messages */
extern ngx_http_helix_codec_t  ngx_http_helix_anthropic_codec;


#endif /* _NGX_HTTP_HELIX_ANTHROPIC_H_INCLUDED_ */
