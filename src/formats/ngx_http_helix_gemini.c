/*
 * Copyright (C) helix authors
 *
 * Google's Gemini API: the gateway's OpenAI chat requests as
 * generateContent requests (contents and parts, systemInstruction,
 * generationConfig, function declarations), embeddings as
 * batchEmbedContents, the answers and the SSE stream of
 * GenerateContentResponse chunks back.
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_codec.h"
#include "ngx_http_helix_gemini.h"


/* what the messages of one request have made so far */
typedef struct {
    json_t                     *contents;
    json_t                     *names;          /* tool call id -> name */
} ngx_http_helix_gemini_ctx_t;


typedef struct {
    ngx_http_helix_stream_in_t  s;
    uint64_t                    tools[NGX_HTTP_HELIX_CODEC_MAX_CHOICES / 64];
    unsigned                    finish:1;       /* a finishReason seen */
} ngx_http_helix_gemini_stream_t;


static ngx_int_t ngx_http_helix_gemini_chat_request(ngx_pool_t *pool,
    json_t *req, ngx_str_t *model, ngx_uint_t stream, ngx_str_t *path,
    json_t **body, ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_contents(json_t *contents,
    json_t *system, json_t *b);
static ngx_int_t ngx_http_helix_gemini_message(ngx_pool_t *pool,
    json_t *m, const char *role, void *data, ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_parts(json_t *content,
    json_t *parts, ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_config(json_t *req, json_t *b,
    ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_tools(ngx_pool_t *pool,
    json_t *req, json_t *b, ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_tool_config(json_t *req, json_t *b);
static json_t *ngx_http_helix_gemini_schema(json_t *s);
static ngx_int_t ngx_http_helix_gemini_path(ngx_pool_t *pool,
    ngx_str_t *model, const char *action, ngx_str_t *path);
static ngx_int_t ngx_http_helix_gemini_resource(ngx_pool_t *pool,
    ngx_str_t *model, ngx_str_t *name);
static ngx_int_t ngx_http_helix_gemini_chat_answer(ngx_pool_t *pool,
    ngx_str_t *model, json_t *root, json_t **out, ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_candidate(ngx_pool_t *pool,
    json_t *choices, json_t *cand, size_t n, ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_embeddings_request(ngx_pool_t *pool,
    json_t *req, ngx_str_t *model, ngx_str_t *path, json_t **body,
    ngx_str_t *err);
static ngx_int_t ngx_http_helix_gemini_embeddings_answer(ngx_pool_t *pool,
    ngx_str_t *model, json_t *input, json_t *root, json_t **out,
    ngx_str_t *err);
static ngx_http_helix_stream_in_t *ngx_http_helix_gemini_stream_open(
    ngx_pool_t *pool);
static ngx_int_t ngx_http_helix_gemini_stream_event(
    ngx_http_helix_stream_in_t *s, ngx_str_t *event, u_char *data,
    size_t len);
static ngx_int_t ngx_http_helix_gemini_stream_candidate(
    ngx_http_helix_stream_in_t *s, json_t *c, size_t i);
static ngx_int_t ngx_http_helix_gemini_stream_part(
    ngx_http_helix_stream_in_t *s, ngx_uint_t index, json_t *part);
static ngx_int_t ngx_http_helix_gemini_stream_end(
    ngx_http_helix_stream_in_t *s);
static ngx_int_t ngx_http_helix_gemini_headers(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, ngx_list_t *headers);
static const char *ngx_http_helix_gemini_finish_reason(json_t *reason);


ngx_http_helix_codec_t  ngx_http_helix_gemini_codec = {
    ngx_string("gemini"),
    0,                                          /* passthrough */
    0,                                          /* base64 */
    ngx_null_string,                            /* paths name the model */
    ngx_null_string,
    ngx_http_helix_gemini_chat_request,
    ngx_http_helix_gemini_chat_answer,
    ngx_http_helix_gemini_embeddings_request,
    ngx_http_helix_gemini_embeddings_answer,
    NULL,                                       /* answers are translated */
    ngx_http_helix_gemini_stream_open,
    ngx_http_helix_gemini_stream_event,
    ngx_http_helix_gemini_stream_end,
    ngx_http_helix_codec_error_text,
    ngx_http_helix_gemini_headers,
    ngx_http_helix_gemini_finish_reason,
    NULL,                                       /* no client direction */
    NULL,
    NULL,
    NULL,
    NULL
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

static ngx_int_t
ngx_http_helix_gemini_chat_request(ngx_pool_t *pool, json_t *req,
    ngx_str_t *model, ngx_uint_t stream, ngx_str_t *path, json_t **body,
    ngx_str_t *err)
{
    json_t                       *b, *system;
    ngx_int_t                     rc;
    ngx_http_helix_gemini_ctx_t   ctx;

    b = json_object();
    system = json_array();
    ctx.names = json_object();
    ctx.contents = ngx_http_helix_codec_add(b, "contents", json_array());

    if (ctx.contents == NULL || system == NULL || ctx.names == NULL) {
        goto failed;
    }

    rc = ngx_http_helix_codec_messages(pool, req, system,
                                       ngx_http_helix_gemini_message, &ctx,
                                       err);
    if (rc != NGX_OK) {
        goto done;
    }

    if (json_array_size(ctx.contents) == 0) {
        ngx_str_set(err, "gemini providers need a user message");
        rc = NGX_DECLINED;
        goto done;
    }

    if (ngx_http_helix_gemini_contents(ctx.contents, system, b) != NGX_OK) {
        goto failed;
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
    json_decref(ctx.names);

    return rc;
}


/* empty contents get an empty text; the system texts as parts */

static ngx_int_t
ngx_http_helix_gemini_contents(json_t *contents, json_t *system, json_t *b)
{
    size_t   i;
    json_t  *c, *m, *parts, *si;

    /* Gemini rejects a content without parts */
    json_array_foreach(contents, i, c) {
        parts = json_object_get(c, "parts");

        if (json_array_size(parts) == 0
            && json_array_append_new(parts, json_pack("{s:s}", "text", ""))
               != 0)
        {
            return NGX_ERROR;
        }
    }

    if (json_array_size(system) == 0) {
        return NGX_OK;
    }

    si = ngx_http_helix_codec_add(b, "systemInstruction", json_object());
    parts = si ? ngx_http_helix_codec_add(si, "parts", json_array()) : NULL;

    if (parts == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(system, i, m) {
        if (json_array_append_new(parts, json_pack("{s:O}", "text", m)) != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * One user, assistant or tool message appended to "contents"; "names"
 * maps the tool call ids seen so far to their function names, because
 * a Gemini functionResponse is matched by name, not by id.
 */

static ngx_int_t
ngx_http_helix_gemini_message(ngx_pool_t *pool, json_t *m, const char *role,
    void *data, ngx_str_t *err)
{
    size_t                        i;
    json_t                       *parts, *part, *call, *fn, *name, *id, *text,
                                 *r, *names;
    ngx_int_t                     rc;
    ngx_http_helix_gemini_ctx_t  *ctx = data;

    names = ctx->names;

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

            name = ngx_http_helix_codec_call_name(call, err);

            if (name == NULL) {
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

            part = ngx_http_helix_codec_add(parts, NULL, json_object());
            fn = part ? ngx_http_helix_codec_add(part, "functionCall",
                                                 json_object())
                      : NULL;

            if (fn == NULL
                || json_object_set_new(fn, "name", json_deep_copy(name)) != 0
                || json_object_set_new(fn, "args",
                           ngx_http_helix_codec_arguments(
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

        text = ngx_http_helix_codec_join(pool,
                                         json_object_get(m, "content"),
                                         "\n");

        part = ngx_http_helix_codec_add(parts, NULL, json_object());
        fn = part ? ngx_http_helix_codec_add(part, "functionResponse",
                                             json_object())
                  : NULL;
        r = fn ? ngx_http_helix_codec_add(fn, "response", json_object())
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

    return ngx_http_helix_codec_push(ctx->contents, role, "parts", parts);
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
        text = ngx_http_helix_codec_part_text(part);

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

        if (ngx_http_helix_codec_image_url(part, &url) != NGX_OK
            || ngx_http_helix_codec_data_url(&url, &mime, &data) != NGX_OK)
        {
            continue;
        }

        p = ngx_http_helix_codec_add(parts, NULL, json_object());
        d = p ? ngx_http_helix_codec_add(p, "inlineData", json_object())
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

    rc = ngx_http_helix_codec_n(req, &n, err);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_helix_codec_max_tokens(req, &max, err);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_helix_codec_stops(req, &stops, err);
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
    size_t      i;
    json_t     *tools, *decls, *t, *decl, *params;
    ngx_int_t   rc;

    tools = json_object_get(req, "tools");

    if (json_array_size(tools) == 0) {
        return NGX_OK;
    }

    t = ngx_http_helix_codec_add(b, "tools", json_array());
    t = t ? ngx_http_helix_codec_add(t, NULL, json_object()) : NULL;
    decls = t ? ngx_http_helix_codec_add(t, "functionDeclarations",
                                         json_array())
              : NULL;

    if (decls == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(tools, i, t) {
        rc = ngx_http_helix_codec_tool(pool, t, i, decls, &decl, &params,
                                       err);
        if (rc != NGX_OK) {
            return rc;
        }

        /* Gemini refuses an OBJECT schema without properties */

        if (decl == NULL
            || json_object_size(json_object_get(params, "properties")) == 0)
        {
            continue;
        }

        if (json_object_set_new(decl, "parameters",
                                ngx_http_helix_gemini_schema(params))
            != 0)
        {
            return NGX_ERROR;
        }
    }

    if (json_array_size(decls) == 0) {
        json_object_del(b, "tools");
        return NGX_OK;
    }

    return ngx_http_helix_gemini_tool_config(req, b);
}


static ngx_int_t
ngx_http_helix_gemini_tool_config(json_t *req, json_t *b)
{
    json_t      *choice, *t, *fcc, *name, *names;
    const char  *mode;

    choice = json_object_get(req, "tool_choice");

    if (ngx_http_helix_codec_streq(choice, "none")) {
        mode = "NONE";

    } else if (ngx_http_helix_codec_streq(choice, "required")
               || json_is_object(choice))
    {
        mode = "ANY";

    } else if (ngx_http_helix_codec_streq(choice, "auto")) {
        mode = "AUTO";

    } else {
        return NGX_OK;
    }

    t = ngx_http_helix_codec_add(b, "toolConfig", json_object());
    fcc = t ? ngx_http_helix_codec_add(t, "functionCallingConfig",
                                       json_object())
            : NULL;

    if (fcc == NULL
        || json_object_set_new(fcc, "mode", json_string(mode)) != 0)
    {
        return NGX_ERROR;
    }

    name = json_object_get(json_object_get(choice, "function"), "name");

    if (json_is_string(name)) {
        names = ngx_http_helix_codec_add(fcc, "allowedFunctionNames",
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
            sub = ngx_http_helix_codec_add(out, key, json_object());
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

    if (ngx_http_helix_codec_has_prefix(model, "models/")
        || ngx_http_helix_codec_has_prefix(model, "tunedModels/"))
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
    if (ngx_http_helix_codec_has_prefix(model, "models/")
        || ngx_http_helix_codec_has_prefix(model, "tunedModels/"))
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

static ngx_int_t
ngx_http_helix_gemini_chat_answer(ngx_pool_t *pool, ngx_str_t *model,
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

    o = ngx_http_helix_codec_completion(pool, model,
                                        json_object_get(root, "responseId"),
                                        &choices);
    if (o == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_OK;

    if (json_array_size(cands) == 0) {
        c = json_string("");
        rc = ngx_http_helix_codec_choice(choices, c, NULL,
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

        rc = ngx_http_helix_codec_usage(o,
                 ngx_http_helix_codec_tokens(usage, "promptTokenCount"),
                 ngx_http_helix_codec_tokens(usage, "candidatesTokenCount")
                 + ngx_http_helix_codec_tokens(usage, "thoughtsTokenCount"),
                 ngx_http_helix_codec_tokens(usage, "totalTokenCount"));
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
        return ngx_http_helix_codec_fail(pool, err,
                                        "candidates[%uz] is not an object", n);
    }

    content = json_object_get(cand, "content");
    parts = json_object_get(content, "parts");

    if ((content && !json_is_object(content))
        || (parts && !json_is_array(parts)))
    {
        return ngx_http_helix_codec_fail(pool, err,
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
                rc = ngx_http_helix_codec_fail(pool, err,
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
                rc = ngx_http_helix_codec_fail(pool, err,
                         "candidates[%uz].content.parts[%uz] has a "
                         "functionCall without name", n, i);
                goto done;
            }

            if (ngx_http_helix_codec_tool_call(pool, calls,
                                               json_object_get(fc, "id"),
                                               json_object_get(fc, "name"),
                                               json_object_get(fc, "args"))
                != NGX_OK)
            {
                goto failed;
            }
        }
    }

    finish = ngx_http_helix_gemini_finish_reason(
                                       json_object_get(cand, "finishReason"));

    if (finish == NULL || ngx_strcmp(finish, "stop") == 0) {
        finish = json_array_size(calls) ? "tool_calls" : "stop";
    }

    if (json_array_size(texts) == 0 && json_array_size(calls)) {
        c = json_null();

    } else {
        c = ngx_http_helix_codec_concat(pool, texts);
    }

    rc = ngx_http_helix_codec_choice(choices, c,
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


/* embeddings: batchEmbedContents, one request per input */

static ngx_int_t
ngx_http_helix_gemini_embeddings_request(ngx_pool_t *pool, json_t *req,
    ngx_str_t *model, ngx_str_t *path, json_t **body, ngx_str_t *err)
{
    size_t      i;
    json_t     *input, *v, *b, *reqs, *r, *c, *parts, *dims;
    ngx_str_t   name;

    input = json_object_get(req, "input");


    /* Gemini answers floats only */
    if (ngx_http_helix_codec_streq(json_object_get(req, "encoding_format"),
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
    reqs = ngx_http_helix_codec_add(b, "requests", json_array());

    if (reqs == NULL) {
        goto failed;
    }

    json_array_foreach(input, i, v) {
        r = ngx_http_helix_codec_add(reqs, NULL, json_object());
        c = r ? ngx_http_helix_codec_add(r, "content", json_object())
              : NULL;
        parts = c ? ngx_http_helix_codec_add(c, "parts", json_array())
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



static ngx_int_t
ngx_http_helix_gemini_embeddings_answer(ngx_pool_t *pool, ngx_str_t *model,
    json_t *input, json_t *root, json_t **out, ngx_str_t *err)
{
    u_char      *s, *last;
    size_t       i, chars;
    json_t      *list, *item, *o, *d;
    ngx_int_t    rc;
    json_int_t   pt;

    rc = ngx_http_helix_codec_vectors(pool, root, input, "embeddings",
                                      "values", &list, err);
    if (rc != NGX_OK) {
        return rc;
    }

    o = json_object();
    d = ngx_http_helix_codec_add(o, "data", json_array());

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
                                            json_object_get(item, "values")))
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

    if (ngx_http_helix_codec_usage(o, pt, 0, pt) != NGX_OK) {
        goto failed;
    }

    json_object_del(json_object_get(o, "usage"), "completion_tokens");

    *out = o;

    return NGX_OK;

failed:

    json_decref(o);

    return NGX_ERROR;
}


/* streams: GenerateContentResponse chunks; the end of the body ends them */

static ngx_http_helix_stream_in_t *
ngx_http_helix_gemini_stream_open(ngx_pool_t *pool)
{
    return ngx_http_helix_codec_stream_open(pool,
                                      sizeof(ngx_http_helix_gemini_stream_t));
}


static ngx_int_t
ngx_http_helix_gemini_stream_event(ngx_http_helix_stream_in_t *s,
    ngx_str_t *event, u_char *data, size_t len)
{
    size_t   i;
    json_t  *ev, *c;

    ev = ngx_http_helix_codec_stream_load(s, data, len);

    if (ev == NULL || json_object_get(ev, "error")) {
        return ngx_http_helix_codec_stream_error(s, ev);
    }

    if (ngx_http_helix_codec_stream_usage(s,
                                          json_object_get(ev, "usageMetadata"),
                                          "promptTokenCount",
                                          "candidatesTokenCount")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    json_array_foreach(json_object_get(ev, "candidates"), i, c) {
        if (ngx_http_helix_gemini_stream_candidate(s, c, i) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_gemini_stream_candidate(ngx_http_helix_stream_in_t *s,
    json_t *c, size_t i)
{
    size_t                           k;
    json_t                          *v, *part;
    ngx_int_t                        index;
    const char                      *finish;
    ngx_http_helix_delta_t          *d;
    ngx_http_helix_gemini_stream_t  *gs;

    gs = (ngx_http_helix_gemini_stream_t *) s;

    v = json_object_get(c, "index");
    index = json_is_integer(v) ? json_integer_value(v) : (ngx_int_t) i;

    if (index < 0 || index >= NGX_HTTP_HELIX_CODEC_MAX_CHOICES) {
        return NGX_OK;
    }

    if (ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_ROLE, index)
        == NULL)
    {
        return NGX_ERROR;
    }

    json_array_foreach(json_object_get(json_object_get(c, "content"),
                                       "parts"), k, part)
    {
        if (ngx_http_helix_gemini_stream_part(s, index, part) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    finish = ngx_http_helix_gemini_finish_reason(
                                         json_object_get(c, "finishReason"));

    if (finish == NULL) {
        return NGX_OK;
    }

    /* Gemini says STOP after function calls too */

    if (ngx_strcmp(finish, "stop") == 0
        && (gs->tools[index / 64] & ((uint64_t) 1 << (index % 64))))
    {
        finish = "tool_calls";
    }

    d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_FINISH, index);
    if (d == NULL) {
        return NGX_ERROR;
    }

    d->finish = finish;
    gs->finish = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_gemini_stream_part(ngx_http_helix_stream_in_t *s,
    ngx_uint_t index, json_t *part)
{
    json_t                          *v, *fc, *args;
    ngx_http_helix_delta_t          *d;
    ngx_http_helix_gemini_stream_t  *gs;

    gs = (ngx_http_helix_gemini_stream_t *) s;

    v = json_object_get(part, "text");
    fc = json_object_get(part, "functionCall");

    if (json_is_string(v)) {
        /* thought summaries are not part of the answer */
        if (json_is_true(json_object_get(part, "thought"))) {
            return NGX_OK;
        }

        d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_TEXT, index);
        if (d == NULL) {
            return NGX_ERROR;
        }

        ngx_http_helix_codec_string(v, &d->text);

        return NGX_OK;
    }

    if (!json_is_object(fc)) {
        return NGX_OK;
    }

    d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_TOOL, index);
    if (d == NULL) {
        return NGX_ERROR;
    }

    args = json_object_get(fc, "args");

    if (args == NULL) {
        ngx_str_set(&d->text, "{}");

    } else if (ngx_http_helix_json_dump(s->pool, args, &d->text) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_helix_codec_string(json_object_get(fc, "id"), &d->id);
    ngx_http_helix_codec_string(json_object_get(fc, "name"), &d->name);

    gs->tools[index / 64] |= (uint64_t) 1 << (index % 64);

    return NGX_OK;
}


/* a stream that has said why it finished ends with its body */

static ngx_int_t
ngx_http_helix_gemini_stream_end(ngx_http_helix_stream_in_t *s)
{
    ngx_http_helix_gemini_stream_t  *gs;

    gs = (ngx_http_helix_gemini_stream_t *) s;

    if (!gs->finish) {
        return NGX_OK;
    }

    return ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_DONE, 0)
           ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_helix_gemini_headers(ngx_pool_t *pool, ngx_http_helix_provider_t *p,
    ngx_list_t *headers)
{
    if (p->api_key.len == 0) {
        return NGX_OK;
    }

    return ngx_http_helix_codec_header(pool, headers, "x-goog-api-key",
                                       p->api_key.data, p->api_key.len);
}


static const char *
ngx_http_helix_gemini_finish_reason(json_t *reason)
{
    return ngx_http_helix_codec_reason(ngx_http_helix_gemini_reasons,
                                       reason);
}
