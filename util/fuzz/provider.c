/*
 * Copyright (C) helix authors
 *
 * The provider answer translators (src/formats/, each format's codec): an
 * OpenAI, Anthropic or Gemini answer, as a provider sends it, into the
 * OpenAI objects the client gets (chat and completions, embeddings), the
 * checks of OpenAI answers passed on as they came, and providers' error
 * bodies.  The first byte chooses the provider and the function, the
 * second the number of embedding inputs; the rest is the answer.
 */


#include "fuzz.h"
#include "ngx_http_helix.h"
#include "ngx_http_helix_codec.h"
#include "ngx_http_helix_formats.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                     *copy;
    json_t                     *out, *input;
    size_t                      i, inputs;
    uint64_t                    prompt, completion;
    ngx_str_t                   model, err, msg;
    ngx_uint_t                  sel;
    ngx_pool_t                 *pool;
    ngx_http_helix_codec_t     *codec;

    fuzz_init();

    if (size < 2) {
        return 0;
    }

    sel = data[0];
    inputs = data[1] % 8;
    data += 2;
    size -= 2;

    codec = ngx_http_helix_formats_codec(sel % 3);
    ngx_str_set(&model, "gpt-4o");

    pool = fuzz_pool();

    copy = malloc(size ? size : 1);
    memcpy(copy, data, size);

    out = NULL;
    ngx_str_null(&err);

    switch ((sel / 3) % 5) {

    case 0:
        (void) ngx_http_helix_codec_chat_answer(pool, codec, &model, copy,
                                                size, &out, &err);
        break;

    case 1:
        /* the request's input: one string, or an array of them */
        if (inputs == 0) {
            input = json_string("hello");

        } else {
            input = json_array();
            for (i = 0; i < inputs; i++) {
                json_array_append_new(input, json_string("hello"));
            }
        }

        (void) ngx_http_helix_codec_embeddings_answer(pool, codec, &model,
                                                      input, copy, size, &out,
                                                      &err);
        json_decref(input);
        break;

    case 2:
        /* the check of answers passed on as they came (OpenAI's) */
        codec = ngx_http_helix_formats_codec(NGX_HTTP_HELIX_OPENAI);
        (void) codec->answer_pass(pool, 0, 0, copy, size, &prompt,
                                  &completion);
        break;

    case 3:
        codec = ngx_http_helix_formats_codec(NGX_HTTP_HELIX_OPENAI);
        (void) codec->answer_pass(pool, 1, inputs, copy, size, &prompt,
                                  &completion);
        break;

    default:
        (void) ngx_http_helix_codec_error_message(pool, codec,
                                                  400 + inputs * 10, copy,
                                                  size, &msg);
    }

    if (out) {
        /* what the client would get */
        free(json_dumps(out, JSON_COMPACT));
        json_decref(out);
    }

    free(copy);
    ngx_destroy_pool(pool);

    return 0;
}
