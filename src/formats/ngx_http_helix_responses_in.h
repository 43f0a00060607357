/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_RESPONSES_IN_H_INCLUDED_
#define _NGX_HTTP_HELIX_RESPONSES_IN_H_INCLUDED_


#include "ngx_http_helix_codec.h"


/*
 * OpenAI's Responses API, a client format only: no provider speaks it
 * here, so its codec has the client direction alone (see the codec
 * table).  Its errors are OpenAI's error object, the gateway's own.
 */

extern ngx_http_helix_codec_t  ngx_http_helix_responses_codec;


#endif /* _NGX_HTTP_HELIX_RESPONSES_IN_H_INCLUDED_ */
