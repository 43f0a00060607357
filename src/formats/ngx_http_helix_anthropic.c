/*
 * Copyright (C) helix authors
 *
 * Anthropic's Messages API: the gateway's OpenAI chat requests as
 * /v1/messages requests (system blocks, alternating turns, tool_use and
 * tool_result blocks, images), the answers and the stream events
 * (message_start, content blocks, message_delta, message_stop) back.
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_codec.h"
#include "ngx_http_helix_anthropic.h"
#include "ngx_http_helix_anthropic_in.h"


#define NGX_HTTP_HELIX_ANTHROPIC_MAX_TOKENS  4096
#define NGX_HTTP_HELIX_ANTHROPIC_VERSION     "2023-06-01"


/* what the messages of one request have made so far */
typedef struct {
    json_t                     *msgs;
    ngx_uint_t                  tool_blocks;
} ngx_http_helix_anthropic_ctx_t;


typedef struct {
    ngx_http_helix_stream_in_t  s;
    ngx_int_t                   block_tool;     /* -1: a text block */
    ngx_int_t                   tools;          /* tool_use blocks seen */
} ngx_http_helix_anthropic_stream_t;


static ngx_int_t ngx_http_helix_anthropic_chat_request(ngx_pool_t *pool,
    json_t *req, ngx_str_t *model, ngx_uint_t stream, ngx_str_t *path,
    json_t **body, ngx_str_t *err);
static ngx_int_t ngx_http_helix_anthropic_params(ngx_pool_t *pool,
    json_t *req, json_t *b, json_t **stops, ngx_str_t *err);
static ngx_int_t ngx_http_helix_anthropic_user(json_t *req, json_t *b);
static ngx_int_t ngx_http_helix_anthropic_message(ngx_pool_t *pool,
    json_t *m, const char *role, void *data, ngx_str_t *err);
static ngx_int_t ngx_http_helix_anthropic_blocks(json_t *content,
    json_t *blocks, ngx_str_t *err);
static ngx_int_t ngx_http_helix_anthropic_text(json_t *blocks,
    json_t *text);
static ngx_int_t ngx_http_helix_anthropic_image(json_t *part,
    json_t *blocks);
static ngx_int_t ngx_http_helix_anthropic_system(json_t *b,
    json_t *system);
static ngx_int_t ngx_http_helix_anthropic_collapse(json_t *msgs);
static ngx_int_t ngx_http_helix_anthropic_tools(ngx_pool_t *pool,
    json_t *req, json_t *b, ngx_uint_t tool_blocks, ngx_str_t *err);
static ngx_int_t ngx_http_helix_anthropic_tool_choice(json_t *req,
    json_t *b, ngx_uint_t none);
static ngx_int_t ngx_http_helix_anthropic_chat_answer(ngx_pool_t *pool,
    ngx_str_t *model, json_t *root, json_t **out, ngx_str_t *err);
static ngx_http_helix_stream_in_t *ngx_http_helix_anthropic_stream_open(
    ngx_pool_t *pool);
static ngx_int_t ngx_http_helix_anthropic_stream_event(
    ngx_http_helix_stream_in_t *s, ngx_str_t *event, u_char *data,
    size_t len);
static ngx_int_t ngx_http_helix_anthropic_stream_start(
    ngx_http_helix_stream_in_t *s, json_t *ev);
static ngx_int_t ngx_http_helix_anthropic_stream_block(
    ngx_http_helix_stream_in_t *s, json_t *ev);
static ngx_int_t ngx_http_helix_anthropic_stream_delta(
    ngx_http_helix_stream_in_t *s, json_t *ev);
static ngx_int_t ngx_http_helix_anthropic_headers(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, ngx_list_t *headers);
static const char *ngx_http_helix_anthropic_finish_reason(json_t *reason);


ngx_http_helix_codec_t  ngx_http_helix_anthropic_codec = {
    ngx_string("anthropic"),
    0,                                          /* passthrough */
    0,                                          /* base64 */
    ngx_string("/v1/messages"),
    ngx_null_string,                            /* no embeddings */
    ngx_http_helix_anthropic_chat_request,
    ngx_http_helix_anthropic_chat_answer,
    NULL,
    NULL,
    NULL,                                       /* answers are translated */
    ngx_http_helix_anthropic_stream_open,
    ngx_http_helix_anthropic_stream_event,
    NULL,                                       /* message_stop ends */
    ngx_http_helix_codec_error_text,
    ngx_http_helix_anthropic_headers,
    ngx_http_helix_anthropic_finish_reason,
    ngx_http_helix_anthropic_request_in,       /* the client direction */
    ngx_http_helix_anthropic_answer_out,
    ngx_http_helix_anthropic_error_out,
    ngx_http_helix_anthropic_stream_out_open,
    ngx_http_helix_anthropic_stream_out
};


static ngx_http_helix_reason_t  ngx_http_helix_anthropic_reasons[] = {
    { "end_turn", "stop" },
    { "stop_sequence", "stop" },
    { "pause_turn", "stop" },
    { "max_tokens", "length" },
    { "model_context_window_exceeded", "length" },
    { "tool_use", "tool_calls" },
    { "refusal", "content_filter" },
    { NULL, NULL }
};


/* chat requests */

static ngx_int_t
ngx_http_helix_anthropic_chat_request(ngx_pool_t *pool, json_t *req,
    ngx_str_t *model, ngx_uint_t stream, ngx_str_t *path, json_t **body,
    ngx_str_t *err)
{
    json_t                          *b, *system, *stops;
    ngx_int_t                        rc;
    json_int_t                       n, max;
    ngx_http_helix_anthropic_ctx_t   ctx;

    rc = ngx_http_helix_codec_n(req, &n, err);
    if (rc != NGX_OK) {
        return rc;
    }

    if (n > 1) {
        ngx_str_set(err, "n > 1 is not supported by anthropic providers");
        return NGX_DECLINED;
    }

    rc = ngx_http_helix_codec_max_tokens(req, &max, err);
    if (rc != NGX_OK) {
        return rc;
    }

    if (max == 0) {
        max = NGX_HTTP_HELIX_ANTHROPIC_MAX_TOKENS;
    }

    stops = NULL;
    b = json_object();
    system = json_array();
    ctx.msgs = json_array();
    ctx.tool_blocks = 0;

    if (b == NULL || system == NULL || ctx.msgs == NULL) {
        goto failed;
    }

    rc = ngx_http_helix_codec_messages(pool, req, system,
                                       ngx_http_helix_anthropic_message,
                                       &ctx, err);
    if (rc != NGX_OK) {
        goto done;
    }

    if (json_array_size(ctx.msgs) == 0) {
        ngx_str_set(err, "anthropic providers need a user message");
        rc = NGX_DECLINED;
        goto done;
    }

    if (ngx_http_helix_anthropic_collapse(ctx.msgs) != NGX_OK
        || json_object_set_new(b, "model",
                               json_stringn((char *) model->data, model->len))
           != 0
        || ngx_http_helix_anthropic_system(b, system) != NGX_OK
        || json_object_set(b, "messages", ctx.msgs) != 0
        || json_object_set_new(b, "max_tokens", json_integer(max)) != 0)
    {
        goto failed;
    }

    rc = ngx_http_helix_anthropic_params(pool, req, b, &stops, err);
    if (rc != NGX_OK) {
        goto done;
    }

    rc = ngx_http_helix_anthropic_tools(pool, req, b, ctx.tool_blocks, err);
    if (rc != NGX_OK) {
        goto done;
    }

    if (ngx_http_helix_anthropic_user(req, b) != NGX_OK
        || (stream && json_object_set_new(b, "stream", json_true()) != 0))
    {
        goto failed;
    }

    *path = ngx_http_helix_anthropic_codec.chat_path;
    *body = b;
    b = NULL;
    rc = NGX_OK;
    goto done;

failed:

    rc = NGX_ERROR;

done:

    json_decref(b);
    json_decref(system);
    json_decref(ctx.msgs);
    json_decref(stops);

    return rc;
}


/* temperature, top_p and stop sequences; *stops: the caller drops it */

static ngx_int_t
ngx_http_helix_anthropic_params(ngx_pool_t *pool, json_t *req, json_t *b,
    json_t **stops, ngx_str_t *err)
{
    json_t     *v;
    ngx_int_t   rc;

    v = json_object_get(req, "temperature");

    if (json_is_number(v)) {
        /* Anthropic's range is 0..1, OpenAI's 0..2 */
        if (json_number_value(v) > 1.0) {
            v = json_real(1.0);

        } else {
            v = json_deep_copy(v);
        }

        if (json_object_set_new(b, "temperature", v) != 0) {
            return NGX_ERROR;
        }
    }

    v = json_object_get(req, "top_p");

    if (json_is_number(v)
        && json_object_set_new(b, "top_p", json_deep_copy(v)) != 0)
    {
        return NGX_ERROR;
    }

    rc = ngx_http_helix_codec_stops(req, stops, err);
    if (rc != NGX_OK) {
        return rc;
    }

    if (*stops && json_object_set(b, "stop_sequences", *stops) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* "user" as metadata.user_id */

static ngx_int_t
ngx_http_helix_anthropic_user(json_t *req, json_t *b)
{
    json_t  *v, *meta;

    v = json_object_get(req, "user");

    if (json_string_length(v) == 0) {
        return NGX_OK;
    }

    meta = ngx_http_helix_codec_add(b, "metadata", json_object());

    if (meta == NULL
        || json_object_set_new(meta, "user_id", json_deep_copy(v)) != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * One user, assistant or tool message appended to "msgs" as Anthropic
 * content blocks; a message of the same role as the previous one joins
 * it, since Anthropic wants turns to alternate.
 */

static ngx_int_t
ngx_http_helix_anthropic_message(ngx_pool_t *pool, json_t *m,
    const char *role, void *data, ngx_str_t *err)
{
    size_t                           i;
    json_t                          *blocks, *block, *call, *fn, *name, *id,
                                    *content, *inner;
    ngx_int_t                        rc;
    ngx_http_helix_anthropic_ctx_t  *ctx = data;

    blocks = json_array();
    if (blocks == NULL) {
        return NGX_ERROR;
    }

    content = json_object_get(m, "content");

    if (ngx_strcmp(role, "user") == 0) {
        rc = ngx_http_helix_anthropic_blocks(content, blocks, err);

    } else if (ngx_strcmp(role, "assistant") == 0) {
        rc = ngx_http_helix_anthropic_blocks(content, blocks, err);

        json_array_foreach(json_object_get(m, "tool_calls"), i, call) {
            if (rc != NGX_OK) {
                break;
            }

            name = ngx_http_helix_codec_call_name(call, err);

            if (name == NULL) {
                rc = NGX_DECLINED;
                break;
            }

            fn = json_object_get(call, "function");
            id = json_object_get(call, "id");
            block = ngx_http_helix_codec_add(blocks, NULL, json_object());

            if (block == NULL
                || json_object_set_new(block, "type", json_string("tool_use"))
                   != 0
                || json_object_set_new(block, "id",
                                       json_is_string(id)
                                       ? json_deep_copy(id) : json_string(""))
                   != 0
                || json_object_set_new(block, "name", json_deep_copy(name))
                   != 0
                || json_object_set_new(block, "input",
                                   ngx_http_helix_codec_arguments(fn))
                   != 0)
            {
                rc = NGX_ERROR;
            }

            ctx->tool_blocks++;
        }

    } else if (ngx_strcmp(role, "tool") == 0) {
        role = "user";
        id = json_object_get(m, "tool_call_id");
        block = ngx_http_helix_codec_add(blocks, NULL, json_object());

        if (block == NULL
            || json_object_set_new(block, "type", json_string("tool_result"))
               != 0
            || json_object_set_new(block, "tool_use_id",
                                   json_is_string(id)
                                   ? json_deep_copy(id) : json_string(""))
               != 0)
        {
            rc = NGX_ERROR;

        } else if (json_is_string(content)) {
            rc = json_object_set_new(block, "content", json_deep_copy(content))
                 == 0 ? NGX_OK : NGX_ERROR;

        } else {
            inner = ngx_http_helix_codec_add(block, "content",
                                             json_array());
            rc = (inner == NULL) ? NGX_ERROR
                 : ngx_http_helix_anthropic_blocks(content, inner, err);

            if (rc == NGX_OK && json_array_size(inner) == 0) {
                json_object_del(block, "content");
            }
        }

        ctx->tool_blocks++;

    } else {
        ngx_str_set(err, "unsupported role");
        rc = NGX_DECLINED;
    }

    if (rc != NGX_OK) {
        json_decref(blocks);
        return rc;
    }

    return ngx_http_helix_codec_push(ctx->msgs, role, "content", blocks);
}


static ngx_int_t
ngx_http_helix_anthropic_blocks(json_t *content, json_t *blocks,
    ngx_str_t *err)
{
    size_t      i;
    json_t     *part, *text;
    ngx_int_t   rc;

    if (content == NULL || json_is_null(content)) {
        return NGX_OK;
    }

    if (json_is_string(content)) {
        return ngx_http_helix_anthropic_text(blocks, content);
    }

    if (!json_is_array(content)) {
        ngx_str_set(err, "content must be a string, null or an array");
        return NGX_DECLINED;
    }

    json_array_foreach(content, i, part) {
        text = ngx_http_helix_codec_part_text(part);

        rc = text ? ngx_http_helix_anthropic_text(blocks, text)
                  : ngx_http_helix_anthropic_image(part, blocks);

        if (rc != NGX_OK) {
            return rc;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_anthropic_text(json_t *blocks, json_t *text)
{
    json_t  *b;

    /* Anthropic rejects empty text blocks */
    if (json_string_length(text) == 0) {
        return NGX_OK;
    }

    b = ngx_http_helix_codec_add(blocks, NULL, json_object());

    if (b == NULL
        || json_object_set_new(b, "type", json_string("text")) != 0
        || json_object_set_new(b, "text", json_deep_copy(text)) != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* other part types have no Anthropic counterpart and are dropped */

static ngx_int_t
ngx_http_helix_anthropic_image(json_t *part, json_t *blocks)
{
    json_t     *b, *src;
    ngx_str_t   url, mime, data;

    if (ngx_http_helix_codec_image_url(part, &url) != NGX_OK) {
        return NGX_OK;
    }

    if (ngx_http_helix_codec_data_url(&url, &mime, &data) == NGX_OK) {
        b = ngx_http_helix_codec_add(blocks, NULL, json_object());
        src = b ? ngx_http_helix_codec_add(b, "source", json_object())
                : NULL;

        if (src == NULL
            || json_object_set_new(b, "type", json_string("image")) != 0
            || json_object_set_new(src, "type", json_string("base64")) != 0
            || json_object_set_new(src, "media_type",
                                   json_stringn((char *) mime.data, mime.len))
               != 0
            || json_object_set_new(src, "data",
                                   json_stringn((char *) data.data, data.len))
               != 0)
        {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (!ngx_http_helix_codec_has_prefix(&url, "https://")
        && !ngx_http_helix_codec_has_prefix(&url, "http://"))
    {
        return NGX_OK;
    }

    b = ngx_http_helix_codec_add(blocks, NULL, json_object());
    src = b ? ngx_http_helix_codec_add(b, "source", json_object()) : NULL;

    if (src == NULL
        || json_object_set_new(b, "type", json_string("image")) != 0
        || json_object_set_new(src, "type", json_string("url")) != 0
        || json_object_set_new(src, "url",
                               json_stringn((char *) url.data, url.len))
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Several system messages become text blocks rather than one joined
 * string, so the provider sees each text exactly as the client sent it.
 */

static ngx_int_t
ngx_http_helix_anthropic_system(json_t *b, json_t *system)
{
    size_t   i;
    json_t  *blocks, *text;

    switch (json_array_size(system)) {

    case 0:
        return NGX_OK;

    case 1:
        return json_object_set(b, "system", json_array_get(system, 0)) == 0
               ? NGX_OK : NGX_ERROR;
    }

    blocks = ngx_http_helix_codec_add(b, "system", json_array());
    if (blocks == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(system, i, text) {
        if (ngx_http_helix_anthropic_text(blocks, text) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* a lone text block is sent as the plain string the client wrote */

static ngx_int_t
ngx_http_helix_anthropic_collapse(json_t *msgs)
{
    size_t   i;
    json_t  *m, *blocks, *text;

    json_array_foreach(msgs, i, m) {
        blocks = json_object_get(m, "content");

        switch (json_array_size(blocks)) {

        case 0:
            text = json_string("");
            break;

        case 1:
            if (!ngx_http_helix_codec_streq(
                     json_object_get(json_array_get(blocks, 0), "type"),
                     "text"))
            {
                continue;
            }

            text = json_incref(json_object_get(json_array_get(blocks, 0),
                                               "text"));
            break;

        default:
            continue;
        }

        if (json_object_set_new(m, "content", text) != 0) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * OpenAI function tools and tool_choice.  "none" drops the tools unless
 * the conversation already holds tool_use/tool_result blocks: Anthropic
 * requires the tools then, and {"type":"none"} says not to call them.
 */

static ngx_int_t
ngx_http_helix_anthropic_tools(ngx_pool_t *pool, json_t *req, json_t *b,
    ngx_uint_t tool_blocks, ngx_str_t *err)
{
    size_t      i;
    json_t     *tools, *choice, *out, *t, *decl, *params, *v;
    ngx_int_t   rc;
    ngx_uint_t  none;

    tools = json_object_get(req, "tools");
    choice = json_object_get(req, "tool_choice");

    if (json_array_size(tools) == 0) {
        return NGX_OK;
    }

    none = ngx_http_helix_codec_streq(choice, "none")
           || ngx_http_helix_codec_streq(json_object_get(choice, "type"),
                                         "none");

    if (none && tool_blocks == 0) {
        return NGX_OK;
    }

    out = ngx_http_helix_codec_add(b, "tools", json_array());
    if (out == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(tools, i, t) {
        rc = ngx_http_helix_codec_tool(pool, t, i, out, &decl, &params, err);
        if (rc != NGX_OK) {
            return rc;
        }

        if (decl == NULL) {
            continue;
        }

        v = json_is_object(params) ? json_deep_copy(params)
                                   : json_pack("{s:s,s:{}}", "type", "object",
                                               "properties");

        if (json_object_set_new(decl, "input_schema", v) != 0) {
            return NGX_ERROR;
        }
    }

    if (json_array_size(out) == 0) {
        json_object_del(b, "tools");
        return NGX_OK;
    }

    return ngx_http_helix_anthropic_tool_choice(req, b, none);
}


static ngx_int_t
ngx_http_helix_anthropic_tool_choice(json_t *req, json_t *b, ngx_uint_t none)
{
    json_t      *choice, *fname, *tc;
    const char  *type;

    choice = json_object_get(req, "tool_choice");
    fname = json_object_get(json_object_get(choice, "function"), "name");

    if (none) {
        type = "none";

    } else if (ngx_http_helix_codec_streq(choice, "required")) {
        type = "any";

    } else if (json_is_string(fname)) {
        type = "tool";

    } else {
        type = "auto";
    }

    /* "auto" is Anthropic's default: only said when needed */
    if (ngx_strcmp(type, "auto") == 0 && !json_is_string(choice)
        && !json_is_false(json_object_get(req, "parallel_tool_calls")))
    {
        return NGX_OK;
    }

    tc = ngx_http_helix_codec_add(b, "tool_choice", json_object());

    if (tc == NULL
        || json_object_set_new(tc, "type", json_string(type)) != 0)
    {
        return NGX_ERROR;
    }

    if (ngx_strcmp(type, "tool") == 0
        && json_object_set_new(tc, "name", json_deep_copy(fname)) != 0)
    {
        return NGX_ERROR;
    }

    if (!none && json_is_false(json_object_get(req, "parallel_tool_calls"))
        && json_object_set_new(tc, "disable_parallel_tool_use", json_true())
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_anthropic_chat_answer(ngx_pool_t *pool, ngx_str_t *model,
    json_t *root, json_t **out, ngx_str_t *err)
{
    size_t       i;
    json_t      *o, *content, *block, *text, *name, *texts, *calls,
                *choices, *c, *usage;
    ngx_int_t    rc;
    const char  *finish;

    content = json_object_get(root, "content");

    if (!json_is_array(content)) {
        ngx_str_set(err, "no content");
        return NGX_DECLINED;
    }

    o = ngx_http_helix_codec_completion(pool, model,
                                        json_object_get(root, "id"),
                                        &choices);
    texts = json_array();
    calls = json_array();

    if (o == NULL || texts == NULL || calls == NULL) {
        goto failed;
    }

    json_array_foreach(content, i, block) {

        if (ngx_http_helix_codec_streq(json_object_get(block, "type"),
                                       "text"))
        {
            text = json_object_get(block, "text");

            if (!json_is_string(text)) {
                rc = ngx_http_helix_codec_fail(pool, err,
                                               "content[%uz] has no text", i);
                goto done;
            }

            if (json_array_append(texts, text) != 0) {
                goto failed;
            }

            continue;
        }

        if (ngx_http_helix_codec_streq(json_object_get(block, "type"),
                                       "tool_use"))
        {
            name = json_object_get(block, "name");

            if (!json_is_string(name)) {
                rc = ngx_http_helix_codec_fail(pool, err,
                                               "content[%uz] has no name", i);
                goto done;
            }

            if (ngx_http_helix_codec_tool_call(pool, calls,
                                                json_object_get(block, "id"),
                                                name,
                                                json_object_get(block,
                                                                "input"))
                != NGX_OK)
            {
                goto failed;
            }
        }

        /* thinking and other blocks have no OpenAI counterpart */
    }

    finish = ngx_http_helix_anthropic_finish_reason(
                                         json_object_get(root, "stop_reason"));

    if (json_array_size(texts) == 0 && json_array_size(calls)) {
        c = json_null();

    } else {
        c = ngx_http_helix_codec_concat(pool, texts);
    }

    if (finish == NULL) {
        finish = json_array_size(calls) ? "tool_calls" : "stop";
    }

    rc = ngx_http_helix_codec_choice(choices, c,
                                     json_array_size(calls) ? calls : NULL,
                                     finish);
    json_decref(c);

    if (rc != NGX_OK) {
        goto failed;
    }

    /* cached input is billed apart but is prompt all the same */

    usage = json_object_get(root, "usage");

    if (ngx_http_helix_codec_usage(o,
            ngx_http_helix_codec_tokens(usage, "input_tokens")
            + ngx_http_helix_codec_tokens(usage,
                                          "cache_creation_input_tokens")
            + ngx_http_helix_codec_tokens(usage, "cache_read_input_tokens"),
            ngx_http_helix_codec_tokens(usage, "output_tokens"), 0)
        != NGX_OK)
    {
        goto failed;
    }

    *out = o;
    o = NULL;
    rc = NGX_OK;
    goto done;

failed:

    rc = NGX_ERROR;

done:

    json_decref(o);
    json_decref(texts);
    json_decref(calls);

    return rc;
}




/* streams: message_start, content blocks, message_delta, message_stop */

static ngx_http_helix_stream_in_t *
ngx_http_helix_anthropic_stream_open(ngx_pool_t *pool)
{
    ngx_http_helix_stream_in_t         *s;
    ngx_http_helix_anthropic_stream_t  *as;

    s = ngx_http_helix_codec_stream_open(pool,
                                   sizeof(ngx_http_helix_anthropic_stream_t));
    if (s == NULL) {
        return NULL;
    }

    as = (ngx_http_helix_anthropic_stream_t *) s;
    as->block_tool = -1;

    return s;
}


static ngx_int_t
ngx_http_helix_anthropic_stream_event(ngx_http_helix_stream_in_t *s,
    ngx_str_t *event, u_char *data, size_t len)
{
    json_t                  *ev, *v;
    ngx_str_t                type;
    ngx_http_helix_delta_t  *d;

    ev = ngx_http_helix_codec_stream_load(s, data, len);

    if (ev == NULL) {
        return ngx_http_helix_codec_stream_error(s, NULL);
    }

    v = json_object_get(ev, "type");

    if (json_is_string(v)) {
        ngx_http_helix_codec_string(v, &type);

    } else {
        type = *event;
    }

#define ngx_helix_is(name)                                                    \
    (type.len == sizeof(name) - 1                                            \
     && ngx_strncmp(type.data, name, sizeof(name) - 1) == 0)

    if (ngx_helix_is("error")) {
        return ngx_http_helix_codec_stream_error(s, ev);
    }

    if (ngx_helix_is("message_start")) {
        return ngx_http_helix_anthropic_stream_start(s, ev);
    }

    if (ngx_helix_is("content_block_start")) {
        return ngx_http_helix_anthropic_stream_block(s, ev);
    }

    if (ngx_helix_is("content_block_delta")) {
        return ngx_http_helix_anthropic_stream_delta(s, ev);
    }

    if (ngx_helix_is("message_delta")) {
        if (ngx_http_helix_codec_stream_usage(s, json_object_get(ev, "usage"),
                                              "input_tokens", "output_tokens")
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        v = json_object_get(json_object_get(ev, "delta"), "stop_reason");

        if (!json_is_string(v)) {
            return NGX_OK;
        }

        d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_FINISH, 0);
        if (d == NULL) {
            return NGX_ERROR;
        }

        d->finish = ngx_http_helix_anthropic_finish_reason(v);

        return NGX_OK;
    }

    if (ngx_helix_is("message_stop")) {
        d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_DONE, 0);
        return d ? NGX_OK : NGX_ERROR;
    }

#undef ngx_helix_is

    /* ping, content_block_stop, event types yet to come */

    return NGX_OK;
}


/* the usage so far, the id the non-streaming path gives, the role */

static ngx_int_t
ngx_http_helix_anthropic_stream_start(ngx_http_helix_stream_in_t *s,
    json_t *ev)
{
    u_char                  *p;
    json_t                  *m, *id;
    ngx_http_helix_delta_t  *d;

    m = json_object_get(ev, "message");

    if (ngx_http_helix_codec_stream_usage(s, json_object_get(m, "usage"),
                                          "input_tokens", "output_tokens")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    id = json_object_get(m, "id");

    if (json_is_string(id)) {
        d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_ID, 0);
        if (d == NULL) {
            return NGX_ERROR;
        }

        d->text.len = sizeof("chatcmpl-") - 1 + json_string_length(id);

        p = ngx_pnalloc(s->pool, d->text.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        d->text.data = p;
        ngx_memcpy(ngx_cpymem(p, "chatcmpl-", sizeof("chatcmpl-") - 1),
                   json_string_value(id), json_string_length(id));
    }

    d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_ROLE, 0);

    return d ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_helix_anthropic_stream_block(ngx_http_helix_stream_in_t *s,
    json_t *ev)
{
    json_t                             *b;
    ngx_http_helix_delta_t             *d;
    ngx_http_helix_anthropic_stream_t  *as;

    as = (ngx_http_helix_anthropic_stream_t *) s;

    b = json_object_get(ev, "content_block");
    as->block_tool = -1;

    if (!ngx_http_helix_codec_streq(json_object_get(b, "type"), "tool_use")) {
        return NGX_OK;
    }

    as->block_tool = as->tools++;

    d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_TOOL, 0);
    if (d == NULL) {
        return NGX_ERROR;
    }

    ngx_http_helix_codec_string(json_object_get(b, "id"), &d->id);
    ngx_http_helix_codec_string(json_object_get(b, "name"), &d->name);
    ngx_str_set(&d->text, "");

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_anthropic_stream_delta(ngx_http_helix_stream_in_t *s,
    json_t *ev)
{
    json_t                             *b, *v;
    ngx_http_helix_delta_t             *d;
    ngx_http_helix_anthropic_stream_t  *as;

    as = (ngx_http_helix_anthropic_stream_t *) s;

    b = json_object_get(ev, "delta");

    if (ngx_http_helix_codec_streq(json_object_get(b, "type"), "text_delta")) {
        v = json_object_get(b, "text");

        if (!json_is_string(v)) {
            return NGX_OK;
        }

        d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_TEXT, 0);
        if (d == NULL) {
            return NGX_ERROR;
        }

        ngx_http_helix_codec_string(v, &d->text);

        return NGX_OK;
    }

    if (ngx_http_helix_codec_streq(json_object_get(b, "type"),
                                   "input_json_delta")
        && as->block_tool >= 0)
    {
        v = json_object_get(b, "partial_json");

        if (!json_is_string(v)) {
            return NGX_OK;
        }

        d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_TOOL, 0);
        if (d == NULL) {
            return NGX_ERROR;
        }

        d->tool = as->block_tool;
        ngx_http_helix_codec_string(v, &d->text);

        return NGX_OK;
    }

    /* thinking and signature deltas have no OpenAI counterpart */

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_anthropic_headers(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, ngx_list_t *headers)
{
    u_char  *v;
    size_t   len;

    if (p->api_key.len
        && ngx_http_helix_codec_header(pool, headers, "x-api-key",
                                       p->api_key.data, p->api_key.len)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (p->api_version.len) {
        v = p->api_version.data;
        len = p->api_version.len;

    } else {
        v = (u_char *) NGX_HTTP_HELIX_ANTHROPIC_VERSION;
        len = sizeof(NGX_HTTP_HELIX_ANTHROPIC_VERSION) - 1;
    }

    return ngx_http_helix_codec_header(pool, headers, "anthropic-version", v,
                                       len);
}


static const char *
ngx_http_helix_anthropic_finish_reason(json_t *reason)
{
    return ngx_http_helix_codec_reason(ngx_http_helix_anthropic_reasons,
                                       reason);
}
