/*
 * Copyright (C) helix authors
 *
 * Anthropic's Messages API as a client format: a /v1/messages request as
 * the gateway's OpenAI chat request (system, turns, images, tool_use and
 * tool_result blocks, tools, stop sequences), the chat answer as a
 * Messages answer, the stream deltas as Messages events, errors in
 * Anthropic's shape.  The client direction of ngx_http_helix_anthropic.c.
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_codec.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_anthropic_in.h"


typedef struct {
    ngx_http_helix_stream_out_t  s;
    json_t                      *id;
    json_t                      *model;
    const char                  *stop;
    ngx_int_t                    block;         /* open, -1: none */
    ngx_int_t                    tool;          /* its tool, -1: text */
    ngx_int_t                    blocks;        /* opened so far */
    unsigned                     started:1;
    unsigned                     ended:1;
} ngx_http_helix_anthropic_out_t;


static ngx_int_t ngx_http_helix_anthropic_in_message(ngx_pool_t *pool,
    json_t *m, size_t i, json_t *msgs, ngx_str_t *err);
static ngx_int_t ngx_http_helix_anthropic_in_block(ngx_pool_t *pool,
    json_t *b, const char *role, json_t *parts, json_t *calls,
    json_t *msgs, ngx_str_t *err);
static json_t *ngx_http_helix_anthropic_in_image(json_t *b);
static json_t *ngx_http_helix_anthropic_in_result(json_t *b);
static ngx_int_t ngx_http_helix_anthropic_in_system(ngx_pool_t *pool,
    json_t *system, json_t *msgs, ngx_str_t *err);
static ngx_int_t ngx_http_helix_anthropic_in_params(ngx_pool_t *pool,
    json_t *body, json_t *req, ngx_str_t *err);
static ngx_int_t ngx_http_helix_anthropic_in_tools(ngx_pool_t *pool,
    json_t *body, json_t *req, ngx_str_t *err);
static json_t *ngx_http_helix_anthropic_msg_id(json_t *id);
static const char *ngx_http_helix_anthropic_stop(json_t *finish);
static ngx_int_t ngx_http_helix_anthropic_out_start(
    ngx_http_helix_anthropic_out_t *o, ngx_http_helix_delta_t *d);
static ngx_int_t ngx_http_helix_anthropic_out_open(
    ngx_http_helix_anthropic_out_t *o, ngx_int_t tool,
    ngx_http_helix_delta_t *d);
static ngx_int_t ngx_http_helix_anthropic_out_close(
    ngx_http_helix_anthropic_out_t *o);
static ngx_int_t ngx_http_helix_anthropic_out_end(
    ngx_http_helix_anthropic_out_t *o, ngx_http_helix_delta_t *d);


static ngx_http_helix_reason_t  ngx_http_helix_anthropic_stops[] = {
    { "stop", "end_turn" },
    { "length", "max_tokens" },
    { "tool_calls", "tool_use" },
    { "function_call", "tool_use" },
    { "content_filter", "refusal" },
    { NULL, NULL }
};


ngx_int_t
ngx_http_helix_anthropic_request_in(ngx_pool_t *pool, json_t *body,
    json_t **req, ngx_str_t *err)
{
    size_t      i;
    json_t     *r, *msgs, *m, *v;
    ngx_int_t   rc;

    v = json_object_get(body, "messages");

    if (!json_is_array(v) || json_array_size(v) == 0) {
        ngx_str_set(err, "messages: a non-empty array is required");
        return NGX_DECLINED;
    }

    if (!json_is_integer(json_object_get(body, "max_tokens"))) {
        ngx_str_set(err, "max_tokens: an integer is required");
        return NGX_DECLINED;
    }

    r = json_object();
    msgs = r ? ngx_http_helix_codec_add(r, "messages", json_array()) : NULL;

    if (msgs == NULL) {
        json_decref(r);
        return NGX_ERROR;
    }

    rc = ngx_http_helix_anthropic_in_system(pool,
                                            json_object_get(body, "system"),
                                            msgs, err);

    json_array_foreach(v, i, m) {
        if (rc != NGX_OK) {
            break;
        }

        rc = ngx_http_helix_anthropic_in_message(pool, m, i, msgs, err);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_helix_anthropic_in_params(pool, body, r, err);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_helix_anthropic_in_tools(pool, body, r, err);
    }

    if (rc != NGX_OK) {
        json_decref(r);
        return rc;
    }

    *req = r;

    return NGX_OK;
}


/* "system": a string, or text blocks (each its own system message) */

static ngx_int_t
ngx_http_helix_anthropic_in_system(ngx_pool_t *pool, json_t *system,
    json_t *msgs, ngx_str_t *err)
{
    size_t   i;
    json_t  *b, *text;

    if (system == NULL || json_is_null(system)) {
        return NGX_OK;
    }

    if (json_is_string(system)) {
        return json_array_append_new(msgs,
                                     json_pack("{s:s,s:O}", "role", "system",
                                               "content", system))
               == 0 ? NGX_OK : NGX_ERROR;
    }

    if (!json_is_array(system)) {
        ngx_str_set(err, "system: a string or an array of text blocks");
        return NGX_DECLINED;
    }

    json_array_foreach(system, i, b) {
        text = json_object_get(b, "text");

        if (!ngx_http_helix_codec_streq(json_object_get(b, "type"), "text")
            || !json_is_string(text))
        {
            return ngx_http_helix_codec_fail(pool, err,
                                     "system[%uz]: a text block is expected",
                                     i);
        }

        if (json_array_append_new(msgs,
                                  json_pack("{s:s,s:O}", "role", "system",
                                            "content", text))
            != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * One turn.  A user turn's tool_result blocks become "tool" messages,
 * ahead of its other content, as OpenAI wants them right after the
 * assistant's tool calls.
 */

static ngx_int_t
ngx_http_helix_anthropic_in_message(ngx_pool_t *pool, json_t *m, size_t i,
    json_t *msgs, ngx_str_t *err)
{
    size_t       k;
    json_t      *content, *parts, *calls, *b, *out;
    ngx_int_t    rc;
    ngx_str_t    why;
    const char  *role;

    role = json_string_value(json_object_get(m, "role"));
    content = json_object_get(m, "content");

    if (role == NULL
        || (ngx_strcmp(role, "user") != 0
            && ngx_strcmp(role, "assistant") != 0))
    {
        return ngx_http_helix_codec_fail(pool, err,
                                   "messages[%uz].role: \"user\" or "
                                   "\"assistant\" is expected", i);
    }

    if (json_is_string(content)) {
        return json_array_append_new(msgs,
                                     json_pack("{s:s,s:O}", "role", role,
                                               "content", content))
               == 0 ? NGX_OK : NGX_ERROR;
    }

    if (!json_is_array(content)) {
        return ngx_http_helix_codec_fail(pool, err,
                                   "messages[%uz].content: a string or an "
                                   "array of blocks is expected", i);
    }

    parts = json_array();
    calls = json_array();
    rc = (parts && calls) ? NGX_OK : NGX_ERROR;

    json_array_foreach(content, k, b) {
        if (rc != NGX_OK) {
            break;
        }

        rc = ngx_http_helix_anthropic_in_block(pool, b, role, parts, calls,
                                               msgs, &why);
        if (rc == NGX_DECLINED) {
            rc = ngx_http_helix_codec_fail(pool, err,
                                           "messages[%uz].content[%uz]: %V",
                                           i, k, &why);
        }
    }

    out = NULL;

    if (rc == NGX_OK
        && (json_array_size(parts) || json_array_size(calls)
            || json_array_size(content) == 0))
    {
        out = json_pack("{s:s,s:O}", "role", role, "content", parts);

        if (out == NULL
            || (json_array_size(calls)
                && json_object_set(out, "tool_calls", calls) != 0)
            || json_array_append(msgs, out) != 0)
        {
            rc = NGX_ERROR;
        }
    }

    json_decref(out);
    json_decref(parts);
    json_decref(calls);

    return rc;
}


static ngx_int_t
ngx_http_helix_anthropic_in_block(ngx_pool_t *pool, json_t *b,
    const char *role, json_t *parts, json_t *calls, json_t *msgs,
    ngx_str_t *err)
{
    char    *args;
    json_t  *type, *v, *name, *id;

    type = json_object_get(b, "type");

    if (ngx_http_helix_codec_streq(type, "text")) {
        v = json_object_get(b, "text");

        if (!json_is_string(v)) {
            ngx_str_set(err, "a text block needs \"text\"");
            return NGX_DECLINED;
        }

        return json_array_append_new(parts,
                                     json_pack("{s:s,s:O}", "type", "text",
                                               "text", v))
               == 0 ? NGX_OK : NGX_ERROR;
    }

    if (ngx_http_helix_codec_streq(type, "image")) {
        v = ngx_http_helix_anthropic_in_image(b);

        if (v == NULL) {
            ngx_str_set(err, "an image needs a base64 or url source");
            return NGX_DECLINED;
        }

        return json_array_append_new(parts, v) == 0 ? NGX_OK : NGX_ERROR;
    }

    if (ngx_http_helix_codec_streq(type, "tool_use")
        && ngx_strcmp(role, "assistant") == 0)
    {
        name = json_object_get(b, "name");
        id = json_object_get(b, "id");
        v = json_object_get(b, "input");

        if (!json_is_string(name) || !json_is_string(id)) {
            ngx_str_set(err, "a tool_use block needs \"id\" and \"name\"");
            return NGX_DECLINED;
        }

        args = json_dumps(json_is_object(v) ? v : json_object(),
                          JSON_COMPACT|JSON_PRESERVE_ORDER);
        if (args == NULL) {
            return NGX_ERROR;
        }

        v = json_pack("{s:O,s:s,s:{s:O,s:s}}", "id", id, "type", "function",
                      "function", "name", name, "arguments", args);
        free(args);

        return json_array_append_new(calls, v) == 0 ? NGX_OK : NGX_ERROR;
    }

    if (ngx_http_helix_codec_streq(type, "tool_result")
        && ngx_strcmp(role, "user") == 0)
    {
        if (!json_is_string(json_object_get(b, "tool_use_id"))) {
            ngx_str_set(err, "a tool_result block needs \"tool_use_id\"");
            return NGX_DECLINED;
        }

        v = ngx_http_helix_anthropic_in_result(b);

        return json_array_append_new(msgs, v) == 0 ? NGX_OK : NGX_ERROR;
    }

    if (ngx_http_helix_codec_streq(type, "thinking")
        || ngx_http_helix_codec_streq(type, "redacted_thinking"))
    {
        /* the provider's own reasoning has no OpenAI counterpart */
        return NGX_OK;
    }

    ngx_str_set(err, "this block type cannot be translated");
    return NGX_DECLINED;
}


static json_t *
ngx_http_helix_anthropic_in_image(json_t *b)
{
    json_t  *src, *url, *v;

    src = json_object_get(b, "source");

    if (ngx_http_helix_codec_streq(json_object_get(src, "type"), "url")) {
        url = json_incref(json_object_get(src, "url"));

    } else if (ngx_http_helix_codec_streq(json_object_get(src, "type"),
                                          "base64")
               && json_is_string(json_object_get(src, "media_type"))
               && json_is_string(json_object_get(src, "data")))
    {
        url = json_sprintf("data:%s;base64,%s",
                       json_string_value(json_object_get(src, "media_type")),
                       json_string_value(json_object_get(src, "data")));

    } else {
        return NULL;
    }

    if (!json_is_string(url)) {
        json_decref(url);
        return NULL;
    }

    v = json_pack("{s:s,s:{s:o}}", "type", "image_url", "image_url", "url",
                  url);

    return v;
}


/* a tool_result's content: a string, or text blocks joined */

static json_t *
ngx_http_helix_anthropic_in_result(json_t *b)
{
    size_t   i;
    json_t  *content, *parts, *part, *text;

    content = json_object_get(b, "content");

    if (json_is_string(content)) {
        parts = json_incref(content);

    } else {
        parts = json_array();

        json_array_foreach(content, i, part) {
            text = json_object_get(part, "text");

            if (parts && json_is_string(text)
                && json_array_append_new(parts,
                                         json_pack("{s:s,s:O}", "type",
                                                   "text", "text", text))
                   != 0)
            {
                json_decref(parts);
                return NULL;
            }
        }

        if (json_array_size(parts) == 0) {
            json_decref(parts);
            parts = json_string("");
        }
    }

    if (json_is_true(json_object_get(b, "is_error")) && json_is_string(parts))
    {
        json_decref(parts);
        parts = json_sprintf("error: %s",
                             json_string_value(json_object_get(b,
                                                               "content")));
    }

    return json_pack("{s:s,s:O,s:o}", "role", "tool", "tool_call_id",
                     json_object_get(b, "tool_use_id"), "content", parts);
}


/* model, max_tokens, stream, temperature, top_p, stops, metadata.user_id */

static ngx_int_t
ngx_http_helix_anthropic_in_params(ngx_pool_t *pool, json_t *body,
    json_t *req, ngx_str_t *err)
{
    size_t        i;
    json_t       *v, *s;
    const char  **k;

    static const char  *same[] = {
        "model", "max_tokens", "stream", "temperature", "top_p", NULL
    };

    for (k = same; *k; k++) {
        v = json_object_get(body, *k);

        if (v && json_object_set(req, *k, v) != 0) {
            return NGX_ERROR;
        }
    }

    v = json_object_get(body, "stop_sequences");

    if (v) {
        if (!json_is_array(v)) {
            ngx_str_set(err, "stop_sequences: an array of strings is "
                             "expected");
            return NGX_DECLINED;
        }

        json_array_foreach(v, i, s) {
            if (!json_is_string(s)) {
                ngx_str_set(err, "stop_sequences: an array of strings is "
                                 "expected");
                return NGX_DECLINED;
            }
        }

        if (json_array_size(v) && json_object_set(req, "stop", v) != 0) {
            return NGX_ERROR;
        }
    }

    v = json_object_get(json_object_get(body, "metadata"), "user_id");

    if (json_is_string(v) && json_object_set(req, "user", v) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_anthropic_in_tools(ngx_pool_t *pool, json_t *body,
    json_t *req, ngx_str_t *err)
{
    size_t   i;
    json_t  *tools, *t, *out, *fn, *v, *choice, *type;

    tools = json_object_get(body, "tools");

    if (json_array_size(tools)) {
        out = ngx_http_helix_codec_add(req, "tools", json_array());
        if (out == NULL) {
            return NGX_ERROR;
        }

        json_array_foreach(tools, i, t) {
            type = json_object_get(t, "type");

            if (!json_is_string(json_object_get(t, "name"))
                || (type && !ngx_http_helix_codec_streq(type, "custom")))
            {
                return ngx_http_helix_codec_fail(pool, err,
                                       "tools[%uz]: only client tools with "
                                       "a \"name\" can be translated", i);
            }

            fn = json_pack("{s:O}", "name", json_object_get(t, "name"));
            v = json_object_get(t, "description");

            if (fn == NULL
                || (json_is_string(v)
                    && json_object_set(fn, "description", v) != 0)
                || json_object_set(fn, "parameters",
                                   json_is_object(json_object_get(t,
                                                          "input_schema"))
                                   ? json_object_get(t, "input_schema")
                                   : json_pack("{s:s}", "type", "object"))
                   != 0
                || json_array_append_new(out,
                                         json_pack("{s:s,s:o}", "type",
                                                   "function", "function",
                                                   fn))
                   != 0)
            {
                return NGX_ERROR;
            }
        }
    }

    choice = json_object_get(body, "tool_choice");
    type = json_object_get(choice, "type");

    if (ngx_http_helix_codec_streq(type, "any")) {
        v = json_string("required");

    } else if (ngx_http_helix_codec_streq(type, "none")) {
        v = json_string("none");

    } else if (ngx_http_helix_codec_streq(type, "tool")) {
        v = json_pack("{s:s,s:{s:O}}", "type", "function", "function",
                      "name", json_object_get(choice, "name"));

    } else if (ngx_http_helix_codec_streq(type, "auto")) {
        v = json_string("auto");

    } else {
        return NGX_OK;
    }

    if (v == NULL || json_object_set_new(req, "tool_choice", v) != 0) {
        return NGX_ERROR;
    }

    if (json_is_true(json_object_get(choice, "disable_parallel_tool_use"))
        && json_object_set_new(req, "parallel_tool_calls", json_false()) != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* answers: chat.completion -> message */

ngx_int_t
ngx_http_helix_anthropic_answer_out(ngx_pool_t *pool, json_t *answer,
    json_t **out)
{
    size_t   i;
    json_t  *o, *c, *msg, *content, *tc, *fn, *input, *u, *v, *usage;

    c = json_array_get(json_object_get(answer, "choices"), 0);
    msg = json_object_get(c, "message");
    u = json_object_get(answer, "usage");

    o = json_pack("{s:o,s:s,s:s,s:O?,s:[],s:s,s:n}",
                  "id", ngx_http_helix_anthropic_msg_id(
                            json_object_get(answer, "id")),
                  "type", "message", "role", "assistant",
                  "model", json_object_get(answer, "model"),
                  "content",
                  "stop_reason", ngx_http_helix_anthropic_stop(
                                     json_object_get(c, "finish_reason")),
                  "stop_sequence");
    if (o == NULL) {
        return NGX_ERROR;
    }

    content = json_object_get(o, "content");
    v = json_object_get(msg, "content");

    if (json_string_length(v)
        && json_array_append_new(content,
                                 json_pack("{s:s,s:O}", "type", "text",
                                           "text", v))
           != 0)
    {
        goto failed;
    }

    json_array_foreach(json_object_get(msg, "tool_calls"), i, tc) {
        fn = json_object_get(tc, "function");
        v = json_object_get(fn, "arguments");
        input = json_is_string(v) ? json_loads(json_string_value(v), 0, NULL)
                                  : NULL;

        if (!json_is_object(input)) {
            json_decref(input);
            input = json_object();
        }

        if (json_array_append_new(content,
                json_pack("{s:s,s:O,s:O,s:o}", "type", "tool_use",
                          "id", json_object_get(tc, "id"),
                          "name", json_object_get(fn, "name"),
                          "input", input))
            != 0)
        {
            goto failed;
        }
    }

    usage = json_pack("{s:I,s:I}",
                      "input_tokens",
                      ngx_http_helix_codec_tokens(u, "prompt_tokens"),
                      "output_tokens",
                      ngx_http_helix_codec_tokens(u, "completion_tokens"));

    v = json_object_get(json_object_get(u, "prompt_tokens_details"),
                        "cached_tokens");

    if (usage && json_is_integer(v)) {
        json_object_set(usage, "cache_read_input_tokens", v);
    }

    if (json_object_set_new(o, "usage", usage) != 0) {
        goto failed;
    }

    *out = o;
    return NGX_OK;

failed:

    json_decref(o);
    return NGX_ERROR;
}


/* "chatcmpl-X" -> "msg_X"; an Anthropic provider's "msg_X" stays */

static json_t *
ngx_http_helix_anthropic_msg_id(json_t *id)
{
    const char  *s;

    s = json_is_string(id) ? json_string_value(id) : "";

    if (ngx_strncmp(s, "chatcmpl-", 9) == 0) {
        s += 9;
    }

    if (ngx_strncmp(s, "msg_", 4) == 0) {
        return json_string(s);
    }

    return json_sprintf("msg_%s", s);
}


static const char *
ngx_http_helix_anthropic_stop(json_t *finish)
{
    const char  *s;

    s = ngx_http_helix_codec_reason(ngx_http_helix_anthropic_stops, finish);

    return s ? s : "end_turn";
}


/* errors: {"type":"error","error":{"type","message"}} */

ngx_int_t
ngx_http_helix_anthropic_error_out(ngx_pool_t *pool, ngx_uint_t *status,
    const char *code, u_char *msg, size_t len, ngx_str_t *body)
{
    json_t      *o;
    const char  *type;

    switch (*status) {
    case NGX_HTTP_UNAUTHORIZED:
        type = "authentication_error";
        break;
    case NGX_HTTP_FORBIDDEN:
        type = "permission_error";
        break;
    case NGX_HTTP_NOT_FOUND:
        type = "not_found_error";
        break;
    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        type = "request_too_large";
        break;
    case NGX_HTTP_TOO_MANY_REQUESTS:
        type = "rate_limit_error";
        break;
    case NGX_HTTP_SERVICE_UNAVAILABLE:
    case 529:
        /* Anthropic's own status for "overloaded" */
        *status = 529;
        type = "overloaded_error";
        break;
    default:
        type = *status >= NGX_HTTP_INTERNAL_SERVER_ERROR
               ? "api_error" : "invalid_request_error";
    }

    o = json_pack("{s:s,s:{s:s,s:s%}}", "type", "error", "error", "type",
                  type, "message", (char *) msg, len);
    if (o == NULL) {
        return NGX_ERROR;
    }

    body->len = json_dumpb(o, NULL, 0, NGX_HTTP_HELIX_CODEC_DUMP_FLAGS);
    body->data = ngx_pnalloc(pool, body->len);

    if (body->data == NULL) {
        json_decref(o);
        return NGX_ERROR;
    }

    body->len = json_dumpb(o, (char *) body->data, body->len,
                           NGX_HTTP_HELIX_CODEC_DUMP_FLAGS);
    json_decref(o);

    return NGX_OK;
}


/*
 * Streams: message_start (and a ping), one content block at a time (text,
 * tool_use with input_json_delta), message_delta with the stop reason and
 * the usage, message_stop; an error event when the provider's stream
 * fails.
 */

ngx_http_helix_stream_out_t *
ngx_http_helix_anthropic_stream_out_open(ngx_pool_t *pool, ngx_str_t *id,
    ngx_str_t *model)
{
    json_t                          *v;
    ngx_http_helix_anthropic_out_t  *o;

    o = ngx_pcalloc(pool, sizeof(ngx_http_helix_anthropic_out_t));
    if (o == NULL) {
        return NULL;
    }

    o->s.pool = pool;
    o->block = -1;
    o->tool = -1;

    if (ngx_array_init(&o->s.events, pool, 4, sizeof(ngx_http_helix_sse_t))
        != NGX_OK)
    {
        return NULL;
    }

    v = json_stringn((char *) id->data, id->len);
    o->id = ngx_http_helix_anthropic_msg_id(v);
    json_decref(v);

    o->model = json_stringn((char *) model->data, model->len);

    if (o->id == NULL || o->model == NULL
        || ngx_http_helix_json_pool(pool, o->id) != NGX_OK
        || ngx_http_helix_json_pool(pool, o->model) != NGX_OK)
    {
        return NULL;
    }

    return &o->s;
}


ngx_int_t
ngx_http_helix_anthropic_stream_out(ngx_http_helix_stream_out_t *s,
    ngx_http_helix_delta_t *d)
{
    ngx_http_helix_anthropic_out_t  *o;

    o = (ngx_http_helix_anthropic_out_t *) s;

    if (o->ended) {
        return NGX_OK;
    }

    if (d->kind == NGX_HTTP_HELIX_DELTA_ERROR) {
        o->ended = 1;
        return ngx_http_helix_codec_sse(s, "error",
                   json_pack("{s:s,s:{s:s,s:s%}}", "type", "error", "error",
                             "type", "api_error", "message",
                             (char *) d->text.data, d->text.len));
    }

    if (!o->started && ngx_http_helix_anthropic_out_start(o, d) != NGX_OK) {
        return NGX_ERROR;
    }

    switch (d->kind) {

    case NGX_HTTP_HELIX_DELTA_TEXT:
        if (d->text.len == 0) {
            return NGX_OK;
        }

        if (o->block < 0 || o->tool >= 0) {
            if (ngx_http_helix_anthropic_out_open(o, -1, d) != NGX_OK) {
                return NGX_ERROR;
            }
        }

        return ngx_http_helix_codec_sse(s, "content_block_delta",
                   json_pack("{s:s,s:I,s:{s:s,s:s%}}",
                             "type", "content_block_delta",
                             "index", (json_int_t) o->block,
                             "delta", "type", "text_delta",
                             "text", (char *) d->text.data, d->text.len));

    case NGX_HTTP_HELIX_DELTA_TOOL:
        if (d->tool != o->tool
            && ngx_http_helix_anthropic_out_open(o, d->tool, d) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (d->text.len == 0) {
            return NGX_OK;
        }

        return ngx_http_helix_codec_sse(s, "content_block_delta",
                   json_pack("{s:s,s:I,s:{s:s,s:s%}}",
                             "type", "content_block_delta",
                             "index", (json_int_t) o->block,
                             "delta", "type", "input_json_delta",
                             "partial_json", (char *) d->text.data,
                             d->text.len));

    case NGX_HTTP_HELIX_DELTA_FINISH:
        o->stop = d->finish;
        return NGX_OK;

    case NGX_HTTP_HELIX_DELTA_DONE:
        return ngx_http_helix_anthropic_out_end(o, d);

    default:
        return NGX_OK;
    }
}


static ngx_int_t
ngx_http_helix_anthropic_out_start(ngx_http_helix_anthropic_out_t *o,
    ngx_http_helix_delta_t *d)
{
    o->started = 1;

    if (ngx_http_helix_codec_sse(&o->s, "message_start",
            json_pack("{s:s,s:{s:O,s:s,s:s,s:O,s:[],s:n,s:n,s:{s:I,s:I}}}",
                      "type", "message_start", "message",
                      "id", o->id, "type", "message", "role", "assistant",
                      "model", o->model, "content", "stop_reason",
                      "stop_sequence", "usage",
                      "input_tokens", d->has_prompt ? d->prompt : 0,
                      "output_tokens", (json_int_t) 0))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_helix_codec_sse(&o->s, "ping",
                                    json_pack("{s:s}", "type", "ping"));
}


/* a new content block (tool < 0: text), the open one closed first */

static ngx_int_t
ngx_http_helix_anthropic_out_open(ngx_http_helix_anthropic_out_t *o,
    ngx_int_t tool, ngx_http_helix_delta_t *d)
{
    json_t  *b;

    if (ngx_http_helix_anthropic_out_close(o) != NGX_OK) {
        return NGX_ERROR;
    }

    o->block = o->blocks++;
    o->tool = tool;

    if (tool < 0) {
        b = json_pack("{s:s,s:s}", "type", "text", "text", "");

    } else {
        b = json_pack("{s:s,s:s%,s:s%,s:{}}", "type", "tool_use",
                      "id", d->id.data ? (char *) d->id.data : "",
                      d->id.len,
                      "name", d->name.data ? (char *) d->name.data : "",
                      d->name.len, "input");
    }

    if (b == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_helix_codec_sse(&o->s, "content_block_start",
                                    json_pack("{s:s,s:I,s:o}",
                                              "type", "content_block_start",
                                              "index", (json_int_t) o->block,
                                              "content_block", b));
}


static ngx_int_t
ngx_http_helix_anthropic_out_close(ngx_http_helix_anthropic_out_t *o)
{
    ngx_int_t  block;

    if (o->block < 0) {
        return NGX_OK;
    }

    block = o->block;
    o->block = -1;
    o->tool = -1;

    return ngx_http_helix_codec_sse(&o->s, "content_block_stop",
                                    json_pack("{s:s,s:I}",
                                              "type", "content_block_stop",
                                              "index", (json_int_t) block));
}


static ngx_int_t
ngx_http_helix_anthropic_out_end(ngx_http_helix_anthropic_out_t *o,
    ngx_http_helix_delta_t *d)
{
    json_t  *finish;

    o->ended = 1;

    if (ngx_http_helix_anthropic_out_close(o) != NGX_OK) {
        return NGX_ERROR;
    }

    finish = o->stop ? json_string(o->stop) : NULL;

    if (ngx_http_helix_codec_sse(&o->s, "message_delta",
            json_pack("{s:s,s:{s:s,s:n},s:{s:I,s:I}}",
                      "type", "message_delta", "delta",
                      "stop_reason", ngx_http_helix_anthropic_stop(finish),
                      "stop_sequence", "usage",
                      "input_tokens", d->has_prompt ? d->prompt : 0,
                      "output_tokens",
                      d->has_completion ? d->completion : 0))
        != NGX_OK)
    {
        json_decref(finish);
        return NGX_ERROR;
    }

    json_decref(finish);

    return ngx_http_helix_codec_sse(&o->s, "message_stop",
                                    json_pack("{s:s}", "type",
                                              "message_stop"));
}
