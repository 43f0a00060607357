/*
 * Copyright (C) helix authors
 *
 * What the wire formats share: the calls the gateway makes (the checks
 * every format needs, then the codec's own function), the stream state
 * and its deltas, and the pieces the format files build their requests
 * and answers from.  Pure translation, no I/O.
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_codec.h"
#include "ngx_http_helix_jscan.h"


static void ngx_http_helix_codec_stream_cleanup(void *data);
static ngx_int_t ngx_http_helix_codec_parse(ngx_pool_t *pool,
    u_char *data, size_t len, json_t **root, ngx_str_t *err);
static ngx_int_t ngx_http_helix_codec_error_in(ngx_pool_t *pool,
    ngx_http_helix_codec_t *codec, json_t *root, ngx_str_t *err);
static ngx_int_t ngx_http_helix_codec_vector(json_t *v);
static json_t *ngx_http_helix_codec_json_text(ngx_pool_t *pool,
    json_t *v);
static ngx_int_t ngx_http_helix_codec_clean(ngx_pool_t *pool,
    u_char *data, size_t len, size_t max, ngx_uint_t markup,
    ngx_str_t *out);
static size_t ngx_http_helix_codec_utf8(u_char *p, u_char *last);


/* the gateway's calls */

ngx_int_t
ngx_http_helix_codec_chat_request(ngx_pool_t *pool,
    ngx_http_helix_codec_t *codec, json_t *req, ngx_str_t *model,
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

    return codec->chat_request_out(pool, req, model, stream, path, body, err);
}


ngx_int_t
ngx_http_helix_codec_chat_answer(ngx_pool_t *pool,
    ngx_http_helix_codec_t *codec, ngx_str_t *model, u_char *data,
    size_t len, json_t **out, ngx_str_t *err)
{
    json_t     *root;
    ngx_int_t   rc;

    *out = NULL;

    rc = ngx_http_helix_codec_parse(pool, data, len, &root, err);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_helix_codec_error_in(pool, codec, root, err);

    if (rc == NGX_OK) {
        rc = codec->chat_answer_in(pool, model, root, out, err);
    }

    json_decref(root);

    return rc;
}


ngx_int_t
ngx_http_helix_codec_embeddings_request(ngx_pool_t *pool,
    ngx_http_helix_codec_t *codec, json_t *req, ngx_str_t *model,
    ngx_str_t *path, json_t **body, ngx_str_t *err)
{
    size_t   i;
    json_t  *input, *v;

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

    if (codec->embeddings_request_out == NULL) {
        return ngx_http_helix_codec_fail(pool, err,
                                         "%V providers have no embeddings",
                                         &codec->name);
    }

    return codec->embeddings_request_out(pool, req, model, path, body, err);
}


ngx_int_t
ngx_http_helix_codec_embeddings_answer(ngx_pool_t *pool,
    ngx_http_helix_codec_t *codec, ngx_str_t *model, json_t *input,
    u_char *data, size_t len, json_t **out, ngx_str_t *err)
{
    json_t     *root;
    ngx_int_t   rc;

    *out = NULL;

    if (codec->embeddings_answer_in == NULL) {
        ngx_str_set(err, "this provider type has no embeddings");
        return NGX_DECLINED;
    }

    rc = ngx_http_helix_codec_parse(pool, data, len, &root, err);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_helix_codec_error_in(pool, codec, root, err);

    if (rc == NGX_OK) {
        rc = codec->embeddings_answer_in(pool, model, input, root, out, err);
    }

    json_decref(root);

    return rc;
}


ngx_int_t
ngx_http_helix_codec_headers(ngx_pool_t *pool, ngx_http_helix_codec_t *codec,
    ngx_http_helix_provider_t *p, ngx_uint_t stream, ngx_list_t *headers)
{
    if (codec->headers_out(pool, p, headers) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_helix_codec_header(pool, headers, "Content-Type",
                                    (u_char *) "application/json",
                                    sizeof("application/json") - 1)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (stream) {
        return ngx_http_helix_codec_header(pool, headers, "Accept",
                                           (u_char *) "text/event-stream",
                                           sizeof("text/event-stream") - 1);
    }

    return ngx_http_helix_codec_header(pool, headers, "Accept",
                                       (u_char *) "application/json",
                                       sizeof("application/json") - 1);
}


/* streams */

ngx_http_helix_stream_in_t *
ngx_http_helix_codec_stream_open(ngx_pool_t *pool, size_t size)
{
    ngx_pool_cleanup_t          *cln;
    ngx_http_helix_stream_in_t  *s;

    s = ngx_pcalloc(pool, size);
    if (s == NULL) {
        return NULL;
    }

    if (ngx_array_init(&s->deltas, pool, 4, sizeof(ngx_http_helix_delta_t))
        != NGX_OK)
    {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_helix_codec_stream_cleanup;
    cln->data = s;

    s->pool = pool;

    return s;
}


static void
ngx_http_helix_codec_stream_cleanup(void *data)
{
    ngx_http_helix_stream_in_t  *s = data;

    ngx_http_helix_codec_stream_release(s);
}


/* a new event: the one before is let go; NULL when it is not an object */

json_t *
ngx_http_helix_codec_stream_load(ngx_http_helix_stream_in_t *s, u_char *data,
    size_t len)
{
    ngx_http_helix_codec_stream_release(s);

    s->ev = json_loadb((char *) data, len, 0, NULL);

    return json_is_object(s->ev) ? s->ev : NULL;
}


/* the deltas have been used: what they point into goes */

void
ngx_http_helix_codec_stream_release(ngx_http_helix_stream_in_t *s)
{
    if (s->ev) {
        json_decref(s->ev);
        s->ev = NULL;
    }

    s->deltas.nelts = 0;
    s->pass = 0;
    s->usage_only = 0;
}


ngx_http_helix_delta_t *
ngx_http_helix_codec_delta(ngx_http_helix_stream_in_t *s, ngx_uint_t kind,
    ngx_uint_t index)
{
    ngx_http_helix_delta_t  *d;

    d = ngx_array_push(&s->deltas);
    if (d == NULL) {
        return NULL;
    }

    ngx_memzero(d, sizeof(ngx_http_helix_delta_t));

    d->kind = kind;
    d->index = index;
    d->tool = -1;

    return d;
}


/* the provider's own error event, or an event that is not JSON (NULL) */

ngx_int_t
ngx_http_helix_codec_stream_error(ngx_http_helix_stream_in_t *s, json_t *ev)
{
    json_t                  *e, *m;
    ngx_http_helix_delta_t  *d;

    d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_ERROR, 0);
    if (d == NULL) {
        return NGX_ERROR;
    }

    e = ev ? json_object_get(ev, "error") : NULL;
    m = json_is_object(e) ? json_object_get(e, "message") : e;

    if (json_is_string(m)) {
        ngx_http_helix_codec_string(m, &d->text);

    } else if (ev) {
        ngx_str_set(&d->text, "an error event");

    } else {
        ngx_str_set(&d->text, "an event that is not JSON");
    }

    return NGX_OK;
}


/* the integer counts of a usage object, when it is one */

ngx_int_t
ngx_http_helix_codec_stream_usage(ngx_http_helix_stream_in_t *s, json_t *u,
    const char *prompt, const char *completion)
{
    json_t                  *p, *c;
    ngx_http_helix_delta_t  *d;

    if (!json_is_object(u)) {
        return NGX_OK;
    }

    p = json_object_get(u, prompt);
    c = json_object_get(u, completion);

    if (!json_is_integer(p) && !json_is_integer(c)) {
        return NGX_OK;
    }

    d = ngx_http_helix_codec_delta(s, NGX_HTTP_HELIX_DELTA_USAGE, 0);
    if (d == NULL) {
        return NGX_ERROR;
    }

    if (json_is_integer(p)) {
        d->prompt = json_integer_value(p);
        d->has_prompt = 1;
    }

    if (json_is_integer(c)) {
        d->completion = json_integer_value(c);
        d->has_completion = 1;
    }

    return NGX_OK;
}


/* a JSON string's bytes (borrowed), data NULL when v is not a string */

void
ngx_http_helix_codec_string(json_t *v, ngx_str_t *s)
{
    if (json_is_string(v)) {
        s->data = (u_char *) json_string_value(v);
        s->len = json_string_length(v);

    } else {
        ngx_str_null(s);
    }
}


/* requests */

/*
 * The messages of an OpenAI chat request: the texts of system and
 * developer messages appended to "system", every other message to the
 * handler; "messages[i]: ..." says which one a DECLINED is about.
 */

ngx_int_t
ngx_http_helix_codec_messages(ngx_pool_t *pool, json_t *req, json_t *system,
    ngx_http_helix_codec_message_pt handler, void *data, ngx_str_t *err)
{
    size_t       i;
    json_t      *m;
    ngx_int_t    rc;
    ngx_str_t    e;
    const char  *role;

    json_array_foreach(json_object_get(req, "messages"), i, m) {

        role = json_string_value(json_object_get(m, "role"));

        if (role == NULL) {
            return ngx_http_helix_codec_fail(pool, err,
                                             "messages[%uz] has no role", i);
        }

        if (ngx_strcmp(role, "system") == 0
            || ngx_strcmp(role, "developer") == 0)
        {
            rc = ngx_http_helix_codec_texts(json_object_get(m, "content"),
                                            system, &e);
        } else {
            rc = handler(pool, m, role, data, &e);
        }

        if (rc == NGX_DECLINED) {
            return ngx_http_helix_codec_fail(pool, err, "messages[%uz]: %V",
                                             i, &e);
        }

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * tools[i] of an OpenAI request as a declaration {"name", "description"}
 * appended to "decls" (*decl, borrowed), its "parameters" in *params
 * (borrowed, may be NULL); *decl is NULL for a tool that is not a
 * function, which no format carries.
 */

ngx_int_t
ngx_http_helix_codec_tool(ngx_pool_t *pool, json_t *t, size_t i,
    json_t *decls, json_t **decl, json_t **params, ngx_str_t *err)
{
    json_t  *fn, *name, *v, *d;

    *decl = NULL;
    *params = NULL;

    if (!ngx_http_helix_codec_streq(json_object_get(t, "type"), "function")) {
        return NGX_OK;
    }

    fn = json_object_get(t, "function");
    name = json_object_get(fn, "name");

    if (!json_is_string(name)) {
        return ngx_http_helix_codec_fail(pool, err,
                                         "tools[%uz] has no function name", i);
    }

    d = ngx_http_helix_codec_add(decls, NULL, json_object());

    if (d == NULL
        || json_object_set_new(d, "name", json_deep_copy(name)) != 0)
    {
        return NGX_ERROR;
    }

    v = json_object_get(fn, "description");

    if (json_is_string(v)
        && json_object_set_new(d, "description", json_deep_copy(v)) != 0)
    {
        return NGX_ERROR;
    }

    *decl = d;
    *params = json_object_get(fn, "parameters");

    return NGX_OK;
}


/* the function name of an assistant message's tool call */

json_t *
ngx_http_helix_codec_call_name(json_t *call, ngx_str_t *err)
{
    json_t  *name;

    name = json_object_get(json_object_get(call, "function"), "name");

    if (!json_is_string(name)) {
        ngx_str_set(err, "a tool call has no function name");
        return NULL;
    }

    return name;
}


/* answers */

/*
 * The vectors of an embeddings answer: root[list] is an array of as many
 * objects as there were inputs, each with an array of numbers (or
 * OpenAI's base64 string) under "key".
 */

ngx_int_t
ngx_http_helix_codec_vectors(ngx_pool_t *pool, json_t *root, json_t *input,
    const char *list, const char *key, json_t **vectors, ngx_str_t *err)
{
    size_t   i, n;
    json_t  *l, *item;

    l = json_object_get(root, list);

    if (!json_is_array(l)) {
        return ngx_http_helix_codec_fail(pool, err, "no \"%s\" array", list);
    }

    n = json_array_size(input);

    if (json_array_size(l) != n) {
        return ngx_http_helix_codec_fail(pool, err,
                                         "%uz embeddings for %uz inputs",
                                         json_array_size(l), n);
    }

    json_array_foreach(l, i, item) {
        if (ngx_http_helix_codec_vector(json_object_get(item, key)) != NGX_OK)
        {
            return ngx_http_helix_codec_fail(pool, err,
                                             "embedding %uz is not a vector",
                                             i);
        }
    }

    *vectors = l;

    return NGX_OK;
}


/*
 * A stop reason of the format -> the OpenAI finish_reason (a static
 * string), "stop" for reasons not in the table; NULL when reason is not a
 * string (e.g. null while a stream is still running).
 */

const char *
ngx_http_helix_codec_reason(ngx_http_helix_reason_t *reasons, json_t *reason)
{
    const char  *s;

    s = json_string_value(reason);

    if (s == NULL) {
        return NULL;
    }

    for ( /* void */ ; reasons->name; reasons++) {
        if (ngx_strcmp(s, reasons->name) == 0) {
            return reasons->reason;
        }
    }

    /* OTHER, MALFORMED_FUNCTION_CALL, reasons yet to come */
    return "stop";
}


/* an embedding: an array of numbers, or OpenAI's base64 string */

static ngx_int_t
ngx_http_helix_codec_vector(json_t *v)
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
ngx_http_helix_codec_error_message(ngx_pool_t *pool,
    ngx_http_helix_codec_t *codec, ngx_uint_t status, u_char *data,
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

    m = codec->error_text(json_is_array(root) ? json_array_get(root, 0)
                                              : root);

    if (json_string_length(m)) {
        rc = ngx_http_helix_codec_clean(pool,
                                         (u_char *) json_string_value(m),
                                         json_string_length(m),
                                         NGX_HTTP_HELIX_CODEC_MSG_MAX, 0, msg);
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

        if (ngx_http_helix_codec_clean(pool, data, len,
                                       NGX_HTTP_HELIX_CODEC_BODY_MAX,
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

json_t *
ngx_http_helix_codec_error_text(json_t *root)
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
ngx_http_helix_codec_error_in(ngx_pool_t *pool, ngx_http_helix_codec_t *codec,
    json_t *root, ngx_str_t *err)
{
    json_t     *m;
    ngx_str_t   s;

    m = json_object_get(root, "error");

    /* some OpenAI-compatible servers send "error": null on success */
    if (!json_is_object(m) && !json_is_string(m)) {
        return NGX_OK;
    }

    m = codec->error_text(root);

    if (m == NULL) {
        ngx_str_set(err, "an error answer");
        return NGX_DECLINED;
    }

    s.data = (u_char *) json_string_value(m);
    s.len = ngx_min(json_string_length(m), NGX_HTTP_HELIX_CODEC_BODY_MAX);

    return ngx_http_helix_codec_fail(pool, err, "an error answer: %V", &s);
}


/* request headers */

ngx_int_t
ngx_http_helix_codec_header(ngx_pool_t *pool, ngx_list_t *headers,
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


ngx_int_t
ngx_http_helix_codec_chat_id(ngx_pool_t *pool, ngx_str_t *id)
{
    u_char  buf[NGX_HTTP_HELIX_CODEC_ID_MAX];

    id->len = ngx_http_helix_codec_id(buf, "chatcmpl-");

    id->data = ngx_pnalloc(pool, id->len);
    if (id->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(id->data, buf, id->len);

    return NGX_OK;
}


/* one event of a client's stream; data is stolen */

ngx_int_t
ngx_http_helix_codec_sse(ngx_http_helix_stream_out_t *s, const char *event,
    json_t *data)
{
    size_t                 len;
    ngx_http_helix_sse_t  *e;

    if (data == NULL) {
        return NGX_ERROR;
    }

    e = ngx_array_push(&s->events);
    if (e == NULL) {
        json_decref(data);
        return NGX_ERROR;
    }

    e->event.len = ngx_strlen(event);
    e->event.data = (u_char *) event;

    len = json_dumpb(data, NULL, 0, NGX_HTTP_HELIX_CODEC_DUMP_FLAGS);

    e->data.data = ngx_pnalloc(s->pool, len);
    if (e->data.data == NULL) {
        json_decref(data);
        return NGX_ERROR;
    }

    e->data.len = json_dumpb(data, (char *) e->data.data, len,
                             NGX_HTTP_HELIX_CODEC_DUMP_FLAGS);
    json_decref(data);

    return e->data.len ? NGX_OK : NGX_ERROR;
}


/* time, a counter and a random word: unique enough, never repeating */

size_t
ngx_http_helix_codec_id(u_char *buf, const char *prefix)
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

json_t *
ngx_http_helix_codec_add(json_t *parent, const char *key, json_t *v)
{
    if (key == NULL) {
        return (json_array_append_new(parent, v) == 0) ? v : NULL;
    }

    return (json_object_set_new(parent, key, v) == 0) ? v : NULL;
}


/* the client's request for an OpenAI-format provider: own fields out */

json_t *
ngx_http_helix_codec_copy(json_t *req, ngx_str_t *model)
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

ngx_int_t
ngx_http_helix_codec_push(json_t *list, const char *role, const char *key,
    json_t *items)
{
    int      rc;
    json_t  *last, *m;

    last = json_array_get(list, json_array_size(list) - 1);

    if (ngx_http_helix_codec_streq(json_object_get(last, "role"), role)) {
        rc = json_array_extend(json_object_get(last, key), items);
        json_decref(items);

        return (rc == 0) ? NGX_OK : NGX_ERROR;
    }

    m = ngx_http_helix_codec_add(list, NULL, json_object());

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

ngx_int_t
ngx_http_helix_codec_texts(json_t *content, json_t *texts, ngx_str_t *err)
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
        text = ngx_http_helix_codec_part_text(part);

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

json_t *
ngx_http_helix_codec_part_text(json_t *part)
{
    json_t  *text;

    if (json_is_string(part)) {
        return part;
    }

    if (!ngx_http_helix_codec_streq(json_object_get(part, "type"), "text"))
    {
        return NULL;
    }

    text = json_object_get(part, "text");

    return json_is_string(text) ? text : NULL;
}


ngx_int_t
ngx_http_helix_codec_image_url(json_t *part, ngx_str_t *url)
{
    json_t  *v;

    if (!ngx_http_helix_codec_streq(json_object_get(part, "type"),
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

ngx_int_t
ngx_http_helix_codec_data_url(ngx_str_t *url, ngx_str_t *mime,
    ngx_str_t *data)
{
    u_char  *p, *last, *b;

    if (!ngx_http_helix_codec_has_prefix(url, "data:")) {
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

json_t *
ngx_http_helix_codec_arguments(json_t *fn)
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

json_t *
ngx_http_helix_codec_join(ngx_pool_t *pool, json_t *content,
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
        text = ngx_http_helix_codec_part_text(part);
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
        text = ngx_http_helix_codec_part_text(part);
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


ngx_int_t
ngx_http_helix_codec_max_tokens(json_t *req, json_int_t *max,
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


ngx_int_t
ngx_http_helix_codec_n(json_t *req, json_int_t *n, ngx_str_t *err)
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

ngx_int_t
ngx_http_helix_codec_stops(json_t *req, json_t **out, ngx_str_t *err)
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


ngx_int_t
ngx_http_helix_codec_streq(json_t *v, const char *s)
{
    return json_is_string(v) && ngx_strcmp(json_string_value(v), s) == 0;
}


ngx_int_t
ngx_http_helix_codec_has_prefix(ngx_str_t *s, const char *prefix)
{
    size_t  n;

    n = ngx_strlen(prefix);

    return s->len >= n && ngx_strncmp(s->data, prefix, n) == 0;
}


/* a provider answer as a JSON object, or why it is not one */

static ngx_int_t
ngx_http_helix_codec_parse(ngx_pool_t *pool, u_char *data, size_t len,
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
            return ngx_http_helix_codec_fail(pool, err,
                                             "truncated JSON at byte %uz",
                                             doc.pos);
        }

        return ngx_http_helix_codec_fail(pool, err,
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

json_t *
ngx_http_helix_codec_completion(ngx_pool_t *pool, ngx_str_t *model,
    json_t *pid, json_t **choices)
{
    u_char  *p, buf[NGX_HTTP_HELIX_CODEC_ID_MAX];
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
                          ngx_http_helix_codec_id(buf, "chatcmpl-"));
    }

    o = json_object();

    if (json_object_set_new(o, "id", id) != 0) {
        json_decref(o);
        return NULL;
    }

    *choices = ngx_http_helix_codec_add(o, "choices", json_array());

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


/*
 * content and calls are borrowed; calls may be NULL.  "refusal": null as
 * OpenAI sends it: its schema requires the field in every message
 */

ngx_int_t
ngx_http_helix_codec_choice(json_t *choices, json_t *content,
    json_t *calls, const char *finish)
{
    json_t  *choice, *msg;

    choice = ngx_http_helix_codec_add(choices, NULL, json_object());
    msg = choice ? ngx_http_helix_codec_add(choice, "message",
                                            json_object())
                 : NULL;

    if (msg == NULL
        || json_object_set_new(choice, "index",
                               json_integer(json_array_size(choices) - 1))
           != 0
        || json_object_set_new(msg, "role", json_string("assistant")) != 0
        || json_object_set(msg, "content", content) != 0
        || json_object_set_new(msg, "refusal", json_null()) != 0
        || (calls && json_object_set(msg, "tool_calls", calls) != 0)
        || json_object_set_new(choice, "logprobs", json_null()) != 0
        || json_object_set_new(choice, "finish_reason", json_string(finish))
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_helix_codec_tool_call(ngx_pool_t *pool, json_t *calls,
    json_t *id, json_t *name, json_t *input)
{
    u_char   buf[NGX_HTTP_HELIX_CODEC_ID_MAX];
    json_t  *call, *fn;

    if (json_string_length(id)) {
        id = json_deep_copy(id);

    } else {
        id = json_stringn((char *) buf,
                          ngx_http_helix_codec_id(buf, "call_"));
    }

    call = ngx_http_helix_codec_add(calls, NULL, json_object());

    if (call == NULL) {
        json_decref(id);
        return NGX_ERROR;
    }

    fn = ngx_http_helix_codec_add(call, "function", json_object());

    if (json_object_set_new(call, "id", id) != 0
        || fn == NULL
        || json_object_set_new(call, "type", json_string("function")) != 0
        || json_object_set_new(fn, "name", json_deep_copy(name)) != 0
        || json_object_set_new(fn, "arguments",
                               ngx_http_helix_codec_json_text(pool, input))
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a value as compact JSON text, the form of OpenAI's "arguments" */

static json_t *
ngx_http_helix_codec_json_text(ngx_pool_t *pool, json_t *v)
{
    u_char  *buf;
    size_t   n;

    if (v == NULL || json_is_null(v)) {
        return json_string("{}");
    }

    n = json_dumpb(v, NULL, 0, NGX_HTTP_HELIX_CODEC_DUMP_FLAGS);
    if (n == 0) {
        return NULL;
    }

    buf = ngx_pnalloc(pool, n);
    if (buf == NULL) {
        return NULL;
    }

    if (json_dumpb(v, (char *) buf, n, NGX_HTTP_HELIX_CODEC_DUMP_FLAGS) != n) {
        return NULL;
    }

    return json_stringn((char *) buf, n);
}


/* the strings of "texts" concatenated, a new string */

json_t *
ngx_http_helix_codec_concat(ngx_pool_t *pool, json_t *texts)
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

ngx_int_t
ngx_http_helix_codec_usage(json_t *out, json_int_t prompt,
    json_int_t completion, json_int_t total)
{
    json_t  *u;

    u = ngx_http_helix_codec_add(out, "usage", json_object());

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

json_int_t
ngx_http_helix_codec_tokens(json_t *o, const char *key)
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

        n = (d >= (double) NGX_HTTP_HELIX_CODEC_TOKENS_MAX)
            ? NGX_HTTP_HELIX_CODEC_TOKENS_MAX : (json_int_t) d;

    } else {
        return 0;
    }

    if (n < 0) {
        return 0;
    }

    return ngx_min(n, NGX_HTTP_HELIX_CODEC_TOKENS_MAX);
}


/* a DECLINED with a formatted message, made printable */

ngx_int_t
ngx_http_helix_codec_fail(ngx_pool_t *pool, ngx_str_t *err,
    const char *fmt, ...)
{
    u_char   *p, buf[NGX_HTTP_HELIX_CODEC_MSG_MAX];
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    if (ngx_http_helix_codec_clean(pool, buf, p - buf, sizeof(buf), 0, err)
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
ngx_http_helix_codec_clean(ngx_pool_t *pool, u_char *data, size_t len,
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
        n = ngx_http_helix_codec_utf8(p, last);

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
ngx_http_helix_codec_utf8(u_char *p, u_char *last)
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
