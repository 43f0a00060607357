/*
 * Copyright (C) helix authors
 *
 * The streaming side (src/api/ngx_http_helix_stream.c): a provider's SSE
 * stream in OpenAI, Anthropic or Gemini format, cut into pieces of a
 * chosen size, through the SSE parser and the formats' event translators
 * (src/formats/), then the end frames and the answer assembled for the
 * cache; and a cached answer replayed as a stream (what L1 or L2 hold).  The first byte chooses the
 * format, the endpoint and include_usage; the second the piece size.
 * Nothing goes to a client: the frames stay in the stream's chain.
 */


#include "fuzz.h"
#include "../../src/api/ngx_http_helix_stream.c"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                     *copy, *p, *last;
    size_t                      piece;
    ngx_str_t                   model, key, state, answer, name;
    ngx_uint_t                  sel;
    ngx_pool_t                 *pool;
    ngx_connection_t            c;
    ngx_http_request_t          r;
    ngx_http_helix_call_t       call;
    ngx_http_helix_stream_t    *st;
    ngx_http_helix_provider_t   prov;

    fuzz_init();

    if (size < 2) {
        return 0;
    }

    sel = data[0];
    piece = (size_t) data[1] + 1;
    data += 2;
    size -= 2;

    pool = fuzz_pool();

    ngx_memzero(&c, sizeof(ngx_connection_t));
    c.log = &fuzz_log;
    ngx_memzero(&r, sizeof(ngx_http_request_t));
    r.pool = pool;
    r.connection = &c;
    r.main = &r;

    /* the modules' request contexts, all empty (more slots than modules) */
    r.ctx = ngx_pcalloc(pool, 256 * sizeof(void *));

    st = ngx_pcalloc(pool, sizeof(ngx_http_helix_stream_t));
    st->request = &r;
    st->endpoint = (sel & 0x10) ? NGX_HTTP_HELIX_EP_COMPLETIONS
                                : NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS;
    st->include_usage = (sel & 0x20) != 0;
    st->max_body = (size_t) -1;
    st->flush_ev.log = &fuzz_log;
    st->abort_ev.log = &fuzz_log;

    ngx_memzero(&prov, sizeof(ngx_http_helix_provider_t));
    ngx_str_set(&prov.name, "fuzz");
    prov.type = (sel & 0x0f) % 3;

    ngx_memzero(&call, sizeof(ngx_http_helix_call_t));
    call.request = &r;
    call.provider = &prov;

    ngx_str_set(&model, "gpt-4o");
    ngx_str_set(&key, "completion:fuzz");
    ngx_str_null(&state);

    copy = malloc(size ? size : 1);
    memcpy(copy, data, size);

    if ((sel & 0x0f) == 3) {
        /* a cached answer as a stream; no client: flush gives up */
        st->client_error = 1;
        ngx_str_set(&name, "fuzz");
        answer.data = copy;
        answer.len = size;
        (void) ngx_http_helix_stream_replay(st, &name, &answer);
        goto done;
    }

    if (ngx_http_helix_stream_attach(st, &call, &model, &key, &state, 0)
        != NGX_OK)
    {
        goto done;
    }

    for (p = copy, last = copy + size; p < last; p += piece) {
        if (ngx_http_helix_sse_parse(st, p, ngx_min(piece, (size_t) (last - p)))
            != NGX_OK)
        {
            break;
        }

        st->flush_now = 0;
    }

    if (ngx_http_helix_stream_done(st) == NGX_OK) {
        (void) ngx_http_helix_stream_assemble(st, &answer);
    }

done:

    if (st->ev) {
        json_decref(st->ev);
    }

    free(copy);
    ngx_destroy_pool(pool);

    return 0;
}
