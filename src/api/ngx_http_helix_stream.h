/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_STREAM_H_INCLUDED_
#define _NGX_HTTP_HELIX_STREAM_H_INCLUDED_


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_upstream.h"
#include "ngx_http_helix_codec.h"


/*
 * SSE streams: a provider's event stream (OpenAI, Anthropic, Gemini) is
 * parsed as it arrives in the subrequest's body filter and each event is
 * translated into the client's frames (OpenAI chat.completion.chunk or
 * the guide's {"content", "done"} frames), written to the client request
 * with flushes.  One stream per client request; each provider attempt
 * starts it afresh until a byte has gone to the client.
 */


typedef struct ngx_http_helix_stream_s  ngx_http_helix_stream_t;


/* endpoint: chat_completions or completions; req: the client's request */
ngx_http_helix_stream_t *ngx_http_helix_stream_create(ngx_http_request_t *r,
    ngx_uint_t endpoint, json_t *req);

/* the client speaks this codec's format: its events, not OpenAI chunks */
void ngx_http_helix_stream_client(ngx_http_helix_stream_t *st,
    ngx_http_helix_codec_t *client);

/*
 * A new attempt: the call's 2xx answer goes to the stream.  cache_key and
 * cache_state are sent as X-Cache-Key (if not empty) and X-Cache; deadline
 * bounds the call once its first event has arrived.
 */
ngx_int_t ngx_http_helix_stream_attach(ngx_http_helix_stream_t *st,
    ngx_http_helix_call_t *call, ngx_str_t *model, ngx_str_t *cache_key,
    ngx_str_t *cache_state, ngx_msec_t deadline);

/* something went to the client: no provider can take over any more */
ngx_uint_t ngx_http_helix_stream_sent(ngx_http_helix_stream_t *st);
ngx_uint_t ngx_http_helix_stream_started(ngx_http_helix_stream_t *st);

/*
 * The call has ended.  NGX_DECLINED: nothing reached the client and the
 * call failed (*reason says why): try another provider.  Otherwise the
 * stream is ended (an error event first if it was cut) and the result is
 * for ngx_http_finalize_request(); *answer is then the assembled answer
 * in the non-streaming format when the stream was complete, else empty.
 */
ngx_int_t ngx_http_helix_stream_end(ngx_http_helix_stream_t *st,
    ngx_str_t *answer, ngx_str_t *reason);

/* a cached answer (non-streaming format) sent as the stream it was */
ngx_int_t ngx_http_helix_stream_replay(ngx_http_helix_stream_t *st,
    ngx_str_t *provider, ngx_str_t *body);


void ngx_http_helix_stream_timing_start(ngx_http_helix_stream_t *st,
    ngx_msec_t start_us, ngx_msec_t before_us, ngx_uint_t served,
    ngx_uint_t header);
ngx_int_t ngx_http_helix_stream_timing(ngx_http_helix_stream_t *st,
    ngx_msec_t *gw_us, ngx_msec_t *ttfb_us);


extern ngx_module_t  ngx_http_helix_stream_module;


#endif /* _NGX_HTTP_HELIX_STREAM_H_INCLUDED_ */
