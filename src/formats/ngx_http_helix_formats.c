/*
 * Copyright (C) helix authors
 *
 * The wire formats the gateway knows, by provider type.  A new format is
 * one new file with its codec table and one entry here.  (The lookup is
 * not in ngx_http_helix_codec.c because the format files use that one:
 * util/layers.py allows no cycle.)
 */


#include "ngx_http_helix.h"
#include "ngx_http_helix_codec.h"
#include "ngx_http_helix_openai.h"
#include "ngx_http_helix_anthropic.h"
#include "ngx_http_helix_gemini.h"
#include "ngx_http_helix_responses_in.h"
#include "ngx_http_helix_formats.h"


static ngx_http_helix_codec_t  *ngx_http_helix_formats[] = {
    &ngx_http_helix_openai_codec,               /* NGX_HTTP_HELIX_OPENAI */
    &ngx_http_helix_anthropic_codec,            /* NGX_HTTP_HELIX_ANTHROPIC */
    &ngx_http_helix_gemini_codec                /* NGX_HTTP_HELIX_GEMINI */
};


ngx_http_helix_codec_t *
ngx_http_helix_formats_codec(ngx_uint_t type)
{
    if (type >= sizeof(ngx_http_helix_formats)
                / sizeof(ngx_http_helix_formats[0]))
    {
        /* helix.yaml knows no other type: a safe answer all the same */
        return &ngx_http_helix_openai_codec;
    }

    return ngx_http_helix_formats[type];
}


/* the codec a client format's endpoint speaks, NULL: OpenAI's own */

ngx_http_helix_codec_t *
ngx_http_helix_formats_client(ngx_uint_t endpoint)
{
    if (endpoint == NGX_HTTP_HELIX_EP_MESSAGES) {
        return &ngx_http_helix_anthropic_codec;
    }

    if (endpoint == NGX_HTTP_HELIX_EP_RESPONSES) {
        return &ngx_http_helix_responses_codec;
    }

    return NULL;
}
