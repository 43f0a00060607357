/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_PROVIDER_H_INCLUDED_
#define _NGX_HTTP_HELIX_PROVIDER_H_INCLUDED_


#include <jansson.h>

#include "ngx_http_helix.h"


/*
 * Provider adapters: the gateway speaks OpenAI's chat and embeddings
 * formats inside; these functions translate a request into each provider
 * type's wire format and the provider's answer back.  Pure translation,
 * no I/O.  Every json_t handed back is a new reference the caller
 * json_decref()s; every string handed back lives in the given pool.
 */


/*
 * Build the provider request for a chat completion.
 *   req:   OpenAI chat request (borrowed; not modified)
 *   model: the provider model name to use (overrides req.model)
 *   stream: non-zero for a streaming request
 * Out: *path = URI path (+ query, without leading location prefix) on the
 *   provider, e.g. "/v1/chat/completions", "/v1/messages",
 *   "/v1beta/models/gemini-1.5-pro:generateContent" or
 *   ":streamGenerateContent?alt=sse" for streams;
 *   *body = new json_t reference (caller json_decref()s).
 * Returns NGX_OK, or NGX_DECLINED with *err (static or pool string) for a
 * request this provider cannot serve (caller answers 400), NGX_ERROR on
 * allocation failure.
 */
ngx_int_t ngx_http_helix_provider_chat_request(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, json_t *req, ngx_str_t *model,
    ngx_uint_t stream, ngx_str_t *path, json_t **body, ngx_str_t *err);

/*
 * Parse a provider's non-streaming chat answer (raw bytes, HTTP 2xx)
 * into an OpenAI chat.completion object (new reference in *out) with
 * "model" = the model requested, "id" (from the provider's id when it has
 * one, else generated), "created" = ngx_time(), choices with the message
 * (content, tool_calls) and OpenAI finish_reason, and usage
 * {prompt_tokens, completion_tokens, total_tokens}.
 * Returns NGX_OK, or NGX_DECLINED with *err saying what is wrong ("not
 * JSON ...", "no choices", "truncated JSON at byte N", ...) when the bytes
 * are not a valid answer of that provider type (caller answers 502),
 * NGX_ERROR on allocation failure.
 */
ngx_int_t ngx_http_helix_provider_chat_response(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, ngx_str_t *model, u_char *data,
    size_t len, json_t **out, ngx_str_t *err);

/*
 * Embeddings.  req: OpenAI embeddings request with "input" already
 * normalised to a non-empty array of strings (borrowed).  openai: POST
 * /v1/embeddings, the request passed through; gemini: POST
 * /v1beta/models/<model>:batchEmbedContents ("dimensions" becomes
 * outputDimensionality); anthropic: NGX_DECLINED.
 */
ngx_int_t ngx_http_helix_provider_embeddings_request(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, json_t *req, ngx_str_t *model,
    ngx_str_t *path, json_t **body, ngx_str_t *err);

/*
 * -> OpenAI {"object":"list","data":[{"object":"embedding","index":i,
 * "embedding":[...]}],"model","usage":{"prompt_tokens","total_tokens"}}.
 * input: the array of strings given to the request function; the number
 * of vectors must equal its size.  Gemini reports no usage: prompt_tokens
 * is estimated as ceil(characters / 4).
 */
ngx_int_t ngx_http_helix_provider_embeddings_response(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, ngx_str_t *model, json_t *input,
    u_char *data, size_t len, json_t **out, ngx_str_t *err);

/*
 * An OpenAI provider's chat or embeddings answer that goes to the client
 * as it came needs no tree: NGX_OK when it passes the checks of the two
 * functions above, with its token counts; NGX_DECLINED when it does not
 * or when that cannot be told without a tree (then those functions
 * decide and say what is wrong); NGX_ERROR on allocation failure.
 * inputs: the number of embeddings inputs (0 for chat).
 */
ngx_int_t ngx_http_helix_provider_openai_pass(ngx_pool_t *pool,
    ngx_uint_t embeddings, size_t inputs, u_char *data, size_t len,
    uint64_t *prompt, uint64_t *completion);

/*
 * A provider error answer (status >= 400, body anything) -> a short
 * printable UTF-8 message in *msg (pool): the provider's error message
 * when the body has one, else "HTTP <status>" plus a cleaned first 200
 * bytes of the body.  NGX_ERROR only on allocation failure.
 */
ngx_int_t ngx_http_helix_provider_error_message(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, ngx_uint_t status, u_char *data,
    size_t len, ngx_str_t *msg);

/*
 * Append the request headers the provider needs to "headers" (a list of
 * ngx_table_elt_t initialised by the caller): credentials (omitted when
 * api_key is empty), "anthropic-version" for anthropic, Content-Type and
 * Accept (text/event-stream when stream).
 */
ngx_int_t ngx_http_helix_provider_headers(ngx_pool_t *pool,
    ngx_http_helix_provider_t *p, ngx_uint_t stream, ngx_list_t *headers);

/*
 * An Anthropic stop_reason or Gemini finishReason (as found in answers
 * and stream events) -> the OpenAI finish_reason (a static string);
 * an OpenAI finish_reason is returned as is.  NULL when reason is not a
 * string (e.g. null while a stream is still running).
 */
const char *ngx_http_helix_provider_finish_reason(ngx_uint_t type,
    json_t *reason);

/* a fresh "chatcmpl-<24 hex>" id (pool) for answers that carry none */
ngx_int_t ngx_http_helix_provider_chat_id(ngx_pool_t *pool, ngx_str_t *id);


#endif /* _NGX_HTTP_HELIX_PROVIDER_H_INCLUDED_ */
