/*
 * Copyright (C) helix authors
 *
 * The gateway's core path: POST /v1/chat/completions, /v1/completions and
 * /v1/embeddings.  The body is read and checked, the model is mapped to
 * the providers that serve it, and the request goes to the first one
 * whose breaker and limits allow, falling back to the next on connection
 * errors, timeouts, 5xx and 429, at most once per provider and within the
 * request's overall deadline (timeouts.provider_default).
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_codec.h"
#include "ngx_http_helix_formats.h"
#include "ngx_http_helix_upstream.h"
#include "ngx_http_helix_cache.h"
#include "ngx_http_helix_metrics.h"
#include "ngx_http_helix_redis.h"
#include "ngx_http_helix_l2.h"
#include "ngx_http_helix_jscan.h"
#include "ngx_http_helix_gateway.h"
#include "ngx_http_helix_log.h"
#include "ngx_http_helix_stream.h"
#include "ngx_http_helix_limit.h"
#include "ngx_http_helix_budget.h"
#include "ngx_http_helix_auth.h"


#define NGX_HTTP_HELIX_MAX_STOP     4
#define NGX_HTTP_HELIX_MAX_N        128
#define NGX_HTTP_HELIX_MAX_INPUTS   2048
#define NGX_HTTP_HELIX_UNPROCESSABLE  422


typedef struct {
    ngx_http_helix_provider_t  *provider;
    ngx_str_t                   model;
} ngx_http_helix_candidate_t;


typedef struct {
    ngx_http_helix_provider_t  *provider;
    ngx_uint_t                  outcome;
    ngx_uint_t                  status;
    ngx_msec_t                  latency;
    ngx_str_t                   reason;
} ngx_http_helix_attempt_t;


typedef struct {
    ngx_uint_t                  status;
    const char                 *code;
    char                       *param;
    ngx_str_t                   msg;
} ngx_http_helix_error_t;


typedef struct {
    ngx_http_request_t         *request;
    ngx_http_helix_item_t      *item;           /* run for a batch */
    ngx_http_helix_call_t      *call;           /* the one in flight */
    ngx_uint_t                  endpoint;
    json_t                     *req;
    json_t                     *input;          /* embeddings: strings */
    ngx_str_t                   model;
    ngx_str_t                   raw;            /* the client's bytes */
    ngx_uint_t                  passthrough;    /* raw is fine for openai */
    ngx_http_helix_provider_t  *provider;       /* asked for by name */
    json_t                     *float_req;      /* without encoding_format */
    ngx_uint_t                  base64;         /* embeddings as base64 */
    ngx_http_helix_stream_t    *stream;         /* "stream": true */

    /* a client format's request (NULL: OpenAI's own) */
    ngx_http_helix_codec_t     *client;
    ngx_str_t                   answer_key;     /* the answer's L1 key */
    json_t                     *client_req;     /* as the client sent it */
    ngx_str_t                   client_body;    /* the provider's answer,
                                                   in the client's format */
    unsigned                    count_tokens:1;

    ngx_array_t                 candidates;
    ngx_uint_t                  next;
    ngx_array_t                 attempts;
    ngx_msec_t                  deadline;

    ngx_http_helix_error_t      err;
    size_t                      prompt_tokens;  /* estimated */

    /* L1 */
    ngx_int_t                   policy;         /* index, -1: no cache */
    ngx_str_t                  *scope;          /* tenant's, or shared */
    u_char                      hash[NGX_HTTP_HELIX_CACHE_HASH_LEN];
    ngx_str_t                   claimed;
    ngx_str_t                   alias;          /* raw bytes -> key */
    ngx_str_t                   lock;           /* claimed's, in Redis */
    ngx_str_t                  *l2_keys;        /* the candidates' */
    ngx_str_t                   token;          /* our lock's value */
    ngx_event_t                 wait;
    ngx_msec_t                  wait_until;
    ngx_http_helix_waiter_t     waiter;         /* for a provider's place */
    ngx_msec_t                  wait_step;
    unsigned                    cache_read:1;
    unsigned                    cache_write:1;
    unsigned                    locked:1;       /* the Redis lock is ours */
    unsigned                    eval:1;         /* Redis lacks the script */
    unsigned                    cancelled:1;
    unsigned                    streaming:1;
    unsigned                    l1_hit:1;       /* meta is the answer's */
    unsigned                    served:1;       /* the two below are set */
    ngx_uint_t                  served_cache;   /* log.h's cache results */
    ngx_str_t                   served_by;      /* a stream's: when its
                                                   header has gone */

    ngx_msec_t                  start_us;       /* the request read */
    ngx_msec_t                  provider_us;    /* calls that ended */
    ngx_msec_t                  gw_us;          /* the gateway's own */
    unsigned                    timed:1;        /* gw_us is set */

    ngx_str_t                   answer;         /* for the completion log */
    ngx_http_helix_answer_meta_t  meta;         /* of an L1 hit's answer */
} ngx_http_helix_gw_ctx_t;


static void ngx_http_helix_gateway_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_helix_gateway_error(ngx_http_helix_gw_ctx_t *ctx,
    ngx_pool_t *pool, ngx_uint_t status, const char *code, char *param,
    const char *fmt, ...);
static ngx_int_t ngx_http_helix_read_body(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_str_t *body);
static ngx_int_t ngx_http_helix_check_chat(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, json_t *req);
static ngx_int_t ngx_http_helix_check_completion(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, json_t *req);
static ngx_int_t ngx_http_helix_check_embeddings(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, json_t *req);
static ngx_int_t ngx_http_helix_check_params(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, json_t *req);
static ngx_int_t ngx_http_helix_client_in(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, json_t *body);
static ngx_int_t ngx_http_helix_count_tokens(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx);
static ngx_uint_t ngx_http_helix_client_key(ngx_http_helix_gw_ctx_t *ctx,
    ngx_str_t *key);
static void ngx_http_helix_keep_client(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_str_t *data);
static ngx_int_t ngx_http_helix_send_answer(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_str_t *body);
static ngx_uint_t ngx_http_helix_raw_to(ngx_http_helix_gw_ctx_t *ctx,
    ngx_http_helix_codec_t *codec);
static ngx_int_t ngx_http_helix_candidates(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx);
static ngx_uint_t ngx_http_helix_passthrough(ngx_http_helix_gw_ctx_t *ctx);
static void ngx_http_helix_try_next(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx);
static void ngx_http_helix_try_reserved(ngx_http_request_t *r);
static void ngx_http_helix_call_handler(ngx_http_helix_call_t *call);
static ngx_int_t ngx_http_helix_respond(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_http_helix_call_t *call);
static ngx_int_t ngx_http_helix_give_up(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx);
static ngx_int_t ngx_http_helix_answer(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_http_helix_candidate_t *cand,
    ngx_str_t *body);
static ngx_int_t ngx_http_helix_cache_begin(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx);
static ngx_int_t ngx_http_helix_cache_fast(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_str_t *raw);
static ngx_uint_t ngx_http_helix_all_busy(ngx_http_helix_gw_ctx_t *ctx);
static ngx_int_t ngx_http_helix_wait(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx);
static void ngx_http_helix_waited(ngx_http_helix_waiter_t *w,
    ngx_uint_t outcome);
static void ngx_http_helix_wait_cleanup(void *data);
static ngx_int_t ngx_http_helix_timing(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_uint_t served);
static ngx_uint_t ngx_http_helix_timing_header(ngx_http_request_t *r);
static void ngx_http_helix_cache_answer(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_uint_t tier, ngx_str_t *key,
    ngx_str_t *provider, ngx_str_t *body);
static ngx_int_t ngx_http_helix_cache_lead(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx);
static ngx_int_t ngx_http_helix_cache_claim_key(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx);
static ngx_int_t ngx_http_helix_cache_wait_start(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx);
static void ngx_http_helix_cache_release(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx);
static ngx_int_t ngx_http_helix_l2_lookup(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx);
static void ngx_http_helix_l2_done(ngx_http_helix_redis_op_t *op,
    redisReply *reply);
static void ngx_http_helix_l2_wait(ngx_event_t *ev);
static void ngx_http_helix_l2_store(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_str_t *key, ngx_str_t *provider,
    ngx_str_t *body);
static ngx_int_t ngx_http_helix_cache_try(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx);
static void ngx_http_helix_cache_wait(ngx_event_t *ev);
static void ngx_http_helix_cache_done(void *data);
static void ngx_http_helix_attempt(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_http_helix_provider_t *p,
    ngx_uint_t outcome, ngx_uint_t status, ngx_msec_t latency,
    ngx_str_t *reason);
static void ngx_http_helix_finalize(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_helix_send_err(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx);
static void ngx_http_helix_keep(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_str_t *key,
    ngx_http_helix_candidate_t *cand, ngx_str_t *body);
static void ngx_http_helix_stream_call_end(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_http_helix_call_t *call);


ngx_int_t
ngx_http_helix_gateway_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_http_helix_gw_ctx_t     *ctx;
    ngx_http_helix_loc_conf_t   *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);

    /* too large is known before a byte of the body is read */

    rc = ngx_http_helix_body_check(r);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_helix_gw_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->endpoint = hlcf->endpoint;
    ctx->client = ngx_http_helix_formats_client(hlcf->endpoint);
    ctx->count_tokens = (ctx->client != NULL
                         && r->uri.len > sizeof("/count_tokens") - 1
                         && ngx_strncmp(r->uri.data + r->uri.len
                                        - (sizeof("/count_tokens") - 1),
                                        "/count_tokens",
                                        sizeof("/count_tokens") - 1)
                            == 0);
    ngx_http_set_ctx(r, ctx, ngx_http_helix_module);

    return ngx_http_helix_body_read_start(r, ngx_http_helix_gateway_body);
}


static void
ngx_http_helix_gateway_body(ngx_http_request_t *r)
{
    json_t                      *req;
    ngx_int_t                    rc;
    ngx_str_t                    body;
    ngx_http_helix_jdoc_t        doc;
    ngx_http_helix_gw_ctx_t     *ctx;
    ngx_http_helix_main_conf_t  *hmcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_helix_module);

    ngx_str_null(&body);
    rc = ngx_http_helix_read_body(r, ctx, &body);

    if (rc == NGX_OK) {
        ctx->start_us = ngx_http_helix_metrics_now_us();
        ctx->raw = body;
        rc = ctx->count_tokens ? NGX_DECLINED
                               : ngx_http_helix_cache_fast(r, ctx, &body);

        if (rc == NGX_OK) {
            return;
        }

        if (rc == NGX_DECLINED) {
            rc = NGX_OK;
        }
    }

    if (rc == NGX_OK) {
        /* duplicate keys: 400, the provider may read them otherwise */
        req = ngx_http_helix_jload(r->pool, body.data, body.len,
                                   NGX_HTTP_HELIX_JSCAN_UNIQUE, &doc);

        if (req == NULL && doc.nomem) {
            rc = NGX_ERROR;

        } else if (req == NULL) {
            rc = ngx_http_helix_gateway_error(ctx, r->pool,
                                 NGX_HTTP_BAD_REQUEST, "invalid_json", NULL,
                                 "request body is not valid JSON: %s (line "
                                 "%ui, column %ui)", doc.err, doc.line,
                                 doc.column);

        } else if (ngx_http_helix_json_pool(r->pool, req) != NGX_OK) {
            rc = NGX_ERROR;

        } else if (!json_is_object(req)) {
            rc = ngx_http_helix_gateway_error(ctx, r->pool,
                                 NGX_HTTP_BAD_REQUEST, "invalid_json", NULL,
                                 "request body must be a JSON object");

        } else if (ctx->client) {
            rc = ngx_http_helix_client_in(r, ctx, req);

        } else {
            switch (ctx->endpoint) {
            case NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS:
                rc = ngx_http_helix_check_chat(r, ctx, req);
                break;
            case NGX_HTTP_HELIX_EP_COMPLETIONS:
                rc = ngx_http_helix_check_completion(r, ctx, req);
                break;
            default:
                rc = ngx_http_helix_check_embeddings(r, ctx, req);
            }
        }
    }

    if (rc == NGX_OK && ctx->count_tokens) {
        ngx_http_finalize_request(r, ngx_http_helix_count_tokens(r, ctx));
        return;
    }

    if (rc == NGX_OK) {
        rc = ngx_http_helix_candidates(r, ctx);
    }

    if (rc == NGX_OK) {
        ctx->passthrough = ngx_http_helix_passthrough(ctx);
    }

    if (rc == NGX_OK && ctx->streaming) {
        ctx->stream = ngx_http_helix_stream_create(r, ctx->endpoint,
                                                   ctx->req);
        if (ctx->stream == NULL) {
            rc = NGX_ERROR;

        } else if (ctx->client) {
            ngx_http_helix_stream_client(ctx->stream, ctx->client);
        }

        hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
        ctx->deadline = ngx_current_msec + hmcf->timeout_provider_streaming;

        /* the same bytes must be answered as a stream: no alias */
        ngx_str_null(&ctx->alias);
    }

    if (rc == NGX_ERROR) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (rc == NGX_DECLINED) {
        ngx_http_finalize_request(r,
                   ngx_http_helix_send_error(r, ctx->err.status,
                                             ctx->err.code, ctx->err.param,
                                             "%V", &ctx->err.msg));
        return;
    }

    /* a client that goes away ends the provider calls too */
    r->read_event_handler = ngx_http_test_reading;

    rc = ngx_http_helix_cache_begin(r, ctx);

    if (rc == NGX_ERROR) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (rc == NGX_DECLINED) {
        ngx_http_helix_try_next(r, ctx);
    }
}


static ngx_uint_t
ngx_http_helix_header_says(ngx_http_request_t *r, char *name, char *token)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return 0;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0
            && ngx_strlcasestrn(h[i].value.data,
                                h[i].value.data + h[i].value.len,
                                (u_char *) token, ngx_strlen(token) - 1)
               != NULL)
        {
            return 1;
        }
    }
}


/*
 * NGX_OK: answered from the cache; NGX_AGAIN: waiting for an identical
 * request's provider call; NGX_DECLINED: go to the providers.
 */

/*
 * The policy of this location and endpoint (-1: not cached), and what the
 * client lets the cache do: Cache-Control no-cache reads around it,
 * no-store keeps the answer out.
 */

static void
ngx_http_helix_cache_policy_of(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx)
{
    ngx_http_helix_loc_conf_t      *hlcf;
    ngx_http_helix_main_conf_t     *hmcf;
    ngx_http_helix_cache_policy_t  *pol;

    static ngx_str_t  completions = ngx_string("completions");
    static ngx_str_t  embeddings = ngx_string("embeddings");
    static ngx_str_t  shared = ngx_string("");

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);

    ctx->policy = -1;

    if (hmcf->cache_sh == NULL
        || hlcf->cache_policy == NGX_HTTP_HELIX_CACHE_OFF)
    {
        return;
    }

    ctx->policy = hlcf->cache_policy;

    if (ctx->policy == NGX_HTTP_HELIX_CACHE_DEFAULT) {
        ctx->policy = ngx_http_helix_cache_policy(hmcf,
                                  ctx->endpoint == NGX_HTTP_HELIX_EP_EMBEDDINGS
                                  ? &embeddings : &completions);
        if (ctx->policy == NGX_ERROR) {
            ctx->policy = -1;
            return;
        }
    }

    /* one tenant's answers are not another's, unless the policy says */

    pol = hmcf->cache.policies.elts;

    ctx->scope = pol[ctx->policy].shared ? &shared
                                         : ngx_http_helix_auth_scope(r);

    ctx->cache_read = !ngx_http_helix_header_says(r, "Cache-Control",
                                                  "no-cache")
                      && !ngx_http_helix_header_says(r, "Pragma", "no-cache");
    ctx->cache_write = !ngx_http_helix_header_says(r, "Cache-Control",
                                                   "no-store");
}


/*
 * X-Cache-Key, only where "helix_cache_key_header on" asks for it: the
 * key names the provider and model and the hash of a tenant's request,
 * which is for an operator debugging the cache, not for clients
 */

static ngx_uint_t
ngx_http_helix_key_header(ngx_http_request_t *r)
{
    ngx_http_helix_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);

    return hlcf->cache_key_header == 1;
}


/*
 * The gateway's own time in an answer: from the whole request read to its
 * header, less the provider calls' time.  Counted by where the answer
 * came from, kept for the completion log, and said in Server-Timing
 * unless "helix_server_timing off".
 */

static ngx_int_t
ngx_http_helix_timing(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    ngx_uint_t served)
{
    ngx_msec_t                   total;
    ngx_http_helix_main_conf_t  *hmcf;

    static ngx_str_t  descs[] = { ngx_string("NONE"), ngx_string("L1"),
                                  ngx_string("L2"), ngx_string("MISS"),
                                  ngx_string("BYPASS") };

    if (ctx->start_us == 0 || served >= NGX_HTTP_HELIX_SERVED) {
        return NGX_OK;
    }

    total = ngx_http_helix_metrics_now_us() - ctx->start_us;

    ctx->gw_us = (total > ctx->provider_us) ? total - ctx->provider_us : 0;
    ctx->timed = 1;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    ngx_http_helix_metrics_overhead(hmcf, served, ctx->gw_us);

    if (!ngx_http_helix_timing_header(r)) {
        return NGX_OK;
    }

    return ngx_http_helix_server_timing(r, &descs[served], ctx->gw_us,
                                        ctx->provider_us,
                                        served >= NGX_HTTP_HELIX_LOG_MISS);
}


static ngx_uint_t
ngx_http_helix_timing_header(ngx_http_request_t *r)
{
    ngx_http_helix_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);

    return hlcf->server_timing == 1;
}


/* a hit from either tier: counted, said in the headers, sent */

static void
ngx_http_helix_cache_answer(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_uint_t tier, ngx_str_t *key,
    ngx_str_t *provider, ngx_str_t *body)
{
    static ngx_str_t  hit = ngx_string("HIT");
    static ngx_str_t  tiers[] = { ngx_null_string, ngx_string("L1"),
                                  ngx_string("L2") };

    ngx_http_helix_metrics_cache(
        ngx_http_get_module_main_conf(r, ngx_http_helix_module),
        ctx->policy, 1);

    ngx_http_helix_budget_saved(r, provider, &ctx->model, body);

    if (ctx->item) {
        ctx->item->tier = tier;
        ctx->item->provider = *provider;
        ctx->item->status = NGX_HTTP_OK;
        ctx->item->body = *body;
        ngx_http_helix_finalize(r, ctx, NGX_OK);
        return;
    }

    ctx->answer = *body;
    ctx->answer_key = *key;
    ctx->l1_hit = (tier == 1);
    ctx->served = 1;
    ctx->served_cache = (tier == 1) ? NGX_HTTP_HELIX_LOG_HIT_L1
                                    : NGX_HTTP_HELIX_LOG_HIT_L2;
    ctx->served_by = *provider;

    if (ngx_http_helix_add_header(r, "X-Cache", &hit) != NGX_OK
        || ngx_http_helix_add_header(r, "X-Cache-Tier", &tiers[tier])
           != NGX_OK
        || (ngx_http_helix_key_header(r)
            && ngx_http_helix_add_header(r, "X-Cache-Key", key) != NGX_OK)
        || ngx_http_helix_add_header(r, "X-Helix-Provider", provider)
           != NGX_OK
        || ngx_http_helix_timing(r, ctx, ctx->served_cache) != NGX_OK)
    {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (ctx->stream) {
        ngx_http_finalize_request(r,
                  ngx_http_helix_stream_replay(ctx->stream, provider, body));
        return;
    }

    ngx_http_finalize_request(r, ngx_http_helix_send_answer(r, ctx, body));
}


/*
 * The fast way to a hit: the same bytes as a request answered before,
 * found without parsing them.  NGX_OK: answered.
 */

static ngx_int_t
ngx_http_helix_cache_fast(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    ngx_str_t *raw)
{
    ngx_int_t                    rc;
    ngx_str_t                    key, provider, body;
    ngx_msec_t                   us;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    ngx_http_helix_cache_policy_of(r, ctx);

    if (ctx->policy < 0 || !ctx->cache_read) {
        return NGX_DECLINED;
    }

    ctx->alias.data = ngx_pnalloc(r->pool, NGX_HTTP_HELIX_CACHE_ALIAS_LEN);
    if (ctx->alias.data == NULL) {
        return NGX_ERROR;
    }

    ngx_http_helix_cache_alias(hmcf, ctx->endpoint, ctx->policy, ctx->scope,
                               raw, &ctx->alias);

    us = ngx_http_helix_metrics_now_us();

    rc = ngx_http_helix_cache_lookup_alias(hmcf, &ctx->alias, r->pool, &key,
                                           &provider, &body, &ctx->meta);

    ngx_http_helix_metrics_cache_lookup(hmcf,
                                        ngx_http_helix_metrics_now_us() - us);

    if (rc != NGX_OK) {
        return rc;
    }

    if (ctx->client && ngx_http_helix_client_key(ctx, &key)) {
        /* kept in the client's format already: sent as it is */
        ctx->client_body = body;
    }

    ngx_http_helix_cache_answer(r, ctx, 1, &key, &provider, &body);
    return NGX_OK;
}


/*
 * The key of an answer kept in a client's format: the answer's own key
 * and ":<format>" (so that the admin clear's patterns take both).
 * Returns whether key is one.
 */

static ngx_uint_t
ngx_http_helix_client_key(ngx_http_helix_gw_ctx_t *ctx, ngx_str_t *key)
{
    ngx_str_t  *name;

    name = &ctx->client->name;

    return key->len > name->len + 1
           && key->data[key->len - name->len - 1] == ':'
           && ngx_strncmp(key->data + key->len - name->len, name->data,
                          name->len)
              == 0;
}


static ngx_int_t
ngx_http_helix_cache_begin(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx)
{
    ngx_int_t            rc;
    ngx_pool_cleanup_t  *cln;

    if (ctx->policy < 0 || (!ctx->cache_read && !ctx->cache_write)) {
        return NGX_DECLINED;
    }

    if (ngx_http_helix_cache_hash(r->pool, ctx->endpoint, ctx->scope,
                                  ctx->req, ctx->hash)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_helix_cache_done;
    cln->data = ctx;

    if (ctx->cache_read) {
        rc = ngx_http_helix_cache_try(r, ctx);

        if (rc != NGX_DECLINED && rc != NGX_BUSY) {
            return rc;
        }

        if (rc == NGX_BUSY) {
            /* an identical request is asking a provider: wait for it */
            return ngx_http_helix_cache_wait_start(r, ctx);
        }
    }

    return ngx_http_helix_cache_lead(r, ctx);
}


/*
 * Nothing in L1 and nobody asking: the key is claimed before anything
 * else, so that of a burst of identical requests one asks L2 and the
 * providers, and the others wait for its answer in L1.
 */

static ngx_int_t
ngx_http_helix_cache_lead(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx)
{
    ngx_int_t                    rc;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    rc = ngx_http_helix_cache_claim_key(r, ctx);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_BUSY && ctx->cache_read) {
        /* claimed (or answered) since our look into L1 */
        return ngx_http_helix_cache_wait_start(r, ctx);
    }

    if (ctx->cache_read && hmcf->cache.l2_enabled
        && ngx_http_helix_redis_available()
        && ngx_http_helix_l2_lookup(r, ctx) == NGX_OK)
    {
        return NGX_AGAIN;
    }

    return NGX_DECLINED;
}


/*
 * NGX_OK: the key is ours; NGX_BUSY: someone else has it (or its answer
 * is there); NGX_DECLINED: no claim (no room, or not cached at all).
 */

static ngx_int_t
ngx_http_helix_cache_claim_key(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx)
{
    ngx_int_t                    rc;
    ngx_str_t                    key;
    ngx_http_helix_candidate_t  *c;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (!ctx->cache_write || ctx->claimed.len) {
        return NGX_DECLINED;
    }

    c = ctx->candidates.elts;

    if (ngx_http_helix_cache_key(r->pool, ctx->endpoint, &c[0].provider->name,
                                 &c[0].model, ctx->hash, &key)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = ngx_http_helix_cache_claim(hmcf, &key, ctx->policy,
                                    ctx->deadline - ngx_current_msec);

    if (rc == NGX_OK) {
        ctx->claimed = key;
    }

    return rc;
}


static ngx_int_t
ngx_http_helix_cache_wait_start(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx)
{
    ctx->wait.handler = ngx_http_helix_cache_wait;
    ctx->wait.data = ctx;
    ctx->wait.log = r->connection->log;
    ctx->wait_until = ctx->deadline;
    ctx->wait_step = 2;

    ngx_add_timer(&ctx->wait, ctx->wait_step);

    return NGX_AGAIN;
}


/* the claim given up, in L1 and in Redis: the answer will not come */

static void
ngx_http_helix_cache_release(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx)
{
    if (ctx->claimed.len) {
        ngx_http_helix_cache_unclaim(
            ngx_http_get_module_main_conf(r, ngx_http_helix_module),
            &ctx->claimed);
        ngx_str_null(&ctx->claimed);
    }

    if (ctx->locked) {
        ngx_http_helix_l2_release(&ctx->lock, &ctx->token);
        ctx->locked = 0;
    }
}


/*
 * L2: the candidates' keys in one round trip.  The request holding the
 * claim also takes the key's lock in Redis when they all miss, so that
 * other nodes wait for its answer too.
 */

static ngx_int_t
ngx_http_helix_l2_lookup(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx)
{
    ngx_uint_t                   i, n;
    ngx_http_helix_candidate_t  *c;

    c = ctx->candidates.elts;
    n = ctx->provider ? 1 : ctx->candidates.nelts;

    /* once: the answer, a poll and NOSCRIPT's resend use them again */

    if (ctx->l2_keys == NULL) {
        ctx->l2_keys = ngx_palloc(r->pool, n * sizeof(ngx_str_t));
        if (ctx->l2_keys == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < n; i++) {
            if (ngx_http_helix_cache_key(r->pool, ctx->endpoint,
                                         &c[i].provider->name, &c[i].model,
                                         ctx->hash, &ctx->l2_keys[i])
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    if (ctx->claimed.len && ctx->lock.len == 0
        && (ngx_http_helix_l2_lock_key(r->pool, &ctx->claimed, &ctx->lock)
            != NGX_OK
            || ngx_http_helix_l2_token(r->pool, &ctx->token) != NGX_OK))
    {
        return NGX_ERROR;
    }

    if (ngx_http_helix_l2_get(r->pool, ctx->l2_keys, n,
                              ctx->claimed.len ? &ctx->lock : NULL,
                              &ctx->token, ctx->deadline - ngx_current_msec,
                              ctx->eval, ngx_http_helix_l2_done, ctx)
        == NULL)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_helix_l2_done(ngx_http_helix_redis_op_t *op, redisReply *reply)
{
    ngx_str_t                    key, copy;
    ngx_uint_t                   n;
    ngx_msec_t                   left;
    ngx_connection_t            *conn;
    ngx_http_request_t          *r;
    ngx_http_helix_gw_ctx_t     *ctx;
    ngx_http_helix_candidate_t  *c;
    ngx_http_helix_main_conf_t  *hmcf;
    ngx_http_helix_l2_result_t   res;

    ctx = op->data;
    r = ctx->request;
    conn = r->connection;
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    c = ctx->candidates.elts;
    n = ctx->provider ? 1 : ctx->candidates.nelts;

    if (ctx->cancelled) {
        return;
    }

    /* a value is checked against the key it was read under */

    ngx_http_helix_l2_result(reply, ctx->l2_keys, n, ctx->claimed.len != 0,
                             &res);

    if (res.rc == NGX_AGAIN && !ctx->eval) {
        /* a Redis without the script (restarted, flushed): send it */
        ctx->eval = 1;

        if (ngx_http_helix_l2_lookup(r, ctx) == NGX_OK) {
            return;
        }
    }

    if (res.rc == NGX_OK || res.bad) {
        key = ctx->l2_keys[res.index];
    }

    /* the provider the key names, not a header of Redis's choosing */

    if (res.rc == NGX_OK
        && (res.provider.len != c[res.index].provider->name.len
            || ngx_strncmp(res.provider.data,
                           c[res.index].provider->name.data,
                           res.provider.len)
               != 0))
    {
        res.rc = NGX_DECLINED;
        res.bad = 1;
    }

    if (res.bad) {
        /* never served: dropped, and a miss */
        ngx_log_error(NGX_LOG_WARN, conn->log, 0,
                      "helix: undecodable L2 value for \"%V\" deleted", &key);
        ngx_http_helix_l2_delete(&key);
    }

    if (res.rc == NGX_OK) {
        /* the reply is hiredis's: the answer is copied into the request */

        copy.len = res.provider.len + res.body.len;
        copy.data = ngx_pnalloc(r->pool, copy.len);
        if (copy.data == NULL) {
            ngx_http_helix_finalize(r, ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
            goto done;
        }

        ngx_memcpy(copy.data, res.provider.data, res.provider.len);
        ngx_memcpy(copy.data + res.provider.len, res.body.data,
                   res.body.len);
        res.provider.data = copy.data;
        res.body.data = copy.data + res.provider.len;

        /* promoted into L1 for the next ones, which answers our claim */
        ngx_http_helix_cache_store(hmcf, &key, ctx->policy, &res.provider,
                                   &res.body, conn->log);

        if (ctx->claimed.len
            && ctx->claimed.len == key.len
            && ngx_strncmp(ctx->claimed.data, key.data, key.len) == 0)
        {
            ngx_str_null(&ctx->claimed);
        }

        ngx_http_helix_cache_release(r, ctx);

        if (ctx->alias.len) {
            ngx_http_helix_cache_store_alias(hmcf, &ctx->alias, &key);
        }

        ngx_http_helix_cache_answer(r, ctx, 2, &key, &res.provider,
                                    &res.body);
        goto done;
    }

    if (res.rc == NGX_BUSY) {
        /* another node asks the provider: its answer will be in L2 */
        left = ctx->deadline - ngx_current_msec;

        if ((ngx_msec_int_t) left > 0) {
            ctx->wait_step = ctx->wait_step ? ngx_min(ctx->wait_step * 2, 100)
                                            : 5;
            ctx->wait.handler = ngx_http_helix_l2_wait;
            ctx->wait.data = ctx;
            ctx->wait.log = conn->log;
            ngx_add_timer(&ctx->wait, ngx_min(ctx->wait_step, left));
            goto done;
        }
    }

    ctx->locked = res.locked;

    /* a miss (or Redis could not say): the providers */
    ngx_http_helix_try_next(r, ctx);

done:

    ngx_http_run_posted_requests(conn);
}


static void
ngx_http_helix_l2_wait(ngx_event_t *ev)
{
    ngx_connection_t         *c;
    ngx_http_request_t       *r;
    ngx_http_helix_gw_ctx_t  *ctx;

    ctx = ev->data;
    r = ctx->request;
    c = r->connection;

    if (!ngx_http_helix_redis_available()
        || ngx_http_helix_l2_lookup(r, ctx) != NGX_OK)
    {
        /* Redis went away: this node's single flight only */
        ngx_http_helix_try_next(r, ctx);
    }

    ngx_http_run_posted_requests(c);
}


/* L2 keeps the answer for its policy's TTL, and gives our lock back */

static void
ngx_http_helix_l2_store(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    ngx_str_t *key, ngx_str_t *provider, ngx_str_t *body)
{
    ngx_http_helix_cache_policy_t  *pol;
    ngx_http_helix_main_conf_t     *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    pol = hmcf->cache.policies.elts;

    if (!hmcf->cache.l2_enabled || !ngx_http_helix_redis_available()
        || pol[ctx->policy].ttl == 0)
    {
        return;
    }

    if (ngx_http_helix_l2_set(r->pool, key, provider, body,
                              pol[ctx->policy].ttl,
                              ctx->locked ? &ctx->lock : NULL, &ctx->token)
        == NGX_OK)
    {
        ctx->locked = 0;
    }
}


/*
 * Every candidate's key: an answer a fallback provider gave counts too,
 * unless the request named its provider.
 */

static ngx_int_t
ngx_http_helix_cache_try(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx)
{
    ngx_int_t                    rc, busy;
    ngx_str_t                    key, provider, body;
    ngx_uint_t                   i, n;
    ngx_http_helix_candidate_t  *c;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    c = ctx->candidates.elts;
    n = ctx->provider ? 1 : ctx->candidates.nelts;
    busy = 0;

    for (i = 0; i < n; i++) {
        if (ngx_http_helix_cache_key(r->pool, ctx->endpoint,
                                     &c[i].provider->name, &c[i].model,
                                     ctx->hash, &key)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        rc = ngx_http_helix_cache_lookup(hmcf, &key, r->pool, &provider,
                                         &body, &ctx->meta);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_BUSY) {
            busy = (i == 0);
            continue;
        }

        if (rc != NGX_OK) {
            continue;
        }

        if (ctx->alias.len) {
            ngx_http_helix_cache_store_alias(hmcf, &ctx->alias, &key);
        }

        ngx_http_helix_cache_answer(r, ctx, 1, &key, &provider, &body);
        return NGX_OK;
    }

    return busy ? NGX_BUSY : NGX_DECLINED;
}


static void
ngx_http_helix_cache_wait(ngx_event_t *ev)
{
    ngx_int_t                 rc;
    ngx_connection_t         *c;
    ngx_http_request_t       *r;
    ngx_http_helix_gw_ctx_t  *ctx;

    ctx = ev->data;
    r = ctx->request;
    c = r->connection;

    rc = ngx_http_helix_cache_try(r, ctx);

    if (rc == NGX_ERROR) {
        ngx_http_helix_finalize(r, ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);

    } else if (rc == NGX_BUSY
               && (ngx_msec_int_t) (ctx->wait_until - ngx_current_msec) > 0)
    {
        ctx->wait_step = ngx_min(ctx->wait_step * 2, 50);
        ngx_add_timer(&ctx->wait, ctx->wait_step);

    } else if (rc == NGX_DECLINED
               && (ngx_msec_int_t) (ctx->wait_until - ngx_current_msec) > 0)
    {
        /* the other call failed: one of those waiting asks in its place */
        rc = ngx_http_helix_cache_lead(r, ctx);

        if (rc == NGX_ERROR) {
            ngx_http_helix_finalize(r, ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);

        } else if (rc == NGX_DECLINED) {
            ngx_http_helix_try_next(r, ctx);
        }

    } else if (rc != NGX_OK) {
        /* the other call takes too long: ask ourselves */
        ngx_http_helix_try_next(r, ctx);
    }

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_helix_cache_done(void *data)
{
    ngx_http_helix_gw_ctx_t *ctx = data;

    if (ctx->wait.timer_set) {
        ngx_del_timer(&ctx->wait);
    }

    /* a claim still pending now will never be answered by this request */

    ngx_http_helix_cache_release(ctx->request, ctx);
}


static ngx_int_t
ngx_http_helix_gateway_error(ngx_http_helix_gw_ctx_t *ctx, ngx_pool_t *pool,
    ngx_uint_t status, const char *code, char *param, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    ctx->err.status = status;
    ctx->err.code = code;
    ctx->err.param = param;

    p = ngx_pnalloc(pool, 1024);
    if (p == NULL) {
        return NGX_ERROR;
    }

    va_start(args, fmt);
    ctx->err.msg.len = ngx_vslprintf(p, p + 1024, fmt, args) - p;
    va_end(args);

    ctx->err.msg.data = p;

    return NGX_DECLINED;
}


static char *
ngx_http_helix_param(ngx_pool_t *pool, const char *fmt, ...)
{
    u_char   *p, *last;
    va_list   args;

    p = ngx_pnalloc(pool, 64);
    if (p == NULL) {
        return "?";
    }

    va_start(args, fmt);
    last = ngx_vslprintf(p, p + 63, fmt, args);
    va_end(args);

    *last = '\0';

    return (char *) p;
}


static ngx_int_t
ngx_http_helix_read_body(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    ngx_str_t *body)
{
    size_t                       len;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    len = ngx_http_helix_body_length(r);

    if (len == 0) {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                                            NGX_HTTP_BAD_REQUEST,
                                            "invalid_json", NULL,
                                            "request body is empty");
    }

    if (len > hmcf->max_request_body) {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                                 NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                 "request_too_large", NULL,
                                 "request body of %uz bytes is larger than "
                                 "max_request_body (%uz bytes)", len,
                                 hmcf->max_request_body);
    }

    return ngx_http_helix_body_read(r, len, body);
}


static ngx_int_t
ngx_http_helix_check_number(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, json_t *req, const char *name,
    double min, double max)
{
    double   v;
    json_t  *j;

    j = json_object_get(req, name);

    if (j == NULL || json_is_null(j)) {
        return NGX_OK;
    }

    if (!json_is_number(j)) {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                                            NGX_HTTP_BAD_REQUEST,
                                            "invalid_type", (char *) name,
                                            "\"%s\" must be a number", name);
    }

    v = json_number_value(j);

    if (v < min || v > max) {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                                            NGX_HTTP_BAD_REQUEST,
                                            "invalid_value", (char *) name,
                                            "\"%s\" must be between %.1f "
                                            "and %.1f", name, min, max);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_check_int(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    json_t *req, const char *name, json_int_t min, json_int_t max)
{
    json_t  *j;

    j = json_object_get(req, name);

    if (j == NULL || json_is_null(j)) {
        return NGX_OK;
    }

    if (!json_is_integer(j)
        || json_integer_value(j) < min || json_integer_value(j) > max)
    {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                                            NGX_HTTP_BAD_REQUEST,
                                            "invalid_value", (char *) name,
                                            "\"%s\" must be an integer from "
                                            "%L to %L", name, (int64_t) min,
                                            (int64_t) max);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_check_type(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    json_t *req, const char *name, json_type type, const char *what)
{
    json_t  *j;

    j = json_object_get(req, name);

    if (j == NULL || json_is_null(j) || json_typeof(j) == type) {
        return NGX_OK;
    }

    return ngx_http_helix_gateway_error(ctx, r->pool, NGX_HTTP_BAD_REQUEST,
                                        "invalid_type", (char *) name,
                                        "\"%s\" must be %s", name, what);
}


static ngx_int_t
ngx_http_helix_check_bool(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    json_t *req, const char *name)
{
    json_t  *j;

    j = json_object_get(req, name);

    if (j == NULL || json_is_null(j) || json_is_boolean(j)) {
        return NGX_OK;
    }

    return ngx_http_helix_gateway_error(ctx, r->pool, NGX_HTTP_BAD_REQUEST,
                                        "invalid_type", (char *) name,
                                        "\"%s\" must be a boolean", name);
}


/* what every generation request may carry, whatever its endpoint */

static ngx_int_t
ngx_http_helix_check_params(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, json_t *req)
{
    size_t                       i;
    json_t                      *j, *s, *provider;
    ngx_str_t                    name;
    ngx_uint_t                   k;
    ngx_http_helix_provider_t   *p;
    ngx_http_helix_main_conf_t  *hmcf;

    if (ngx_http_helix_check_number(r, ctx, req, "temperature", 0, 2)
        != NGX_OK
        || ngx_http_helix_check_number(r, ctx, req, "top_p", 0, 1) != NGX_OK
        || ngx_http_helix_check_number(r, ctx, req, "presence_penalty", -2, 2)
           != NGX_OK
        || ngx_http_helix_check_number(r, ctx, req, "frequency_penalty",
                                       -2, 2)
           != NGX_OK
        || ngx_http_helix_check_int(r, ctx, req, "max_tokens", 1,
                                    NGX_MAX_INT32_VALUE)
           != NGX_OK
        || ngx_http_helix_check_int(r, ctx, req, "max_completion_tokens", 1,
                                    NGX_MAX_INT32_VALUE)
           != NGX_OK
        || ngx_http_helix_check_int(r, ctx, req, "n", 1, NGX_HTTP_HELIX_MAX_N)
           != NGX_OK
        || ngx_http_helix_check_bool(r, ctx, req, "stream") != NGX_OK
        || ngx_http_helix_check_type(r, ctx, req, "user", JSON_STRING,
                                     "a string")
           != NGX_OK
        || ngx_http_helix_check_type(r, ctx, req, "tools", JSON_ARRAY,
                                     "an array")
           != NGX_OK
        || ngx_http_helix_check_type(r, ctx, req, "provider", JSON_STRING,
                                     "a string")
           != NGX_OK
        || ngx_http_helix_check_type(r, ctx, req, "model", JSON_STRING,
                                     "a string")
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (json_is_true(json_object_get(req, "stream"))) {
        hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

        if (ctx->item) {
            return ngx_http_helix_gateway_error(ctx, r->pool,
                                 NGX_HTTP_NOT_IMPLEMENTED,
                                 "streaming_not_implemented", "stream",
                                 "requests in a batch cannot be streamed; "
                                 "send \"stream\": false");
        }

        if (ctx->endpoint == NGX_HTTP_HELIX_EP_EMBEDDINGS
            || !hmcf->streaming_enabled)
        {
            return ngx_http_helix_gateway_error(ctx, r->pool,
                                 NGX_HTTP_BAD_REQUEST, "invalid_value",
                                 "stream",
                                 ctx->endpoint == NGX_HTTP_HELIX_EP_EMBEDDINGS
                                 ? "embeddings cannot be streamed"
                                 : "streaming is disabled (streaming.enabled "
                                   "in helix.yaml)");
        }

        ctx->streaming = 1;
    }

    j = json_object_get(req, "stop");

    if (j && !json_is_null(j) && !json_is_string(j)) {
        if (!json_is_array(j) || json_array_size(j) > NGX_HTTP_HELIX_MAX_STOP)
        {
            return ngx_http_helix_gateway_error(ctx, r->pool,
                                 NGX_HTTP_BAD_REQUEST, "invalid_type", "stop",
                                 "\"stop\" must be a string or an array of "
                                 "at most %d strings",
                                 NGX_HTTP_HELIX_MAX_STOP);
        }

        json_array_foreach(j, i, s) {
            if (!json_is_string(s)) {
                return ngx_http_helix_gateway_error(ctx, r->pool,
                                 NGX_HTTP_BAD_REQUEST, "invalid_type",
                                 ngx_http_helix_param(r->pool, "stop[%uz]",
                                                      i),
                                 "\"stop\" must contain strings only");
            }
        }
    }

    j = json_object_get(req, "model");

    if (j && json_is_string(j) && json_string_length(j)) {
        ctx->model.data = (u_char *) json_string_value(j);
        ctx->model.len = json_string_length(j);
    }

    provider = json_object_get(req, "provider");

    if (provider && json_is_string(provider)) {
        hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

        name.data = (u_char *) json_string_value(provider);
        name.len = json_string_length(provider);
        p = hmcf->providers.elts;

        for (k = 0; k < hmcf->providers.nelts; k++) {
            if (p[k].enabled && p[k].name.len == name.len
                && ngx_strncmp(p[k].name.data, name.data, name.len) == 0)
            {
                ctx->provider = &p[k];
                break;
            }
        }

        if (ctx->provider == NULL) {
            return ngx_http_helix_gateway_error(ctx, r->pool,
                                 NGX_HTTP_NOT_FOUND, "provider_not_found",
                                 "provider", "provider \"%V\" is not "
                                 "configured", &name);
        }
    }

    return NGX_OK;
}


/* tokens are estimated as characters / 4, the usual rule for English */

static ngx_int_t
ngx_http_helix_check_tokens(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, size_t chars)
{
    size_t                       tokens;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    tokens = (chars + 3) / 4;
    ctx->prompt_tokens = tokens;

    if (hmcf->max_prompt_tokens && tokens > hmcf->max_prompt_tokens) {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                             NGX_HTTP_HELIX_UNPROCESSABLE,
                             "context_length_exceeded", NULL,
                             "the prompt is about %uz tokens, more than "
                             "max_prompt_tokens (%ui)", tokens,
                             hmcf->max_prompt_tokens);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_check_chat(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    json_t *req)
{
    size_t       i, k, chars;
    json_t      *messages, *m, *role, *content, *part, *text;
    const char  *rs;

    if (ngx_http_helix_check_params(r, ctx, req) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (ctx->model.len == 0) {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                                            NGX_HTTP_BAD_REQUEST,
                                            "missing_field", "model",
                                            "\"model\" is required");
    }

    messages = json_object_get(req, "messages");

    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                                            NGX_HTTP_BAD_REQUEST,
                                            messages ? "invalid_type"
                                                     : "missing_field",
                                            "messages",
                                            "\"messages\" must be a "
                                            "non-empty array");
    }

    chars = 0;

    json_array_foreach(messages, i, m) {
        role = json_object_get(m, "role");
        rs = json_string_value(role);

        if (!json_is_object(m) || rs == NULL
            || (ngx_strcmp(rs, "system") && ngx_strcmp(rs, "developer")
                && ngx_strcmp(rs, "user") && ngx_strcmp(rs, "assistant")
                && ngx_strcmp(rs, "tool") && ngx_strcmp(rs, "function")))
        {
            return ngx_http_helix_gateway_error(ctx, r->pool,
                             NGX_HTTP_BAD_REQUEST, "invalid_value",
                             ngx_http_helix_param(r->pool,
                                                  "messages[%uz].role", i),
                             "each message needs a \"role\": system, "
                             "developer, user, assistant or tool");
        }

        content = json_object_get(m, "content");

        if (json_is_string(content)) {
            chars += json_string_length(content);
            continue;
        }

        if (json_is_array(content)) {
            json_array_foreach(content, k, part) {
                if (!json_is_object(part)
                    || !json_is_string(json_object_get(part, "type")))
                {
                    return ngx_http_helix_gateway_error(ctx, r->pool,
                             NGX_HTTP_BAD_REQUEST, "invalid_type",
                             ngx_http_helix_param(r->pool,
                                        "messages[%uz].content[%uz]", i, k),
                             "each content part must be an object with a "
                             "\"type\"");
                }

                text = json_object_get(part, "text");

                if (json_is_string(text)) {
                    chars += json_string_length(text);
                }
            }

            continue;
        }

        if ((content == NULL || json_is_null(content))
            && ngx_strcmp(rs, "assistant") == 0)
        {
            continue;
        }

        return ngx_http_helix_gateway_error(ctx, r->pool,
                             NGX_HTTP_BAD_REQUEST, "invalid_type",
                             ngx_http_helix_param(r->pool,
                                                  "messages[%uz].content", i),
                             "\"content\" must be a string or an array of "
                             "content parts");
    }

    if (ngx_http_helix_check_tokens(r, ctx, chars) != NGX_OK) {
        return NGX_DECLINED;
    }

    ctx->req = req;

    return NGX_OK;
}


/* the guide's {"prompt", ...} becomes a one-message chat request */

static ngx_int_t
ngx_http_helix_check_completion(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, json_t *req)
{
    json_t      *prompt, *chat, *msg, *v;
    const char  *key;

    if (ngx_http_helix_check_params(r, ctx, req) != NGX_OK) {
        return NGX_DECLINED;
    }

    prompt = json_object_get(req, "prompt");

    if (json_is_array(prompt) && json_array_size(prompt) == 1) {
        prompt = json_array_get(prompt, 0);
    }

    if (!json_is_string(prompt) || json_string_length(prompt) == 0) {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                                            NGX_HTTP_BAD_REQUEST,
                                            prompt ? "invalid_type"
                                                   : "missing_field",
                                            "prompt",
                                            "\"prompt\" must be a non-empty "
                                            "string");
    }

    if (ngx_http_helix_check_tokens(r, ctx, json_string_length(prompt))
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    chat = json_object();
    if (chat == NULL || ngx_http_helix_json_pool(r->pool, chat) != NGX_OK) {
        return NGX_ERROR;
    }

    json_object_foreach(req, key, v) {
        if (ngx_strcmp(key, "prompt") != 0
            && json_object_set(chat, key, v) != 0)
        {
            return NGX_ERROR;
        }
    }

    msg = json_pack("[{s:s,s:O}]", "role", "user", "content", prompt);

    if (msg == NULL || json_object_set_new(chat, "messages", msg) != 0) {
        return NGX_ERROR;
    }

    ctx->req = chat;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_check_embeddings(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, json_t *req)
{
    size_t       i, chars;
    json_t      *input, *s, *copy;
    const char  *fmt;

    if (ngx_http_helix_check_type(r, ctx, req, "model", JSON_STRING,
                                  "a string")
        != NGX_OK
        || ngx_http_helix_check_type(r, ctx, req, "provider", JSON_STRING,
                                     "a string")
           != NGX_OK
        || ngx_http_helix_check_int(r, ctx, req, "dimensions", 1, 65536)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    fmt = json_string_value(json_object_get(req, "encoding_format"));

    if (json_object_get(req, "encoding_format") != NULL
        && (fmt == NULL
            || (ngx_strcmp(fmt, "float") && ngx_strcmp(fmt, "base64"))))
    {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                                            NGX_HTTP_BAD_REQUEST,
                                            "invalid_value",
                                            "encoding_format",
                                            "\"encoding_format\" must be "
                                            "\"float\" or \"base64\"");
    }

    if (ngx_http_helix_check_params(r, ctx, req) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (ctx->model.len == 0) {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                                            NGX_HTTP_BAD_REQUEST,
                                            "missing_field", "model",
                                            "\"model\" is required");
    }

    input = json_object_get(req, "input");

    if (json_is_string(input)) {
        s = input;
        input = json_array();

        if (input == NULL
            || ngx_http_helix_json_pool(r->pool, input) != NGX_OK
            || json_array_append(input, s) != 0)
        {
            return NGX_ERROR;
        }
    }

    if (!json_is_array(input) || json_array_size(input) == 0
        || json_array_size(input) > NGX_HTTP_HELIX_MAX_INPUTS)
    {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                                 NGX_HTTP_BAD_REQUEST,
                                 input ? "invalid_type" : "missing_field",
                                 "input",
                                 "\"input\" must be a string or an array of "
                                 "1 to %d strings", NGX_HTTP_HELIX_MAX_INPUTS);
    }

    chars = 0;

    json_array_foreach(input, i, s) {
        if (!json_is_string(s) || json_string_length(s) == 0) {
            return ngx_http_helix_gateway_error(ctx, r->pool,
                             NGX_HTTP_BAD_REQUEST, "invalid_type",
                             ngx_http_helix_param(r->pool, "input[%uz]", i),
                             "each input must be a non-empty string (token "
                             "arrays are not supported)");
        }

        chars += json_string_length(s);
    }

    if (ngx_http_helix_check_tokens(r, ctx, chars) != NGX_OK) {
        return NGX_DECLINED;
    }

    copy = json_copy(req);

    if (copy == NULL || ngx_http_helix_json_pool(r->pool, copy) != NGX_OK
        || json_object_set(copy, "input", input) != 0)
    {
        return NGX_ERROR;
    }

    ctx->req = copy;
    ctx->input = input;

    if (fmt && ngx_strcmp(fmt, "base64") == 0) {
        /*
         * What OpenAI's SDKs ask for by default.  Providers that only give
         * floats get the request without it, and the floats are encoded
         * here.
         */

        ctx->base64 = 1;
        ctx->float_req = json_copy(copy);

        if (ctx->float_req == NULL
            || ngx_http_helix_json_pool(r->pool, ctx->float_req) != NGX_OK
            || json_object_del(ctx->float_req, "encoding_format") != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_serves(ngx_http_helix_provider_t *p, ngx_str_t *model,
    ngx_uint_t embeddings)
{
    ngx_str_t   *m;
    ngx_uint_t   i;
    ngx_array_t  *a;

    a = embeddings ? &p->embedding_models : &p->models;
    m = a->elts;

    for (i = 0; i < a->nelts; i++) {
        if (m[i].len == model->len
            && ngx_strncmp(m[i].data, model->data, model->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * Model -> providers, in configuration order; a "provider" named in the
 * request goes first, the others that serve the model are its fallback.
 */

static ngx_int_t
ngx_http_helix_candidates(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx)
{
    ngx_uint_t                   i, emb;
    ngx_array_t                 *models;
    ngx_http_helix_provider_t   *p;
    ngx_http_helix_candidate_t  *c;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    emb = (ctx->endpoint == NGX_HTTP_HELIX_EP_EMBEDDINGS);
    ctx->deadline = ngx_current_msec + hmcf->timeout_provider;

    if (ngx_array_init(&ctx->candidates, r->pool, 4,
                       sizeof(ngx_http_helix_candidate_t))
        != NGX_OK
        || ngx_array_init(&ctx->attempts, r->pool, 4,
                          sizeof(ngx_http_helix_attempt_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ctx->provider) {
        p = ctx->provider;
        models = emb ? &p->embedding_models : &p->models;

        if (ctx->model.len == 0) {
            if (models->nelts == 0) {
                return ngx_http_helix_gateway_error(ctx, r->pool,
                                     NGX_HTTP_NOT_FOUND, "model_not_found",
                                     "provider", "provider \"%V\" serves no "
                                     "%s models", &p->name,
                                     emb ? "embedding" : "chat");
            }

            c = ngx_array_push(&ctx->candidates);
            if (c == NULL) {
                return NGX_ERROR;
            }

            c->provider = p;
            c->model = *(ngx_str_t *) models->elts;

            return NGX_OK;
        }

        if (!ngx_http_helix_serves(p, &ctx->model, emb)) {
            return ngx_http_helix_gateway_error(ctx, r->pool,
                                 NGX_HTTP_NOT_FOUND, "model_not_found",
                                 "model", "model \"%V\" is not served by "
                                 "provider \"%V\"", &ctx->model, &p->name);
        }

        c = ngx_array_push(&ctx->candidates);
        if (c == NULL) {
            return NGX_ERROR;
        }

        c->provider = p;
        c->model = ctx->model;
    }

    p = hmcf->providers.elts;

    for (i = 0; i < hmcf->providers.nelts; i++) {
        if (!p[i].enabled || &p[i] == ctx->provider) {
            continue;
        }

        models = emb ? &p[i].embedding_models : &p[i].models;

        if (ctx->model.len) {
            if (!ngx_http_helix_serves(&p[i], &ctx->model, emb)) {
                continue;
            }

        } else if (models->nelts == 0) {
            continue;
        }

        c = ngx_array_push(&ctx->candidates);
        if (c == NULL) {
            return NGX_ERROR;
        }

        c->provider = &p[i];
        c->model = ctx->model.len ? ctx->model : *(ngx_str_t *) models->elts;
    }

    if (ctx->candidates.nelts == 0) {
        if (ctx->model.len) {
            return ngx_http_helix_gateway_error(ctx, r->pool,
                                 NGX_HTTP_NOT_FOUND, "model_not_found",
                                 "model", "model \"%V\" is not served by any "
                                 "configured provider (see GET /v1/models)",
                                 &ctx->model);
        }

        return ngx_http_helix_gateway_error(ctx, r->pool, NGX_HTTP_NOT_FOUND,
                                            "model_not_found", "model",
                                            "no provider serves %s models",
                                            emb ? "embedding" : "chat");
    }

    return NGX_OK;
}


/*
 * An OpenAI-format provider can take the client's own bytes when they
 * carry nothing of the gateway's: no re-serialisation on the miss path.
 */

static ngx_uint_t
ngx_http_helix_passthrough(ngx_http_helix_gw_ctx_t *ctx)
{
    json_t      *v;
    const char  *key;

    if (ctx->endpoint == NGX_HTTP_HELIX_EP_COMPLETIONS) {
        return 0;
    }

    /* a client format's stream goes to its own provider as it came */

    json_object_foreach(ctx->client ? ctx->client_req : ctx->req, key, v) {
        if (ngx_strcmp(key, "provider") == 0
            || ngx_strncmp(key, "x_helix", sizeof("x_helix") - 1) == 0
            || (ngx_strcmp(key, "stream") == 0 && json_is_true(v)
                && ctx->client == NULL))
        {
            return 0;
        }
    }

    return 1;
}


/* the client's bytes go to a provider of this codec as they came */

static ngx_uint_t
ngx_http_helix_raw_to(ngx_http_helix_gw_ctx_t *ctx,
    ngx_http_helix_codec_t *codec)
{
    if (!ctx->passthrough) {
        return 0;
    }

    return ctx->client ? (codec == ctx->client) : codec->passthrough;
}


/*
 * A client format's request: translated into the gateway's OpenAI chat
 * request, which is what is checked, hashed for the cache and sent on;
 * from here on the request is a chat request.
 */

static ngx_int_t
ngx_http_helix_client_in(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    json_t *body)
{
    json_t     *req;
    ngx_int_t   rc;
    ngx_str_t   err;

    req = NULL;
    ngx_str_null(&err);

    /* counting tokens needs no answer's length */

    if (ctx->count_tokens && json_object_get(body, "max_tokens") == NULL
        && json_object_set_new(body, "max_tokens", json_integer(1)) != 0)
    {
        return NGX_ERROR;
    }

    rc = ctx->client->request_in(r->pool, body, &req, &err);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                                            NGX_HTTP_BAD_REQUEST,
                                            "invalid_value", NULL, "%V",
                                            &err);
    }

    if (ngx_http_helix_json_pool(r->pool, req) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->client_req = body;
    ctx->endpoint = NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS;

    return ngx_http_helix_check_chat(r, ctx, req);
}


/* POST .../count_tokens: the gateway's own estimate, no provider asked */

static ngx_int_t
ngx_http_helix_count_tokens(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx)
{
    ngx_str_t  body;

    body.data = ngx_pnalloc(r->pool, sizeof("{\"input_tokens\":}") - 1
                                     + NGX_SIZE_T_LEN);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = ngx_sprintf(body.data, "{\"input_tokens\":%uz}",
                           ctx->prompt_tokens)
               - body.data;

    return ngx_http_helix_send_json(r, NGX_HTTP_OK, &body);
}


/* an answer (OpenAI's chat.completion) in the client's format */

static ngx_int_t
ngx_http_helix_send_answer(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_str_t *body)
{
    json_t     *ans, *out;
    ngx_str_t   data;

    if (ctx->client == NULL) {
        return ngx_http_helix_send_json(r, NGX_HTTP_OK, body);
    }

    if (ctx->client_body.len) {
        return ngx_http_helix_send_json(r, NGX_HTTP_OK, &ctx->client_body);
    }

    ans = json_loadb((char *) body->data, body->len, 0, NULL);

    if (ans == NULL || ngx_http_helix_json_pool(r->pool, ans) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out = NULL;

    if (ctx->client->answer_out(r->pool, ans, &out) != NGX_OK
        || ngx_http_helix_json_pool(r->pool, out) != NGX_OK
        || ngx_http_helix_json_dump(r->pool, out, &data) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_helix_keep_client(r, ctx, &data);

    return ngx_http_helix_send_json(r, NGX_HTTP_OK, &data);
}


/*
 * The answer in the client's format, kept in L1 beside the gateway's own
 * (its key and ":<format>"), and the request's raw bytes made to find
 * it: a repeat is sent from it as it is, with no translation.  L1 only;
 * it goes with its TTL and the admin clear's patterns like any entry.
 */

static void
ngx_http_helix_keep_client(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_str_t *data)
{
    u_char                      *p;
    ngx_str_t                    key, *name;
    ngx_http_helix_main_conf_t  *hmcf;

    if (ctx->policy < 0 || !ctx->cache_write || ctx->alias.len == 0
        || ctx->answer_key.len == 0 || ctx->stream
        || ngx_http_helix_client_key(ctx, &ctx->answer_key))
    {
        return;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    name = &ctx->client->name;

    key.len = ctx->answer_key.len + 1 + name->len;
    key.data = ngx_pnalloc(r->pool, key.len);
    if (key.data == NULL) {
        return;
    }

    p = ngx_cpymem(key.data, ctx->answer_key.data, ctx->answer_key.len);
    *p++ = ':';
    ngx_memcpy(p, name->data, name->len);

    ngx_http_helix_cache_store(hmcf, &key, ctx->policy, &ctx->served_by,
                               data, r->connection->log);
    ngx_http_helix_cache_store_alias(hmcf, &ctx->alias, &key);
}


/* the token reservation waited for Redis */

static void
ngx_http_helix_try_reserved(ngx_http_request_t *r)
{
    ngx_http_helix_try_next(r, ngx_http_get_module_ctx(r,
                                                   ngx_http_helix_module));
}


static void
ngx_http_helix_try_next(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx)
{
    json_t                      *body;
    ngx_int_t                    rc;
    ngx_str_t                    path, err, data, key;
    ngx_msec_t                   left;
    ngx_http_helix_call_t       *call;
    ngx_http_helix_codec_t      *codec;
    ngx_http_helix_candidate_t  *c;
    ngx_http_helix_main_conf_t  *hmcf;

    static ngx_str_t  miss = ngx_string("MISS");
    static ngx_str_t  bypass = ngx_string("BYPASS");

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (ctx->item && ctx->item->lookup_only) {
        /* a miss: the caller asks the provider for several at once */
        ngx_http_helix_finalize(r, ctx, NGX_OK);
        return;
    }

    /*
     * The tokens this request may use, before the first provider call;
     * an item of a batch or an ensemble is charged its usage afterwards.
     */

    if (ctx->item == NULL
        && (ngx_http_helix_limit_reserve(r, ctx->prompt_tokens, ctx->req,
                                         ngx_http_helix_try_reserved)
            != NGX_OK
            || ngx_http_helix_budget_reserve(r, ctx->prompt_tokens, ctx->req,
                                             ngx_http_helix_try_reserved)
               != NGX_OK))
    {
        return;
    }

    while (ctx->next < ctx->candidates.nelts) {

        c = (ngx_http_helix_candidate_t *) ctx->candidates.elts + ctx->next++;

        left = ctx->deadline - ngx_current_msec;

        if ((ngx_msec_int_t) left <= 0) {
            ngx_str_set(&err, "the request's deadline has passed");
            ngx_http_helix_attempt(r, ctx, c->provider,
                                   NGX_HTTP_HELIX_CALL_TIMEOUT, 0, 0, &err);
            break;
        }

        ngx_str_null(&err);
        body = NULL;
        codec = ngx_http_helix_formats_codec(c->provider->type);

        if (ngx_http_helix_raw_to(ctx, codec)) {
            if (ctx->endpoint == NGX_HTTP_HELIX_EP_EMBEDDINGS) {
                path = codec->embeddings_path;
            } else {
                path = codec->chat_path;
            }

            data = ctx->raw;
            rc = NGX_DONE;

        } else if (ctx->endpoint == NGX_HTTP_HELIX_EP_EMBEDDINGS) {
            rc = ngx_http_helix_codec_embeddings_request(r->pool, codec,
                                            ctx->base64 && !codec->base64
                                            ? ctx->float_req : ctx->req,
                                            &c->model, &path, &body, &err);
        } else {
            rc = ngx_http_helix_codec_chat_request(r->pool, codec, ctx->req,
                                                   &c->model, ctx->streaming,
                                                   &path, &body, &err);
        }

        if (rc == NGX_OK) {
            rc = ngx_http_helix_json_dump(r->pool, body, &data);
            json_decref(body);

        } else if (rc == NGX_DONE) {
            rc = NGX_OK;
        }

        if (rc == NGX_ERROR) {
            ngx_http_helix_finalize(r, ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        if (rc == NGX_DECLINED) {
            ngx_http_helix_attempt(r, ctx, c->provider,
                                   NGX_HTTP_HELIX_CALL_FAILED,
                                   NGX_HTTP_BAD_REQUEST, 0, &err);
            continue;
        }

        call = ngx_pcalloc(r->pool, sizeof(ngx_http_helix_call_t));
        if (call == NULL) {
            ngx_http_helix_finalize(r, ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        call->request = r;
        call->provider = c->provider;
        call->handler = ngx_http_helix_call_handler;
        call->data = ctx;
        call->max_body = hmcf->max_response_body;
        call->timeout = ngx_min(c->provider->timeout, left);

        if (ctx->stream) {
            ngx_str_null(&key);

            if (ctx->policy >= 0 && ctx->cache_write
                && ngx_http_helix_cache_key(r->pool, ctx->endpoint,
                                            &c->provider->name, &c->model,
                                            ctx->hash, &key)
                   != NGX_OK)
            {
                ngx_http_helix_finalize(r, ctx,
                                        NGX_HTTP_INTERNAL_SERVER_ERROR);
                return;
            }

            /* what the stream's header will say, once it goes */

            ctx->served_cache = (ctx->policy >= 0 && ctx->cache_read)
                                ? NGX_HTTP_HELIX_LOG_MISS
                                : NGX_HTTP_HELIX_LOG_BYPASS;
            ctx->served_by = c->provider->name;

            if (!ngx_http_helix_key_header(r)) {
                ngx_str_null(&key);
            }

            ngx_http_helix_stream_timing_start(ctx->stream, ctx->start_us,
                                     ctx->provider_us, ctx->served_cache,
                                     ngx_http_helix_timing_header(r));

            if (ngx_http_helix_stream_attach(ctx->stream, call, &c->model,
                                             &key,
                                             ctx->policy >= 0
                                             && ctx->cache_read
                                             ? &miss : &bypass,
                                             ctx->deadline)
                != NGX_OK)
            {
                ngx_http_helix_finalize(r, ctx,
                                        NGX_HTTP_INTERNAL_SERVER_ERROR);
                return;
            }
        }

        rc = ngx_http_helix_call_start(call, &path, &data, ctx->streaming);

        if (rc == NGX_OK) {
            ctx->call = call;
            ngx_http_helix_wait_done(&ctx->waiter,
                                     NGX_HTTP_HELIX_QUEUE_SERVED);
            return;
        }

        if (rc == NGX_ERROR) {
            ngx_http_helix_finalize(r, ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        ngx_http_helix_attempt(r, ctx, c->provider, call->outcome, 0, 0,
                               NULL);
    }

    if (ctx->item == NULL && ngx_http_helix_all_busy(ctx)) {
        /* every provider at its concurrency limit: wait for a place */

        if (ngx_http_helix_wait(r, ctx) == NGX_OK) {
            return;
        }

        ngx_http_helix_wait_done(&ctx->waiter, NGX_HTTP_HELIX_QUEUE_TIMEOUT);
    }

    ngx_http_helix_finalize(r, ctx, ngx_http_helix_give_up(r, ctx));
}


static ngx_uint_t
ngx_http_helix_all_busy(ngx_http_helix_gw_ctx_t *ctx)
{
    ngx_uint_t                 i;
    ngx_http_helix_attempt_t  *a;

    a = ctx->attempts.elts;

    for (i = 0; i < ctx->attempts.nelts; i++) {
        if (a[i].outcome != NGX_HTTP_HELIX_CALL_BUSY) {
            return 0;
        }
    }

    return ctx->attempts.nelts != 0;
}


/*
 * A place at the concurrency limits, waited for up to
 * providers.parallel.queue_timeout (and the request's deadline), in the
 * order of arrival; NGX_DECLINED: no wait (the queue is full or off, or
 * the time is up).
 */

static ngx_int_t
ngx_http_helix_wait(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx)
{
    ngx_msec_t                   until;
    ngx_pool_cleanup_t          *cln;
    ngx_http_helix_main_conf_t  *hmcf;

    if (ctx->waiter.queued) {
        return ngx_http_helix_wait_again(&ctx->waiter);
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    until = ngx_current_msec + hmcf->parallel_queue_timeout;

    if ((ngx_msec_int_t) (ctx->deadline - until) < 0) {
        until = ctx->deadline;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_DECLINED;
    }

    ctx->waiter.until = until;
    ctx->waiter.handler = ngx_http_helix_waited;
    ctx->waiter.data = ctx;
    ctx->waiter.log = r->connection->log;

    if (ngx_http_helix_wait_place(hmcf, &ctx->waiter) != NGX_OK) {
        return NGX_DECLINED;
    }

    cln->handler = ngx_http_helix_wait_cleanup;
    cln->data = ctx;

    /* a client that leaves gives its place in the line up */
    r->read_event_handler = ngx_http_test_reading;

    return NGX_OK;
}


static void
ngx_http_helix_waited(ngx_http_helix_waiter_t *w, ngx_uint_t outcome)
{
    ngx_connection_t         *c;
    ngx_http_request_t       *r;
    ngx_http_helix_gw_ctx_t  *ctx;

    ctx = w->data;
    r = ctx->request;
    c = r->connection;

    if (outcome == NGX_HTTP_HELIX_QUEUE_TIMEOUT) {
        ngx_http_helix_wait_done(w, NGX_HTTP_HELIX_QUEUE_TIMEOUT);
        ngx_http_helix_finalize(r, ctx, ngx_http_helix_give_up(r, ctx));

    } else {
        /* every candidate again, from the first */
        ctx->next = 0;
        ctx->attempts.nelts = 0;
        ngx_http_helix_try_next(r, ctx);
    }

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_helix_wait_cleanup(void *data)
{
    ngx_http_helix_gw_ctx_t  *ctx = data;

    ngx_http_helix_wait_done(&ctx->waiter, NGX_HTTP_HELIX_QUEUE_GONE);
}


/* the metrics' name for why a provider call failed or was not made */

static ngx_uint_t
ngx_http_helix_reason(ngx_uint_t outcome, ngx_uint_t status,
    ngx_str_t *reason)
{
    switch (outcome) {

    case NGX_HTTP_HELIX_CALL_TIMEOUT:
        return NGX_HTTP_HELIX_ERR_TIMEOUT;

    case NGX_HTTP_HELIX_CALL_TOO_LARGE:
        return NGX_HTTP_HELIX_ERR_TOO_LARGE;

    case NGX_HTTP_HELIX_CALL_BREAKER_OPEN:
        return NGX_HTTP_HELIX_ERR_BREAKER_OPEN;

    case NGX_HTTP_HELIX_CALL_BUSY:
        return NGX_HTTP_HELIX_ERR_BUSY;
    }

    if (status == NGX_HTTP_TOO_MANY_REQUESTS) {
        return NGX_HTTP_HELIX_ERR_RATE_LIMITED;
    }

    if (status >= 200 && status < 300) {
        return NGX_HTTP_HELIX_ERR_INVALID_ANSWER;
    }

    if (status == 0 || (reason && reason->len >= 9
                        && ngx_strncmp(reason->data, "no answer", 9) == 0))
    {
        return NGX_HTTP_HELIX_ERR_CONNECTION;
    }

    return status >= 500 ? NGX_HTTP_HELIX_ERR_STATUS_5XX
                         : NGX_HTTP_HELIX_ERR_STATUS_4XX;
}


static void
ngx_http_helix_attempt(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    ngx_http_helix_provider_t *p, ngx_uint_t outcome, ngx_uint_t status,
    ngx_msec_t latency, ngx_str_t *reason)
{
    ngx_http_helix_attempt_t  *a;

    a = ngx_array_push(&ctx->attempts);
    if (a == NULL) {
        return;
    }

    a->provider = p;
    a->outcome = outcome;
    a->status = status;
    a->latency = latency;

    ngx_http_helix_metrics_provider_error(
        ngx_http_get_module_main_conf(r, ngx_http_helix_module), p,
        ngx_http_helix_reason(outcome, status, reason));

    if (reason) {
        a->reason = *reason;

    } else {
        ngx_str_null(&a->reason);
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "helix: provider \"%V\" failed (outcome %ui, status %ui)"
                  "%s%V", &p->name, outcome, status,
                  a->reason.len ? ": " : "", &a->reason);
}


/*
 * A provider's answer.  Its own client errors (400, 404, 422...) are the
 * client's: they are passed on, naming the provider, with no fallback.
 */

static void
ngx_http_helix_call_handler(ngx_http_helix_call_t *call)
{
    ngx_int_t                 rc;
    ngx_str_t                 msg;
    ngx_uint_t                status;
    ngx_http_request_t       *r;
    ngx_http_helix_codec_t   *codec;
    ngx_http_helix_gw_ctx_t  *ctx;

    r = call->request;
    ctx = call->data;
    status = call->status;
    ctx->call = NULL;
    ctx->provider_us += call->latency_us;

    if (ctx->stream
        && (call->outcome == NGX_HTTP_HELIX_CALL_OK
            || ngx_http_helix_stream_sent(ctx->stream)))
    {
        ngx_http_helix_stream_call_end(r, ctx, call);
        return;
    }

    if (call->outcome == NGX_HTTP_HELIX_CALL_OK) {
        rc = ngx_http_helix_respond(r, ctx, call);

        if (rc != NGX_DECLINED) {
            ngx_http_helix_call_report(call, 1);
            ngx_http_helix_finalize(r, ctx, rc);
            return;
        }

        /* an answer we cannot read: the provider is at fault */
        ngx_http_helix_call_report(call, 0);
        ngx_http_helix_attempt(r, ctx, call->provider,
                               NGX_HTTP_HELIX_CALL_FAILED, status,
                               call->latency, &ctx->err.msg);
        ngx_http_helix_try_next(r, ctx);
        return;
    }

    msg.len = 0;

    if (call->outcome == NGX_HTTP_HELIX_CALL_FAILED && call->no_answer) {
        ngx_str_set(&msg, "no answer (connection failed or cut)");

    } else if (call->outcome == NGX_HTTP_HELIX_CALL_FAILED && status >= 400) {
        codec = ngx_http_helix_formats_codec(call->provider->type);

        if (ngx_http_helix_codec_error_message(r->pool, codec, status,
                                               call->body.data,
                                               call->body.len, &msg)
            != NGX_OK)
        {
            ngx_http_helix_finalize(r, ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        if (status < 500 && status != NGX_HTTP_TOO_MANY_REQUESTS
            && status != NGX_HTTP_UNAUTHORIZED && status != NGX_HTTP_FORBIDDEN
            && status != NGX_HTTP_REQUEST_TIME_OUT)
        {
            ngx_http_helix_call_report(call, 1);
            ngx_http_helix_metrics_provider_error(
                ngx_http_get_module_main_conf(r, ngx_http_helix_module),
                call->provider, NGX_HTTP_HELIX_ERR_STATUS_4XX);
            (void) ngx_http_helix_gateway_error(ctx, r->pool, status,
                                                "provider_error", NULL,
                                                "provider \"%V\": %V",
                                                &call->provider->name, &msg);
            ngx_http_helix_finalize(r, ctx, ngx_http_helix_send_err(r, ctx));
            return;
        }

    } else if (call->outcome == NGX_HTTP_HELIX_CALL_FAILED) {
        ngx_str_set(&msg, "no complete answer (connection failed or cut)");

    } else if (call->outcome == NGX_HTTP_HELIX_CALL_TOO_LARGE) {
        ngx_str_set(&msg, "answer larger than max_response_body");
    }

    ngx_http_helix_call_report(call, 0);
    ngx_http_helix_attempt(r, ctx, call->provider, call->outcome, status,
                           call->latency, &msg);
    ngx_http_helix_try_next(r, ctx);
}


static const char  *ngx_http_helix_top_keys[] = {
    "id", "object", "created", "data", "model", "choices", "usage", NULL
};

static const char  *ngx_http_helix_choice_keys[] = {
    "text", "index", "message", "logprobs", "finish_reason", NULL
};

static const char  *ngx_http_helix_message_keys[] = {
    "role", "content", "refusal", "tool_calls", NULL
};

static const char  *ngx_http_helix_tool_call_keys[] = {
    "id", "type", "function", NULL
};

static const char  *ngx_http_helix_embedding_keys[] = {
    "object", "index", "embedding", NULL
};


/* an answer we built (not passed through) in OpenAI's field order */

static json_t *
ngx_http_helix_canonical(json_t *out)
{
    size_t   i, j;
    json_t  *top, *list, *c, *o, *m, *tc, *t;

    top = ngx_http_helix_json_order(out, ngx_http_helix_top_keys);
    if (top == NULL) {
        return NULL;
    }

    list = json_object_get(top, "choices");

    json_array_foreach(list, i, c) {
        o = ngx_http_helix_json_order(c, ngx_http_helix_choice_keys);
        if (o == NULL || json_array_set_new(list, i, o) != 0) {
            goto failed;
        }

        m = json_object_get(o, "message");
        if (!json_is_object(m)) {
            continue;
        }

        m = ngx_http_helix_json_order(m, ngx_http_helix_message_keys);
        if (m == NULL || json_object_set_new(o, "message", m) != 0) {
            goto failed;
        }

        json_array_foreach(json_object_get(m, "tool_calls"), j, tc) {
            t = ngx_http_helix_json_order(tc, ngx_http_helix_tool_call_keys);
            if (t == NULL
                || json_array_set_new(json_object_get(m, "tool_calls"), j, t)
                   != 0)
            {
                goto failed;
            }
        }
    }

    list = json_object_get(top, "data");

    json_array_foreach(list, i, c) {
        o = ngx_http_helix_json_order(c, ngx_http_helix_embedding_keys);
        if (o == NULL || json_array_set_new(list, i, o) != 0) {
            goto failed;
        }
    }

    return top;

failed:

    json_decref(top);
    return NULL;
}


/* floats -> OpenAI's base64 form: little-endian float32, base64 */

static ngx_int_t
ngx_http_helix_embeddings_base64(ngx_pool_t *pool, json_t *out)
{
    float       f;
    u_char     *p;
    size_t      i, j, n;
    json_t     *d, *v;
    uint32_t    u;
    ngx_str_t   raw, enc;

    json_array_foreach(json_object_get(out, "data"), i, d) {
        v = json_object_get(d, "embedding");
        n = json_array_size(v);

        if (!json_is_array(v)) {
            continue;
        }

        raw.len = n * 4;
        raw.data = ngx_pnalloc(pool, raw.len + 1);
        enc.data = ngx_pnalloc(pool, ngx_base64_encoded_length(raw.len));

        if (raw.data == NULL || enc.data == NULL) {
            return NGX_ERROR;
        }

        p = raw.data;

        for (j = 0; j < n; j++) {
            f = (float) json_number_value(json_array_get(v, j));
            ngx_memcpy(&u, &f, 4);

            *p++ = (u_char) (u & 0xff);
            *p++ = (u_char) ((u >> 8) & 0xff);
            *p++ = (u_char) ((u >> 16) & 0xff);
            *p++ = (u_char) (u >> 24);
        }

        ngx_encode_base64(&enc, &raw);

        if (json_object_set_new(d, "embedding",
                                json_stringn((char *) enc.data, enc.len))
            != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* NGX_DECLINED: the provider's answer is not valid (ctx->err says why) */

static ngx_int_t
ngx_http_helix_respond(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    ngx_http_helix_call_t *call)
{
    json_t                     *out, *choices, *c, *text, *choice;
    size_t                      i;
    uint64_t                    pt, ct;
    ngx_int_t                   rc;
    ngx_str_t                   err, body, *model;
    ngx_http_helix_codec_t     *codec;
    ngx_http_helix_provider_t  *p;
    ngx_http_helix_candidate_t *cand;

    p = call->provider;
    cand = (ngx_http_helix_candidate_t *) ctx->candidates.elts
           + ctx->next - 1;
    model = &cand->model;
    ngx_str_null(&err);
    out = NULL;

    codec = ngx_http_helix_formats_codec(p->type);

    if (codec->passthrough
        && ctx->endpoint != NGX_HTTP_HELIX_EP_COMPLETIONS)
    {
        /* the provider already speaks the client's format */

        rc = codec->answer_pass(r->pool,
                                ctx->endpoint == NGX_HTTP_HELIX_EP_EMBEDDINGS,
                                json_array_size(ctx->input),
                                call->body.data, call->body.len, &pt, &ct);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_OK) {
            ngx_http_helix_limit_charge(r, (ngx_uint_t) (pt + ct));
            ngx_http_helix_budget_charge(r, p, model, pt, ct, &call->body);

            ngx_http_helix_metrics_provider(
                ngx_http_get_module_main_conf(r, ngx_http_helix_module), p,
                call->latency, pt, ct);

            body = call->body;
            goto send;
        }

        /* not plainly good: the tree path below says what is wrong */
    }

    if (ctx->endpoint == NGX_HTTP_HELIX_EP_EMBEDDINGS) {
        rc = ngx_http_helix_codec_embeddings_answer(r->pool, codec, model,
                                                    ctx->input,
                                                    call->body.data,
                                                    call->body.len, &out,
                                                    &err);
    } else {
        rc = ngx_http_helix_codec_chat_answer(r->pool, codec, model,
                                              call->body.data,
                                              call->body.len, &out, &err);
    }

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_helix_gateway_error(ctx, r->pool,
                                            NGX_HTTP_BAD_GATEWAY,
                                            "provider_error", NULL,
                                            "invalid answer: %V", &err);
    }

    if (ngx_http_helix_json_pool(r->pool, out) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    c = json_object_get(out, "usage");

    ngx_http_helix_limit_charge(r,
        (ngx_uint_t) json_integer_value(json_object_get(c, "prompt_tokens"))
        + (ngx_uint_t) json_integer_value(json_object_get(c,
                                                  "completion_tokens")));

    ngx_http_helix_budget_charge(r, p, model,
        (uint64_t) json_integer_value(json_object_get(c, "prompt_tokens")),
        (uint64_t) json_integer_value(json_object_get(c,
                                                  "completion_tokens")),
        &call->body);

    ngx_http_helix_metrics_provider(
        ngx_http_get_module_main_conf(r, ngx_http_helix_module), p,
        call->latency,
        (uint64_t) json_integer_value(json_object_get(c, "prompt_tokens")),
        (uint64_t) json_integer_value(json_object_get(c,
                                                  "completion_tokens")));

    if (ctx->endpoint == NGX_HTTP_HELIX_EP_COMPLETIONS) {
        /* chat.completion -> the guide's text_completion */

        choices = json_array();
        if (choices == NULL
            || ngx_http_helix_json_pool(r->pool, choices) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        json_array_foreach(json_object_get(out, "choices"), i, c) {
            text = json_object_get(json_object_get(c, "message"), "content");

            choice = json_pack("{s:s%,s:O?,s:n,s:O?}",
                               "text", json_is_string(text)
                                       ? json_string_value(text) : "",
                               json_is_string(text)
                                       ? json_string_length(text) : 0,
                               "index", json_object_get(c, "index"),
                               "logprobs",
                               "finish_reason",
                               json_object_get(c, "finish_reason"));

            if (choice == NULL || json_array_append_new(choices, choice)) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }

        if (json_object_set(out, "choices", choices) != 0) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        c = json_object_get(out, "id");

        if (json_is_string(c)
            && ngx_strncmp(json_string_value(c), "chatcmpl-", 9) == 0)
        {
            json_object_set_new(out, "id",
                                json_sprintf("cmpl-%s",
                                             json_string_value(c) + 9));
        }

        json_object_set_new(out, "object", json_string("text_completion"));
        json_object_del(out, "system_fingerprint");
    }

    if (ctx->base64 && !codec->base64
        && ngx_http_helix_embeddings_base64(r->pool, out) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (codec->passthrough
        && ctx->endpoint != NGX_HTTP_HELIX_EP_COMPLETIONS)
    {
        /* the provider already speaks the client's format */
        body = call->body;

    } else {
        out = ngx_http_helix_canonical(out);

        if (out == NULL
            || ngx_http_helix_json_pool(r->pool, out) != NGX_OK
            || ngx_http_helix_json_dump(r->pool, out, &body) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ctx->client && ngx_http_helix_raw_to(ctx, codec)) {
        /* the client's own format both ways: its answer as it came */
        ctx->client_body = call->body;
    }

send:

    if (ctx->item == NULL
        && ngx_http_helix_add_header(r, "X-Helix-Provider", &p->name)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_helix_answer(r, ctx, cand, &body);
}


/* a provider's answer: sent, then kept in L1 */

static ngx_int_t
ngx_http_helix_answer(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    ngx_http_helix_candidate_t *cand, ngx_str_t *body)
{
    ngx_int_t                    rc;
    ngx_str_t                    key;
    ngx_http_helix_main_conf_t  *hmcf;

    static ngx_str_t  miss = ngx_string("MISS");
    static ngx_str_t  bypass = ngx_string("BYPASS");

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    ngx_str_null(&key);

    if (ctx->policy >= 0 && ctx->cache_write) {
        if (ngx_http_helix_cache_key(r->pool, ctx->endpoint,
                                     &cand->provider->name, &cand->model,
                                     ctx->hash, &key)
            != NGX_OK
            || (ctx->item == NULL && ngx_http_helix_key_header(r)
                && ngx_http_helix_add_header(r, "X-Cache-Key", &key)
                   != NGX_OK))
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ctx->item == NULL
        && ngx_http_helix_add_header(r, "X-Cache",
                                     ctx->policy >= 0 && ctx->cache_read
                                     ? &miss : &bypass)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->policy >= 0 && ctx->cache_read) {
        ngx_http_helix_metrics_cache(hmcf, ctx->policy, 0);
    }

    if (ctx->item) {
        ctx->item->provider = cand->provider->name;
        ctx->item->status = NGX_HTTP_OK;
        ctx->item->body = *body;
        rc = NGX_OK;

    } else {
        ctx->answer = *body;
        ctx->served = 1;
        ctx->served_cache = (ctx->policy >= 0 && ctx->cache_read)
                            ? NGX_HTTP_HELIX_LOG_MISS
                            : NGX_HTTP_HELIX_LOG_BYPASS;
        ctx->served_by = cand->provider->name;

        ctx->answer_key = key;

        rc = ngx_http_helix_timing(r, ctx, ctx->served_cache);

        if (rc == NGX_OK) {
            rc = ngx_http_helix_send_answer(r, ctx, body);
        }
    }

    if (key.len && rc != NGX_ERROR) {
        /* after the answer has gone: the client never waits for this */
        ngx_http_helix_keep(r, ctx, &key, cand, body);
    }

    return rc;
}


/* an answer into L1 and L2, the claim on its key given up */

static void
ngx_http_helix_keep(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    ngx_str_t *key, ngx_http_helix_candidate_t *cand, ngx_str_t *body)
{
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    ngx_http_helix_cache_store(hmcf, key, ctx->policy,
                               &cand->provider->name, body,
                               r->connection->log);

    /* a client format's bytes find its own copy (keep_client) */

    if (ctx->alias.len && ctx->client == NULL) {
        ngx_http_helix_cache_store_alias(hmcf, &ctx->alias, key);
    }

    ngx_http_helix_l2_store(r, ctx, key, &cand->provider->name, body);

    if (ctx->claimed.len == key->len
        && ngx_strncmp(ctx->claimed.data, key->data, key->len) == 0)
    {
        /* the store has answered the claim */
        ngx_str_null(&ctx->claimed);
    }

    ngx_http_helix_cache_release(r, ctx);
}


/*
 * A streaming call has ended.  Before the first frame a failed stream
 * falls back as any failed call; after it, the stream ends with an error
 * event.  A complete stream is cached as its non-streaming twin.
 */

static void
ngx_http_helix_stream_call_end(ngx_http_request_t *r,
    ngx_http_helix_gw_ctx_t *ctx, ngx_http_helix_call_t *call)
{
    ngx_int_t                    rc;
    ngx_str_t                    answer, reason, key;
    ngx_http_helix_candidate_t  *cand;

    rc = ngx_http_helix_stream_end(ctx->stream, &answer, &reason);

    if (rc == NGX_DECLINED) {
        ngx_http_helix_call_report(call, 0);
        ngx_http_helix_attempt(r, ctx, call->provider,
                               NGX_HTTP_HELIX_CALL_FAILED, call->status,
                               call->latency, &reason);
        ngx_http_helix_try_next(r, ctx);
        return;
    }

    /* a client that went away says nothing about the provider */
    ngx_http_helix_call_report(call, answer.len || r->connection->error);

    ctx->answer = answer;

    if (answer.len && ctx->policy >= 0) {
        cand = (ngx_http_helix_candidate_t *) ctx->candidates.elts
               + ctx->next - 1;

        if (ctx->cache_read) {
            ngx_http_helix_metrics_cache(
                ngx_http_get_module_main_conf(r, ngx_http_helix_module),
                ctx->policy, 0);
        }

        if (ctx->cache_write
            && ngx_http_helix_cache_key(r->pool, ctx->endpoint,
                                        &cand->provider->name, &cand->model,
                                        ctx->hash, &key)
               == NGX_OK)
        {
            ngx_http_helix_keep(r, ctx, &key, cand, &answer);
        }
    }

    ngx_http_finalize_request(r, rc);
}


/* every candidate was tried or skipped: say which and why */

static ngx_int_t
ngx_http_helix_give_up(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx)
{
    u_char                           *p, *last;
    ngx_str_t                         retry;
    ngx_uint_t                        i, status, busy, started, timeouts;
    ngx_uint_t                        limited;
    ngx_msec_t                        wait;
    ngx_http_helix_attempt_t         *a;
    ngx_http_helix_provider_state_t   st;
    ngx_http_helix_main_conf_t       *hmcf;
    u_char                            msg[800];

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    p = msg;
    last = msg + sizeof(msg);
    a = ctx->attempts.elts;
    busy = 0;
    limited = 0;
    started = 0;
    timeouts = 0;
    wait = 0;
    status = 0;

    for (i = 0; i < ctx->attempts.nelts; i++) {
        p = ngx_slprintf(p, last, "%s%V (", i ? "; " : "",
                         &a[i].provider->name);

        switch (a[i].outcome) {

        case NGX_HTTP_HELIX_CALL_BREAKER_OPEN:
            ngx_http_helix_provider_state(hmcf, a[i].provider, &st);
            wait = wait ? ngx_min(wait, st.retry_in) : st.retry_in;
            busy++;
            p = ngx_slprintf(p, last, "circuit breaker open");
            break;

        case NGX_HTTP_HELIX_CALL_BUSY:
            busy++;
            limited++;
            p = ngx_slprintf(p, last, "at its concurrency limit");
            break;

        case NGX_HTTP_HELIX_CALL_TIMEOUT:
            started++;
            timeouts++;
            p = ngx_slprintf(p, last, "timed out");
            break;

        default:
            started++;

            if (a[i].status == NGX_HTTP_BAD_REQUEST && a[i].latency == 0
                && a[i].reason.len)
            {
                /* the request cannot be expressed for this provider */
                status = NGX_HTTP_BAD_REQUEST;
            }

            if (a[i].status) {
                p = ngx_slprintf(p, last, "HTTP %ui", a[i].status);
            } else {
                p = ngx_slprintf(p, last, "failed");
            }
        }

        if (a[i].reason.len) {
            p = ngx_slprintf(p, last, ": %V", &a[i].reason);
        }

        p = ngx_slprintf(p, last, ")");
    }

    if (busy == ctx->attempts.nelts) {
        /* nothing was tried: come back when a place is free */

        if (ctx->item) {
            ctx->item->busy = (limited == ctx->attempts.nelts);
            (void) ngx_http_helix_gateway_error(ctx, r->pool,
                                         NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "providers_unavailable", NULL,
                                         "no provider can take the request "
                                         "now: %*s", p - msg, msg);
            return ngx_http_helix_send_err(r, ctx);
        }

        retry.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (retry.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        retry.len = ngx_sprintf(retry.data, "%M",
                                wait ? (wait + 999) / 1000 : 1)
                    - retry.data;

        if (ngx_http_helix_add_header(r, "Retry-After", &retry) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_helix_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "providers_unavailable", NULL,
                                         "no provider can take the request "
                                         "now: %*s", p - msg, msg);
    }

    if (status == 0) {
        status = (timeouts == started) ? NGX_HTTP_GATEWAY_TIME_OUT
                                       : NGX_HTTP_BAD_GATEWAY;
    }

    (void) ngx_http_helix_gateway_error(ctx, r->pool, status,
                                        "provider_error", NULL,
                                        "all providers failed: %*s",
                                        p - msg, msg);

    return ngx_http_helix_send_err(r, ctx);
}


/*
 * The end of a request's path: its HTTP answer has been sent (or is an
 * nginx status to send), or, for an item, the item's handler is told.
 */

static void
ngx_http_helix_finalize(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx,
    ngx_int_t rc)
{
    ngx_http_helix_item_t  *item;

    item = ctx->item;

    if (item == NULL) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (item->done || ctx->cancelled) {
        return;
    }

    if (item->status == 0 && !item->lookup_only) {
        item->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        item->code = "internal_error";
        ngx_str_set(&item->message, "internal error");
    }

    item->done = 1;
    item->latency = ngx_current_msec - item->start;
    ctx->cancelled = 1;

    if (ctx->wait.timer_set) {
        ngx_del_timer(&ctx->wait);
    }

    if (!item->lookup_only) {
        /* failed: identical requests must not wait for this one */
        ngx_http_helix_cache_release(r, ctx);
    }

    item->handler(item);
}


/* the error in ctx->err, as an HTTP answer or into the item */

static ngx_int_t
ngx_http_helix_send_err(ngx_http_request_t *r, ngx_http_helix_gw_ctx_t *ctx)
{
    ngx_http_helix_item_t  *item;

    item = ctx->item;

    if (item == NULL) {
        return ngx_http_helix_send_error(r, ctx->err.status, ctx->err.code,
                                         ctx->err.param, "%V",
                                         &ctx->err.msg);
    }

    item->status = ctx->err.status;
    item->code = ctx->err.code;
    item->param = ctx->err.param;
    item->message = ctx->err.msg;

    return NGX_OK;
}


/*
 * An item: what ngx_http_helix_gateway_body() does for a request of its
 * own, from the parsed request on.  NGX_ERROR only when nothing could be
 * started; every other outcome reaches item->handler.
 */

ngx_int_t
ngx_http_helix_item_start(ngx_http_helix_item_t *item)
{
    ngx_int_t                 rc;
    ngx_http_request_t       *r;
    ngx_http_helix_gw_ctx_t  *ctx;

    r = item->request;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_helix_gw_ctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->request = r;
    ctx->item = item;
    ctx->endpoint = item->endpoint;

    item->gw = ctx;
    item->status = 0;
    item->tier = 0;
    item->busy = 0;
    item->done = 0;
    item->start = ngx_current_msec;
    ngx_str_null(&item->provider);

    switch (item->endpoint) {
    case NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS:
        rc = ngx_http_helix_check_chat(r, ctx, item->req);
        break;
    case NGX_HTTP_HELIX_EP_COMPLETIONS:
        rc = ngx_http_helix_check_completion(r, ctx, item->req);
        break;
    default:
        rc = ngx_http_helix_check_embeddings(r, ctx, item->req);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_helix_candidates(r, ctx);
    }

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        (void) ngx_http_helix_send_err(r, ctx);
        ngx_http_helix_finalize(r, ctx, NGX_OK);
        return NGX_OK;
    }

    if (item->single) {
        ctx->candidates.nelts = 1;
    }

    if (item->no_cache) {
        ctx->policy = -1;

    } else {
        ngx_http_helix_cache_policy_of(r, ctx);
    }

    rc = ngx_http_helix_cache_begin(r, ctx);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_http_helix_try_next(r, ctx);
    }

    return NGX_OK;
}


/* the item is not wanted any more: its call is cut, its claim dropped */

void
ngx_http_helix_item_cancel(ngx_http_helix_item_t *item)
{
    ngx_http_helix_gw_ctx_t  *ctx;

    ctx = item->gw;

    if (ctx == NULL) {
        return;
    }

    ctx->cancelled = 1;

    if (ctx->wait.timer_set) {
        ngx_del_timer(&ctx->wait);
    }

    if (ctx->call) {
        ctx->call->handler = NULL;
        ngx_http_helix_call_abort(ctx->call);
        ctx->call = NULL;
    }

    ngx_http_helix_cache_release(ctx->request, ctx);
}


/*
 * A lookup_only item that missed: the answer the caller got for it from
 * a provider, kept in L1 and L2 as if the item had asked itself.
 */

void
ngx_http_helix_item_store(ngx_http_helix_item_t *item, ngx_str_t *provider,
    ngx_str_t *model, ngx_str_t *body)
{
    ngx_str_t                    key;
    ngx_http_request_t          *r;
    ngx_http_helix_gw_ctx_t     *ctx;
    ngx_http_helix_main_conf_t  *hmcf;

    ctx = item->gw;
    r = ctx->request;
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (body && ctx->policy >= 0 && ctx->cache_write
        && ngx_http_helix_cache_key(r->pool, ctx->endpoint, provider, model,
                                    ctx->hash, &key)
           == NGX_OK)
    {
        ngx_http_helix_cache_store(hmcf, &key, ctx->policy, provider, body,
                                   r->connection->log);
        ngx_http_helix_l2_store(r, ctx, &key, provider, body);

        if (ctx->claimed.len == key.len
            && ngx_strncmp(ctx->claimed.data, key.data, key.len) == 0)
        {
            /* the store has answered the claim */
            ngx_str_null(&ctx->claimed);
        }
    }

    ngx_http_helix_cache_release(r, ctx);
}


/* for the completion log, in the LOG phase: the answer sent, if any */

ngx_int_t
ngx_http_helix_gateway_summary(ngx_http_request_t *r,
    ngx_http_helix_summary_t *s)
{
    ngx_http_helix_gw_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_helix_module);
    if (ctx == NULL) {
        return NGX_DECLINED;
    }

    s->model = ctx->model;
    s->answer = ctx->answer;
    s->meta = (ctx->l1_hit && ctx->answer.len) ? &ctx->meta : NULL;
    s->stream = (ctx->stream != NULL || ctx->streaming);
    s->cost = ngx_http_helix_budget_cost(r);

    if (ctx->served
        || (ctx->stream && ctx->served_by.len
            && ngx_http_helix_stream_started(ctx->stream)))
    {
        s->served = 1;
        s->provider = ctx->served_by;
        s->cache = ctx->served_cache;
    }

    if (ctx->timed) {
        s->timed = 1;
        s->gw_us = ctx->gw_us;
        s->provider_us = ctx->provider_us;

    } else if (ctx->stream
               && ngx_http_helix_stream_timing(ctx->stream, &s->gw_us,
                                               &s->provider_us)
                  == NGX_OK)
    {
        /* a stream's: to its first frame */
        s->timed = 1;
    }

    return NGX_OK;
}
