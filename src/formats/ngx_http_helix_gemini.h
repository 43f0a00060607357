/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_GEMINI_H_INCLUDED_
#define _NGX_HTTP_HELIX_GEMINI_H_INCLUDED_


#include "ngx_http_helix_codec.h"


/* Gemini generateContent and batchEmbedContents */
extern ngx_http_helix_codec_t  ngx_http_helix_gemini_codec;


#endif /* _NGX_HTTP_HELIX_GEMINI_H_INCLUDED_ */
