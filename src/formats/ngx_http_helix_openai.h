/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_OPENAI_H_INCLUDED_
#define _NGX_HTTP_HELIX_OPENAI_H_INCLUDED_


#include "ngx_http_helix_codec.h"


/* OpenAI chat completions and embeddings (and compatible servers) */
extern ngx_http_helix_codec_t  ngx_http_helix_openai_codec;


#endif /* _NGX_HTTP_HELIX_OPENAI_H_INCLUDED_ */
