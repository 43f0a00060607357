/*
 * Copyright (C) helix authors
 *
 * POST /v1/ensemble/completions: the same request to up to
 * ensemble.max_providers providers at once (one after the other without
 * parallel_execution), each through the single completion's path with
 * that provider only, within ensemble.timeout: stragglers are cut and
 * their calls cancelled.  fail_fast: the first failure ends it all.
 *
 * The answer is chosen among the successes by ensemble.strategy:
 *   majority  the answer text most providers gave (exact match of the
 *             first choice's text); ties go to the higher weight, then to
 *             the provider listed first
 *   weight    the successful provider with the highest weight, then the
 *             one listed first
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_gateway.h"
#include "ngx_http_helix_upstream.h"
#include "ngx_http_helix_batch.h"
#include "ngx_http_helix_ensemble.h"


typedef enum {
    NGX_HTTP_HELIX_MEMBER_PENDING = 0,
    NGX_HTTP_HELIX_MEMBER_OK,
    NGX_HTTP_HELIX_MEMBER_FAILED,
    NGX_HTTP_HELIX_MEMBER_TIMEOUT,
    NGX_HTTP_HELIX_MEMBER_CANCELLED
} ngx_http_helix_member_e;


typedef struct {
    ngx_http_helix_provider_t  **providers;
    ngx_uint_t                  *outcome;       /* member_e */
    ngx_http_helix_item_t       *failed;        /* fail_fast's trigger */
    ngx_http_helix_item_t       *bad;           /* the request's fault */
    ngx_flag_t                   fail_fast;
    unsigned                     timed_out:1;
} ngx_http_helix_ensemble_t;


static void ngx_http_helix_ensemble_member(ngx_http_helix_batch_t *b,
    ngx_http_helix_item_t *item);
static void ngx_http_helix_ensemble_stop(ngx_http_helix_batch_t *b,
    ngx_uint_t outcome);
static void ngx_http_helix_ensemble_timeout(ngx_event_t *ev);
static void ngx_http_helix_ensemble_answer(ngx_http_helix_batch_t *b);


static ngx_uint_t
ngx_http_helix_ensemble_serves(ngx_http_helix_provider_t *p, json_t *model)
{
    size_t       len;
    ngx_str_t   *m;
    ngx_uint_t   i;
    const char  *name;

    if (!json_is_string(model)) {
        return p->models.nelts > 0;
    }

    name = json_string_value(model);
    len = json_string_length(model);
    m = p->models.elts;

    for (i = 0; i < p->models.nelts; i++) {
        if (m[i].len == len && ngx_strncmp(m[i].data, name, len) == 0) {
            return 1;
        }
    }

    return 0;
}


ngx_int_t
ngx_http_helix_ensemble(ngx_http_helix_batch_t *b, json_t *req)
{
    size_t                        i;
    json_t                       *names, *v, *one;
    ngx_str_t                     name;
    ngx_uint_t                    n, k, max, endpoint;
    ngx_http_request_t           *r;
    ngx_http_helix_provider_t    *p;
    ngx_http_helix_ensemble_t    *e;
    ngx_http_helix_main_conf_t   *hmcf;
    ngx_http_helix_provider_t    *chosen[NGX_HTTP_HELIX_MAX_PROVIDERS];

    r = b->request;
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    p = hmcf->providers.elts;
    max = ngx_min(hmcf->ensemble_max_providers,
                  NGX_HTTP_HELIX_MAX_PROVIDERS);
    n = 0;

    names = json_object_get(req, "providers");

    if (names && !json_is_null(names)) {
        if (!json_is_array(names) || json_array_size(names) == 0) {
            return ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_type", "providers",
                                             "\"providers\" must be a "
                                             "non-empty array of provider "
                                             "names");
        }

        json_array_foreach(names, i, v) {
            if (!json_is_string(v)) {
                return ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                                 "invalid_type", "providers",
                                                 "\"providers\" must be a "
                                                 "non-empty array of "
                                                 "provider names");
            }

            name.data = (u_char *) json_string_value(v);
            name.len = json_string_length(v);

            for (k = 0; k < hmcf->providers.nelts; k++) {
                if (p[k].enabled && p[k].name.len == name.len
                    && ngx_strncmp(p[k].name.data, name.data, name.len) == 0)
                {
                    break;
                }
            }

            if (k == hmcf->providers.nelts) {
                return ngx_http_helix_send_error(r, NGX_HTTP_NOT_FOUND,
                                                 "provider_not_found",
                                                 "providers", "provider "
                                                 "\"%V\" is not configured",
                                                 &name);
            }

            if (n < max) {
                chosen[n++] = &p[k];
            }
        }

    } else {
        for (k = 0; k < hmcf->providers.nelts && n < max; k++) {
            if (p[k].enabled
                && ngx_http_helix_ensemble_serves(&p[k],
                                             json_object_get(req, "model")))
            {
                chosen[n++] = &p[k];
            }
        }

        if (n == 0) {
            return ngx_http_helix_send_error(r, NGX_HTTP_NOT_FOUND,
                                             "model_not_found", "model",
                                             "no provider serves this "
                                             "model (see GET /v1/models)");
        }
    }

    e = ngx_pcalloc(r->pool, sizeof(ngx_http_helix_ensemble_t));
    if (e == NULL || ngx_http_helix_batch_init(b, n) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    e->providers = ngx_palloc(r->pool,
                              n * sizeof(ngx_http_helix_provider_t *));
    e->outcome = ngx_pcalloc(r->pool, n * sizeof(ngx_uint_t));

    if (e->providers == NULL || e->outcome == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    e->fail_fast = hmcf->ensemble_fail_fast;

    b->data = e;
    b->max = hmcf->ensemble_parallel ? n : 1;
    b->limit = b->max;
    b->item_done = ngx_http_helix_ensemble_member;
    b->complete = ngx_http_helix_ensemble_answer;

    endpoint = json_object_get(req, "prompt") == NULL
               && json_object_get(req, "messages") != NULL
               ? NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS
               : NGX_HTTP_HELIX_EP_COMPLETIONS;

    for (k = 0; k < n; k++) {
        e->providers[k] = chosen[k];

        one = json_copy(req);

        if (one == NULL || ngx_http_helix_json_pool(r->pool, one) != NGX_OK
            || json_object_set_new(one, "provider",
                                   json_stringn((char *) chosen[k]->name.data,
                                                chosen[k]->name.len))
               != 0)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        json_object_del(one, "providers");

        b->items[k].endpoint = endpoint;
        b->items[k].req = one;
        b->items[k].single = 1;

        ngx_http_helix_batch_push(b, k);
    }

    if (hmcf->ensemble_timeout) {
        b->deadline.handler = ngx_http_helix_ensemble_timeout;
        b->deadline.data = b;
        b->deadline.log = r->connection->log;

        ngx_add_timer(&b->deadline, hmcf->ensemble_timeout);
    }

    ngx_http_helix_batch_run(b);

    return NGX_OK;
}


static void
ngx_http_helix_ensemble_member(ngx_http_helix_batch_t *b,
    ngx_http_helix_item_t *item)
{
    ngx_uint_t                  k;
    ngx_http_helix_ensemble_t  *e;

    e = b->data;
    k = item - b->items;

    if (item->status == NGX_HTTP_OK) {
        e->outcome[k] = NGX_HTTP_HELIX_MEMBER_OK;
        return;
    }

    e->outcome[k] = NGX_HTTP_HELIX_MEMBER_FAILED;

    if (item->provider.len == 0 && item->status < 500
        && (item->code == NULL
            || ngx_strcmp(item->code, "provider_error") != 0))
    {
        /* the gateway refused the request itself: every member would */
        e->bad = item;
        ngx_http_helix_ensemble_stop(b, NGX_HTTP_HELIX_MEMBER_CANCELLED);
        return;
    }

    if (e->fail_fast && e->failed == NULL) {
        e->failed = item;
        ngx_http_helix_ensemble_stop(b, NGX_HTTP_HELIX_MEMBER_CANCELLED);
    }
}


/* members still running are cut, their places and claims given back */

static void
ngx_http_helix_ensemble_stop(ngx_http_helix_batch_t *b, ngx_uint_t outcome)
{
    ngx_uint_t                  k;
    ngx_http_helix_item_t      *item;
    ngx_http_helix_ensemble_t  *e;

    e = b->data;
    b->stop = 1;

    for (k = 0; k < b->nitems; k++) {
        item = &b->items[k];

        if (item->gw == NULL || item->done) {
            continue;
        }

        ngx_http_helix_item_cancel(item);

        item->done = 1;
        item->latency = ngx_current_msec - item->start;
        e->outcome[k] = outcome;
        b->running--;
        b->finished++;
    }
}


static void
ngx_http_helix_ensemble_timeout(ngx_event_t *ev)
{
    ngx_connection_t           *c;
    ngx_http_helix_batch_t     *b;
    ngx_http_helix_ensemble_t  *e;

    b = ev->data;
    e = b->data;
    c = b->request->connection;

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "helix: ensemble timed out, %ui of %ui providers still "
                  "pending are cancelled", b->running + b->qlen, b->nitems);

    e->timed_out = 1;
    ngx_http_helix_ensemble_stop(b, NGX_HTTP_HELIX_MEMBER_TIMEOUT);
    ngx_http_helix_batch_run(b);

    ngx_http_run_posted_requests(c);
}


static json_t *
ngx_http_helix_ensemble_text(json_t *answer)
{
    json_t  *c, *t;

    c = json_array_get(json_object_get(answer, "choices"), 0);
    t = json_object_get(c, "text");

    if (t == NULL) {
        t = json_object_get(json_object_get(c, "message"), "content");
    }

    return json_is_string(t) ? t : NULL;
}


/* the members' outcomes, in the order they were asked */

static json_t *
ngx_http_helix_ensemble_report(ngx_http_helix_batch_t *b, ngx_int_t chosen,
    ngx_uint_t votes)
{
    json_t                      *out, *list, *m;
    ngx_uint_t                   k;
    ngx_http_helix_item_t       *item;
    ngx_http_helix_ensemble_t   *e;
    ngx_http_helix_main_conf_t  *hmcf;

    static const char  *outcomes[] = {
        "not_started", "ok", "failed", "timeout", "cancelled"
    };

    e = b->data;
    hmcf = ngx_http_get_module_main_conf(b->request, ngx_http_helix_module);

    list = json_array();
    out = json_pack("{s:s%,s:o}", "strategy",
                    (char *) hmcf->ensemble_strategy.data,
                    hmcf->ensemble_strategy.len, "providers", list);

    if (out == NULL) {
        return NULL;
    }

    if (chosen >= 0
        && (json_object_set_new(out, "chosen",
                json_stringn((char *) e->providers[chosen]->name.data,
                             e->providers[chosen]->name.len))
            != 0
            || json_object_set_new(out, "votes",
                                   json_integer((json_int_t) votes))
               != 0))
    {
        json_decref(out);
        return NULL;
    }

    for (k = 0; k < b->nitems; k++) {
        item = &b->items[k];

        m = json_pack("{s:s%,s:s}", "provider",
                      (char *) e->providers[k]->name.data,
                      e->providers[k]->name.len,
                      "outcome", outcomes[e->outcome[k]]);

        if (m == NULL || json_array_append_new(list, m) != 0) {
            json_decref(out);
            return NULL;
        }

        if (item->gw == NULL) {
            continue;
        }

        if (json_object_set_new(m, "latency_ms",
                                json_integer((json_int_t) item->latency))
            != 0)
        {
            json_decref(out);
            return NULL;
        }

        if (e->outcome[k] == NGX_HTTP_HELIX_MEMBER_OK) {
            if (item->tier
                && json_object_set_new(m, "cache", json_string("HIT")) != 0)
            {
                json_decref(out);
                return NULL;
            }

            continue;
        }

        if (e->outcome[k] == NGX_HTTP_HELIX_MEMBER_FAILED
            && (json_object_set_new(m, "status",
                                    json_integer((json_int_t) item->status))
                != 0
                || json_object_set_new(m, "error",
                                       ngx_http_helix_batch_error(item))
                   != 0))
        {
            json_decref(out);
            return NULL;
        }
    }

    return out;
}


static ngx_int_t
ngx_http_helix_ensemble_send(ngx_http_helix_batch_t *b, ngx_uint_t status,
    json_t *out)
{
    ngx_str_t  body;

    if (out == NULL
        || ngx_http_helix_json_pool(b->request->pool, out) != NGX_OK
        || ngx_http_helix_json_dump(b->request->pool, out, &body) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_helix_send_json(b->request, status, &body);
}


static void
ngx_http_helix_ensemble_answer(ngx_http_helix_batch_t *b)
{
    u_char                      *p, *last;
    json_t                      *out, *err, *report, *tk, *tj;
    ngx_int_t                    best;
    ngx_uint_t                   k, j, votes, best_votes, status, majority;
    ngx_table_elt_t             *h;
    ngx_http_request_t          *r;
    ngx_http_helix_item_t       *item;
    ngx_http_helix_ensemble_t   *e;
    ngx_http_helix_main_conf_t  *hmcf;
    json_t                      *answers[NGX_HTTP_HELIX_MAX_PROVIDERS];
    u_char                       msg[512];

    e = b->data;
    r = b->request;
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (b->deadline.timer_set) {
        ngx_del_timer(&b->deadline);
    }

    if (e->bad) {
        item = e->bad;
        ngx_http_helix_batch_finish(b,
            ngx_http_helix_send_error(r, item->status, item->code,
                                      item->param, "%V", &item->message));
        return;
    }

    majority = !(hmcf->ensemble_strategy.len == 6
                 && ngx_strncmp(hmcf->ensemble_strategy.data, "weight", 6)
                    == 0);

    for (k = 0; k < b->nitems; k++) {
        answers[k] = NULL;

        if (e->outcome[k] == NGX_HTTP_HELIX_MEMBER_OK && !e->failed) {
            answers[k] = ngx_http_helix_batch_answer(&b->items[k]);

            if (answers[k]
                && ngx_http_helix_json_pool(r->pool, answers[k]) != NGX_OK)
            {
                ngx_http_helix_batch_finish(b,
                                            NGX_HTTP_INTERNAL_SERVER_ERROR);
                return;
            }
        }
    }

    best = -1;
    best_votes = 0;

    for (k = 0; k < b->nitems; k++) {
        if (answers[k] == NULL) {
            continue;
        }

        votes = 0;
        tk = ngx_http_helix_ensemble_text(answers[k]);

        for (j = 0; j < b->nitems; j++) {
            tj = answers[j] ? ngx_http_helix_ensemble_text(answers[j]) : NULL;

            if (j == k || (tk && tj && json_equal(tk, tj))) {
                votes += (answers[j] != NULL);
            }
        }

        if (best < 0
            || (majority && votes > best_votes)
            || ((!majority || votes == best_votes)
                && e->providers[k]->weight > e->providers[best]->weight))
        {
            best = k;
            best_votes = votes;
        }
    }

    report = ngx_http_helix_ensemble_report(b, best, best_votes);

    if (report == NULL) {
        ngx_http_helix_batch_finish(b, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (best >= 0) {
        out = answers[best];

        h = ngx_list_push(&r->headers_out.headers);

        if (h == NULL) {
            json_decref(report);
            ngx_http_helix_batch_finish(b, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        if (json_object_set_new(out, "ensemble", report) != 0) {
            ngx_http_helix_batch_finish(b, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "X-Helix-Provider");
        h->value = e->providers[best]->name;

        ngx_http_helix_batch_finish(b,
                        ngx_http_helix_ensemble_send(b, NGX_HTTP_OK,
                                                     json_incref(out)));
        return;
    }

    /* nothing to choose from */

    p = msg;
    last = msg + sizeof(msg);

    if (e->failed) {
        status = NGX_HTTP_BAD_GATEWAY;
        p = ngx_slprintf(p, last, "provider \"%V\" failed and fail_fast "
                         "is on: %V",
                         &e->providers[e->failed - b->items]->name,
                         &e->failed->message);

    } else if (e->timed_out) {
        status = NGX_HTTP_GATEWAY_TIME_OUT;
        p = ngx_slprintf(p, last, "no provider answered within the "
                         "ensemble timeout (%M ms)", hmcf->ensemble_timeout);

    } else {
        status = NGX_HTTP_BAD_GATEWAY;
        p = ngx_slprintf(p, last, "every provider of the ensemble failed");
    }

    err = json_pack("{s:s%,s:s,s:n,s:s}", "message", msg, (size_t) (p - msg),
                    "type", ngx_http_helix_error_type(status),
                    "param", "code", "ensemble_failed");

    out = json_pack("{s:o,s:o}", "error", err, "ensemble", report);

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "helix: %ui %*s",
                  status, p - msg, msg);

    ngx_http_helix_batch_finish(b, ngx_http_helix_ensemble_send(b, status,
                                                                out));
}
