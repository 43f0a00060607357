/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_CODEC_H_INCLUDED_
#define _NGX_HTTP_HELIX_CODEC_H_INCLUDED_


#include <jansson.h>

#include "ngx_http_helix.h"


/*
 * A wire format is a codec: one table of functions in one file
 * (ngx_http_helix_openai.c, _anthropic.c, _gemini.c), found by provider
 * type with ngx_http_helix_formats_codec().  Inside, the gateway speaks
 * OpenAI's chat and embeddings formats; a provider format translates the
 * gateway's requests out and the provider's answers in.  A client format
 * is the same table used the other way round: its functions follow the
 * provider ones (the request in, the answer and stream events out).
 * Pure translation, no I/O, no nginx request.
 *
 * Every json_t handed back is a new reference the caller json_decref()s;
 * every string handed back lives in the given pool.  Everything built
 * is owned by one root json_t from the moment it is created (see
 * ngx_http_helix_codec_add()), so a failure only has to drop that root.
 */


#define NGX_HTTP_HELIX_CODEC_MAX_CHOICES  128

#define NGX_HTTP_HELIX_CODEC_ID_MAX       64

/* how much of a provider's error text reaches clients and logs */
#define NGX_HTTP_HELIX_CODEC_BODY_MAX     200
#define NGX_HTTP_HELIX_CODEC_MSG_MAX      512

/* hostile token counts are capped so that sums cannot overflow */
#define NGX_HTTP_HELIX_CODEC_TOKENS_MAX   ((json_int_t) 1 << 40)

#define NGX_HTTP_HELIX_CODEC_DUMP_FLAGS                                      \
    (JSON_COMPACT|JSON_ENCODE_ANY|JSON_PRESERVE_ORDER)


/*
 * A stream event in the gateway's terms: one piece of an OpenAI
 * chat.completion.chunk (one choice's role, text, tool call or finish
 * reason), or what the stream as a whole learns (its id, the usage, its
 * end, an error).  Strings point into the event (valid until the next
 * one) or the pool.
 */

typedef enum {
    NGX_HTTP_HELIX_DELTA_ID = 0,        /* text: the answer's id */
    NGX_HTTP_HELIX_DELTA_ROLE,          /* the choice starts */
    NGX_HTTP_HELIX_DELTA_TEXT,          /* text: content */
    NGX_HTTP_HELIX_DELTA_TOOL,          /* tool, id, name; text: args */
    NGX_HTTP_HELIX_DELTA_FINISH,        /* finish: OpenAI's reason */
    NGX_HTTP_HELIX_DELTA_USAGE,         /* prompt, completion */
    NGX_HTTP_HELIX_DELTA_DONE,          /* the provider's last event */
    NGX_HTTP_HELIX_DELTA_ERROR          /* text: the provider's message */
} ngx_http_helix_delta_e;


typedef struct {
    ngx_uint_t                  kind;
    ngx_uint_t                  index;          /* the choice */
    ngx_int_t                   tool;           /* -1: a new call */
    ngx_str_t                   id;             /* data NULL: none */
    ngx_str_t                   name;           /* data NULL: none */
    ngx_str_t                   text;
    const char                 *finish;
    json_int_t                  prompt;
    json_int_t                  completion;
    unsigned                    has_prompt:1;
    unsigned                    has_completion:1;
} ngx_http_helix_delta_t;


/*
 * A provider stream's state: this header first, then what the codec
 * keeps (ngx_http_helix_codec_stream_open() allocates it).  After each
 * event, deltas holds what it said; pass is set when the event is an
 * OpenAI chat chunk a chat client may get as it came (usage_only: one
 * that carries the usage and nothing else).
 */

typedef struct {
    ngx_pool_t                 *pool;
    json_t                     *ev;             /* deltas point into it */
    ngx_array_t                 deltas;         /* ngx_http_helix_delta_t */
    unsigned                    pass:1;
    unsigned                    usage_only:1;
} ngx_http_helix_stream_in_t;


/*
 * A client's stream: this header first, then what the codec keeps.
 * events: ngx_http_helix_sse_t the caller writes and empties.
 */

typedef struct {
    ngx_str_t                   event;          /* len 0: no "event:" */
    ngx_str_t                   data;
} ngx_http_helix_sse_t;


typedef struct {
    ngx_pool_t                 *pool;
    ngx_array_t                 events;         /* ngx_http_helix_sse_t */
} ngx_http_helix_stream_out_t;


typedef struct {
    const char                 *name;
    const char                 *reason;
} ngx_http_helix_reason_t;


typedef struct ngx_http_helix_codec_s  ngx_http_helix_codec_t;

struct ngx_http_helix_codec_s {
    ngx_str_t                   name;           /* "openai", ... */

    /*
     * The gateway's own format: a client's request may go to the
     * provider as it came (to chat_path or embeddings_path), and the
     * provider's answer back to the client as it came.
     */
    unsigned                    passthrough:1;
    /* embeddings answered as base64 when asked ("encoding_format") */
    unsigned                    base64:1;

    ngx_str_t                   chat_path;
    ngx_str_t                   embeddings_path;

    /*
     * The provider direction.  chat_request_out: an OpenAI chat request
     * (checked: an object with non-empty "messages"; borrowed) -> *body
     * and *path (URI path and query on the provider); NGX_DECLINED with
     * *err for a request this format cannot carry.
     */
    ngx_int_t                 (*chat_request_out)(ngx_pool_t *pool,
                                  json_t *req, ngx_str_t *model,
                                  ngx_uint_t stream, ngx_str_t *path,
                                  json_t **body, ngx_str_t *err);

    /* the provider's answer (a JSON object, no error) -> chat.completion */
    ngx_int_t                 (*chat_answer_in)(ngx_pool_t *pool,
                                  ngx_str_t *model, json_t *root,
                                  json_t **out, ngx_str_t *err);

    /*
     * Embeddings, NULL when the format has none.  req: "input" is a
     * non-empty array of strings; input: that array.
     */
    ngx_int_t                 (*embeddings_request_out)(ngx_pool_t *pool,
                                  json_t *req, ngx_str_t *model,
                                  ngx_str_t *path, json_t **body,
                                  ngx_str_t *err);
    ngx_int_t                 (*embeddings_answer_in)(ngx_pool_t *pool,
                                  ngx_str_t *model, json_t *input,
                                  json_t *root, json_t **out,
                                  ngx_str_t *err);

    /*
     * passthrough formats: NGX_OK when an answer that goes to the client
     * as it came passes the checks of the two *_answer_in functions, with
     * its token counts, without a tree; NGX_DECLINED when it does not or
     * cannot be told (then those functions decide).  inputs: embeddings
     * inputs (0 for chat).
     */
    ngx_int_t                 (*answer_pass)(ngx_pool_t *pool,
                                  ngx_uint_t embeddings, size_t inputs,
                                  u_char *data, size_t len, uint64_t *prompt,
                                  uint64_t *completion);

    /*
     * Streams: stream_open allocates the codec's state for one provider
     * attempt; stream_event_in translates one SSE event (event: its
     * "event:" field, may be empty; data: its data lines) into deltas;
     * stream_end_in, NULL when only an event ends a stream, says whether
     * the end of the body is the stream's end (a DONE delta).
     */
    ngx_http_helix_stream_in_t *(*stream_open)(ngx_pool_t *pool);
    ngx_int_t                 (*stream_event_in)(
                                  ngx_http_helix_stream_in_t *s,
                                  ngx_str_t *event, u_char *data,
                                  size_t len);
    ngx_int_t                 (*stream_end_in)(
                                  ngx_http_helix_stream_in_t *s);

    /* the message of an error body (parsed), NULL if none (borrowed) */
    json_t                   *(*error_text)(json_t *root);

    /* credentials and version headers (Content-Type, Accept are added) */
    ngx_int_t                 (*headers_out)(ngx_pool_t *pool,
                                  ngx_http_helix_provider_t *p,
                                  ngx_list_t *headers);

    /* the format's stop reason -> OpenAI's finish_reason; NULL: none */
    const char               *(*finish_reason)(json_t *reason);

    /*
     * The client direction, NULL where the format is not one clients
     * speak.  request_in: the client's request (a JSON object) -> an
     * OpenAI chat request (*req, new); NGX_DECLINED with *err: 400.
     * answer_out: an OpenAI chat.completion (borrowed) -> the client's
     * answer.  error_out: an error -> the client's body and *status.
     */
    ngx_int_t                 (*request_in)(ngx_pool_t *pool, json_t *body,
                                  json_t **req, ngx_str_t *err);
    ngx_int_t                 (*answer_out)(ngx_pool_t *pool,
                                  json_t *answer, json_t **out);
    ngx_int_t                 (*error_out)(ngx_pool_t *pool,
                                  ngx_uint_t *status, const char *code,
                                  u_char *msg, size_t len, ngx_str_t *body);

    /*
     * Streams out: stream_out_open starts the client's stream of one
     * answer (id, model: the gateway's); stream_out turns one delta into
     * the client's SSE events, appended to s->events.
     */
    ngx_http_helix_stream_out_t *(*stream_out_open)(ngx_pool_t *pool,
                                  ngx_str_t *id, ngx_str_t *model);
    ngx_int_t                 (*stream_out)(ngx_http_helix_stream_out_t *s,
                                  ngx_http_helix_delta_t *d);
};


/*
 * The calls the gateway makes: shared checks, then the codec's function.
 * Returns NGX_OK, NGX_DECLINED with *err (the request cannot go to this
 * provider: 400; the answer is not valid: 502), NGX_ERROR (memory).
 */

ngx_int_t ngx_http_helix_codec_chat_request(ngx_pool_t *pool,
    ngx_http_helix_codec_t *codec, json_t *req, ngx_str_t *model,
    ngx_uint_t stream, ngx_str_t *path, json_t **body, ngx_str_t *err);
ngx_int_t ngx_http_helix_codec_chat_answer(ngx_pool_t *pool,
    ngx_http_helix_codec_t *codec, ngx_str_t *model, u_char *data,
    size_t len, json_t **out, ngx_str_t *err);
ngx_int_t ngx_http_helix_codec_embeddings_request(ngx_pool_t *pool,
    ngx_http_helix_codec_t *codec, json_t *req, ngx_str_t *model,
    ngx_str_t *path, json_t **body, ngx_str_t *err);
ngx_int_t ngx_http_helix_codec_embeddings_answer(ngx_pool_t *pool,
    ngx_http_helix_codec_t *codec, ngx_str_t *model, json_t *input,
    u_char *data, size_t len, json_t **out, ngx_str_t *err);

/*
 * A provider error answer (status >= 400, body anything) -> a short
 * printable UTF-8 message in *msg: the provider's error message when the
 * body has one, else "HTTP <status>" plus a cleaned start of the body.
 */
ngx_int_t ngx_http_helix_codec_error_message(ngx_pool_t *pool,
    ngx_http_helix_codec_t *codec, ngx_uint_t status, u_char *data,
    size_t len, ngx_str_t *msg);

/* the codec's headers, then Content-Type and Accept (event-stream) */
ngx_int_t ngx_http_helix_codec_headers(ngx_pool_t *pool,
    ngx_http_helix_codec_t *codec, ngx_http_helix_provider_t *p,
    ngx_uint_t stream, ngx_list_t *headers);

/* for the client codecs: one SSE event (pool copies), its data built */
ngx_int_t ngx_http_helix_codec_sse(ngx_http_helix_stream_out_t *s,
    const char *event, json_t *data);

/* a fresh "chatcmpl-<24 hex>" id (pool) for answers that carry none */
ngx_int_t ngx_http_helix_codec_chat_id(ngx_pool_t *pool, ngx_str_t *id);


/* for the codecs: streams */

ngx_http_helix_stream_in_t *ngx_http_helix_codec_stream_open(
    ngx_pool_t *pool, size_t size);
json_t *ngx_http_helix_codec_stream_load(ngx_http_helix_stream_in_t *s,
    u_char *data, size_t len);
void ngx_http_helix_codec_stream_release(ngx_http_helix_stream_in_t *s);
ngx_http_helix_delta_t *ngx_http_helix_codec_delta(
    ngx_http_helix_stream_in_t *s, ngx_uint_t kind, ngx_uint_t index);
ngx_int_t ngx_http_helix_codec_stream_error(ngx_http_helix_stream_in_t *s,
    json_t *ev);
ngx_int_t ngx_http_helix_codec_stream_usage(ngx_http_helix_stream_in_t *s,
    json_t *u, const char *prompt, const char *completion);
void ngx_http_helix_codec_string(json_t *v, ngx_str_t *s);


/* for the codecs: requests */

typedef ngx_int_t (*ngx_http_helix_codec_message_pt)(ngx_pool_t *pool,
    json_t *m, const char *role, void *data, ngx_str_t *err);

ngx_int_t ngx_http_helix_codec_messages(ngx_pool_t *pool, json_t *req,
    json_t *system, ngx_http_helix_codec_message_pt handler, void *data,
    ngx_str_t *err);
ngx_int_t ngx_http_helix_codec_tool(ngx_pool_t *pool, json_t *t, size_t i,
    json_t *decls, json_t **decl, json_t **params, ngx_str_t *err);
json_t *ngx_http_helix_codec_call_name(json_t *call, ngx_str_t *err);

json_t *ngx_http_helix_codec_add(json_t *parent, const char *key,
    json_t *v);
json_t *ngx_http_helix_codec_copy(json_t *req, ngx_str_t *model);
ngx_int_t ngx_http_helix_codec_push(json_t *list, const char *role,
    const char *key, json_t *items);
ngx_int_t ngx_http_helix_codec_texts(json_t *content, json_t *texts,
    ngx_str_t *err);
json_t *ngx_http_helix_codec_part_text(json_t *part);
ngx_int_t ngx_http_helix_codec_image_url(json_t *part, ngx_str_t *url);
ngx_int_t ngx_http_helix_codec_data_url(ngx_str_t *url, ngx_str_t *mime,
    ngx_str_t *data);
json_t *ngx_http_helix_codec_arguments(json_t *fn);
json_t *ngx_http_helix_codec_join(ngx_pool_t *pool, json_t *content,
    const char *sep);
ngx_int_t ngx_http_helix_codec_max_tokens(json_t *req, json_int_t *max,
    ngx_str_t *err);
ngx_int_t ngx_http_helix_codec_n(json_t *req, json_int_t *n,
    ngx_str_t *err);
ngx_int_t ngx_http_helix_codec_stops(json_t *req, json_t **out,
    ngx_str_t *err);
ngx_int_t ngx_http_helix_codec_streq(json_t *v, const char *s);
ngx_int_t ngx_http_helix_codec_has_prefix(ngx_str_t *s, const char *prefix);
ngx_int_t ngx_http_helix_codec_header(ngx_pool_t *pool, ngx_list_t *headers,
    const char *key, u_char *value, size_t len);


/* for the codecs: answers */

json_t *ngx_http_helix_codec_completion(ngx_pool_t *pool, ngx_str_t *model,
    json_t *pid, json_t **choices);
ngx_int_t ngx_http_helix_codec_choice(json_t *choices, json_t *content,
    json_t *calls, const char *finish);
ngx_int_t ngx_http_helix_codec_tool_call(ngx_pool_t *pool, json_t *calls,
    json_t *id, json_t *name, json_t *input);
json_t *ngx_http_helix_codec_concat(ngx_pool_t *pool, json_t *texts);
ngx_int_t ngx_http_helix_codec_usage(json_t *out, json_int_t prompt,
    json_int_t completion, json_int_t total);
json_int_t ngx_http_helix_codec_tokens(json_t *o, const char *key);
size_t ngx_http_helix_codec_id(u_char *buf, const char *prefix);
ngx_int_t ngx_http_helix_codec_vectors(ngx_pool_t *pool, json_t *root,
    json_t *input, const char *list, const char *key, json_t **vectors,
    ngx_str_t *err);
const char *ngx_http_helix_codec_reason(ngx_http_helix_reason_t *reasons,
    json_t *reason);
json_t *ngx_http_helix_codec_error_text(json_t *root);
ngx_int_t ngx_http_helix_codec_fail(ngx_pool_t *pool, ngx_str_t *err,
    const char *fmt, ...);


#endif /* _NGX_HTTP_HELIX_CODEC_H_INCLUDED_ */
