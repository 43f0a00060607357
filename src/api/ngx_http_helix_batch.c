/*
 * Copyright (C) helix authors
 *
 * POST /v1/completions/batch and POST /v1/embeddings/batch: many requests
 * in one, each run as an item through the single request's own path
 * (ngx_http_helix_gateway.h), at most max_concurrent of them at a time.
 * The ensemble (ngx_http_helix_ensemble.c) runs on the same scheduler.
 *
 * Provider concurrency limits stay in charge: an item turned away only
 * because every provider is at its limit waits for a place the batch's
 * own items free, instead of failing, and the batch narrows its window.
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_gateway.h"
#include "ngx_http_helix_batch.h"
#include "ngx_http_helix_log.h"


#define NGX_HTTP_HELIX_MAX_BATCH_SIZE  2048


static void ngx_http_helix_batch_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_helix_batch_read(ngx_http_request_t *r,
    ngx_str_t *body);
static void ngx_http_helix_batch_item_done(ngx_http_helix_item_t *item);
static void ngx_http_helix_batch_log(ngx_http_helix_batch_t *b, ngx_uint_t k,
    ngx_http_helix_item_t *item);
static void ngx_http_helix_batch_cleanup(void *data);

static ngx_int_t ngx_http_helix_completions_batch(ngx_http_helix_batch_t *b,
    json_t *req);
static void ngx_http_helix_completions_answer(ngx_http_helix_batch_t *b);

static ngx_int_t ngx_http_helix_embeddings_batch(ngx_http_helix_batch_t *b,
    json_t *req);
static ngx_int_t ngx_http_helix_embeddings_check(ngx_http_request_t *r,
    ngx_http_helix_main_conf_t *hmcf, json_t *req, json_t *texts,
    json_int_t *bsp, ngx_int_t *rcp);
static void ngx_http_helix_embeddings_looked_up(ngx_http_helix_batch_t *b);
static void ngx_http_helix_embeddings_chunk(ngx_http_helix_batch_t *b,
    ngx_http_helix_item_t *item);
static void ngx_http_helix_embeddings_answer(ngx_http_helix_batch_t *b);


ngx_http_helix_batch_start_pt  ngx_http_helix_batch_ensemble;


ngx_int_t
ngx_http_helix_batch_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_helix_body_check(r);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_http_helix_body_read_start(r, ngx_http_helix_batch_body);
}


static void
ngx_http_helix_batch_body(ngx_http_request_t *r)
{
    json_t                     *req;
    ngx_int_t                   rc;
    ngx_str_t                   body;
    json_error_t                jerr;
    ngx_pool_cleanup_t         *cln;
    ngx_http_helix_batch_t     *b;
    ngx_http_helix_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);

    ngx_str_null(&body);
    rc = ngx_http_helix_batch_read(r, &body);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    req = json_loadb((char *) body.data, body.len, 0, &jerr);

    if (req == NULL) {
        ngx_http_finalize_request(r,
            ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                      NULL, "request body is not valid JSON: "
                                      "%s (line %d, column %d)", jerr.text,
                                      jerr.line, jerr.column));
        return;
    }

    if (ngx_http_helix_json_pool(r->pool, req) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (!json_is_object(req)) {
        ngx_http_finalize_request(r,
            ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                      NULL, "request body must be a JSON "
                                      "object"));
        return;
    }

    b = ngx_pcalloc(r->pool, sizeof(ngx_http_helix_batch_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (b == NULL || cln == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    b->request = r;
    b->endpoint = hlcf->endpoint;

    cln->handler = ngx_http_helix_batch_cleanup;
    cln->data = b;

    /* a client that goes away ends every item's provider call too */
    r->read_event_handler = ngx_http_test_reading;

    switch (b->endpoint) {

    case NGX_HTTP_HELIX_EP_COMPLETIONS_BATCH:
        rc = ngx_http_helix_completions_batch(b, req);
        break;

    case NGX_HTTP_HELIX_EP_EMBEDDINGS_BATCH:
        rc = ngx_http_helix_embeddings_batch(b, req);
        break;

    default:
        rc = ngx_http_helix_batch_ensemble
             ? ngx_http_helix_batch_ensemble(b, req)
             : NGX_HTTP_NOT_IMPLEMENTED;
    }

    if (rc != NGX_OK) {
        /* nothing was started: an error answer or an nginx status */
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_http_helix_batch_read(ngx_http_request_t *r, ngx_str_t *body)
{
    size_t                       len;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    len = ngx_http_helix_body_length(r);

    if (len == 0) {
        return ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid_json", NULL,
                                         "request body is empty");
    }

    if (len > hmcf->max_request_body) {
        return ngx_http_helix_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                         "request_too_large", NULL,
                                         "request body of %uz bytes is "
                                         "larger than max_request_body (%uz "
                                         "bytes)", len,
                                         hmcf->max_request_body);
    }

    if (ngx_http_helix_body_read(r, len, body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_helix_batch_cleanup(void *data)
{
    ngx_http_helix_batch_t *b = data;

    /* the request is going away: the items' calls end with its pool */

    b->stop = 1;

    if (b->deadline.timer_set) {
        ngx_del_timer(&b->deadline);
    }
}


/* the items array, each item bound to the batch */

ngx_int_t
ngx_http_helix_batch_init(ngx_http_helix_batch_t *b, ngx_uint_t n)
{
    ngx_uint_t  i;

    b->items = ngx_pcalloc(b->request->pool,
                           n * sizeof(ngx_http_helix_item_t));
    b->queue = ngx_palloc(b->request->pool, n * sizeof(ngx_uint_t));

    if (b->items == NULL || b->queue == NULL) {
        return NGX_ERROR;
    }

    b->nitems = n;
    b->qhead = 0;
    b->qlen = 0;
    b->running = 0;
    b->finished = 0;

    for (i = 0; i < n; i++) {
        b->items[i].request = b->request;
        b->items[i].handler = ngx_http_helix_batch_item_done;
        b->items[i].data = b;
    }

    return NGX_OK;
}


void
ngx_http_helix_batch_push(ngx_http_helix_batch_t *b, ngx_uint_t i)
{
    b->queue[(b->qhead + b->qlen) % b->nitems] = i;
    b->qlen++;
}


/* an item that never runs (bad input): done at once */

void
ngx_http_helix_batch_fail(ngx_http_helix_batch_t *b, ngx_uint_t i,
    ngx_uint_t status, const char *code, char *param, const char *msg)
{
    ngx_http_helix_item_t  *item;

    item = &b->items[i];
    item->status = status;
    item->code = code;
    item->param = param;
    item->message.data = (u_char *) msg;
    item->message.len = ngx_strlen(msg);
    item->done = 1;

    b->finished++;
}


/*
 * Starts queued items while there is room; when every item is done (or
 * the batch was stopped and nothing runs any more) the batch answers.
 * Items may end inside ngx_http_helix_item_start(): the loop is not
 * entered again from there, it goes round once more instead.
 */

void
ngx_http_helix_batch_run(ngx_http_helix_batch_t *b)
{
    ngx_uint_t              i;
    ngx_http_helix_item_t  *item;

    if (b->scheduling) {
        b->again = 1;
        return;
    }

    b->scheduling = 1;

    do {
        b->again = 0;

        while (!b->stop && b->running < b->max && b->qlen) {
            i = b->queue[b->qhead];
            b->qhead = (b->qhead + 1) % b->nitems;
            b->qlen--;

            item = &b->items[i];
            b->running++;
            b->peak = ngx_max(b->peak, b->running);

            if (ngx_http_helix_item_start(item) != NGX_OK) {
                b->running--;
                ngx_http_helix_batch_fail(b, i,
                                          NGX_HTTP_INTERNAL_SERVER_ERROR,
                                          "internal_error", NULL,
                                          "internal error");
            }
        }

    } while (b->again);

    b->scheduling = 0;

    if (!b->answered
        && (b->finished == b->nitems || (b->stop && b->running == 0)))
    {
        b->answered = 1;
        b->complete(b);
    }
}


/* an item's row in the completion log: what it was, where it came from */

static void
ngx_http_helix_batch_log(ngx_http_helix_batch_t *b, ngx_uint_t k,
    ngx_http_helix_item_t *item)
{
    ngx_http_helix_log_row_t  row;

    if (item->status == 0) {
        return;
    }

    ngx_memzero(&row, sizeof(ngx_http_helix_log_row_t));

    row.gateway_us = -1;
    row.provider_us = -1;
    row.provider = item->provider;
    row.status = item->status;
    row.latency = item->latency;

    if (item->status == NGX_HTTP_OK) {
        row.answer = item->body;
    }

    if (item->tier == 1) {
        row.cache = NGX_HTTP_HELIX_LOG_HIT_L1;

    } else if (item->tier == 2) {
        row.cache = NGX_HTTP_HELIX_LOG_HIT_L2;

    } else if (item->provider.len) {
        row.cache = item->no_cache ? NGX_HTTP_HELIX_LOG_BYPASS
                                   : NGX_HTTP_HELIX_LOG_MISS;
    } else {
        row.cache = NGX_HTTP_HELIX_LOG_NONE;
    }

    if (item->req) {
        row.model.data = (u_char *) json_string_value(
                                        json_object_get(item->req, "model"));
        row.model.len = row.model.data ? ngx_strlen(row.model.data) : 0;
    }

    ngx_http_helix_log_item(b->request, &b->log_id, b->log_base + k,
                            b->endpoint == NGX_HTTP_HELIX_EP_ENSEMBLE
                            ? NGX_HTTP_HELIX_LOG_ENSEMBLE_MEMBER
                            : b->endpoint == NGX_HTTP_HELIX_EP_DEBATES
                            ? NGX_HTTP_HELIX_LOG_DEBATE_CALL
                            : NGX_HTTP_HELIX_LOG_BATCH_ITEM,
                            &row);
}


static void
ngx_http_helix_batch_item_done(ngx_http_helix_item_t *item)
{
    ngx_uint_t               i;
    ngx_http_helix_batch_t  *b;

    b = item->data;
    i = item - b->items;

    if (b->answered) {
        return;
    }

    b->running--;

    if (item->busy && b->requeue && b->running > 0 && !b->stop) {
        /*
         * Every provider is at its limit and some of the places are held
         * by this batch: the item goes first when one of them is freed,
         * and the batch does not go wider than what the providers take.
         */

        b->qhead = (b->qhead + b->nitems - 1) % b->nitems;
        b->queue[b->qhead] = i;
        b->qlen++;
        b->max = ngx_max(b->running, 1);

        ngx_http_helix_batch_run(b);
        return;
    }

    b->finished++;

    /* every completion is in the completion log, a batch's too */

    if (b->endpoint == NGX_HTTP_HELIX_EP_COMPLETIONS_BATCH
        || b->endpoint == NGX_HTTP_HELIX_EP_ENSEMBLE
        || b->endpoint == NGX_HTTP_HELIX_EP_DEBATES)
    {
        ngx_http_helix_batch_log(b, i, item);
    }

    if (b->item_done) {
        b->item_done(b, item);
    }

    ngx_http_helix_batch_run(b);
}


/* the end: the answer, or an nginx status, sent once */

void
ngx_http_helix_batch_finish(ngx_http_helix_batch_t *b, ngx_int_t rc)
{
    ngx_http_finalize_request(b->request, rc);
}


ngx_int_t
ngx_http_helix_batch_send(ngx_http_helix_batch_t *b, json_t *out)
{
    ngx_str_t  body;

    if (out == NULL
        || ngx_http_helix_json_pool(b->request->pool, out) != NGX_OK
        || ngx_http_helix_json_dump(b->request->pool, out, &body) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_helix_send_json(b->request, NGX_HTTP_OK, &body);
}


/* an item's error in OpenAI's shape */

json_t *
ngx_http_helix_batch_error(ngx_http_helix_item_t *item)
{
    return json_pack("{s:s%,s:s,s:s?,s:s?}",
                     "message", item->message.data ? (char *)
                                item->message.data : "",
                     item->message.len,
                     "type", ngx_http_helix_error_type(item->status),
                     "param", item->param,
                     "code", item->code);
}


/* the item's answer, parsed back: NULL if it has none */

json_t *
ngx_http_helix_batch_answer(ngx_http_helix_item_t *item)
{
    if (item->status != NGX_HTTP_OK || item->body.len == 0) {
        return NULL;
    }

    return json_loadb((char *) item->body.data, item->body.len, 0, NULL);
}


/*
 * POST /v1/completions/batch
 * {"requests": [{"prompt": ...}, ...],
 *  "batch_options": {"parallel": true, "max_concurrent": 5}}
 */

static ngx_int_t
ngx_http_helix_completions_batch(ngx_http_helix_batch_t *b, json_t *req)
{
    size_t                       i, n;
    json_t                      *requests, *opts, *v, *item;
    ngx_uint_t                   max;
    json_int_t                   mc;
    ngx_http_request_t          *r;
    ngx_http_helix_main_conf_t  *hmcf;

    r = b->request;
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    requests = json_object_get(req, "requests");

    if (!json_is_array(requests) || json_array_size(requests) == 0) {
        return ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         requests ? "invalid_type"
                                                  : "missing_field",
                                         "requests", "\"requests\" must be a "
                                         "non-empty array of completion "
                                         "requests");
    }

    n = json_array_size(requests);

    if (hmcf->batch_max_requests && n > hmcf->batch_max_requests) {
        return ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "batch_too_large", "requests",
                                         "the batch has %uz requests, more "
                                         "than batch.max_requests (%ui); "
                                         "split it", n,
                                         hmcf->batch_max_requests);
    }

    max = hmcf->batch_max_concurrent ? hmcf->batch_max_concurrent : n;

    opts = json_object_get(req, "batch_options");

    if (opts && !json_is_null(opts)) {
        if (!json_is_object(opts)) {
            return ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_type", "batch_options",
                                             "\"batch_options\" must be an "
                                             "object");
        }

        v = json_object_get(opts, "max_concurrent");

        if (v && !json_is_null(v)) {
            mc = json_is_integer(v) ? json_integer_value(v) : 0;

            if (mc < 1) {
                return ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                     "invalid_value",
                                     "batch_options.max_concurrent",
                                     "\"max_concurrent\" must be a positive "
                                     "integer");
            }

            /* batch.max_concurrent in helix.yaml is the ceiling */
            if ((ngx_uint_t) mc < max) {
                max = (ngx_uint_t) mc;
            }
        }

        v = json_object_get(opts, "parallel");

        if (v && !json_is_null(v) && !json_is_boolean(v)) {
            return ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_type",
                                             "batch_options.parallel",
                                             "\"parallel\" must be a "
                                             "boolean");
        }

        if (json_is_false(v)) {
            max = 1;
        }
    }

    if (ngx_http_helix_batch_init(b, n) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->max = max;
    b->limit = max;
    b->requeue = 1;
    b->complete = ngx_http_helix_completions_answer;

    json_array_foreach(requests, i, item) {
        if (!json_is_object(item)) {
            ngx_http_helix_batch_fail(b, i, NGX_HTTP_BAD_REQUEST,
                                      "invalid_type", NULL,
                                      "each request must be a JSON object");
            continue;
        }

        /* the guide's {"prompt"}; an OpenAI chat request works too */
        b->items[i].endpoint = json_object_get(item, "prompt") == NULL
                               && json_object_get(item, "messages") != NULL
                               ? NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS
                               : NGX_HTTP_HELIX_EP_COMPLETIONS;
        b->items[i].req = item;

        ngx_http_helix_batch_push(b, i);
    }

    ngx_http_helix_batch_run(b);

    return NGX_OK;
}


static void
ngx_http_helix_completions_answer(ngx_http_helix_batch_t *b)
{
    json_t                 *out, *results, *e, *v;
    ngx_uint_t              i, ok;
    ngx_http_helix_item_t  *item;

    static const char  *tiers[] = { NULL, "L1", "L2" };

    out = json_object();
    results = json_array();

    if (out == NULL || results == NULL
        || json_object_set_new(out, "object", json_string("batch")) != 0
        || json_object_set_new(out, "results", results) != 0)
    {
        json_decref(out);
        json_decref(results);
        ngx_http_helix_batch_finish(b, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ok = 0;

    for (i = 0; i < b->nitems; i++) {
        item = &b->items[i];

        e = json_pack("{s:i,s:i}", "index", (json_int_t) i,
                      "status", (json_int_t) item->status);

        if (e == NULL || json_array_append_new(results, e) != 0) {
            goto failed;
        }

        if (item->status == NGX_HTTP_OK) {
            ok++;

            v = ngx_http_helix_batch_answer(item);

            if (v == NULL
                || json_object_set_new(e, "provider",
                                       json_stringn((char *)
                                                    item->provider.data,
                                                    item->provider.len))
                   != 0
                || json_object_set_new(e, "cache",
                                       json_string(item->tier ? "HIT"
                                                              : "MISS"))
                   != 0
                || (item->tier
                    && json_object_set_new(e, "cache_tier",
                                           json_string(tiers[item->tier]))
                       != 0)
                || json_object_set_new(e, "response", v) != 0)
            {
                goto failed;
            }

            continue;
        }

        v = ngx_http_helix_batch_error(item);

        if (v == NULL || json_object_set_new(e, "error", v) != 0) {
            goto failed;
        }
    }

    v = json_pack("{s:i,s:i,s:i,s:i}",
                  "total", (json_int_t) b->nitems,
                  "succeeded", (json_int_t) ok,
                  "failed", (json_int_t) (b->nitems - ok),
                  "max_concurrent", (json_int_t) b->limit);

    if (v == NULL || json_object_set_new(out, "summary", v) != 0) {
        goto failed;
    }

    ngx_http_helix_batch_finish(b, ngx_http_helix_batch_send(b, out));
    return;

failed:

    json_decref(out);
    ngx_http_helix_batch_finish(b, NGX_HTTP_INTERNAL_SERVER_ERROR);
}


/*
 * POST /v1/embeddings/batch {"texts": [...], "model", "batch_size"}
 *
 * Each distinct text is first looked up in the cache as the single
 * request {"model", "input": [text]} would be (same key, so the two
 * endpoints share entries); the texts that miss go to the providers in
 * chunks of batch_size, chunks in parallel; each text's vector is then
 * stored under its own key.  usage is the providers' usage, shared out
 * over a chunk's texts by length (what the cached entries keep).
 */

typedef struct {
    const char                 *text;
    size_t                      len;
    ngx_uint_t                  index;
} ngx_http_helix_text_t;


typedef struct {
    json_t                     *texts;
    json_t                     *base;           /* model, provider, ... */
    ngx_str_t                   model;
    ngx_uint_t                  batch_size;

    ngx_http_helix_item_t      *lookups;        /* one per distinct text */
    ngx_uint_t                  nlookups;
    ngx_uint_t                 *lookup_of;      /* text -> lookup */
    ngx_uint_t                 *misses;         /* lookups, in order */
    ngx_uint_t                  nmisses;
    ngx_uint_t                  chunks;
    ngx_uint_t                  cached;

    json_t                    **vectors;        /* per lookup */
    json_int_t                 *tokens;
    json_t                     *model_out;

    ngx_http_helix_item_t      *failed;         /* first failed chunk */
} ngx_http_helix_emb_t;


static ngx_int_t ngx_http_helix_embeddings_dedupe(ngx_http_request_t *r,
    ngx_http_helix_emb_t *e, json_t *texts, size_t n);

static int ngx_libc_cdecl
ngx_http_helix_text_cmp(const void *one, const void *two)
{
    int                           rc;
    const ngx_http_helix_text_t  *a = one, *b = two;

    rc = ngx_memn2cmp((u_char *) a->text, (u_char *) b->text, a->len,
                      b->len);

    if (rc == 0) {
        return (a->index < b->index) ? -1 : 1;
    }

    return rc;
}


static ngx_int_t
ngx_http_helix_embeddings_batch(ngx_http_helix_batch_t *b, json_t *req)
{
    size_t                       i, n;
    json_t                      *texts, *v, *one;
    ngx_int_t                    rc;
    ngx_uint_t                   k;
    json_int_t                   bs;
    const char                  *key;
    ngx_http_request_t          *r;
    ngx_http_helix_emb_t        *e;
    ngx_http_helix_main_conf_t  *hmcf;

    r = b->request;
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    texts = json_object_get(req, "texts");
    n = json_is_array(texts) ? json_array_size(texts) : 0;
    bs = 0;

    if (ngx_http_helix_embeddings_check(r, hmcf, req, texts, &bs, &rc)
        != NGX_OK)
    {
        return rc;
    }

    e = ngx_pcalloc(r->pool, sizeof(ngx_http_helix_emb_t));
    if (e == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->data = e;
    e->texts = texts;
    e->batch_size = (ngx_uint_t) bs;

    v = json_object_get(req, "model");
    e->model.data = (u_char *) json_string_value(v);
    e->model.len = json_string_length(v);

    /* what every provider request carries, but for its input */

    e->base = json_object();
    if (e->base == NULL
        || ngx_http_helix_json_pool(r->pool, e->base) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json_object_foreach(req, key, v) {
        if (ngx_strcmp(key, "texts") != 0
            && ngx_strcmp(key, "batch_size") != 0
            && ngx_strcmp(key, "encoding_format") != 0
            && json_object_set(e->base, key, v) != 0)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* identical texts are looked up and sent once */

    if (ngx_http_helix_embeddings_dedupe(r, e, texts, n) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_helix_batch_init(b, n) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    e->lookups = b->items;
    e->nlookups = n;
    e->vectors = ngx_pcalloc(r->pool, n * sizeof(json_t *));
    e->tokens = ngx_pcalloc(r->pool, n * sizeof(json_int_t));
    e->misses = ngx_palloc(r->pool, n * sizeof(ngx_uint_t));

    if (e->vectors == NULL || e->tokens == NULL || e->misses == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->max = n;
    b->limit = n;
    b->complete = ngx_http_helix_embeddings_looked_up;

    json_array_foreach(texts, i, v) {
        k = e->lookup_of[i];

        if (k != i) {
            /* a repeat: done with its first */
            b->items[i].done = 1;
            b->finished++;
            continue;
        }

        one = json_copy(e->base);

        if (one == NULL
            || ngx_http_helix_json_pool(r->pool, one) != NGX_OK
            || json_object_set_new(one, "input", json_pack("[O]", v)) != 0)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        b->items[i].endpoint = NGX_HTTP_HELIX_EP_EMBEDDINGS;
        b->items[i].req = one;
        b->items[i].lookup_only = 1;

        ngx_http_helix_batch_push(b, i);
    }

    ngx_http_helix_batch_run(b);

    return NGX_OK;
}


/*
 * An embeddings batch's fields: NGX_OK, or the error answer sent (or an
 * nginx status)
 */

static ngx_int_t
ngx_http_helix_embeddings_check(ngx_http_request_t *r,
    ngx_http_helix_main_conf_t *hmcf, json_t *req, json_t *texts,
    json_int_t *bsp, ngx_int_t *rcp)
{
    size_t       i, n;
    json_t      *v;
    json_int_t   bs;
    const char  *fmt;

    if (!json_is_array(texts) || json_array_size(texts) == 0) {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         texts ? "invalid_type"
                                               : "missing_field",
                                         "texts", "\"texts\" must be a "
                                         "non-empty array of strings");
        return NGX_DECLINED;
    }

    n = json_array_size(texts);

    if (hmcf->batch_max_texts && n > hmcf->batch_max_texts) {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "batch_too_large", "texts",
                                         "the batch has %uz texts, more than "
                                         "batch.max_texts (%ui); split it",
                                         n, hmcf->batch_max_texts);
        return NGX_DECLINED;
    }

    json_array_foreach(texts, i, v) {
        if (!json_is_string(v) || json_string_length(v) == 0) {
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_type", NULL,
                                             "texts[%uz] must be a non-empty "
                                             "string", i);
            return NGX_DECLINED;
        }
    }

    v = json_object_get(req, "model");

    if (!json_is_string(v) || json_string_length(v) == 0) {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         v ? "invalid_type" : "missing_field",
                                         "model", "\"model\" must be a "
                                         "non-empty string");
        return NGX_DECLINED;
    }

    v = json_object_get(req, "batch_size");
    bs = 100;

    if (v && !json_is_null(v)) {
        bs = json_is_integer(v) ? json_integer_value(v) : 0;

        if (bs < 1 || bs > NGX_HTTP_HELIX_MAX_BATCH_SIZE) {
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_value", "batch_size",
                                             "\"batch_size\" must be an "
                                             "integer from 1 to %d",
                                             NGX_HTTP_HELIX_MAX_BATCH_SIZE);
            return NGX_DECLINED;
        }
    }

    fmt = json_string_value(json_object_get(req, "encoding_format"));

    if (json_object_get(req, "encoding_format") != NULL
        && (fmt == NULL || ngx_strcmp(fmt, "float") != 0))
    {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid_value", "encoding_format",
                                         "the batch answers floats only "
                                         "(\"encoding_format\": \"float\")");
        return NGX_DECLINED;
    }

    *bsp = bs;

    return NGX_OK;
}


/* lookup_of[i]: the first index of the same text as texts[i] */

static ngx_int_t
ngx_http_helix_embeddings_dedupe(ngx_http_request_t *r,
    ngx_http_helix_emb_t *e, json_t *texts, size_t n)
{
    size_t                  i;
    json_t                 *v;
    ngx_http_helix_text_t  *sorted;

    sorted = ngx_palloc(r->pool, n * sizeof(ngx_http_helix_text_t));
    e->lookup_of = ngx_palloc(r->pool, n * sizeof(ngx_uint_t));

    if (sorted == NULL || e->lookup_of == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(texts, i, v) {
        sorted[i].text = json_string_value(v);
        sorted[i].len = json_string_length(v);
        sorted[i].index = i;
    }

    ngx_qsort(sorted, n, sizeof(ngx_http_helix_text_t),
              ngx_http_helix_text_cmp);

    for (i = 0; i < n; i++) {
        e->lookup_of[sorted[i].index] = sorted[i].index;

        if (i && sorted[i].len == sorted[i - 1].len
            && ngx_memcmp(sorted[i].text, sorted[i - 1].text,
                          sorted[i].len) == 0)
        {
            e->lookup_of[sorted[i].index] =
                                    e->lookup_of[sorted[i - 1].index];
        }
    }

    return NGX_OK;
}


/* a single answer's first vector and its prompt tokens */

static ngx_int_t
ngx_http_helix_embeddings_take(ngx_http_helix_emb_t *e, ngx_uint_t k,
    json_t *answer, size_t at)
{
    json_t  *d, *vec;

    d = json_array_get(json_object_get(answer, "data"), at);
    vec = json_object_get(d, "embedding");

    if (!json_is_array(vec)) {
        return NGX_DECLINED;
    }

    e->vectors[k] = json_incref(vec);

    if (ngx_http_helix_json_pool(e->lookups[k].request->pool, vec)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (e->model_out == NULL && json_is_string(json_object_get(answer,
                                                               "model")))
    {
        e->model_out = json_incref(json_object_get(answer, "model"));

        if (ngx_http_helix_json_pool(e->lookups[k].request->pool,
                                     e->model_out)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_helix_embeddings_cancel(ngx_http_helix_emb_t *e)
{
    ngx_uint_t  i;

    for (i = 0; i < e->nlookups; i++) {
        if (e->lookups[i].gw) {
            ngx_http_helix_item_cancel(&e->lookups[i]);
        }
    }
}


static void
ngx_http_helix_embeddings_looked_up(ngx_http_helix_batch_t *b)
{
    json_t                      *answer, *input, *req;
    ngx_int_t                    rc;
    ngx_uint_t                   i, c, k, n, max;
    ngx_http_request_t          *r;
    ngx_http_helix_emb_t        *e;
    ngx_http_helix_item_t       *item;
    ngx_http_helix_main_conf_t  *hmcf;

    e = b->data;
    r = b->request;
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    for (i = 0; i < e->nlookups; i++) {
        item = &e->lookups[i];

        if (item->gw == NULL) {
            continue;
        }

        if (item->status == 0) {
            e->misses[e->nmisses++] = i;
            continue;
        }

        if (item->status == NGX_HTTP_OK) {
            answer = ngx_http_helix_batch_answer(item);

            rc = answer ? ngx_http_helix_embeddings_take(e, i, answer, 0)
                        : NGX_DECLINED;

            if (rc == NGX_OK) {
                e->tokens[i] = json_integer_value(json_object_get(
                                 json_object_get(answer, "usage"),
                                 "prompt_tokens"));
                e->cached++;
            }

            json_decref(answer);

            if (rc == NGX_OK) {
                continue;
            }

            /* a cached entry we cannot use: ask again */
            e->misses[e->nmisses++] = i;
            continue;
        }

        /* what the single request would have answered, for this text */

        ngx_http_helix_embeddings_cancel(e);
        ngx_http_helix_batch_finish(b,
            ngx_http_helix_send_error(r, item->status, item->code,
                                      item->param, "texts[%ui]: %V", i,
                                      &item->message));
        return;
    }

    if (e->nmisses == 0) {
        ngx_http_helix_embeddings_answer(b);
        return;
    }

    /* the chunks, run like a completions batch */

    e->chunks = (e->nmisses + e->batch_size - 1) / e->batch_size;

    if (ngx_http_helix_batch_init(b, e->chunks) != NGX_OK) {
        goto failed;
    }

    max = hmcf->batch_max_concurrent ? hmcf->batch_max_concurrent
                                     : e->chunks;
    b->max = max;
    b->limit = max;
    b->requeue = 1;
    b->answered = 0;
    b->item_done = ngx_http_helix_embeddings_chunk;
    b->complete = ngx_http_helix_embeddings_answer;

    for (c = 0; c < e->chunks; c++) {
        req = json_copy(e->base);
        input = json_array();

        if (req == NULL || input == NULL
            || ngx_http_helix_json_pool(r->pool, req) != NGX_OK
            || json_object_set_new(req, "input", input) != 0)
        {
            json_decref(input);
            goto failed;
        }

        n = ngx_min(e->batch_size, e->nmisses - c * e->batch_size);

        for (k = 0; k < n; k++) {
            i = e->misses[c * e->batch_size + k];

            if (json_array_append(input,
                                  json_array_get(e->texts, i))
                != 0)
            {
                goto failed;
            }
        }

        b->items[c].endpoint = NGX_HTTP_HELIX_EP_EMBEDDINGS;
        b->items[c].req = req;
        b->items[c].no_cache = 1;

        ngx_http_helix_batch_push(b, c);
    }

    ngx_http_helix_batch_run(b);
    return;

failed:

    ngx_http_helix_embeddings_cancel(e);
    ngx_http_helix_batch_finish(b, NGX_HTTP_INTERNAL_SERVER_ERROR);
}


/*
 * A chunk's answer: each text gets its vector, its share of the tokens,
 * and its own cache entry, the single request's answer for that text.
 */

static void
ngx_http_helix_embeddings_chunk(ngx_http_helix_batch_t *b,
    ngx_http_helix_item_t *item)
{
    json_t                *answer, *one, *d, *idx;
    size_t                 at, chars, all;
    ngx_str_t              body;
    ngx_uint_t             c, k, n, i;
    json_int_t             total, share, given;
    ngx_http_helix_emb_t  *e;

    e = b->data;
    c = item - b->items;
    n = ngx_min(e->batch_size, e->nmisses - c * e->batch_size);

    answer = ngx_http_helix_batch_answer(item);

    if (answer == NULL
        || json_array_size(json_object_get(answer, "data")) != n)
    {
        json_decref(answer);
        goto failed;
    }

    total = json_integer_value(json_object_get(json_object_get(answer,
                                                               "usage"),
                                               "prompt_tokens"));
    all = 0;

    for (k = 0; k < n; k++) {
        all += json_string_length(json_array_get(e->texts,
                                  e->misses[c * e->batch_size + k]));
    }

    given = 0;

    for (k = 0; k < n; k++) {

        /* the provider says which input a vector is for */
        d = json_array_get(json_object_get(answer, "data"), k);
        idx = json_object_get(d, "index");
        at = json_is_integer(idx) ? (size_t) json_integer_value(idx) : k;

        if (at >= n) {
            json_decref(answer);
            goto failed;
        }

        i = e->misses[c * e->batch_size + at];

        if (e->vectors[i] != NULL
            || ngx_http_helix_embeddings_take(e, i, answer, k) != NGX_OK)
        {
            json_decref(answer);
            goto failed;
        }

        chars = json_string_length(json_array_get(e->texts, i));
        share = (k == n - 1) ? total - given
                             : (json_int_t) (all ? total * chars / all : 0);
        given += share;
        e->tokens[i] = share;

        one = json_pack("{s:s,s:[{s:s,s:i,s:O}],s:O?,s:{s:I,s:I}}",
                        "object", "list",
                        "data", "object", "embedding", "index", 0,
                        "embedding", e->vectors[i],
                        "model", json_object_get(answer, "model"),
                        "usage", "prompt_tokens", share,
                        "total_tokens", share);

        if (one == NULL
            || ngx_http_helix_json_pool(b->request->pool, one) != NGX_OK
            || ngx_http_helix_json_dump(b->request->pool, one, &body)
               != NGX_OK)
        {
            json_decref(answer);
            goto failed;
        }

        ngx_http_helix_item_store(&e->lookups[i], &item->provider,
                                  &e->model, &body);
    }

    json_decref(answer);
    return;

failed:

    for (k = 0; k < n; k++) {
        ngx_http_helix_item_cancel(&e->lookups[e->misses[c * e->batch_size
                                                         + k]]);
    }

    if (e->failed == NULL || item < e->failed) {
        e->failed = item;
    }
}


static void
ngx_http_helix_embeddings_answer(ngx_http_helix_batch_t *b)
{
    json_t                *out, *data, *d;
    size_t                 i;
    ngx_uint_t             k;
    json_int_t             tokens;
    ngx_http_helix_emb_t  *e;
    ngx_http_helix_item_t *item;

    e = b->data;

    if (e->failed) {
        item = e->failed;

        if (item->status == NGX_HTTP_OK) {
            item->status = NGX_HTTP_BAD_GATEWAY;
            item->code = "provider_error";
            ngx_str_set(&item->message, "a provider's answer does not "
                        "match the texts sent");
        }

        ngx_http_helix_batch_finish(b,
            ngx_http_helix_send_error(b->request, item->status, item->code,
                                      item->param, "chunk %ui of %ui "
                                      "(texts from %ui): %V",
                                      (ngx_uint_t) (item - b->items) + 1,
                                      e->chunks,
                                      e->misses[(item - b->items)
                                                * e->batch_size],
                                      &item->message));
        return;
    }

    out = json_object();
    data = json_array();
    tokens = 0;

    if (out == NULL || data == NULL
        || json_object_set_new(out, "object", json_string("list")) != 0
        || json_object_set_new(out, "data", data) != 0)
    {
        json_decref(data);
        goto failed;
    }

    for (i = 0; i < json_array_size(e->texts); i++) {
        k = e->lookup_of[i];

        if (e->vectors[k] == NULL) {
            goto failed;
        }

        tokens += e->tokens[k];

        d = json_pack("{s:s,s:i,s:O}", "object", "embedding",
                      "index", (json_int_t) i, "embedding", e->vectors[k]);

        if (d == NULL || json_array_append_new(data, d) != 0) {
            goto failed;
        }
    }

    if (json_object_set(out, "model",
                        e->model_out ? e->model_out
                                     : json_object_get(e->base, "model"))
        != 0
        || json_object_set_new(out, "usage",
                               json_pack("{s:I,s:I}", "prompt_tokens",
                                         tokens, "total_tokens", tokens))
           != 0
        || json_object_set_new(out, "batch",
                               json_pack("{s:i,s:i,s:i,s:i}",
                                  "texts", (json_int_t)
                                           json_array_size(e->texts),
                                  "cached", (json_int_t) e->cached,
                                  "sent", (json_int_t) e->nmisses,
                                  "provider_calls", (json_int_t) e->chunks))
           != 0)
    {
        goto failed;
    }

    ngx_http_helix_batch_finish(b, ngx_http_helix_batch_send(b, out));
    return;

failed:

    json_decref(out);
    ngx_http_helix_batch_finish(b, NGX_HTTP_INTERNAL_SERVER_ERROR);
}
