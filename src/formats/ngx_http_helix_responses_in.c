/*
 * Copyright (C) helix authors
 *
 * OpenAI's Responses API as a client format: a /v1/responses request as
 * the gateway's OpenAI chat request (instructions, input as a string or
 * items: messages, function calls and their outputs; function tools,
 * tool_choice, max_output_tokens, text.format), the chat answer as a
 * Response object, the stream deltas as Responses events with their
 * sequence numbers.  Errors stay OpenAI's error object.
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_codec.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_responses_in.h"


typedef struct {
    ngx_http_helix_stream_out_t  s;
    json_t                      *base;          /* the ids' common part */
    json_t                      *model;
    json_t                      *output;        /* the items done */
    json_t                      *item;          /* the open one */
    const char                  *finish;
    json_int_t                   seq;
    ngx_int_t                    index;         /* open, -1: none */
    ngx_int_t                    tool;          /* its tool, -1: text */
    ngx_int_t                    items;         /* opened so far */
    u_char                      *text;          /* the open item's */
    size_t                       len;
    size_t                       size;
    time_t                       created;
    unsigned                     started:1;
    unsigned                     ended:1;
} ngx_http_helix_responses_out_t;


static ngx_int_t ngx_http_helix_responses_request_in(ngx_pool_t *pool,
    json_t *body, json_t **req, ngx_str_t *err);
static ngx_int_t ngx_http_helix_responses_refuse(ngx_pool_t *pool,
    json_t *body, ngx_str_t *err);
static ngx_int_t ngx_http_helix_responses_in_input(ngx_pool_t *pool,
    json_t *input, json_t *msgs, ngx_str_t *err);
static ngx_int_t ngx_http_helix_responses_in_item(ngx_pool_t *pool,
    json_t *item, json_t *msgs, ngx_str_t *err);
static ngx_int_t ngx_http_helix_responses_in_message(ngx_pool_t *pool,
    json_t *item, json_t *msgs, ngx_str_t *err);
static ngx_int_t ngx_http_helix_responses_in_part(json_t *p,
    const char *role, json_t *parts, ngx_str_t *err);
static ngx_int_t ngx_http_helix_responses_in_call(json_t *item,
    json_t *msgs, ngx_str_t *err);
static ngx_int_t ngx_http_helix_responses_in_output(json_t *item,
    json_t *msgs, ngx_str_t *err);
static ngx_int_t ngx_http_helix_responses_in_params(ngx_pool_t *pool,
    json_t *body, json_t *req, ngx_str_t *err);
static ngx_int_t ngx_http_helix_responses_in_tools(ngx_pool_t *pool,
    json_t *body, json_t *req, ngx_str_t *err);
static ngx_int_t ngx_http_helix_responses_in_choice(json_t *body,
    json_t *req, ngx_str_t *err);
static ngx_int_t ngx_http_helix_responses_answer_out(ngx_pool_t *pool,
    json_t *answer, json_t **out);
static json_t *ngx_http_helix_responses_object(json_t *base, json_t *model,
    json_int_t created, const char *finish, ngx_uint_t done);
static json_t *ngx_http_helix_responses_usage(json_int_t in,
    json_int_t out, json_t *cached);
static json_t *ngx_http_helix_responses_base(json_t *id);
static json_t *ngx_http_helix_responses_message(json_t *base,
    ngx_int_t index, json_t *text, const char *status);
static json_t *ngx_http_helix_responses_call(json_t *base, ngx_int_t index,
    json_t *call_id, json_t *name, json_t *args, const char *status);
static ngx_http_helix_stream_out_t *ngx_http_helix_responses_stream_open(
    ngx_pool_t *pool, ngx_str_t *id, ngx_str_t *model);
static ngx_int_t ngx_http_helix_responses_stream_out(
    ngx_http_helix_stream_out_t *s, ngx_http_helix_delta_t *d);
static ngx_int_t ngx_http_helix_responses_sse(
    ngx_http_helix_responses_out_t *o, const char *type, json_t *data);
static ngx_int_t ngx_http_helix_responses_out_start(
    ngx_http_helix_responses_out_t *o);
static ngx_int_t ngx_http_helix_responses_out_open(
    ngx_http_helix_responses_out_t *o, ngx_int_t tool,
    ngx_http_helix_delta_t *d);
static ngx_int_t ngx_http_helix_responses_out_append(
    ngx_http_helix_responses_out_t *o, ngx_str_t *text);
static ngx_int_t ngx_http_helix_responses_out_close(
    ngx_http_helix_responses_out_t *o);
static ngx_int_t ngx_http_helix_responses_out_end(
    ngx_http_helix_responses_out_t *o, ngx_http_helix_delta_t *d);


ngx_http_helix_codec_t  ngx_http_helix_responses_codec = {
    ngx_string("responses"),
    0,                                          /* passthrough */
    0,                                          /* base64 */
    ngx_null_string,                            /* no provider speaks it */
    ngx_null_string,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    ngx_http_helix_responses_request_in,        /* the client direction */
    ngx_http_helix_responses_answer_out,
    NULL,                                       /* OpenAI's error object */
    ngx_http_helix_responses_stream_open,
    ngx_http_helix_responses_stream_out
};


static ngx_int_t
ngx_http_helix_responses_request_in(ngx_pool_t *pool, json_t *body,
    json_t **req, ngx_str_t *err)
{
    json_t     *r, *msgs, *v;
    ngx_int_t   rc;

    rc = ngx_http_helix_responses_refuse(pool, body, err);
    if (rc != NGX_OK) {
        return rc;
    }

    r = json_object();
    msgs = r ? ngx_http_helix_codec_add(r, "messages", json_array()) : NULL;

    if (msgs == NULL) {
        json_decref(r);
        return NGX_ERROR;
    }

    v = json_object_get(body, "instructions");
    rc = NGX_OK;

    if (json_string_length(v)) {
        if (json_array_append_new(msgs,
                                  json_pack("{s:s,s:O}", "role", "system",
                                            "content", v))
            != 0)
        {
            rc = NGX_ERROR;
        }

    } else if (v && !json_is_null(v) && !json_is_string(v)) {
        ngx_str_set(err, "instructions: a string is expected");
        rc = NGX_DECLINED;
    }

    if (rc == NGX_OK) {
        rc = ngx_http_helix_responses_in_input(pool,
                                               json_object_get(body, "input"),
                                               msgs, err);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_helix_responses_in_params(pool, body, r, err);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_helix_responses_in_tools(pool, body, r, err);
    }

    if (rc != NGX_OK) {
        json_decref(r);
        return rc;
    }

    *req = r;

    return NGX_OK;
}


/*
 * What needs the server's memory of earlier responses: the gateway keeps
 * none, so it says so instead of answering as if it had.
 */

static ngx_int_t
ngx_http_helix_responses_refuse(ngx_pool_t *pool, json_t *body,
    ngx_str_t *err)
{
    json_t       *v;
    const char  **k;

    static const char  *stateful[] = {
        "previous_response_id", "conversation", "prompt", NULL
    };

    if (json_is_true(json_object_get(body, "store"))) {
        ngx_str_set(err, "store: true is not supported: this gateway keeps "
                         "no responses (send \"store\": false)");
        return NGX_DECLINED;
    }

    if (json_is_true(json_object_get(body, "background"))) {
        ngx_str_set(err, "background: true is not supported");
        return NGX_DECLINED;
    }

    for (k = stateful; *k; k++) {
        v = json_object_get(body, *k);

        if (v && !json_is_null(v)) {
            return ngx_http_helix_codec_fail(pool, err,
                                   "%s is not supported: this gateway keeps "
                                   "no responses; send the whole "
                                   "conversation in \"input\"", *k);
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_responses_in_input(ngx_pool_t *pool, json_t *input,
    json_t *msgs, ngx_str_t *err)
{
    size_t     i;
    json_t    *item;
    ngx_int_t  rc;
    ngx_str_t  why;

    if (json_is_string(input)) {
        return json_array_append_new(msgs,
                                     json_pack("{s:s,s:O}", "role", "user",
                                               "content", input))
               == 0 ? NGX_OK : NGX_ERROR;
    }

    if (!json_is_array(input) || json_array_size(input) == 0) {
        ngx_str_set(err, "input: a string or a non-empty array of items is "
                         "required");
        return NGX_DECLINED;
    }

    json_array_foreach(input, i, item) {
        rc = ngx_http_helix_responses_in_item(pool, item, msgs, &why);

        if (rc == NGX_DECLINED) {
            return ngx_http_helix_codec_fail(pool, err, "input[%uz]: %V",
                                             i, &why);
        }

        if (rc != NGX_OK) {
            return rc;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_responses_in_item(ngx_pool_t *pool, json_t *item,
    json_t *msgs, ngx_str_t *err)
{
    json_t  *type;

    if (!json_is_object(item)) {
        ngx_str_set(err, "an item must be an object");
        return NGX_DECLINED;
    }

    type = json_object_get(item, "type");

    if (type == NULL || ngx_http_helix_codec_streq(type, "message")) {
        return ngx_http_helix_responses_in_message(pool, item, msgs, err);
    }

    if (ngx_http_helix_codec_streq(type, "function_call")) {
        return ngx_http_helix_responses_in_call(item, msgs, err);
    }

    if (ngx_http_helix_codec_streq(type, "function_call_output")) {
        return ngx_http_helix_responses_in_output(item, msgs, err);
    }

    if (ngx_http_helix_codec_streq(type, "reasoning")) {
        /* the provider's own reasoning has no chat counterpart */
        return NGX_OK;
    }

    if (ngx_http_helix_codec_streq(type, "item_reference")) {
        ngx_str_set(err, "item_reference is not supported: this gateway "
                         "keeps no items");
        return NGX_DECLINED;
    }

    ngx_str_set(err, "this item type cannot be translated");
    return NGX_DECLINED;
}


/* a message item: its role, a string or parts */

static ngx_int_t
ngx_http_helix_responses_in_message(ngx_pool_t *pool, json_t *item,
    json_t *msgs, ngx_str_t *err)
{
    size_t       k;
    json_t      *content, *parts, *p;
    ngx_int_t    rc;
    ngx_str_t    why;
    const char  *role;

    role = json_string_value(json_object_get(item, "role"));
    content = json_object_get(item, "content");

    if (role == NULL
        || (ngx_strcmp(role, "user") != 0
            && ngx_strcmp(role, "assistant") != 0
            && ngx_strcmp(role, "system") != 0
            && ngx_strcmp(role, "developer") != 0))
    {
        ngx_str_set(err, "role: \"user\", \"assistant\", \"system\" or "
                         "\"developer\" is expected");
        return NGX_DECLINED;
    }

    if (ngx_strcmp(role, "developer") == 0) {
        role = "system";
    }

    if (json_is_string(content)) {
        return json_array_append_new(msgs,
                                     json_pack("{s:s,s:O}", "role", role,
                                               "content", content))
               == 0 ? NGX_OK : NGX_ERROR;
    }

    if (!json_is_array(content)) {
        ngx_str_set(err, "content: a string or an array of parts is "
                         "expected");
        return NGX_DECLINED;
    }

    parts = json_array();
    rc = parts ? NGX_OK : NGX_ERROR;

    json_array_foreach(content, k, p) {
        if (rc != NGX_OK) {
            break;
        }

        rc = ngx_http_helix_responses_in_part(p, role, parts, &why);

        if (rc == NGX_DECLINED) {
            rc = ngx_http_helix_codec_fail(pool, err, "content[%uz]: %V", k,
                                           &why);
        }
    }

    if (rc == NGX_OK
        && json_array_append_new(msgs,
                                 json_pack("{s:s,s:O}", "role", role,
                                           "content", parts))
           != 0)
    {
        rc = NGX_ERROR;
    }

    json_decref(parts);

    return rc;
}


static ngx_int_t
ngx_http_helix_responses_in_part(json_t *p, const char *role, json_t *parts,
    ngx_str_t *err)
{
    json_t  *type, *v, *url, *detail;

    type = json_object_get(p, "type");

    if (ngx_http_helix_codec_streq(type, "input_text")
        || ngx_http_helix_codec_streq(type, "output_text")
        || ngx_http_helix_codec_streq(type, "refusal"))
    {
        v = json_object_get(p, ngx_http_helix_codec_streq(type, "refusal")
                               ? "refusal" : "text");

        if (!json_is_string(v)) {
            ngx_str_set(err, "a text part needs \"text\"");
            return NGX_DECLINED;
        }

        return json_array_append_new(parts,
                                     json_pack("{s:s,s:O}", "type", "text",
                                               "text", v))
               == 0 ? NGX_OK : NGX_ERROR;
    }

    if (ngx_http_helix_codec_streq(type, "input_image")
        && ngx_strcmp(role, "user") == 0)
    {
        url = json_object_get(p, "image_url");
        detail = json_object_get(p, "detail");

        if (!json_string_length(url)) {
            ngx_str_set(err, "an input_image needs \"image_url\" (a URL or "
                             "a data: URL; file_id is not supported)");
            return NGX_DECLINED;
        }

        v = json_pack("{s:s,s:{s:O}}", "type", "image_url", "image_url",
                      "url", url);

        if (v && json_is_string(detail)
            && !ngx_http_helix_codec_streq(detail, "auto"))
        {
            json_object_set(json_object_get(v, "image_url"), "detail",
                            detail);
        }

        return json_array_append_new(parts, v) == 0 ? NGX_OK : NGX_ERROR;
    }

    ngx_str_set(err, "this part type cannot be translated");
    return NGX_DECLINED;
}


/*
 * A function_call item: a tool call of the assistant's turn (the last
 * message when it is the assistant's, else a new one); call_id kept as
 * the call's id.
 */

static ngx_int_t
ngx_http_helix_responses_in_call(json_t *item, json_t *msgs, ngx_str_t *err)
{
    json_t  *last, *calls, *call, *id, *name, *args;

    id = json_object_get(item, "call_id");
    name = json_object_get(item, "name");
    args = json_object_get(item, "arguments");

    if (!json_string_length(id) || !json_string_length(name)
        || !json_is_string(args))
    {
        ngx_str_set(err, "a function_call needs \"call_id\", \"name\" and "
                         "\"arguments\" (a string)");
        return NGX_DECLINED;
    }

    call = json_pack("{s:O,s:s,s:{s:O,s:O}}", "id", id, "type", "function",
                     "function", "name", name, "arguments", args);
    if (call == NULL) {
        return NGX_ERROR;
    }

    last = json_array_get(msgs, json_array_size(msgs) - 1);

    if (!ngx_http_helix_codec_streq(json_object_get(last, "role"),
                                    "assistant"))
    {
        last = ngx_http_helix_codec_add(msgs, NULL,
                                        json_pack("{s:s,s:[]}", "role",
                                                  "assistant", "content"));
        if (last == NULL) {
            json_decref(call);
            return NGX_ERROR;
        }
    }

    calls = json_object_get(last, "tool_calls");

    if (calls == NULL) {
        calls = ngx_http_helix_codec_add(last, "tool_calls", json_array());
        if (calls == NULL) {
            json_decref(call);
            return NGX_ERROR;
        }
    }

    return json_array_append_new(calls, call) == 0 ? NGX_OK : NGX_ERROR;
}


/* a function_call_output item: a "tool" message, its call_id kept */

static ngx_int_t
ngx_http_helix_responses_in_output(json_t *item, json_t *msgs,
    ngx_str_t *err)
{
    size_t   i;
    json_t  *id, *out, *parts, *p, *text;

    id = json_object_get(item, "call_id");
    out = json_object_get(item, "output");

    if (!json_string_length(id)) {
        ngx_str_set(err, "a function_call_output needs \"call_id\"");
        return NGX_DECLINED;
    }

    if (json_is_string(out)) {
        return json_array_append_new(msgs,
                                     json_pack("{s:s,s:O,s:O}", "role",
                                               "tool", "tool_call_id", id,
                                               "content", out))
               == 0 ? NGX_OK : NGX_ERROR;
    }

    if (!json_is_array(out)) {
        ngx_str_set(err, "a function_call_output needs \"output\" (a string "
                         "or text parts)");
        return NGX_DECLINED;
    }

    parts = json_array();
    if (parts == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(out, i, p) {
        text = json_object_get(p, "text");

        if (!ngx_http_helix_codec_streq(json_object_get(p, "type"),
                                        "input_text")
            || !json_is_string(text))
        {
            json_decref(parts);
            ngx_str_set(err, "a function_call_output's parts must be "
                             "input_text");
            return NGX_DECLINED;
        }

        if (json_array_append_new(parts,
                                  json_pack("{s:s,s:O}", "type", "text",
                                            "text", text))
            != 0)
        {
            json_decref(parts);
            return NGX_ERROR;
        }
    }

    return json_array_append_new(msgs,
                                 json_pack("{s:s,s:O,s:o}", "role", "tool",
                                           "tool_call_id", id,
                                           "content", parts))
           == 0 ? NGX_OK : NGX_ERROR;
}


/*
 * model, stream, max_output_tokens, temperature, top_p, user, text;
 * "provider" (the gateway's own: one provider asked) as for chat
 */

static ngx_int_t
ngx_http_helix_responses_in_params(ngx_pool_t *pool, json_t *body,
    json_t *req, ngx_str_t *err)
{
    json_t       *v, *fmt, *type, *rf;
    const char  **k;

    static const char  *same[] = {
        "model", "stream", "temperature", "top_p", "user",
        "parallel_tool_calls", "provider", NULL
    };

    for (k = same; *k; k++) {
        v = json_object_get(body, *k);

        if (v && !json_is_null(v) && json_object_set(req, *k, v) != 0) {
            return NGX_ERROR;
        }
    }

    v = json_object_get(body, "max_output_tokens");

    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            ngx_str_set(err, "max_output_tokens: a positive integer is "
                             "expected");
            return NGX_DECLINED;
        }

        if (json_object_set(req, "max_tokens", v) != 0) {
            return NGX_ERROR;
        }
    }

    fmt = json_object_get(json_object_get(body, "text"), "format");
    type = json_object_get(fmt, "type");

    if (fmt == NULL || ngx_http_helix_codec_streq(type, "text")) {
        return NGX_OK;
    }

    if (ngx_http_helix_codec_streq(type, "json_object")) {
        rf = json_pack("{s:s}", "type", "json_object");

    } else if (ngx_http_helix_codec_streq(type, "json_schema")
               && json_is_string(json_object_get(fmt, "name"))
               && json_is_object(json_object_get(fmt, "schema")))
    {
        rf = json_pack("{s:s,s:{s:O,s:O}}", "type", "json_schema",
                       "json_schema", "name", json_object_get(fmt, "name"),
                       "schema", json_object_get(fmt, "schema"));

        v = json_object_get(fmt, "strict");

        if (rf && json_is_boolean(v)) {
            json_object_set(json_object_get(rf, "json_schema"), "strict", v);
        }

    } else {
        ngx_str_set(err, "text.format: \"text\", \"json_object\" or "
                         "\"json_schema\" (with \"name\" and \"schema\") is "
                         "expected");
        return NGX_DECLINED;
    }

    if (rf == NULL || json_object_set_new(req, "response_format", rf) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* function tools only: the built-in ones run on OpenAI's servers */

static ngx_int_t
ngx_http_helix_responses_in_tools(ngx_pool_t *pool, json_t *body,
    json_t *req, ngx_str_t *err)
{
    size_t   i;
    json_t  *tools, *t, *out, *fn, *v, *type;

    tools = json_object_get(body, "tools");

    if (tools && !json_is_null(tools) && !json_is_array(tools)) {
        ngx_str_set(err, "tools: an array is expected");
        return NGX_DECLINED;
    }

    if (json_array_size(tools)) {
        out = ngx_http_helix_codec_add(req, "tools", json_array());
        if (out == NULL) {
            return NGX_ERROR;
        }

        json_array_foreach(tools, i, t) {
            type = json_object_get(t, "type");

            if (!ngx_http_helix_codec_streq(type, "function")) {
                return ngx_http_helix_codec_fail(pool, err,
                           "tools[%uz]: only function tools are supported "
                           "(type \"%s\" is a tool OpenAI's servers run)",
                           i, json_is_string(type) ? json_string_value(type)
                                                   : "?");
            }

            if (!json_string_length(json_object_get(t, "name"))) {
                return ngx_http_helix_codec_fail(pool, err,
                                       "tools[%uz]: a function tool needs "
                                       "a \"name\"", i);
            }

            fn = ngx_http_helix_codec_add(out, NULL,
                      json_pack("{s:s,s:{s:O}}", "type", "function",
                                "function", "name",
                                json_object_get(t, "name")));
            if (fn == NULL) {
                return NGX_ERROR;
            }

            fn = json_object_get(fn, "function");
            v = json_object_get(t, "description");

            if (json_is_string(v)
                && json_object_set(fn, "description", v) != 0)
            {
                return NGX_ERROR;
            }

            v = json_object_get(t, "parameters");

            if (json_is_object(v) && json_object_set(fn, "parameters", v) != 0)
            {
                return NGX_ERROR;
            }

            v = json_object_get(t, "strict");

            if (json_is_boolean(v) && json_object_set(fn, "strict", v) != 0) {
                return NGX_ERROR;
            }
        }
    }

    return ngx_http_helix_responses_in_choice(body, req, err);
}


static ngx_int_t
ngx_http_helix_responses_in_choice(json_t *body, json_t *req, ngx_str_t *err)
{
    json_t  *choice, *v;

    choice = json_object_get(body, "tool_choice");

    if (choice == NULL || json_is_null(choice)) {
        return NGX_OK;
    }

    if (ngx_http_helix_codec_streq(choice, "auto")
        || ngx_http_helix_codec_streq(choice, "none")
        || ngx_http_helix_codec_streq(choice, "required"))
    {
        v = json_incref(choice);

    } else if (ngx_http_helix_codec_streq(json_object_get(choice, "type"),
                                          "function")
               && json_string_length(json_object_get(choice, "name")))
    {
        v = json_pack("{s:s,s:{s:O}}", "type", "function", "function",
                      "name", json_object_get(choice, "name"));

    } else {
        ngx_str_set(err, "tool_choice: \"auto\", \"none\", \"required\" or "
                         "{\"type\": \"function\", \"name\"} is expected");
        return NGX_DECLINED;
    }

    if (v == NULL || json_object_set_new(req, "tool_choice", v) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* answers: chat.completion -> response */

static ngx_int_t
ngx_http_helix_responses_answer_out(ngx_pool_t *pool, json_t *answer,
    json_t **out)
{
    size_t       i;
    json_t      *o, *c, *msg, *output, *tc, *fn, *u, *v, *base, *args;
    const char  *finish;

    c = json_array_get(json_object_get(answer, "choices"), 0);
    msg = json_object_get(c, "message");
    u = json_object_get(answer, "usage");
    finish = json_string_value(json_object_get(c, "finish_reason"));
    v = json_object_get(answer, "created");

    base = ngx_http_helix_responses_base(json_object_get(answer, "id"));
    if (base == NULL) {
        return NGX_ERROR;
    }

    o = ngx_http_helix_responses_object(base, json_object_get(answer,
                                                              "model"),
                                        json_is_integer(v)
                                        ? json_integer_value(v)
                                        : (json_int_t) ngx_time(),
                                        finish, 1);
    if (o == NULL) {
        json_decref(base);
        return NGX_ERROR;
    }

    output = json_object_get(o, "output");
    v = json_object_get(msg, "content");

    if (json_string_length(v)
        && json_array_append_new(output,
               ngx_http_helix_responses_message(base, 0, v, "completed"))
           != 0)
    {
        goto failed;
    }

    json_array_foreach(json_object_get(msg, "tool_calls"), i, tc) {
        fn = json_object_get(tc, "function");
        args = json_object_get(fn, "arguments");

        if (json_array_append_new(output,
                ngx_http_helix_responses_call(base,
                                              json_array_size(output),
                                              json_object_get(tc, "id"),
                                              json_object_get(fn, "name"),
                                              json_is_string(args)
                                              ? args : NULL,
                                              "completed"))
            != 0)
        {
            goto failed;
        }
    }

    if (json_object_set_new(o, "usage",
            ngx_http_helix_responses_usage(
                ngx_http_helix_codec_tokens(u, "prompt_tokens"),
                ngx_http_helix_codec_tokens(u, "completion_tokens"),
                json_object_get(json_object_get(u, "prompt_tokens_details"),
                                "cached_tokens")))
        != 0)
    {
        goto failed;
    }

    json_decref(base);
    *out = o;

    return NGX_OK;

failed:

    json_decref(base);
    json_decref(o);

    return NGX_ERROR;
}


/*
 * A Response object without its items and usage (none while in
 * progress: the schema has no null usage).  finish: the chat
 * finish reason (length and content_filter make it "incomplete"); done 0:
 * "in_progress".
 */

static json_t *
ngx_http_helix_responses_object(json_t *base, json_t *model,
    json_int_t created, const char *finish, ngx_uint_t done)
{
    json_t      *o, *incomplete;
    const char  *status, *reason;

    status = done ? "completed" : "in_progress";
    reason = NULL;

    if (done && finish && ngx_strcmp(finish, "length") == 0) {
        reason = "max_output_tokens";

    } else if (done && finish && ngx_strcmp(finish, "content_filter") == 0) {
        reason = "content_filter";
    }

    if (reason) {
        status = "incomplete";
        incomplete = json_pack("{s:s}", "reason", reason);

    } else {
        incomplete = json_null();
    }

    o = json_pack("{s:s+,s:s,s:I,s:s,s:n,s:o,s:n,s:n,s:O?,s:[],"
                  "s:b,s:n,s:b,s:n,s:{s:{s:s}},s:s,s:[],s:n,s:s,s:{}}",
                  "id", "resp_", json_string_value(base),
                  "object", "response",
                  "created_at", created,
                  "status", status,
                  "error",
                  "incomplete_details", incomplete,
                  "instructions",
                  "max_output_tokens",
                  "model", model,
                  "output",
                  "parallel_tool_calls", 1,
                  "previous_response_id",
                  "store", 0,
                  "temperature",
                  "text", "format", "type", "text",
                  "tool_choice", "auto",
                  "tools",
                  "top_p",
                  "truncation", "disabled",
                  "metadata");

    return o;
}


static json_t *
ngx_http_helix_responses_usage(json_int_t in, json_int_t out, json_t *cached)
{
    return json_pack("{s:I,s:{s:I,s:I},s:I,s:{s:I},s:I}",
                     "input_tokens", in,
                     "input_tokens_details", "cached_tokens",
                     json_is_integer(cached) && json_integer_value(cached) > 0
                     ? ngx_min(json_integer_value(cached), in) : 0,
                     "cache_write_tokens", (json_int_t) 0,
                     "output_tokens", out,
                     "output_tokens_details", "reasoning_tokens",
                     (json_int_t) 0,
                     "total_tokens", in + out);
}


/* "chatcmpl-X" ("msg_X", "resp_X") -> "X", the ids' common part */

static json_t *
ngx_http_helix_responses_base(json_t *id)
{
    const char  *s;
    u_char       buf[NGX_HTTP_HELIX_CODEC_ID_MAX];

    s = json_string_value(id);

    if (s == NULL || *s == '\0') {
        return json_stringn((char *) buf, ngx_http_helix_codec_id(buf, ""));
    }

    if (ngx_strncmp(s, "chatcmpl-", 9) == 0) {
        s += 9;

    } else if (ngx_strncmp(s, "resp_", 5) == 0
               || ngx_strncmp(s, "msg_", 4) == 0)
    {
        s += (*s == 'r') ? 5 : 4;
    }

    return json_string(s);
}


static json_t *
ngx_http_helix_responses_message(json_t *base, ngx_int_t index,
    json_t *text, const char *status)
{
    return json_pack("{s:s,s:s+,s:s,s:s,s:[{s:s,s:O,s:[],s:[]}]}",
                     "type", "message",
                     "id", "msg_", json_string_value(base),
                     "status", status,
                     "role", "assistant",
                     "content", "type", "output_text", "text", text,
                     "annotations", "logprobs");
}


static json_t *
ngx_http_helix_responses_call(json_t *base, ngx_int_t index,
    json_t *call_id, json_t *name, json_t *args, const char *status)
{
    json_t  *o;

    o = json_pack("{s:s,s:s++,s:O?,s:O?,s:s,s:s}",
                  "type", "function_call",
                  "id", "fc_", json_string_value(base), "",
                  "call_id", call_id,
                  "name", name,
                  "arguments", args ? json_string_value(args) : "",
                  "status", status);

    if (o && index > 0) {
        json_object_set_new(o, "id",
                            json_sprintf("fc_%s_%d",
                                         json_string_value(base),
                                         (int) index));
    }

    return o;
}


/*
 * Streams: response.created and response.in_progress, one output item at
 * a time (a message with one output_text part, or a function_call), each
 * added, its deltas, its done events; then response.completed (or
 * response.incomplete) with the whole Response.  Every event carries its
 * type and sequence_number; a provider's failure is an error event.
 */

static ngx_http_helix_stream_out_t *
ngx_http_helix_responses_stream_open(ngx_pool_t *pool, ngx_str_t *id,
    ngx_str_t *model)
{
    json_t                          *v;
    ngx_http_helix_responses_out_t  *o;

    o = ngx_pcalloc(pool, sizeof(ngx_http_helix_responses_out_t));
    if (o == NULL) {
        return NULL;
    }

    o->s.pool = pool;
    o->index = -1;
    o->tool = -1;
    o->created = ngx_time();

    if (ngx_array_init(&o->s.events, pool, 4, sizeof(ngx_http_helix_sse_t))
        != NGX_OK)
    {
        return NULL;
    }

    v = json_stringn((char *) id->data, id->len);
    o->base = ngx_http_helix_responses_base(v);
    json_decref(v);

    o->model = json_stringn((char *) model->data, model->len);
    o->output = json_array();

    if (o->base == NULL || o->model == NULL || o->output == NULL
        || ngx_http_helix_json_pool(pool, o->base) != NGX_OK
        || ngx_http_helix_json_pool(pool, o->model) != NGX_OK
        || ngx_http_helix_json_pool(pool, o->output) != NGX_OK)
    {
        return NULL;
    }

    return &o->s;
}


static ngx_int_t
ngx_http_helix_responses_stream_out(ngx_http_helix_stream_out_t *s,
    ngx_http_helix_delta_t *d)
{
    ngx_http_helix_responses_out_t  *o;

    o = (ngx_http_helix_responses_out_t *) s;

    if (o->ended) {
        return NGX_OK;
    }

    if (d->kind == NGX_HTTP_HELIX_DELTA_ERROR) {
        o->ended = 1;
        return ngx_http_helix_responses_sse(o, "error",
                   json_pack("{s:s,s:s%,s:n}", "code", "provider_error",
                             "message", (char *) d->text.data, d->text.len,
                             "param"));
    }

    if (!o->started && ngx_http_helix_responses_out_start(o) != NGX_OK) {
        return NGX_ERROR;
    }

    switch (d->kind) {

    case NGX_HTTP_HELIX_DELTA_TEXT:
        if (d->text.len == 0) {
            return NGX_OK;
        }

        if ((o->index < 0 || o->tool >= 0)
            && ngx_http_helix_responses_out_open(o, -1, d) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ngx_http_helix_responses_out_append(o, &d->text) != NGX_OK) {
            return NGX_ERROR;
        }

        return ngx_http_helix_responses_sse(o, "response.output_text.delta",
                   json_pack("{s:O,s:I,s:i,s:s%,s:[]}",
                             "item_id", json_object_get(o->item, "id"),
                             "output_index", (json_int_t) o->index,
                             "content_index", 0,
                             "delta", (char *) d->text.data, d->text.len,
                             "logprobs"));

    case NGX_HTTP_HELIX_DELTA_TOOL:
        if (d->tool != o->tool
            && ngx_http_helix_responses_out_open(o, d->tool, d) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (d->text.len == 0) {
            return NGX_OK;
        }

        if (ngx_http_helix_responses_out_append(o, &d->text) != NGX_OK) {
            return NGX_ERROR;
        }

        return ngx_http_helix_responses_sse(o,
                   "response.function_call_arguments.delta",
                   json_pack("{s:O,s:I,s:s%}",
                             "item_id", json_object_get(o->item, "id"),
                             "output_index", (json_int_t) o->index,
                             "delta", (char *) d->text.data, d->text.len));

    case NGX_HTTP_HELIX_DELTA_FINISH:
        o->finish = d->finish;
        return NGX_OK;

    case NGX_HTTP_HELIX_DELTA_DONE:
        return ngx_http_helix_responses_out_end(o, d);

    default:
        return NGX_OK;
    }
}


/* one event: its type and sequence number set, data stolen */

static ngx_int_t
ngx_http_helix_responses_sse(ngx_http_helix_responses_out_t *o,
    const char *type, json_t *data)
{
    if (data == NULL) {
        return NGX_ERROR;
    }

    if (json_object_set_new(data, "type", json_string(type)) != 0
        || json_object_set_new(data, "sequence_number",
                               json_integer(o->seq++))
           != 0)
    {
        json_decref(data);
        return NGX_ERROR;
    }

    return ngx_http_helix_codec_sse(&o->s, type, data);
}


static ngx_int_t
ngx_http_helix_responses_out_start(ngx_http_helix_responses_out_t *o)
{
    json_t  *r;

    o->started = 1;

    r = ngx_http_helix_responses_object(o->base, o->model, o->created, NULL,
                                        0);

    if (ngx_http_helix_responses_sse(o, "response.created",
                                     json_pack("{s:O}", "response", r))
        != NGX_OK)
    {
        json_decref(r);
        return NGX_ERROR;
    }

    return ngx_http_helix_responses_sse(o, "response.in_progress",
                                        json_pack("{s:o}", "response", r));
}


/* a new output item (tool < 0: a message), the open one closed first */

static ngx_int_t
ngx_http_helix_responses_out_open(ngx_http_helix_responses_out_t *o,
    ngx_int_t tool, ngx_http_helix_delta_t *d)
{
    json_t  *id, *name, *item;

    if (ngx_http_helix_responses_out_close(o) != NGX_OK) {
        return NGX_ERROR;
    }

    o->index = o->items++;
    o->tool = tool;
    o->len = 0;

    if (tool < 0) {
        item = json_pack("{s:s,s:s++,s:s,s:s,s:[]}", "type", "message",
                         "id", "msg_", json_string_value(o->base), "",
                         "status", "in_progress", "role", "assistant",
                         "content");

        if (item && o->index > 0) {
            json_object_set_new(item, "id",
                                json_sprintf("msg_%s_%d",
                                             json_string_value(o->base),
                                             (int) o->index));
        }

    } else {
        id = json_stringn(d->id.data ? (char *) d->id.data : "", d->id.len);
        name = json_stringn(d->name.data ? (char *) d->name.data : "",
                            d->name.len);

        item = (id && name)
               ? ngx_http_helix_responses_call(o->base, o->index, id, name,
                                               NULL, "in_progress")
               : NULL;

        json_decref(id);
        json_decref(name);
    }

    if (item == NULL || ngx_http_helix_json_pool(o->s.pool, item) != NGX_OK)
    {
        json_decref(item);
        return NGX_ERROR;
    }

    o->item = item;

    if (ngx_http_helix_responses_sse(o, "response.output_item.added",
                                     json_pack("{s:I,s:O}", "output_index",
                                               (json_int_t) o->index,
                                               "item", item))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (tool >= 0) {
        return NGX_OK;
    }

    return ngx_http_helix_responses_sse(o, "response.content_part.added",
               json_pack("{s:O,s:I,s:i,s:{s:s,s:s,s:[],s:[]}}",
                         "item_id", json_object_get(item, "id"),
                         "output_index", (json_int_t) o->index,
                         "content_index", 0,
                         "part", "type", "output_text", "text", "",
                         "annotations", "logprobs"));
}


/* the open item's text (or arguments) so far, in the pool */

static ngx_int_t
ngx_http_helix_responses_out_append(ngx_http_helix_responses_out_t *o,
    ngx_str_t *text)
{
    u_char  *p;
    size_t   size;

    if (o->len + text->len > o->size) {
        size = ngx_max(2 * o->size, o->len + text->len);
        size = ngx_max(size, 256);

        p = ngx_pnalloc(o->s.pool, size);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (o->len) {
            ngx_memcpy(p, o->text, o->len);
        }

        if (o->text) {
            ngx_pfree(o->s.pool, o->text);
        }

        o->text = p;
        o->size = size;
    }

    ngx_memcpy(o->text + o->len, text->data, text->len);
    o->len += text->len;

    return NGX_OK;
}


/* the open item's done events; the finished item joins the output */

static ngx_int_t
ngx_http_helix_responses_out_close(ngx_http_helix_responses_out_t *o)
{
    json_t  *text, *item, *id;

    if (o->index < 0) {
        return NGX_OK;
    }

    text = json_stringn(o->len ? (char *) o->text : "", o->len);
    if (text == NULL) {
        return NGX_ERROR;
    }

    id = json_object_get(o->item, "id");

    if (o->tool < 0) {
        item = ngx_http_helix_responses_message(o->base, o->index, text,
                                                "completed");
        if (item) {
            json_object_set(item, "id", id);
        }

        if (ngx_http_helix_responses_sse(o, "response.output_text.done",
                json_pack("{s:O,s:I,s:i,s:O,s:[]}", "item_id", id,
                          "output_index", (json_int_t) o->index,
                          "content_index", 0, "text", text, "logprobs"))
            != NGX_OK
            || ngx_http_helix_responses_sse(o, "response.content_part.done",
                json_pack("{s:O,s:I,s:i,s:{s:s,s:O,s:[],s:[]}}",
                          "item_id", id,
                          "output_index", (json_int_t) o->index,
                          "content_index", 0, "part", "type",
                          "output_text", "text", text, "annotations",
                          "logprobs"))
               != NGX_OK)
        {
            json_decref(item);
            json_decref(text);
            return NGX_ERROR;
        }

    } else {
        item = json_deep_copy(o->item);

        if (item == NULL
            || json_object_set(item, "arguments", text) != 0
            || json_object_set_new(item, "status", json_string("completed"))
               != 0
            || ngx_http_helix_responses_sse(o,
                   "response.function_call_arguments.done",
                   json_pack("{s:O,s:I,s:O,s:O}", "item_id", id,
                             "output_index", (json_int_t) o->index,
                             "name", json_object_get(item, "name"),
                             "arguments", text))
               != NGX_OK)
        {
            json_decref(item);
            json_decref(text);
            return NGX_ERROR;
        }
    }

    json_decref(text);

    if (item == NULL || json_array_append_new(o->output, item) != 0) {
        return NGX_ERROR;
    }

    o->index = -1;
    o->tool = -1;

    return ngx_http_helix_responses_sse(o, "response.output_item.done",
                                        json_pack("{s:I,s:O}",
                                                  "output_index",
                                                  (json_int_t) (o->items - 1),
                                                  "item", item));
}


static ngx_int_t
ngx_http_helix_responses_out_end(ngx_http_helix_responses_out_t *o,
    ngx_http_helix_delta_t *d)
{
    json_t      *r;
    const char  *type;

    o->ended = 1;

    if (ngx_http_helix_responses_out_close(o) != NGX_OK) {
        return NGX_ERROR;
    }

    r = ngx_http_helix_responses_object(o->base, o->model, o->created,
                                        o->finish, 1);

    if (r == NULL
        || json_object_set(r, "output", o->output) != 0
        || json_object_set_new(r, "usage",
               ngx_http_helix_responses_usage(
                   d->has_prompt ? d->prompt : 0,
                   d->has_completion ? d->completion : 0, NULL))
           != 0)
    {
        json_decref(r);
        return NGX_ERROR;
    }

    type = ngx_http_helix_codec_streq(json_object_get(r, "status"),
                                      "incomplete")
           ? "response.incomplete" : "response.completed";

    return ngx_http_helix_responses_sse(o, type,
                                        json_pack("{s:o}", "response", r));
}
