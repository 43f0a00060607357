/*
 * Copyright (C) helix authors
 *
 * OpenAI's chat completions and embeddings: the gateway's own format, so
 * requests go out nearly as they are and answers come in as they came;
 * only what the gateway relies on is checked or filled in.  Also the
 * format of OpenAI-compatible servers (DeepSeek, Mistral, OpenRouter,
 * Ollama, vLLM).
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_codec.h"
#include "ngx_http_helix_jscan.h"
#include "ngx_http_helix_openai.h"


typedef struct {
    ngx_http_helix_stream_in_t  s;
    unsigned                    id:1;           /* the answer's id seen */
} ngx_http_helix_openai_stream_t;


static ngx_int_t ngx_http_helix_openai_chat_request(ngx_pool_t *pool,
    json_t *req, ngx_str_t *model, ngx_uint_t stream, ngx_str_t *path,
    json_t **body, ngx_str_t *err);
static ngx_int_t ngx_http_helix_openai_chat_answer(ngx_pool_t *pool,
    ngx_str_t *model, json_t *root, json_t **out, ngx_str_t *err);
static ngx_int_t ngx_http_helix_openai_embeddings_request(ngx_pool_t *pool,
    json_t *req, ngx_str_t *model, ngx_str_t *path, json_t **body,
    ngx_str_t *err);
static ngx_int_t ngx_http_helix_openai_embeddings_answer(ngx_pool_t *pool,
    ngx_str_t *model, json_t *input, json_t *root, json_t **out,
    ngx_str_t *err);
static ngx_int_t ngx_http_helix_openai_pass(ngx_pool_t *pool,
    ngx_uint_t embeddings, size_t inputs, u_char *data, size_t len,
    uint64_t *prompt, uint64_t *completion);
static ngx_int_t ngx_http_helix_openai_jtokens(ngx_http_helix_jdoc_t *doc,
    ngx_uint_t obj, const char *key, uint64_t *n);
static ngx_http_helix_stream_in_t *ngx_http_helix_openai_stream_open(
    ngx_pool_t *pool);
static ngx_int_t ngx_http_helix_openai_stream_event(
    ngx_http_helix_stream_in_t *s, ngx_str_t *event, u_char *data,
    size_t len);
static ngx_int_t ngx_http_helix_openai_stream_choice(
    ngx_http_helix_stream_in_t *s, json_t *c, size_t i);
static ngx_int_t ngx_http_helix_openai_headers(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, ngx_list_t *headers);
static const char *ngx_http_helix_openai_finish_reason(json_t *reason);


ngx_http_helix_codec_t  ngx_http_helix_openai_codec = {
    ngx_string("openai"),
    1,                                          /* passthrough */
    1,                                          /* base64 */
    ngx_string("/v1/chat/completions"),
    ngx_string("/v1/embeddings"),
    ngx_http_helix_openai_chat_request,
    ngx_http_helix_openai_chat_answer,
    ngx_http_helix_openai_embeddings_request,
    ngx_http_helix_openai_embeddings_answer,
    ngx_http_helix_openai_pass,
    ngx_http_helix_openai_stream_open,
    ngx_http_helix_openai_stream_event,
    NULL,                                       /* the [DONE] event ends */
    ngx_http_helix_codec_error_text,
    ngx_http_helix_openai_headers,
    ngx_http_helix_openai_finish_reason,
    NULL,                                       /* no client direction */
    NULL,
    NULL,
    NULL,
    NULL
};


static ngx_int_t
ngx_http_helix_openai_chat_request(ngx_pool_t *pool, json_t *req,
    ngx_str_t *model, ngx_uint_t stream, ngx_str_t *path, json_t **body,
    ngx_str_t *err)
{
    json_t  *b, *so;

    b = ngx_http_helix_codec_copy(req, model);
    if (b == NULL) {
        return NGX_ERROR;
    }

    if (stream) {
        if (json_object_set_new(b, "stream", json_true()) != 0) {
            goto failed;
        }

        /* usage is wanted for metrics and the cache, asked for or not */

        so = json_object_get(b, "stream_options");

        if (!json_is_object(so)) {
            so = json_object();
            if (so == NULL || json_object_set_new(b, "stream_options", so)) {
                goto failed;
            }
        }

        if (json_object_set_new(so, "include_usage", json_true()) != 0) {
            goto failed;
        }

    } else {
        /* OpenAI rejects stream_options without "stream": true */
        json_object_del(b, "stream");
        json_object_del(b, "stream_options");
    }

    *path = ngx_http_helix_openai_codec.chat_path;
    *body = b;

    return NGX_OK;

failed:

    json_decref(b);

    return NGX_ERROR;
}


/*
 * An OpenAI answer is kept as is; only what the gateway relies on is
 * checked or filled in, usage with integer counts in particular.
 */

static ngx_int_t
ngx_http_helix_openai_chat_answer(ngx_pool_t *pool, ngx_str_t *model,
    json_t *root, json_t **out, ngx_str_t *err)
{
    u_char      buf[NGX_HTTP_HELIX_CODEC_ID_MAX];
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
            return ngx_http_helix_codec_fail(pool, err,
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
                                 ngx_http_helix_codec_id(buf, "chatcmpl-")))
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

    pt = ngx_http_helix_codec_tokens(usage, "prompt_tokens");
    ct = ngx_http_helix_codec_tokens(usage, "completion_tokens");
    tt = ngx_http_helix_codec_tokens(usage, "total_tokens");

    if (!json_is_object(usage)) {
        usage = ngx_http_helix_codec_add(root, "usage", json_object());
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
ngx_http_helix_openai_embeddings_request(ngx_pool_t *pool, json_t *req,
    ngx_str_t *model, ngx_str_t *path, json_t **body, ngx_str_t *err)
{
    json_t  *b;

    b = ngx_http_helix_codec_copy(req, model);
    if (b == NULL) {
        return NGX_ERROR;
    }

    *path = ngx_http_helix_openai_codec.embeddings_path;
    *body = b;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_openai_embeddings_answer(ngx_pool_t *pool, ngx_str_t *model,
    json_t *input, json_t *root, json_t **out, ngx_str_t *err)
{
    json_t      *list, *usage;
    ngx_int_t    rc;
    json_int_t   pt, tt;

    rc = ngx_http_helix_codec_vectors(pool, root, input, "data", "embedding",
                                      &list, err);
    if (rc != NGX_OK) {
        return rc;
    }

    usage = json_object_get(root, "usage");
    pt = ngx_http_helix_codec_tokens(usage, "prompt_tokens");
    tt = ngx_http_helix_codec_tokens(usage, "total_tokens");

    if (!json_is_object(usage)) {
        usage = ngx_http_helix_codec_add(root, "usage", json_object());
    }

    if (usage == NULL
        || json_object_set_new(usage, "prompt_tokens", json_integer(pt)) != 0
        || json_object_set_new(usage, "total_tokens",
                               json_integer(tt ? tt : pt))
           != 0
        || (!json_is_string(json_object_get(root, "object"))
            && json_object_set_new(root, "object", json_string("list")) != 0)
        || (!json_is_string(json_object_get(root, "model"))
            && json_object_set_new(root, "model",
                                   json_stringn((char *) model->data,
                                                model->len))
               != 0))
    {
        return NGX_ERROR;
    }

    *out = json_incref(root);

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_openai_pass(ngx_pool_t *pool, ngx_uint_t embeddings,
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

    if (ngx_http_helix_openai_jtokens(&doc, usage, "prompt_tokens", prompt)
        != NGX_OK
        || (!embeddings
            && ngx_http_helix_openai_jtokens(&doc, usage,
                                               "completion_tokens",
                                               completion)
               != NGX_OK))
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* ngx_http_helix_codec_tokens() on a scanned document */

static ngx_int_t
ngx_http_helix_openai_jtokens(ngx_http_helix_jdoc_t *doc, ngx_uint_t obj,
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

    *n = (k < 0) ? 0 : (uint64_t) ngx_min(k, NGX_HTTP_HELIX_CODEC_TOKENS_MAX);

    return NGX_OK;
}



/* streams: chat.completion.chunk events, then [DONE] */

static ngx_http_helix_stream_in_t *
ngx_http_helix_openai_stream_open(ngx_pool_t *pool)
{
    return ngx_http_helix_codec_stream_open(pool,
                                      sizeof(ngx_http_helix_openai_stream_t));
}


static ngx_int_t
ngx_http_helix_openai_stream_event(ngx_http_helix_stream_in_t *s,
    ngx_str_t *event, u_char *data, size_t len)
{
    size_t                           i;
    json_t                          *ev, *choices, *c, *v;
    ngx_http_helix_delta_t          *d;
    ngx_http_helix_openai_stream_t  *os;

    os = (ngx_http_helix_openai_stream_t *) s;

    if (len == 6 && ngx_strncmp(data, "[DONE]", 6) == 0) {
        d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_DONE, 0);
        return d ? NGX_OK : NGX_ERROR;
    }

    ev = ngx_http_helix_codec_stream_load(s, data, len);

    if (ev == NULL || json_object_get(ev, "error")) {
        return ngx_http_helix_codec_stream_error(s, ev);
    }

    v = json_object_get(ev, "id");

    if (!os->id && json_string_length(v)) {
        d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_ID, 0);
        if (d == NULL) {
            return NGX_ERROR;
        }

        ngx_http_helix_codec_string(v, &d->text);
        os->id = 1;
    }

    choices = json_object_get(ev, "choices");

    json_array_foreach(choices, i, c) {
        if (ngx_http_helix_openai_stream_choice(s, c, i) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    v = json_object_get(ev, "usage");

    if (ngx_http_helix_codec_stream_usage(s, v, "prompt_tokens",
                                          "completion_tokens")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* a chat client gets this chunk as it is (see usage_only) */

    s->pass = 1;
    s->usage_only = (json_array_size(choices) == 0 && json_is_object(v));

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_openai_stream_choice(ngx_http_helix_stream_in_t *s, json_t *c,
    size_t i)
{
    size_t                   k;
    json_t                  *delta, *v, *tc, *fn;
    ngx_int_t                index;
    const char              *str;
    ngx_http_helix_delta_t  *d;

    v = json_object_get(c, "index");
    index = json_is_integer(v) ? json_integer_value(v) : (ngx_int_t) i;

    if (index < 0 || index >= NGX_HTTP_HELIX_CODEC_MAX_CHOICES) {
        return NGX_OK;
    }

    delta = json_object_get(c, "delta");
    v = json_object_get(delta, "content");

    if (json_is_string(v)) {
        d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_TEXT, index);
        if (d == NULL) {
            return NGX_ERROR;
        }

        ngx_http_helix_codec_string(v, &d->text);
    }

    json_array_foreach(json_object_get(delta, "tool_calls"), k, tc) {
        d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_TOOL, index);
        if (d == NULL) {
            return NGX_ERROR;
        }

        v = json_object_get(tc, "index");
        d->tool = json_is_integer(v) ? json_integer_value(v) : (ngx_int_t) k;

        fn = json_object_get(tc, "function");
        v = json_object_get(fn, "arguments");
        str = json_is_string(v) ? json_string_value(v) : "";

        ngx_http_helix_codec_string(json_object_get(tc, "id"), &d->id);
        ngx_http_helix_codec_string(json_object_get(fn, "name"), &d->name);
        d->text.data = (u_char *) str;
        d->text.len = ngx_strlen(str);
    }

    str = json_string_value(json_object_get(c, "finish_reason"));

    if (str) {
        d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_FINISH, index);
        if (d == NULL) {
            return NGX_ERROR;
        }

        d->finish = str;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_openai_headers(ngx_pool_t *pool, ngx_http_helix_provider_t *p,
    ngx_list_t *headers)
{
    u_char     *v;
    ngx_str_t  *key;

    key = &p->api_key;

    if (key->len == 0) {
        return NGX_OK;
    }

    v = ngx_pnalloc(pool, sizeof("Bearer ") - 1 + key->len);
    if (v == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_cpymem(v, "Bearer ", sizeof("Bearer ") - 1),
               key->data, key->len);

    return ngx_http_helix_codec_header(pool, headers, "Authorization", v,
                                       sizeof("Bearer ") - 1 + key->len);
}


static const char *
ngx_http_helix_openai_finish_reason(json_t *reason)
{
    return json_string_value(reason);
}
