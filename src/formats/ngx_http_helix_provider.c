/*
 * Copyright (C) helix authors
 *
 * Provider adapters: OpenAI chat and embeddings requests to each provider
 * type's wire format, and the providers' answers back to OpenAI's.
 * Pure translation, no I/O.
 *
 * Everything built here is owned by one root json_t from the moment it
 * is created (see ngx_http_helix_provider_add()), so every failure path
 * only has to drop that root.
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_provider.h"
#include "ngx_http_helix_jscan.h"


#define NGX_HTTP_HELIX_ANTHROPIC_MAX_TOKENS  4096
#define NGX_HTTP_HELIX_ANTHROPIC_VERSION     "2023-06-01"

/* how much of a provider's error text reaches clients and logs */
#define NGX_HTTP_HELIX_ERROR_BODY_MAX        200
#define NGX_HTTP_HELIX_ERROR_MSG_MAX         512

/* hostile token counts are capped so that sums cannot overflow */
#define NGX_HTTP_HELIX_TOKENS_MAX            ((json_int_t) 1 << 40)

#define NGX_HTTP_HELIX_ID_MAX                64

#define NGX_HTTP_HELIX_DUMP_FLAGS                                            \
    (JSON_COMPACT|JSON_ENCODE_ANY|JSON_PRESERVE_ORDER)


typedef struct {
    const char                 *name;
    const char                 *reason;
} ngx_http_helix_reason_t;


static ngx_int_t ngx_http_helix_openai_chat_request(json_t *req,
    ngx_str_t *model, ngx_uint_t stream, ngx_str_t *path, json_t **body);
static ngx_int_t ngx_http_helix_anthropic_chat_request(ngx_pool_t *pool,
    json_t *req, ngx_str_t *model, ngx_uint_t stream, ngx_str_t *path,
    json_t **body, ngx_str_t *err);
static ngx_int_t ngx_http_helix_anthropic_message(json_t *m,
    const char *role, json_t *msgs, ngx_uint_t *tool_blocks,
    ngx_str_t *err);
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
static ngx_int_t ngx_http_helix_gemini_chat_request(ngx_pool_t *pool,
    json_t *req, ngx_str_t *model, ngx_uint_t stream, ngx_str_t *path,
    json_t **body, ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_message(ngx_pool_t *pool,
    json_t *m, const char *role, json_t *contents, json_t *names,
    ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_parts(json_t *content,
    json_t *parts, ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_config(json_t *req, json_t *b,
    ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_tools(ngx_pool_t *pool,
    json_t *req, json_t *b, ngx_str_t *err);
static json_t *ngx_http_helix_gemini_schema(json_t *s);
static ngx_int_t ngx_http_helix_gemini_path(ngx_pool_t *pool,
    ngx_str_t *model, const char *action, ngx_str_t *path);
static ngx_int_t ngx_http_helix_gemini_resource(ngx_pool_t *pool,
    ngx_str_t *model, ngx_str_t *name);

static ngx_int_t ngx_http_helix_openai_chat_response(ngx_pool_t *pool,
    ngx_str_t *model, json_t *root, json_t **out, ngx_str_t *err);
static ngx_int_t ngx_http_helix_anthropic_chat_response(ngx_pool_t *pool,
    ngx_str_t *model, json_t *root, json_t **out, ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_chat_response(ngx_pool_t *pool,
    ngx_str_t *model, json_t *root, json_t **out, ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_candidate(ngx_pool_t *pool,
    json_t *choices, json_t *cand, size_t n, ngx_str_t *err);

static json_t *ngx_http_helix_provider_add(json_t *parent, const char *key,
    json_t *v);
static json_t *ngx_http_helix_provider_copy(json_t *req, ngx_str_t *model);
static ngx_int_t ngx_http_helix_provider_push(json_t *list,
    const char *role, const char *key, json_t *items);
static ngx_int_t ngx_http_helix_provider_texts(json_t *content,
    json_t *texts, ngx_str_t *err);
static json_t *ngx_http_helix_provider_part_text(json_t *part);
static ngx_int_t ngx_http_helix_provider_image_url(json_t *part,
    ngx_str_t *url);
static ngx_int_t ngx_http_helix_provider_data_url(ngx_str_t *url,
    ngx_str_t *mime, ngx_str_t *data);
static json_t *ngx_http_helix_provider_arguments(json_t *fn);
static json_t *ngx_http_helix_provider_join(ngx_pool_t *pool,
    json_t *content, const char *sep);
static ngx_int_t ngx_http_helix_provider_max_tokens(json_t *req,
    json_int_t *max, ngx_str_t *err);
static ngx_int_t ngx_http_helix_provider_n(json_t *req, json_int_t *n,
    ngx_str_t *err);
static ngx_int_t ngx_http_helix_provider_stops(json_t *req, json_t **out,
    ngx_str_t *err);
static ngx_int_t ngx_http_helix_provider_streq(json_t *v, const char *s);
static ngx_int_t ngx_http_helix_provider_has_prefix(ngx_str_t *s,
    const char *prefix);

static ngx_int_t ngx_http_helix_provider_parse(ngx_pool_t *pool,
    u_char *data, size_t len, json_t **root, ngx_str_t *err);
static ngx_int_t ngx_http_helix_provider_error_in(ngx_pool_t *pool,
    json_t *root, ngx_str_t *err);
static json_t *ngx_http_helix_provider_error_text(json_t *root);
static json_t *ngx_http_helix_provider_completion(ngx_pool_t *pool,
    ngx_str_t *model, json_t *pid, json_t **choices);
static ngx_int_t ngx_http_helix_provider_choice(json_t *choices,
    json_t *content, json_t *calls, const char *finish);
static ngx_int_t ngx_http_helix_provider_tool_call(ngx_pool_t *pool,
    json_t *calls, json_t *id, json_t *name, json_t *input);
static json_t *ngx_http_helix_provider_json_text(ngx_pool_t *pool,
    json_t *v);
static json_t *ngx_http_helix_provider_concat(ngx_pool_t *pool,
    json_t *texts);
static ngx_int_t ngx_http_helix_provider_usage(json_t *out,
    json_int_t prompt, json_int_t completion, json_int_t total);
static json_int_t ngx_http_helix_provider_tokens(json_t *o,
    const char *key);
static size_t ngx_http_helix_provider_id(u_char *buf, const char *prefix);
static ngx_int_t ngx_http_helix_provider_vectors(json_t *v);

static ngx_int_t ngx_http_helix_provider_header(ngx_pool_t *pool,
    ngx_list_t *headers, const char *key, u_char *value, size_t len);
static ngx_int_t ngx_http_helix_provider_fail(ngx_pool_t *pool,
    ngx_str_t *err, const char *fmt, ...);
static ngx_int_t ngx_http_helix_provider_jtokens(ngx_http_helix_jdoc_t *doc,
    ngx_uint_t obj, const char *key, uint64_t *n);
static ngx_int_t ngx_http_helix_provider_clean(ngx_pool_t *pool,
    u_char *data, size_t len, size_t max, ngx_uint_t markup,
    ngx_str_t *out);
static size_t ngx_http_helix_provider_utf8(u_char *p, u_char *last);


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


static ngx_http_helix_reason_t  ngx_http_helix_gemini_reasons[] = {
    { "STOP", "stop" },
    { "MAX_TOKENS", "length" },
    { "SAFETY", "content_filter" },
    { "RECITATION", "content_filter" },
    { "BLOCKLIST", "content_filter" },
    { "PROHIBITED_CONTENT", "content_filter" },
    { "SPII", "content_filter" },
    { "IMAGE_SAFETY", "content_filter" },
    { NULL, NULL }
};


/* chat requests */

ngx_int_t
ngx_http_helix_provider_chat_request(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, json_t *req, ngx_str_t *model,
    ngx_uint_t stream, ngx_str_t *path, json_t **body, ngx_str_t *err)
{
    json_t  *messages;

    *body = NULL;

    if (!json_is_object(req)) {
        ngx_str_set(err, "the request is not a JSON object");
        return NGX_DECLINED;
    }

    if (model == NULL || model->len == 0) {
        ngx_str_set(err, "no model");
        return NGX_DECLINED;
    }

    messages = json_object_get(req, "messages");

    if (json_array_size(messages) == 0) {
        ngx_str_set(err, "\"messages\" must be a non-empty array");
        return NGX_DECLINED;
    }

    switch (p->type) {

    case NGX_HTTP_HELIX_OPENAI:
        return ngx_http_helix_openai_chat_request(req, model, stream, path,
                                                  body);

    case NGX_HTTP_HELIX_ANTHROPIC:
        return ngx_http_helix_anthropic_chat_request(pool, req, model, stream,
                                                     path, body, err);

    case NGX_HTTP_HELIX_GEMINI:
        return ngx_http_helix_gemini_chat_request(pool, req, model, stream,
                                                  path, body, err);
    }

    ngx_str_set(err, "unknown provider type");
    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_helix_openai_chat_request(json_t *req, ngx_str_t *model,
    ngx_uint_t stream, ngx_str_t *path, json_t **body)
{
    json_t  *b;

    b = ngx_http_helix_provider_copy(req, model);
    if (b == NULL) {
        return NGX_ERROR;
    }

    if (stream) {
        if (json_object_set_new(b, "stream", json_true()) != 0) {
            json_decref(b);
            return NGX_ERROR;
        }

    } else {
        /* OpenAI rejects stream_options without "stream": true */
        json_object_del(b, "stream");
        json_object_del(b, "stream_options");
    }

    ngx_str_set(path, "/v1/chat/completions");
    *body = b;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_anthropic_chat_request(ngx_pool_t *pool, json_t *req,
    ngx_str_t *model, ngx_uint_t stream, ngx_str_t *path, json_t **body,
    ngx_str_t *err)
{
    size_t       i;
    json_t      *b, *system, *msgs, *m, *v, *stops, *meta;
    ngx_int_t    rc;
    ngx_str_t    e;
    json_int_t   n, max;
    ngx_uint_t   tool_blocks;
    const char  *role;

    rc = ngx_http_helix_provider_n(req, &n, err);
    if (rc != NGX_OK) {
        return rc;
    }

    if (n > 1) {
        ngx_str_set(err, "n > 1 is not supported by anthropic providers");
        return NGX_DECLINED;
    }

    rc = ngx_http_helix_provider_max_tokens(req, &max, err);
    if (rc != NGX_OK) {
        return rc;
    }

    if (max == 0) {
        max = NGX_HTTP_HELIX_ANTHROPIC_MAX_TOKENS;
    }

    stops = NULL;
    b = json_object();
    system = json_array();
    msgs = json_array();

    if (b == NULL || system == NULL || msgs == NULL) {
        goto failed;
    }

    tool_blocks = 0;

    json_array_foreach(json_object_get(req, "messages"), i, m) {

        role = json_string_value(json_object_get(m, "role"));

        if (role == NULL) {
            rc = ngx_http_helix_provider_fail(pool, err,
                                              "messages[%uz] has no role", i);
            goto done;
        }

        if (ngx_strcmp(role, "system") == 0
            || ngx_strcmp(role, "developer") == 0)
        {
            rc = ngx_http_helix_provider_texts(json_object_get(m, "content"),
                                               system, &e);
        } else {
            rc = ngx_http_helix_anthropic_message(m, role, msgs,
                                                  &tool_blocks, &e);
        }

        if (rc == NGX_DECLINED) {
            rc = ngx_http_helix_provider_fail(pool, err, "messages[%uz]: %V",
                                              i, &e);
            goto done;
        }

        if (rc != NGX_OK) {
            goto failed;
        }
    }

    if (json_array_size(msgs) == 0) {
        ngx_str_set(err, "anthropic providers need a user message");
        rc = NGX_DECLINED;
        goto done;
    }

    if (ngx_http_helix_anthropic_collapse(msgs) != NGX_OK
        || json_object_set_new(b, "model",
                               json_stringn((char *) model->data, model->len))
           != 0
        || ngx_http_helix_anthropic_system(b, system) != NGX_OK
        || json_object_set(b, "messages", msgs) != 0
        || json_object_set_new(b, "max_tokens", json_integer(max)) != 0)
    {
        goto failed;
    }

    v = json_object_get(req, "temperature");

    if (json_is_number(v)) {
        /* Anthropic's range is 0..1, OpenAI's 0..2 */
        if (json_number_value(v) > 1.0) {
            v = json_real(1.0);

        } else {
            v = json_deep_copy(v);
        }

        if (json_object_set_new(b, "temperature", v) != 0) {
            goto failed;
        }
    }

    v = json_object_get(req, "top_p");

    if (json_is_number(v)
        && json_object_set_new(b, "top_p", json_deep_copy(v)) != 0)
    {
        goto failed;
    }

    rc = ngx_http_helix_provider_stops(req, &stops, err);
    if (rc != NGX_OK) {
        goto done;
    }

    if (stops && json_object_set(b, "stop_sequences", stops) != 0) {
        goto failed;
    }

    rc = ngx_http_helix_anthropic_tools(pool, req, b, tool_blocks, err);
    if (rc != NGX_OK) {
        goto done;
    }

    v = json_object_get(req, "user");

    if (json_string_length(v)) {
        meta = ngx_http_helix_provider_add(b, "metadata", json_object());

        if (meta == NULL
            || json_object_set_new(meta, "user_id", json_deep_copy(v)) != 0)
        {
            goto failed;
        }
    }

    if (stream && json_object_set_new(b, "stream", json_true()) != 0) {
        goto failed;
    }

    ngx_str_set(path, "/v1/messages");
    *body = b;
    b = NULL;
    rc = NGX_OK;
    goto done;

failed:

    rc = NGX_ERROR;

done:

    json_decref(b);
    json_decref(system);
    json_decref(msgs);
    json_decref(stops);

    return rc;
}


/*
 * One user, assistant or tool message appended to "msgs" as Anthropic
 * content blocks; a message of the same role as the previous one joins
 * it, since Anthropic wants turns to alternate.
 */

static ngx_int_t
ngx_http_helix_anthropic_message(json_t *m, const char *role, json_t *msgs,
    ngx_uint_t *tool_blocks, ngx_str_t *err)
{
    size_t      i;
    json_t     *blocks, *block, *call, *fn, *name, *id, *content, *inner;
    ngx_int_t   rc;

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

            fn = json_object_get(call, "function");
            name = json_object_get(fn, "name");

            if (!json_is_string(name)) {
                ngx_str_set(err, "a tool call has no function name");
                rc = NGX_DECLINED;
                break;
            }

            id = json_object_get(call, "id");
            block = ngx_http_helix_provider_add(blocks, NULL, json_object());

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
                                   ngx_http_helix_provider_arguments(fn))
                   != 0)
            {
                rc = NGX_ERROR;
            }

            (*tool_blocks)++;
        }

    } else if (ngx_strcmp(role, "tool") == 0) {
        role = "user";
        id = json_object_get(m, "tool_call_id");
        block = ngx_http_helix_provider_add(blocks, NULL, json_object());

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
            inner = ngx_http_helix_provider_add(block, "content",
                                                json_array());
            rc = (inner == NULL) ? NGX_ERROR
                 : ngx_http_helix_anthropic_blocks(content, inner, err);

            if (rc == NGX_OK && json_array_size(inner) == 0) {
                json_object_del(block, "content");
            }
        }

        (*tool_blocks)++;

    } else {
        ngx_str_set(err, "unsupported role");
        rc = NGX_DECLINED;
    }

    if (rc != NGX_OK) {
        json_decref(blocks);
        return rc;
    }

    return ngx_http_helix_provider_push(msgs, role, "content", blocks);
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
        text = ngx_http_helix_provider_part_text(part);

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

    b = ngx_http_helix_provider_add(blocks, NULL, json_object());

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

    if (ngx_http_helix_provider_image_url(part, &url) != NGX_OK) {
        return NGX_OK;
    }

    if (ngx_http_helix_provider_data_url(&url, &mime, &data) == NGX_OK) {
        b = ngx_http_helix_provider_add(blocks, NULL, json_object());
        src = b ? ngx_http_helix_provider_add(b, "source", json_object())
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

    if (!ngx_http_helix_provider_has_prefix(&url, "https://")
        && !ngx_http_helix_provider_has_prefix(&url, "http://"))
    {
        return NGX_OK;
    }

    b = ngx_http_helix_provider_add(blocks, NULL, json_object());
    src = b ? ngx_http_helix_provider_add(b, "source", json_object()) : NULL;

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

    blocks = ngx_http_helix_provider_add(b, "system", json_array());
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
            if (!ngx_http_helix_provider_streq(
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
    size_t       i;
    json_t      *tools, *choice, *out, *t, *fn, *name, *v, *tc, *fname;
    ngx_uint_t   none;
    const char  *type;

    tools = json_object_get(req, "tools");
    choice = json_object_get(req, "tool_choice");
    fname = json_object_get(json_object_get(choice, "function"), "name");

    if (json_array_size(tools) == 0) {
        return NGX_OK;
    }

    none = ngx_http_helix_provider_streq(choice, "none")
           || ngx_http_helix_provider_streq(json_object_get(choice, "type"),
                                            "none");

    if (none && tool_blocks == 0) {
        return NGX_OK;
    }

    out = ngx_http_helix_provider_add(b, "tools", json_array());
    if (out == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(tools, i, t) {
        if (!ngx_http_helix_provider_streq(json_object_get(t, "type"),
                                           "function"))
        {
            continue;
        }

        fn = json_object_get(t, "function");
        name = json_object_get(fn, "name");

        if (!json_is_string(name)) {
            return ngx_http_helix_provider_fail(pool, err,
                                         "tools[%uz] has no function name", i);
        }

        t = ngx_http_helix_provider_add(out, NULL, json_object());

        if (t == NULL
            || json_object_set_new(t, "name", json_deep_copy(name)) != 0)
        {
            return NGX_ERROR;
        }

        v = json_object_get(fn, "description");

        if (json_is_string(v)
            && json_object_set_new(t, "description", json_deep_copy(v)) != 0)
        {
            return NGX_ERROR;
        }

        v = json_object_get(fn, "parameters");
        v = json_is_object(v) ? json_deep_copy(v)
                              : json_pack("{s:s,s:{}}", "type", "object",
                                          "properties");

        if (json_object_set_new(t, "input_schema", v) != 0) {
            return NGX_ERROR;
        }
    }

    if (json_array_size(out) == 0) {
        json_object_del(b, "tools");
        return NGX_OK;
    }

    if (none) {
        type = "none";

    } else if (ngx_http_helix_provider_streq(choice, "required")) {
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

    tc = ngx_http_helix_provider_add(b, "tool_choice", json_object());

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
ngx_http_helix_gemini_chat_request(ngx_pool_t *pool, json_t *req,
    ngx_str_t *model, ngx_uint_t stream, ngx_str_t *path, json_t **body,
    ngx_str_t *err)
{
    size_t       i;
    json_t      *b, *system, *contents, *names, *m, *parts, *si, *c;
    ngx_int_t    rc;
    ngx_str_t    e;
    const char  *role;

    b = json_object();
    system = json_array();
    names = json_object();
    contents = ngx_http_helix_provider_add(b, "contents", json_array());

    if (contents == NULL || system == NULL || names == NULL) {
        goto failed;
    }

    json_array_foreach(json_object_get(req, "messages"), i, m) {

        role = json_string_value(json_object_get(m, "role"));

        if (role == NULL) {
            rc = ngx_http_helix_provider_fail(pool, err,
                                              "messages[%uz] has no role", i);
            goto done;
        }

        if (ngx_strcmp(role, "system") == 0
            || ngx_strcmp(role, "developer") == 0)
        {
            rc = ngx_http_helix_provider_texts(json_object_get(m, "content"),
                                               system, &e);
        } else {
            rc = ngx_http_helix_gemini_message(pool, m, role, contents, names,
                                               &e);
        }

        if (rc == NGX_DECLINED) {
            rc = ngx_http_helix_provider_fail(pool, err, "messages[%uz]: %V",
                                              i, &e);
            goto done;
        }

        if (rc != NGX_OK) {
            goto failed;
        }
    }

    if (json_array_size(contents) == 0) {
        ngx_str_set(err, "gemini providers need a user message");
        rc = NGX_DECLINED;
        goto done;
    }

    /* Gemini rejects a content without parts */
    json_array_foreach(contents, i, c) {
        parts = json_object_get(c, "parts");

        if (json_array_size(parts) == 0
            && json_array_append_new(parts, json_pack("{s:s}", "text", ""))
               != 0)
        {
            goto failed;
        }
    }

    if (json_array_size(system)) {
        si = ngx_http_helix_provider_add(b, "systemInstruction",
                                         json_object());
        parts = si ? ngx_http_helix_provider_add(si, "parts", json_array())
                   : NULL;

        if (parts == NULL) {
            goto failed;
        }

        json_array_foreach(system, i, m) {
            if (json_array_append_new(parts, json_pack("{s:O}", "text", m))
                != 0)
            {
                goto failed;
            }
        }
    }

    rc = ngx_http_helix_gemini_config(req, b, err);
    if (rc != NGX_OK) {
        goto done;
    }

    rc = ngx_http_helix_gemini_tools(pool, req, b, err);
    if (rc != NGX_OK) {
        goto done;
    }

    if (ngx_http_helix_gemini_path(pool, model,
                                   stream ? ":streamGenerateContent?alt=sse"
                                          : ":generateContent",
                                   path)
        != NGX_OK)
    {
        goto failed;
    }

    *body = b;
    b = NULL;
    rc = NGX_OK;
    goto done;

failed:

    rc = NGX_ERROR;

done:

    json_decref(b);
    json_decref(system);
    json_decref(names);

    return rc;
}


/*
 * One user, assistant or tool message appended to "contents"; "names"
 * maps the tool call ids seen so far to their function names, because
 * a Gemini functionResponse is matched by name, not by id.
 */

static ngx_int_t
ngx_http_helix_gemini_message(ngx_pool_t *pool, json_t *m, const char *role,
    json_t *contents, json_t *names, ngx_str_t *err)
{
    size_t      i;
    json_t     *parts, *part, *call, *fn, *name, *id, *text, *r;
    ngx_int_t   rc;

    parts = json_array();
    if (parts == NULL) {
        return NGX_ERROR;
    }

    if (ngx_strcmp(role, "user") == 0) {
        rc = ngx_http_helix_gemini_parts(json_object_get(m, "content"), parts,
                                         err);

    } else if (ngx_strcmp(role, "assistant") == 0) {
        role = "model";
        rc = ngx_http_helix_gemini_parts(json_object_get(m, "content"), parts,
                                         err);

        json_array_foreach(json_object_get(m, "tool_calls"), i, call) {
            if (rc != NGX_OK) {
                break;
            }

            fn = json_object_get(call, "function");
            name = json_object_get(fn, "name");

            if (!json_is_string(name)) {
                ngx_str_set(err, "a tool call has no function name");
                rc = NGX_DECLINED;
                break;
            }

            id = json_object_get(call, "id");

            if (json_is_string(id)
                && json_object_set(names, json_string_value(id), name) != 0)
            {
                rc = NGX_ERROR;
                break;
            }

            part = ngx_http_helix_provider_add(parts, NULL, json_object());
            fn = part ? ngx_http_helix_provider_add(part, "functionCall",
                                                    json_object())
                      : NULL;

            if (fn == NULL
                || json_object_set_new(fn, "name", json_deep_copy(name)) != 0
                || json_object_set_new(fn, "args",
                           ngx_http_helix_provider_arguments(
                               json_object_get(call, "function")))
                   != 0)
            {
                rc = NGX_ERROR;
            }
        }

    } else if (ngx_strcmp(role, "tool") == 0) {
        role = "user";

        id = json_object_get(m, "tool_call_id");
        name = json_object_get(names, json_string_value(id));

        if (!json_is_string(name)) {
            name = json_object_get(m, "name");
        }

        text = ngx_http_helix_provider_join(pool,
                                            json_object_get(m, "content"),
                                            "\n");

        part = ngx_http_helix_provider_add(parts, NULL, json_object());
        fn = part ? ngx_http_helix_provider_add(part, "functionResponse",
                                                json_object())
                  : NULL;
        r = fn ? ngx_http_helix_provider_add(fn, "response", json_object())
               : NULL;

        rc = NGX_OK;

        if (r == NULL
            || json_object_set_new(fn, "name",
                                   json_is_string(name)
                                   ? json_deep_copy(name)
                                   : json_string("tool"))
               != 0
            || json_object_set(r, "content", text) != 0)
        {
            rc = NGX_ERROR;
        }

        json_decref(text);

    } else {
        ngx_str_set(err, "unsupported role");
        rc = NGX_DECLINED;
    }

    if (rc != NGX_OK) {
        json_decref(parts);
        return rc;
    }

    return ngx_http_helix_provider_push(contents, role, "parts", parts);
}


static ngx_int_t
ngx_http_helix_gemini_parts(json_t *content, json_t *parts, ngx_str_t *err)
{
    size_t      i;
    json_t     *part, *text, *p, *d;
    ngx_str_t   url, mime, data;

    if (content == NULL || json_is_null(content)) {
        return NGX_OK;
    }

    if (json_is_string(content)) {
        if (json_string_length(content) == 0) {
            return NGX_OK;
        }

        return json_array_append_new(parts,
                                     json_pack("{s:s%}", "text",
                                               json_string_value(content),
                                               json_string_length(content)))
               == 0 ? NGX_OK : NGX_ERROR;
    }

    if (!json_is_array(content)) {
        ngx_str_set(err, "content must be a string, null or an array");
        return NGX_DECLINED;
    }

    json_array_foreach(content, i, part) {
        text = ngx_http_helix_provider_part_text(part);

        if (text) {
            if (json_string_length(text)
                && json_array_append_new(parts,
                                         json_pack("{s:s%}", "text",
                                                   json_string_value(text),
                                                   json_string_length(text)))
                   != 0)
            {
                return NGX_ERROR;
            }

            continue;
        }

        /* only inline images have a Gemini counterpart; the rest drops */

        if (ngx_http_helix_provider_image_url(part, &url) != NGX_OK
            || ngx_http_helix_provider_data_url(&url, &mime, &data) != NGX_OK)
        {
            continue;
        }

        p = ngx_http_helix_provider_add(parts, NULL, json_object());
        d = p ? ngx_http_helix_provider_add(p, "inlineData", json_object())
              : NULL;

        if (d == NULL
            || json_object_set_new(d, "mimeType",
                                   json_stringn((char *) mime.data, mime.len))
               != 0
            || json_object_set_new(d, "data",
                                   json_stringn((char *) data.data, data.len))
               != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_gemini_config(json_t *req, json_t *b, ngx_str_t *err)
{
    json_t      *gc, *v, *stops;
    ngx_int_t    rc;
    json_int_t   n, max;
    const char  *type;

    rc = ngx_http_helix_provider_n(req, &n, err);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_helix_provider_max_tokens(req, &max, err);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_helix_provider_stops(req, &stops, err);
    if (rc != NGX_OK) {
        return rc;
    }

    gc = json_object();
    if (gc == NULL) {
        json_decref(stops);
        return NGX_ERROR;
    }

    if (stops) {
        rc = json_object_set_new(gc, "stopSequences", stops);
    }

    v = json_object_get(req, "temperature");

    if (json_is_number(v)) {
        rc |= json_object_set_new(gc, "temperature", json_deep_copy(v));
    }

    v = json_object_get(req, "top_p");

    if (json_is_number(v)) {
        rc |= json_object_set_new(gc, "topP", json_deep_copy(v));
    }

    if (max) {
        rc |= json_object_set_new(gc, "maxOutputTokens", json_integer(max));
    }

    if (n > 1) {
        rc |= json_object_set_new(gc, "candidateCount", json_integer(n));
    }

    /* some Gemini models refuse penalties: zero ones are not sent */

    v = json_object_get(req, "presence_penalty");

    if (json_is_number(v) && json_number_value(v) != 0) {
        rc |= json_object_set_new(gc, "presencePenalty", json_deep_copy(v));
    }

    v = json_object_get(req, "frequency_penalty");

    if (json_is_number(v) && json_number_value(v) != 0) {
        rc |= json_object_set_new(gc, "frequencyPenalty", json_deep_copy(v));
    }

    v = json_object_get(req, "seed");

    if (json_is_integer(v)) {
        rc |= json_object_set_new(gc, "seed", json_deep_copy(v));
    }

    type = json_string_value(json_object_get(
                                 json_object_get(req, "response_format"),
                                 "type"));

    if (type && (ngx_strcmp(type, "json_object") == 0
                 || ngx_strcmp(type, "json_schema") == 0))
    {
        rc |= json_object_set_new(gc, "responseMimeType",
                                  json_string("application/json"));
    }

    if (rc != 0) {
        json_decref(gc);
        return NGX_ERROR;
    }

    if (json_object_size(gc) == 0) {
        json_decref(gc);
        return NGX_OK;
    }

    return json_object_set_new(b, "generationConfig", gc) == 0
           ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_helix_gemini_tools(ngx_pool_t *pool, json_t *req, json_t *b,
    ngx_str_t *err)
{
    size_t       i;
    json_t      *tools, *choice, *decls, *t, *fn, *name, *v, *fcc, *names;
    const char  *mode;

    tools = json_object_get(req, "tools");
    choice = json_object_get(req, "tool_choice");

    if (json_array_size(tools) == 0) {
        return NGX_OK;
    }

    t = ngx_http_helix_provider_add(b, "tools", json_array());
    t = t ? ngx_http_helix_provider_add(t, NULL, json_object()) : NULL;
    decls = t ? ngx_http_helix_provider_add(t, "functionDeclarations",
                                            json_array())
              : NULL;

    if (decls == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(tools, i, t) {
        if (!ngx_http_helix_provider_streq(json_object_get(t, "type"),
                                           "function"))
        {
            continue;
        }

        fn = json_object_get(t, "function");
        name = json_object_get(fn, "name");

        if (!json_is_string(name)) {
            return ngx_http_helix_provider_fail(pool, err,
                                         "tools[%uz] has no function name", i);
        }

        t = ngx_http_helix_provider_add(decls, NULL, json_object());

        if (t == NULL
            || json_object_set_new(t, "name", json_deep_copy(name)) != 0)
        {
            return NGX_ERROR;
        }

        v = json_object_get(fn, "description");

        if (json_is_string(v)
            && json_object_set_new(t, "description", json_deep_copy(v)) != 0)
        {
            return NGX_ERROR;
        }

        /* Gemini refuses an OBJECT schema without properties */

        v = json_object_get(fn, "parameters");

        if (json_object_size(json_object_get(v, "properties")) == 0) {
            continue;
        }

        if (json_object_set_new(t, "parameters",
                                ngx_http_helix_gemini_schema(v))
            != 0)
        {
            return NGX_ERROR;
        }
    }

    if (json_array_size(decls) == 0) {
        json_object_del(b, "tools");
        return NGX_OK;
    }

    if (ngx_http_helix_provider_streq(choice, "none")) {
        mode = "NONE";

    } else if (ngx_http_helix_provider_streq(choice, "required")
               || json_is_object(choice))
    {
        mode = "ANY";

    } else if (ngx_http_helix_provider_streq(choice, "auto")) {
        mode = "AUTO";

    } else {
        return NGX_OK;
    }

    t = ngx_http_helix_provider_add(b, "toolConfig", json_object());
    fcc = t ? ngx_http_helix_provider_add(t, "functionCallingConfig",
                                          json_object())
            : NULL;

    if (fcc == NULL
        || json_object_set_new(fcc, "mode", json_string(mode)) != 0)
    {
        return NGX_ERROR;
    }

    name = json_object_get(json_object_get(choice, "function"), "name");

    if (json_is_string(name)) {
        names = ngx_http_helix_provider_add(fcc, "allowedFunctionNames",
                                            json_array());

        if (names == NULL
            || json_array_append_new(names, json_deep_copy(name)) != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A JSON Schema copy without the keywords Gemini's OpenAPI subset
 * rejects; names under "properties" are property names, kept as is.
 */

static json_t *
ngx_http_helix_gemini_schema(json_t *s)
{
    size_t       i;
    json_t      *out, *v, *p, *sub;
    const char  *key, *name;

    if (json_is_array(s)) {
        out = json_array();

        json_array_foreach(s, i, v) {
            if (json_array_append_new(out, ngx_http_helix_gemini_schema(v))
                != 0)
            {
                json_decref(out);
                return NULL;
            }
        }

        return out;
    }

    if (!json_is_object(s)) {
        return json_deep_copy(s);
    }

    out = json_object();

    json_object_foreach(s, key, v) {
        if (ngx_strcmp(key, "additionalProperties") == 0
            || ngx_strcmp(key, "$schema") == 0)
        {
            continue;
        }

        if (ngx_strcmp(key, "properties") == 0 && json_is_object(v)) {
            sub = ngx_http_helix_provider_add(out, key, json_object());
            if (sub == NULL) {
                goto failed;
            }

            json_object_foreach(v, name, p) {
                if (json_object_set_new(sub, name,
                                        ngx_http_helix_gemini_schema(p))
                    != 0)
                {
                    goto failed;
                }
            }

            continue;
        }

        if (json_object_set_new(out, key, ngx_http_helix_gemini_schema(v))
            != 0)
        {
            goto failed;
        }
    }

    return out;

failed:

    json_decref(out);
    return NULL;
}


/* "models/..." and "tunedModels/..." are already resource names */

static ngx_int_t
ngx_http_helix_gemini_path(ngx_pool_t *pool, ngx_str_t *model,
    const char *action, ngx_str_t *path)
{
    u_char      *p;
    size_t       len;
    uintptr_t    escape;
    const char  *prefix;

    if (ngx_http_helix_provider_has_prefix(model, "models/")
        || ngx_http_helix_provider_has_prefix(model, "tunedModels/"))
    {
        prefix = "/v1beta/";

    } else {
        prefix = "/v1beta/models/";
    }

    escape = ngx_escape_uri(NULL, model->data, model->len, NGX_ESCAPE_URI);
    len = ngx_strlen(prefix) + model->len + 2 * escape + ngx_strlen(action);

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    path->data = p;

    p = ngx_cpymem(p, prefix, ngx_strlen(prefix));
    p = (u_char *) ngx_escape_uri(p, model->data, model->len,
                                  NGX_ESCAPE_URI);
    p = ngx_cpymem(p, action, ngx_strlen(action));

    path->len = p - path->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_gemini_resource(ngx_pool_t *pool, ngx_str_t *model,
    ngx_str_t *name)
{
    if (ngx_http_helix_provider_has_prefix(model, "models/")
        || ngx_http_helix_provider_has_prefix(model, "tunedModels/"))
    {
        *name = *model;
        return NGX_OK;
    }

    name->len = sizeof("models/") - 1 + model->len;
    name->data = ngx_pnalloc(pool, name->len);
    if (name->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_cpymem(name->data, "models/", sizeof("models/") - 1),
               model->data, model->len);

    return NGX_OK;
}


/* chat answers */

ngx_int_t
ngx_http_helix_provider_chat_response(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, ngx_str_t *model, u_char *data,
    size_t len, json_t **out, ngx_str_t *err)
{
    json_t     *root;
    ngx_int_t   rc;

    *out = NULL;

    rc = ngx_http_helix_provider_parse(pool, data, len, &root, err);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_helix_provider_error_in(pool, root, err);

    if (rc == NGX_OK) {
        switch (p->type) {

        case NGX_HTTP_HELIX_OPENAI:
            rc = ngx_http_helix_openai_chat_response(pool, model, root, out,
                                                     err);
            break;

        case NGX_HTTP_HELIX_ANTHROPIC:
            rc = ngx_http_helix_anthropic_chat_response(pool, model, root,
                                                        out, err);
            break;

        case NGX_HTTP_HELIX_GEMINI:
            rc = ngx_http_helix_gemini_chat_response(pool, model, root, out,
                                                     err);
            break;

        default:
            ngx_str_set(err, "unknown provider type");
            rc = NGX_DECLINED;
        }
    }

    json_decref(root);

    return rc;
}


/*
 * An OpenAI answer is kept as is; only what the gateway relies on is
 * checked or filled in, usage with integer counts in particular.
 */

static ngx_int_t
ngx_http_helix_openai_chat_response(ngx_pool_t *pool, ngx_str_t *model,
    json_t *root, json_t **out, ngx_str_t *err)
{
    u_char      buf[NGX_HTTP_HELIX_ID_MAX];
    size_t      i;
    json_t     *choices, *c, *usage;
    json_int_t  pt, ct, tt;

    choices = json_object_get(root, "choices");

    if (!json_is_array(choices) || json_array_size(choices) == 0) {
        ngx_str_set(err, "no choices");
        return NGX_DECLINED;
    }

    json_array_foreach(choices, i, c) {
        if (!json_is_object(json_object_get(c, "message"))) {
            return ngx_http_helix_provider_fail(pool, err,
                                             "choices[%uz] has no message", i);
        }
    }

    if (!json_is_string(json_object_get(root, "model"))
        && json_object_set_new(root, "model",
                               json_stringn((char *) model->data, model->len))
           != 0)
    {
        return NGX_ERROR;
    }

    if (!json_is_string(json_object_get(root, "id"))
        && json_object_set_new(root, "id",
                    json_stringn((char *) buf,
                                 ngx_http_helix_provider_id(buf, "chatcmpl-")))
           != 0)
    {
        return NGX_ERROR;
    }

    if (!json_is_string(json_object_get(root, "object"))
        && json_object_set_new(root, "object", json_string("chat.completion"))
           != 0)
    {
        return NGX_ERROR;
    }

    if (!json_is_integer(json_object_get(root, "created"))
        && json_object_set_new(root, "created",
                               json_integer((json_int_t) ngx_time()))
           != 0)
    {
        return NGX_ERROR;
    }

    usage = json_object_get(root, "usage");

    pt = ngx_http_helix_provider_tokens(usage, "prompt_tokens");
    ct = ngx_http_helix_provider_tokens(usage, "completion_tokens");
    tt = ngx_http_helix_provider_tokens(usage, "total_tokens");

    if (!json_is_object(usage)) {
        usage = ngx_http_helix_provider_add(root, "usage", json_object());
    }

    if (usage == NULL
        || json_object_set_new(usage, "prompt_tokens", json_integer(pt)) != 0
        || json_object_set_new(usage, "completion_tokens", json_integer(ct))
           != 0
        || json_object_set_new(usage, "total_tokens",
                               json_integer(tt ? tt : pt + ct))
           != 0)
    {
        return NGX_ERROR;
    }

    *out = json_incref(root);

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_anthropic_chat_response(ngx_pool_t *pool, ngx_str_t *model,
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

    o = ngx_http_helix_provider_completion(pool, model,
                                           json_object_get(root, "id"),
                                           &choices);
    texts = json_array();
    calls = json_array();

    if (o == NULL || texts == NULL || calls == NULL) {
        goto failed;
    }

    json_array_foreach(content, i, block) {

        if (ngx_http_helix_provider_streq(json_object_get(block, "type"),
                                          "text"))
        {
            text = json_object_get(block, "text");

            if (!json_is_string(text)) {
                rc = ngx_http_helix_provider_fail(pool, err,
                                            "content[%uz] has no text", i);
                goto done;
            }

            if (json_array_append(texts, text) != 0) {
                goto failed;
            }

            continue;
        }

        if (ngx_http_helix_provider_streq(json_object_get(block, "type"),
                                          "tool_use"))
        {
            name = json_object_get(block, "name");

            if (!json_is_string(name)) {
                rc = ngx_http_helix_provider_fail(pool, err,
                                            "content[%uz] has no name", i);
                goto done;
            }

            if (ngx_http_helix_provider_tool_call(pool, calls,
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

    finish = ngx_http_helix_provider_finish_reason(NGX_HTTP_HELIX_ANTHROPIC,
                                         json_object_get(root, "stop_reason"));

    if (json_array_size(texts) == 0 && json_array_size(calls)) {
        c = json_null();

    } else {
        c = ngx_http_helix_provider_concat(pool, texts);
    }

    if (finish == NULL) {
        finish = json_array_size(calls) ? "tool_calls" : "stop";
    }

    rc = ngx_http_helix_provider_choice(choices, c,
                                        json_array_size(calls) ? calls : NULL,
                                        finish);
    json_decref(c);

    if (rc != NGX_OK) {
        goto failed;
    }

    /* cached input is billed apart but is prompt all the same */

    usage = json_object_get(root, "usage");

    if (ngx_http_helix_provider_usage(o,
            ngx_http_helix_provider_tokens(usage, "input_tokens")
            + ngx_http_helix_provider_tokens(usage,
                                             "cache_creation_input_tokens")
            + ngx_http_helix_provider_tokens(usage, "cache_read_input_tokens"),
            ngx_http_helix_provider_tokens(usage, "output_tokens"), 0)
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


static ngx_int_t
ngx_http_helix_gemini_chat_response(ngx_pool_t *pool, ngx_str_t *model,
    json_t *root, json_t **out, ngx_str_t *err)
{
    size_t      i;
    json_t     *o, *cands, *cand, *choices, *c, *usage;
    ngx_int_t   rc;

    cands = json_object_get(root, "candidates");

    if (cands != NULL && !json_is_array(cands)) {
        ngx_str_set(err, "\"candidates\" is not an array");
        return NGX_DECLINED;
    }

    /* a prompt blocked by the safety filters gets no candidates */

    if (json_array_size(cands) == 0
        && !json_is_string(json_object_get(
                               json_object_get(root, "promptFeedback"),
                               "blockReason")))
    {
        ngx_str_set(err, "no candidates");
        return NGX_DECLINED;
    }

    o = ngx_http_helix_provider_completion(pool, model,
                                           json_object_get(root, "responseId"),
                                           &choices);
    if (o == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_OK;

    if (json_array_size(cands) == 0) {
        c = json_string("");
        rc = ngx_http_helix_provider_choice(choices, c, NULL,
                                            "content_filter");
        json_decref(c);
    }

    json_array_foreach(cands, i, cand) {
        rc = ngx_http_helix_gemini_candidate(pool, choices, cand, i, err);
        if (rc != NGX_OK) {
            break;
        }
    }

    if (rc == NGX_OK) {
        usage = json_object_get(root, "usageMetadata");

        rc = ngx_http_helix_provider_usage(o,
                 ngx_http_helix_provider_tokens(usage, "promptTokenCount"),
                 ngx_http_helix_provider_tokens(usage, "candidatesTokenCount")
                 + ngx_http_helix_provider_tokens(usage, "thoughtsTokenCount"),
                 ngx_http_helix_provider_tokens(usage, "totalTokenCount"));
    }

    if (rc != NGX_OK) {
        json_decref(o);
        return rc;
    }

    *out = o;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_gemini_candidate(ngx_pool_t *pool, json_t *choices,
    json_t *cand, size_t n, ngx_str_t *err)
{
    size_t       i;
    json_t      *content, *parts, *part, *text, *fc, *texts, *calls, *c;
    ngx_int_t    rc;
    const char  *finish;

    if (!json_is_object(cand)) {
        return ngx_http_helix_provider_fail(pool, err,
                                        "candidates[%uz] is not an object", n);
    }

    content = json_object_get(cand, "content");
    parts = json_object_get(content, "parts");

    if ((content && !json_is_object(content))
        || (parts && !json_is_array(parts)))
    {
        return ngx_http_helix_provider_fail(pool, err,
                                         "candidates[%uz] has bad content", n);
    }

    texts = json_array();
    calls = json_array();

    if (texts == NULL || calls == NULL) {
        goto failed;
    }

    json_array_foreach(parts, i, part) {

        text = json_object_get(part, "text");
        fc = json_object_get(part, "functionCall");

        if (text) {
            if (!json_is_string(text)) {
                rc = ngx_http_helix_provider_fail(pool, err,
                         "candidates[%uz].content.parts[%uz] has bad text",
                         n, i);
                goto done;
            }

            /* thought summaries are not part of the answer */
            if (!json_is_true(json_object_get(part, "thought"))
                && json_array_append(texts, text) != 0)
            {
                goto failed;
            }

        } else if (fc) {
            if (!json_is_string(json_object_get(fc, "name"))) {
                rc = ngx_http_helix_provider_fail(pool, err,
                         "candidates[%uz].content.parts[%uz] has a "
                         "functionCall without name", n, i);
                goto done;
            }

            if (ngx_http_helix_provider_tool_call(pool, calls,
                                                  json_object_get(fc, "id"),
                                                  json_object_get(fc, "name"),
                                                  json_object_get(fc, "args"))
                != NGX_OK)
            {
                goto failed;
            }
        }
    }

    finish = ngx_http_helix_provider_finish_reason(NGX_HTTP_HELIX_GEMINI,
                                       json_object_get(cand, "finishReason"));

    if (finish == NULL || ngx_strcmp(finish, "stop") == 0) {
        finish = json_array_size(calls) ? "tool_calls" : "stop";
    }

    if (json_array_size(texts) == 0 && json_array_size(calls)) {
        c = json_null();

    } else {
        c = ngx_http_helix_provider_concat(pool, texts);
    }

    rc = ngx_http_helix_provider_choice(choices, c,
                                        json_array_size(calls) ? calls : NULL,
                                        finish);
    json_decref(c);

    goto done;

failed:

    rc = NGX_ERROR;

done:

    json_decref(texts);
    json_decref(calls);

    return rc;
}


/* embeddings */

ngx_int_t
ngx_http_helix_provider_embeddings_request(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, json_t *req, ngx_str_t *model,
    ngx_str_t *path, json_t **body, ngx_str_t *err)
{
    size_t      i;
    json_t     *input, *v, *b, *reqs, *r, *c, *parts, *dims;
    ngx_str_t   name;

    *body = NULL;

    if (model == NULL || model->len == 0) {
        ngx_str_set(err, "no model");
        return NGX_DECLINED;
    }

    input = json_object_get(req, "input");

    if (json_array_size(input) == 0) {
        ngx_str_set(err, "\"input\" must be a non-empty array of strings");
        return NGX_DECLINED;
    }

    json_array_foreach(input, i, v) {
        if (!json_is_string(v)) {
            ngx_str_set(err, "\"input\" must be a non-empty array of strings");
            return NGX_DECLINED;
        }
    }

    switch (p->type) {

    case NGX_HTTP_HELIX_OPENAI:
        b = ngx_http_helix_provider_copy(req, model);
        if (b == NULL) {
            return NGX_ERROR;
        }

        ngx_str_set(path, "/v1/embeddings");
        *body = b;
        return NGX_OK;

    case NGX_HTTP_HELIX_GEMINI:
        break;

    case NGX_HTTP_HELIX_ANTHROPIC:
        ngx_str_set(err, "anthropic providers have no embeddings");
        return NGX_DECLINED;

    default:
        ngx_str_set(err, "unknown provider type");
        return NGX_DECLINED;
    }

    /* Gemini answers floats only */
    if (ngx_http_helix_provider_streq(json_object_get(req, "encoding_format"),
                                      "base64"))
    {
        ngx_str_set(err, "gemini providers have no base64 encoding_format");
        return NGX_DECLINED;
    }

    dims = json_object_get(req, "dimensions");

    if (dims && !json_is_null(dims)
        && (!json_is_integer(dims) || json_integer_value(dims) < 1))
    {
        ngx_str_set(err, "\"dimensions\" must be a positive integer");
        return NGX_DECLINED;
    }

    if (ngx_http_helix_gemini_resource(pool, model, &name) != NGX_OK
        || ngx_http_helix_gemini_path(pool, model, ":batchEmbedContents",
                                      path)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    b = json_object();
    reqs = ngx_http_helix_provider_add(b, "requests", json_array());

    if (reqs == NULL) {
        goto failed;
    }

    json_array_foreach(input, i, v) {
        r = ngx_http_helix_provider_add(reqs, NULL, json_object());
        c = r ? ngx_http_helix_provider_add(r, "content", json_object())
              : NULL;
        parts = c ? ngx_http_helix_provider_add(c, "parts", json_array())
                  : NULL;

        if (parts == NULL
            || json_object_set_new(r, "model",
                                   json_stringn((char *) name.data, name.len))
               != 0
            || json_array_append_new(parts,
                                     json_pack("{s:s%}", "text",
                                               json_string_value(v),
                                               json_string_length(v)))
               != 0
            || (json_is_integer(dims)
                && json_object_set_new(r, "outputDimensionality",
                                       json_deep_copy(dims))
                   != 0))
        {
            goto failed;
        }
    }

    *body = b;

    return NGX_OK;

failed:

    json_decref(b);

    return NGX_ERROR;
}


ngx_int_t
ngx_http_helix_provider_embeddings_response(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, ngx_str_t *model, json_t *input,
    u_char *data, size_t len, json_t **out, ngx_str_t *err)
{
    u_char      *s, *last;
    size_t       i, n, chars;
    json_t      *root, *list, *item, *vec, *o, *d, *usage;
    ngx_int_t    rc;
    json_int_t   pt, tt;
    const char  *key;

    *out = NULL;

    if (p->type != NGX_HTTP_HELIX_OPENAI && p->type != NGX_HTTP_HELIX_GEMINI)
    {
        ngx_str_set(err, "this provider type has no embeddings");
        return NGX_DECLINED;
    }

    rc = ngx_http_helix_provider_parse(pool, data, len, &root, err);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_helix_provider_error_in(pool, root, err);
    if (rc != NGX_OK) {
        json_decref(root);
        return rc;
    }

    o = NULL;

    if (p->type == NGX_HTTP_HELIX_OPENAI) {
        list = json_object_get(root, "data");
        key = "embedding";

    } else {
        list = json_object_get(root, "embeddings");
        key = "values";
    }

    if (!json_is_array(list)) {
        rc = ngx_http_helix_provider_fail(pool, err, "no \"%s\" array",
                                          p->type == NGX_HTTP_HELIX_OPENAI
                                          ? "data" : "embeddings");
        goto done;
    }

    n = json_array_size(input);

    if (json_array_size(list) != n) {
        rc = ngx_http_helix_provider_fail(pool, err,
                                          "%uz embeddings for %uz inputs",
                                          json_array_size(list), n);
        goto done;
    }

    json_array_foreach(list, i, item) {
        vec = json_object_get(item, key);

        if (ngx_http_helix_provider_vectors(vec) != NGX_OK) {
            rc = ngx_http_helix_provider_fail(pool, err,
                                              "embedding %uz is not a vector",
                                              i);
            goto done;
        }
    }

    if (p->type == NGX_HTTP_HELIX_OPENAI) {
        usage = json_object_get(root, "usage");
        pt = ngx_http_helix_provider_tokens(usage, "prompt_tokens");
        tt = ngx_http_helix_provider_tokens(usage, "total_tokens");

        if (!json_is_object(usage)) {
            usage = ngx_http_helix_provider_add(root, "usage", json_object());
        }

        if (usage == NULL
            || json_object_set_new(usage, "prompt_tokens", json_integer(pt))
               != 0
            || json_object_set_new(usage, "total_tokens",
                                   json_integer(tt ? tt : pt))
               != 0
            || (!json_is_string(json_object_get(root, "object"))
                && json_object_set_new(root, "object", json_string("list"))
                   != 0)
            || (!json_is_string(json_object_get(root, "model"))
                && json_object_set_new(root, "model",
                                       json_stringn((char *) model->data,
                                                    model->len))
                   != 0))
        {
            goto failed;
        }

        *out = json_incref(root);
        rc = NGX_OK;
        goto done;
    }

    o = json_object();
    d = ngx_http_helix_provider_add(o, "data", json_array());

    if (d == NULL
        || json_object_set_new(o, "object", json_string("list")) != 0
        || json_object_set_new(o, "model",
                               json_stringn((char *) model->data, model->len))
           != 0)
    {
        goto failed;
    }

    json_array_foreach(list, i, item) {
        if (json_array_append_new(d,
                                  json_pack("{s:s,s:I,s:O}",
                                            "object", "embedding",
                                            "index", (json_int_t) i,
                                            "embedding",
                                            json_object_get(item, key)))
            != 0)
        {
            goto failed;
        }
    }

    /* Gemini reports no usage: about four characters a token */

    chars = 0;

    json_array_foreach(input, i, item) {
        s = (u_char *) json_string_value(item);
        last = s + json_string_length(item);

        while (s < last) {
            chars += ((*s++ & 0xc0) != 0x80);
        }
    }

    pt = (json_int_t) ((chars + 3) / 4);

    if (ngx_http_helix_provider_usage(o, pt, 0, pt) != NGX_OK) {
        goto failed;
    }

    json_object_del(json_object_get(o, "usage"), "completion_tokens");

    *out = o;
    o = NULL;
    rc = NGX_OK;
    goto done;

failed:

    rc = NGX_ERROR;

done:

    json_decref(o);
    json_decref(root);

    return rc;
}


ngx_int_t
ngx_http_helix_provider_openai_pass(ngx_pool_t *pool, ngx_uint_t embeddings,
    size_t inputs, u_char *data, size_t len, uint64_t *prompt,
    uint64_t *completion)
{
    ngx_uint_t              i, e, v, m, k, usage;
    ngx_int_t               rc;
    ngx_http_helix_jdoc_t   doc;
    ngx_http_helix_jtok_t  *t;

    *prompt = 0;
    *completion = 0;

    rc = ngx_http_helix_jscan(pool, data, len, NGX_HTTP_HELIX_JSCAN_ALLOW_NUL,
                              &doc);

    if (rc != NGX_OK) {
        return doc.nomem ? NGX_ERROR : NGX_DECLINED;
    }

    /* a number jansson cannot hold is refused by the tree path */
    if (doc.bigint || doc.tok[0].type != NGX_HTTP_HELIX_JOBJECT) {
        return NGX_DECLINED;
    }

    e = ngx_http_helix_jget(&doc, 0, "error");

    if (e && (doc.tok[e].type == NGX_HTTP_HELIX_JOBJECT
              || doc.tok[e].type == NGX_HTTP_HELIX_JSTRING))
    {
        return NGX_DECLINED;
    }

    e = ngx_http_helix_jget(&doc, 0, embeddings ? "data" : "choices");

    if (e == 0 || doc.tok[e].type != NGX_HTTP_HELIX_JARRAY
        || (embeddings ? doc.tok[e].size != inputs : doc.tok[e].size == 0))
    {
        return NGX_DECLINED;
    }

    for (i = e + 1, m = 0; m < doc.tok[e].size; m++, i = doc.tok[i].next) {

        if (!embeddings) {
            v = ngx_http_helix_jget(&doc, i, "message");

            if (v == 0 || doc.tok[v].type != NGX_HTTP_HELIX_JOBJECT) {
                return NGX_DECLINED;
            }

            continue;
        }

        v = ngx_http_helix_jget(&doc, i, "embedding");

        if (v == 0) {
            return NGX_DECLINED;
        }

        t = &doc.tok[v];

        if (t->type == NGX_HTTP_HELIX_JSTRING) {
            continue;
        }

        if (t->type != NGX_HTTP_HELIX_JARRAY || t->size == 0) {
            return NGX_DECLINED;
        }

        /* the elements of a flat array are the tokens up to its end */
        for (k = v + 1; k < t->next; k++) {
            if (doc.tok[k].type != NGX_HTTP_HELIX_JINTEGER
                && doc.tok[k].type != NGX_HTTP_HELIX_JREAL)
            {
                return NGX_DECLINED;
            }
        }
    }

    usage = ngx_http_helix_jget(&doc, 0, "usage");

    if (ngx_http_helix_provider_jtokens(&doc, usage, "prompt_tokens", prompt)
        != NGX_OK
        || (!embeddings
            && ngx_http_helix_provider_jtokens(&doc, usage,
                                               "completion_tokens",
                                               completion)
               != NGX_OK))
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* ngx_http_helix_provider_tokens() on a scanned document */

static ngx_int_t
ngx_http_helix_provider_jtokens(ngx_http_helix_jdoc_t *doc, ngx_uint_t obj,
    const char *key, uint64_t *n)
{
    int64_t     k;
    ngx_uint_t  v;

    *n = 0;

    if (obj == 0) {
        return NGX_OK;
    }

    v = ngx_http_helix_jget(doc, obj, key);

    if (v == 0 || doc->tok[v].type != NGX_HTTP_HELIX_JINTEGER) {
        /* absent or not a count: 0, as the tree path has it; reals there */
        return (v && doc->tok[v].type == NGX_HTTP_HELIX_JREAL)
               ? NGX_DECLINED : NGX_OK;
    }

    if (ngx_http_helix_jint(doc, v, &k) != NGX_OK) {
        return NGX_DECLINED;
    }

    *n = (k < 0) ? 0 : (uint64_t) ngx_min(k, NGX_HTTP_HELIX_TOKENS_MAX);

    return NGX_OK;
}


/* an embedding: an array of numbers, or OpenAI's base64 string */

static ngx_int_t
ngx_http_helix_provider_vectors(json_t *v)
{
    size_t   i;
    json_t  *x;

    if (json_is_string(v)) {
        return NGX_OK;
    }

    if (!json_is_array(v) || json_array_size(v) == 0) {
        return NGX_DECLINED;
    }

    json_array_foreach(v, i, x) {
        if (!json_is_number(x)) {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/* errors */

ngx_int_t
ngx_http_helix_provider_error_message(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, ngx_uint_t status, u_char *data,
    size_t len, ngx_str_t *msg)
{
    u_char      *last, buf[NGX_INT_T_LEN + sizeof("HTTP : ")];
    size_t       n;
    json_t      *root, *m;
    ngx_int_t    rc;
    ngx_str_t    body;

    root = (len && data) ? json_loadb((char *) data, len, JSON_ALLOW_NUL,
                                      NULL)
                         : NULL;

    m = ngx_http_helix_provider_error_text(json_is_array(root)
                                           ? json_array_get(root, 0) : root);

    if (json_string_length(m)) {
        rc = ngx_http_helix_provider_clean(pool,
                                         (u_char *) json_string_value(m),
                                         json_string_length(m),
                                         NGX_HTTP_HELIX_ERROR_MSG_MAX, 0, msg);
        json_decref(root);

        if (rc != NGX_OK) {
            return rc;
        }

        if (msg->len) {
            return NGX_OK;
        }

    } else {
        json_decref(root);
    }

    ngx_str_null(&body);

    if (len && data) {
        n = 0;

        while (n < len && (data[n] == ' ' || data[n] == '\t'
                           || data[n] == '\r' || data[n] == '\n'))
        {
            n++;
        }

        if (ngx_http_helix_provider_clean(pool, data, len,
                                          NGX_HTTP_HELIX_ERROR_BODY_MAX,
                                          n < len && data[n] == '<', &body)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    last = ngx_sprintf(buf, "HTTP %ui", status);

    if (body.len) {
        last = ngx_cpymem(last, ": ", 2);
    }

    msg->len = (last - buf) + body.len;
    msg->data = ngx_pnalloc(pool, msg->len);
    if (msg->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_cpymem(msg->data, buf, last - buf), body.data, body.len);

    return NGX_OK;
}


/*
 * The message in any of the error shapes providers use: OpenAI and
 * Gemini {"error":{"message"}}, Anthropic {"type":"error","error":
 * {"message"}}, {"error":"text"} and FastAPI's {"detail":"text"}.
 */

static json_t *
ngx_http_helix_provider_error_text(json_t *root)
{
    json_t  *e, *m;

    e = json_object_get(root, "error");

    if (json_is_string(e)) {
        return e;
    }

    m = json_object_get(e, "message");
    if (json_is_string(m)) {
        return m;
    }

    if (e == NULL) {
        m = json_object_get(root, "detail");
        if (json_is_string(m)) {
            return m;
        }
    }

    return NULL;
}


/* some providers answer 200 with an error body */

static ngx_int_t
ngx_http_helix_provider_error_in(ngx_pool_t *pool, json_t *root,
    ngx_str_t *err)
{
    json_t     *m;
    ngx_str_t   s;

    m = json_object_get(root, "error");

    /* some OpenAI-compatible servers send "error": null on success */
    if (!json_is_object(m) && !json_is_string(m)) {
        return NGX_OK;
    }

    m = ngx_http_helix_provider_error_text(root);

    if (m == NULL) {
        ngx_str_set(err, "an error answer");
        return NGX_DECLINED;
    }

    s.data = (u_char *) json_string_value(m);
    s.len = ngx_min(json_string_length(m), NGX_HTTP_HELIX_ERROR_BODY_MAX);

    return ngx_http_helix_provider_fail(pool, err, "an error answer: %V", &s);
}


/* request headers */

ngx_int_t
ngx_http_helix_provider_headers(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, ngx_uint_t stream, ngx_list_t *headers)
{
    u_char     *v;
    ngx_str_t  *key;

    key = &p->api_key;

    switch (p->type) {

    case NGX_HTTP_HELIX_OPENAI:
        if (key->len == 0) {
            break;
        }

        v = ngx_pnalloc(pool, sizeof("Bearer ") - 1 + key->len);
        if (v == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(ngx_cpymem(v, "Bearer ", sizeof("Bearer ") - 1),
                   key->data, key->len);

        if (ngx_http_helix_provider_header(pool, headers, "Authorization", v,
                                           sizeof("Bearer ") - 1 + key->len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        break;

    case NGX_HTTP_HELIX_ANTHROPIC:
        if (key->len
            && ngx_http_helix_provider_header(pool, headers, "x-api-key",
                                              key->data, key->len)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (p->api_version.len) {
            v = p->api_version.data;

        } else {
            v = (u_char *) NGX_HTTP_HELIX_ANTHROPIC_VERSION;
        }

        if (ngx_http_helix_provider_header(pool, headers, "anthropic-version",
                                           v,
                                           p->api_version.len
                                           ? p->api_version.len
                                           : ngx_strlen(v))
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        break;

    case NGX_HTTP_HELIX_GEMINI:
        if (key->len
            && ngx_http_helix_provider_header(pool, headers, "x-goog-api-key",
                                              key->data, key->len)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        break;
    }

    if (ngx_http_helix_provider_header(pool, headers, "Content-Type",
                                       (u_char *) "application/json",
                                       sizeof("application/json") - 1)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (stream) {
        return ngx_http_helix_provider_header(pool, headers, "Accept",
                                              (u_char *) "text/event-stream",
                                              sizeof("text/event-stream") - 1);
    }

    return ngx_http_helix_provider_header(pool, headers, "Accept",
                                          (u_char *) "application/json",
                                          sizeof("application/json") - 1);
}


static ngx_int_t
ngx_http_helix_provider_header(ngx_pool_t *pool, ngx_list_t *headers,
    const char *key, u_char *value, size_t len)
{
    size_t            n;
    u_char           *low;
    ngx_table_elt_t  *h;

    n = ngx_strlen(key);

    low = ngx_pnalloc(pool, n);
    if (low == NULL) {
        return NGX_ERROR;
    }

    h = ngx_list_push(headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.len = n;
    h->key.data = (u_char *) key;
    h->value.len = len;
    h->value.data = value;
    h->lowcase_key = low;

    ngx_strlow(low, h->key.data, n);

    return NGX_OK;
}


/* shared helpers */

const char *
ngx_http_helix_provider_finish_reason(ngx_uint_t type, json_t *reason)
{
    const char               *s;
    ngx_http_helix_reason_t  *r;

    s = json_string_value(reason);

    if (s == NULL || type == NGX_HTTP_HELIX_OPENAI) {
        return s;
    }

    r = (type == NGX_HTTP_HELIX_ANTHROPIC) ? ngx_http_helix_anthropic_reasons
                                           : ngx_http_helix_gemini_reasons;

    for ( /* void */ ; r->name; r++) {
        if (ngx_strcmp(s, r->name) == 0) {
            return r->reason;
        }
    }

    /* OTHER, MALFORMED_FUNCTION_CALL, reasons yet to come */
    return "stop";
}


ngx_int_t
ngx_http_helix_provider_chat_id(ngx_pool_t *pool, ngx_str_t *id)
{
    u_char  buf[NGX_HTTP_HELIX_ID_MAX];

    id->len = ngx_http_helix_provider_id(buf, "chatcmpl-");

    id->data = ngx_pnalloc(pool, id->len);
    if (id->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(id->data, buf, id->len);

    return NGX_OK;
}


/* time, a counter and a random word: unique enough, never repeating */

static size_t
ngx_http_helix_provider_id(u_char *buf, const char *prefix)
{
    static uint32_t  counter;

    return ngx_sprintf(buf, "%s%08xD%08xD%08xD", prefix,
                       (uint32_t) ngx_time(), ++counter,
                       (uint32_t) ngx_random())
           - buf;
}


/*
 * Attach v to parent (appended when key is NULL) and return it borrowed,
 * or NULL on failure, v dropped: whatever is built below it is then freed
 * with the parent.
 */

static json_t *
ngx_http_helix_provider_add(json_t *parent, const char *key, json_t *v)
{
    if (key == NULL) {
        return (json_array_append_new(parent, v) == 0) ? v : NULL;
    }

    return (json_object_set_new(parent, key, v) == 0) ? v : NULL;
}


/* the client's request for an OpenAI-format provider: own fields out */

static json_t *
ngx_http_helix_provider_copy(json_t *req, ngx_str_t *model)
{
    void        *tmp;
    json_t      *b, *v;
    const char  *key;

    b = json_deep_copy(req);
    if (b == NULL) {
        return NULL;
    }

    json_object_foreach_safe(b, tmp, key, v) {
        if (ngx_strcmp(key, "provider") == 0
            || ngx_strncmp(key, "x_helix", sizeof("x_helix") - 1) == 0)
        {
            json_object_del(b, key);
        }
    }

    if (json_object_set_new(b, "model",
                            json_stringn((char *) model->data, model->len))
        != 0)
    {
        json_decref(b);
        return NULL;
    }

    return b;
}


/*
 * Append items (stolen) as a message of "role" to list, or to the last
 * message when it has the same role.
 */

static ngx_int_t
ngx_http_helix_provider_push(json_t *list, const char *role, const char *key,
    json_t *items)
{
    int      rc;
    json_t  *last, *m;

    last = json_array_get(list, json_array_size(list) - 1);

    if (ngx_http_helix_provider_streq(json_object_get(last, "role"), role)) {
        rc = json_array_extend(json_object_get(last, key), items);
        json_decref(items);

        return (rc == 0) ? NGX_OK : NGX_ERROR;
    }

    m = ngx_http_helix_provider_add(list, NULL, json_object());

    if (m == NULL) {
        json_decref(items);
        return NGX_ERROR;
    }

    if (json_object_set_new(m, "role", json_string(role)) != 0
        || json_object_set_new(m, key, items) != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the non-empty texts of an OpenAI content value, appended to "texts" */

static ngx_int_t
ngx_http_helix_provider_texts(json_t *content, json_t *texts, ngx_str_t *err)
{
    size_t   i;
    json_t  *part, *text;

    if (content == NULL || json_is_null(content)) {
        return NGX_OK;
    }

    if (json_is_string(content)) {
        content = json_pack("[O]", content);
        if (content == NULL) {
            return NGX_ERROR;
        }

    } else if (json_is_array(content)) {
        json_incref(content);

    } else {
        ngx_str_set(err, "content must be a string, null or an array");
        return NGX_DECLINED;
    }

    json_array_foreach(content, i, part) {
        text = ngx_http_helix_provider_part_text(part);

        if (json_string_length(text)
            && json_array_append_new(texts, json_deep_copy(text)) != 0)
        {
            json_decref(content);
            return NGX_ERROR;
        }
    }

    json_decref(content);

    return NGX_OK;
}


/* the text of a content part, NULL for other parts */

static json_t *
ngx_http_helix_provider_part_text(json_t *part)
{
    json_t  *text;

    if (json_is_string(part)) {
        return part;
    }

    if (!ngx_http_helix_provider_streq(json_object_get(part, "type"), "text"))
    {
        return NULL;
    }

    text = json_object_get(part, "text");

    return json_is_string(text) ? text : NULL;
}


static ngx_int_t
ngx_http_helix_provider_image_url(json_t *part, ngx_str_t *url)
{
    json_t  *v;

    if (!ngx_http_helix_provider_streq(json_object_get(part, "type"),
                                       "image_url"))
    {
        return NGX_DECLINED;
    }

    v = json_object_get(part, "image_url");

    if (!json_is_string(v)) {
        v = json_object_get(v, "url");
    }

    if (!json_is_string(v)) {
        return NGX_DECLINED;
    }

    url->data = (u_char *) json_string_value(v);
    url->len = json_string_length(v);

    return NGX_OK;
}


/* "data:<mime>[;param...];base64,<data>" */

static ngx_int_t
ngx_http_helix_provider_data_url(ngx_str_t *url, ngx_str_t *mime,
    ngx_str_t *data)
{
    u_char  *p, *last, *b;

    if (!ngx_http_helix_provider_has_prefix(url, "data:")) {
        return NGX_DECLINED;
    }

    p = url->data + sizeof("data:") - 1;
    last = url->data + url->len;

    b = ngx_strlcasestrn(p, last, (u_char *) ";base64,",
                         sizeof(";base64,") - 1 - 1);
    if (b == NULL) {
        return NGX_DECLINED;
    }

    mime->data = p;

    for (mime->len = 0; p + mime->len < b; mime->len++) {
        if (p[mime->len] == ';') {
            break;
        }
    }

    data->data = b + sizeof(";base64,") - 1;
    data->len = last - data->data;

    return (mime->len && data->len) ? NGX_OK : NGX_DECLINED;
}


/* a tool call's "arguments" JSON text as an object, {} if it is not one */

static json_t *
ngx_http_helix_provider_arguments(json_t *fn)
{
    json_t  *args, *v;

    args = json_object_get(fn, "arguments");

    if (json_is_object(args)) {
        return json_deep_copy(args);
    }

    if (json_is_string(args)) {
        v = json_loadb(json_string_value(args), json_string_length(args), 0,
                       NULL);

        if (json_is_object(v)) {
            return v;
        }

        json_decref(v);
    }

    return json_object();
}


/* the texts of a content value joined by sep, a new string */

static json_t *
ngx_http_helix_provider_join(ngx_pool_t *pool, json_t *content,
    const char *sep)
{
    u_char  *p, *buf;
    size_t   i, n;
    json_t  *text, *part;

    if (json_is_string(content)) {
        return json_deep_copy(content);
    }

    n = 0;

    json_array_foreach(content, i, part) {
        text = ngx_http_helix_provider_part_text(part);
        if (text) {
            n += json_string_length(text) + ngx_strlen(sep);
        }
    }

    if (n == 0) {
        return json_string("");
    }

    buf = ngx_pnalloc(pool, n);
    if (buf == NULL) {
        return NULL;
    }

    p = buf;

    json_array_foreach(content, i, part) {
        text = ngx_http_helix_provider_part_text(part);
        if (text == NULL) {
            continue;
        }

        if (p != buf) {
            p = ngx_cpymem(p, sep, ngx_strlen(sep));
        }

        p = ngx_cpymem(p, json_string_value(text), json_string_length(text));
    }

    return json_stringn((char *) buf, p - buf);
}


static ngx_int_t
ngx_http_helix_provider_max_tokens(json_t *req, json_int_t *max,
    ngx_str_t *err)
{
    json_t  *v;

    /* the newer name wins, as with OpenAI */

    v = json_object_get(req, "max_completion_tokens");

    if (v == NULL || json_is_null(v)) {
        v = json_object_get(req, "max_tokens");
    }

    *max = 0;

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        ngx_str_set(err, "\"max_tokens\" must be a positive integer");
        return NGX_DECLINED;
    }

    *max = json_integer_value(v);

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_provider_n(json_t *req, json_int_t *n, ngx_str_t *err)
{
    json_t  *v;

    v = json_object_get(req, "n");

    *n = 1;

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        ngx_str_set(err, "\"n\" must be a positive integer");
        return NGX_DECLINED;
    }

    *n = json_integer_value(v);

    return NGX_OK;
}


/* "stop" as an array of non-empty strings, *out NULL when there are none */

static ngx_int_t
ngx_http_helix_provider_stops(json_t *req, json_t **out, ngx_str_t *err)
{
    size_t   i;
    json_t  *stop, *a, *v;

    *out = NULL;

    stop = json_object_get(req, "stop");

    if (stop == NULL || json_is_null(stop)) {
        return NGX_OK;
    }

    if (json_is_string(stop)) {
        stop = json_pack("[O]", stop);
        if (stop == NULL) {
            return NGX_ERROR;
        }

    } else if (json_is_array(stop)) {
        json_incref(stop);

    } else {
        ngx_str_set(err, "\"stop\" must be a string or an array of strings");
        return NGX_DECLINED;
    }

    a = json_array();
    if (a == NULL) {
        json_decref(stop);
        return NGX_ERROR;
    }

    json_array_foreach(stop, i, v) {
        if (!json_is_string(v)) {
            json_decref(stop);
            json_decref(a);
            ngx_str_set(err,
                        "\"stop\" must be a string or an array of strings");
            return NGX_DECLINED;
        }

        /* providers refuse empty stop sequences */

        if (json_string_length(v)
            && json_array_append_new(a, json_deep_copy(v)) != 0)
        {
            json_decref(stop);
            json_decref(a);
            return NGX_ERROR;
        }
    }

    json_decref(stop);

    if (json_array_size(a) == 0) {
        json_decref(a);
        return NGX_OK;
    }

    *out = a;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_provider_streq(json_t *v, const char *s)
{
    return json_is_string(v) && ngx_strcmp(json_string_value(v), s) == 0;
}


static ngx_int_t
ngx_http_helix_provider_has_prefix(ngx_str_t *s, const char *prefix)
{
    size_t  n;

    n = ngx_strlen(prefix);

    return s->len >= n && ngx_strncmp(s->data, prefix, n) == 0;
}


/* a provider answer as a JSON object, or why it is not one */

static ngx_int_t
ngx_http_helix_provider_parse(ngx_pool_t *pool, u_char *data, size_t len,
    json_t **root, ngx_str_t *err)
{
    size_t                  i;
    json_t                 *j;
    ngx_http_helix_jdoc_t   doc;

    *root = NULL;

    for (i = 0; i < len; i++) {
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\r'
            && data[i] != '\n')
        {
            break;
        }
    }

    if (i == len) {
        ngx_str_set(err, "empty body");
        return NGX_DECLINED;
    }

    if (data[i] == '<') {
        ngx_str_set(err, "not JSON but markup (an HTML page?)");
        return NGX_DECLINED;
    }

    /* "\u0000" is valid JSON; lengths are used, never C strings */
    j = ngx_http_helix_jload(pool, data, len, NGX_HTTP_HELIX_JSCAN_ALLOW_NUL,
                             &doc);

    if (j == NULL) {
        if (doc.nomem) {
            return NGX_ERROR;
        }

        if (doc.truncated) {
            return ngx_http_helix_provider_fail(pool, err,
                                                "truncated JSON at byte %uz",
                                                doc.pos);
        }

        return ngx_http_helix_provider_fail(pool, err,
                                            "not JSON: %s at byte %uz",
                                            doc.err, doc.pos);
    }

    if (!json_is_object(j)) {
        json_decref(j);
        ngx_str_set(err, "not a JSON object");
        return NGX_DECLINED;
    }

    *root = j;

    return NGX_OK;
}


/* a chat.completion without choices and usage yet; pid: provider's id */

static json_t *
ngx_http_helix_provider_completion(ngx_pool_t *pool, ngx_str_t *model,
    json_t *pid, json_t **choices)
{
    u_char  *p, buf[NGX_HTTP_HELIX_ID_MAX];
    size_t   n;
    json_t  *o, *id;

    if (json_string_length(pid)) {
        n = sizeof("chatcmpl-") - 1 + json_string_length(pid);

        p = ngx_pnalloc(pool, n);
        if (p == NULL) {
            return NULL;
        }

        ngx_memcpy(ngx_cpymem(p, "chatcmpl-", sizeof("chatcmpl-") - 1),
                   json_string_value(pid), json_string_length(pid));

        id = json_stringn((char *) p, n);

    } else {
        id = json_stringn((char *) buf,
                          ngx_http_helix_provider_id(buf, "chatcmpl-"));
    }

    o = json_object();

    if (json_object_set_new(o, "id", id) != 0) {
        json_decref(o);
        return NULL;
    }

    *choices = ngx_http_helix_provider_add(o, "choices", json_array());

    if (*choices == NULL
        || json_object_set_new(o, "object", json_string("chat.completion"))
           != 0
        || json_object_set_new(o, "created",
                               json_integer((json_int_t) ngx_time()))
           != 0
        || json_object_set_new(o, "model",
                               json_stringn((char *) model->data, model->len))
           != 0)
    {
        json_decref(o);
        return NULL;
    }

    return o;
}


/* content and calls are borrowed; calls may be NULL */

static ngx_int_t
ngx_http_helix_provider_choice(json_t *choices, json_t *content,
    json_t *calls, const char *finish)
{
    json_t  *choice, *msg;

    choice = ngx_http_helix_provider_add(choices, NULL, json_object());
    msg = choice ? ngx_http_helix_provider_add(choice, "message",
                                               json_object())
                 : NULL;

    if (msg == NULL
        || json_object_set_new(choice, "index",
                               json_integer(json_array_size(choices) - 1))
           != 0
        || json_object_set_new(msg, "role", json_string("assistant")) != 0
        || json_object_set(msg, "content", content) != 0
        || (calls && json_object_set(msg, "tool_calls", calls) != 0)
        || json_object_set_new(choice, "logprobs", json_null()) != 0
        || json_object_set_new(choice, "finish_reason", json_string(finish))
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_provider_tool_call(ngx_pool_t *pool, json_t *calls,
    json_t *id, json_t *name, json_t *input)
{
    u_char   buf[NGX_HTTP_HELIX_ID_MAX];
    json_t  *call, *fn;

    if (json_string_length(id)) {
        id = json_deep_copy(id);

    } else {
        id = json_stringn((char *) buf,
                          ngx_http_helix_provider_id(buf, "call_"));
    }

    call = ngx_http_helix_provider_add(calls, NULL, json_object());

    if (call == NULL) {
        json_decref(id);
        return NGX_ERROR;
    }

    fn = ngx_http_helix_provider_add(call, "function", json_object());

    if (json_object_set_new(call, "id", id) != 0
        || fn == NULL
        || json_object_set_new(call, "type", json_string("function")) != 0
        || json_object_set_new(fn, "name", json_deep_copy(name)) != 0
        || json_object_set_new(fn, "arguments",
                               ngx_http_helix_provider_json_text(pool, input))
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a value as compact JSON text, the form of OpenAI's "arguments" */

static json_t *
ngx_http_helix_provider_json_text(ngx_pool_t *pool, json_t *v)
{
    u_char  *buf;
    size_t   n;

    if (v == NULL || json_is_null(v)) {
        return json_string("{}");
    }

    n = json_dumpb(v, NULL, 0, NGX_HTTP_HELIX_DUMP_FLAGS);
    if (n == 0) {
        return NULL;
    }

    buf = ngx_pnalloc(pool, n);
    if (buf == NULL) {
        return NULL;
    }

    if (json_dumpb(v, (char *) buf, n, NGX_HTTP_HELIX_DUMP_FLAGS) != n) {
        return NULL;
    }

    return json_stringn((char *) buf, n);
}


/* the strings of "texts" concatenated, a new string */

static json_t *
ngx_http_helix_provider_concat(ngx_pool_t *pool, json_t *texts)
{
    u_char  *buf, *p;
    size_t   i, n;
    json_t  *t;

    if (json_array_size(texts) == 1) {
        return json_incref(json_array_get(texts, 0));
    }

    n = 0;

    json_array_foreach(texts, i, t) {
        n += json_string_length(t);
    }

    if (n == 0) {
        return json_string("");
    }

    buf = ngx_pnalloc(pool, n);
    if (buf == NULL) {
        return NULL;
    }

    p = buf;

    json_array_foreach(texts, i, t) {
        p = ngx_cpymem(p, json_string_value(t), json_string_length(t));
    }

    return json_stringn((char *) buf, n);
}


/* total 0: the provider gave none */

static ngx_int_t
ngx_http_helix_provider_usage(json_t *out, json_int_t prompt,
    json_int_t completion, json_int_t total)
{
    json_t  *u;

    u = ngx_http_helix_provider_add(out, "usage", json_object());

    if (u == NULL
        || json_object_set_new(u, "prompt_tokens", json_integer(prompt)) != 0
        || json_object_set_new(u, "completion_tokens",
                               json_integer(completion))
           != 0
        || json_object_set_new(u, "total_tokens",
                               json_integer(total ? total
                                                  : prompt + completion))
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a token count from an answer: 0 unless a sane non-negative number */

static json_int_t
ngx_http_helix_provider_tokens(json_t *o, const char *key)
{
    double       d;
    json_t      *v;
    json_int_t   n;

    v = json_object_get(o, key);

    if (json_is_integer(v)) {
        n = json_integer_value(v);

    } else if (json_is_real(v)) {
        d = json_real_value(v);

        if (!(d > 0)) {
            return 0;
        }

        n = (d >= (double) NGX_HTTP_HELIX_TOKENS_MAX)
            ? NGX_HTTP_HELIX_TOKENS_MAX : (json_int_t) d;

    } else {
        return 0;
    }

    if (n < 0) {
        return 0;
    }

    return ngx_min(n, NGX_HTTP_HELIX_TOKENS_MAX);
}


/* a DECLINED with a formatted message, made printable */

static ngx_int_t
ngx_http_helix_provider_fail(ngx_pool_t *pool, ngx_str_t *err,
    const char *fmt, ...)
{
    u_char   *p, buf[NGX_HTTP_HELIX_ERROR_MSG_MAX];
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    if (ngx_http_helix_provider_clean(pool, buf, p - buf, sizeof(buf), 0, err)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_DECLINED;
}


/*
 * Provider bytes may be anything; what reaches a log line or a JSON error
 * must be short printable UTF-8: control characters turn into spaces,
 * runs of spaces into one, invalid UTF-8 into '?', markup is dropped.
 */

static ngx_int_t
ngx_http_helix_provider_clean(ngx_pool_t *pool, u_char *data, size_t len,
    size_t max, ngx_uint_t markup, ngx_str_t *out)
{
    u_char      c, *p, *last, *d, *end;
    size_t      n;
    ngx_uint_t  space, tag;

    out->data = ngx_pnalloc(pool, max + sizeof("...") - 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    d = out->data;
    end = d + max;
    p = data;
    last = data + len;
    space = 1;
    tag = 0;

    while (p < last) {
        c = *p;
        n = ngx_http_helix_provider_utf8(p, last);

        if (markup && (tag || c == '<')) {
            tag = (c != '>');

            if (tag) {
                p += n ? n : 1;
                continue;
            }

            c = ' ';
        }

        if (n == 0) {
            c = '?';
            n = 1;

        } else if (c < 0x20 || c == 0x7f) {
            c = ' ';
        }

        if (c == ' ') {
            if (space) {
                p++;
                continue;
            }

            space = 1;

        } else {
            space = 0;
        }

        if (d + n > end) {
            break;
        }

        if (n == 1) {
            *d++ = c;

        } else {
            d = ngx_cpymem(d, p, n);
        }

        p += n;
    }

    while (d > out->data && d[-1] == ' ') {
        d--;
    }

    if (p < last) {
        d = ngx_cpymem(d, "...", sizeof("...") - 1);
    }

    out->len = d - out->data;

    return NGX_OK;
}


/* the length of the valid UTF-8 sequence at p, 0 if there is none */

static size_t
ngx_http_helix_provider_utf8(u_char *p, u_char *last)
{
    size_t    i, n;
    uint32_t  c, min;

    c = *p;

    if (c < 0x80) {
        return 1;
    }

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        c &= 0x1f;
        min = 0x80;

    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        c &= 0x0f;
        min = 0x800;

    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        c &= 0x07;
        min = 0x10000;

    } else {
        return 0;
    }

    if ((size_t) (last - p) < n) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }

        c = (c << 6) | (p[i] & 0x3f);
    }

    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return 0;
    }

    return n;
}
