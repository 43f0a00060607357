/*
 * Copyright (C) helix authors
 *
 * POST /v1/debates: several models on one question over rounds.  Each
 * round runs its participants as items of the batch scheduler
 * (ngx_http_helix_batch.c), each through the single chat completion's
 * path (cache, limits charged to the caller, metrics, the completion log
 * with rows "<debate id>-<n>"), at most ensemble.max_providers at a time
 * (one by one without ensemble.parallel_execution), within
 * debates.round_timeout.  From the second round on, each participant's
 * conversation goes on with its own earlier answers and a message with
 * the others' answers of the round before.  The judge, if asked for,
 * reads the whole transcript and writes the conclusion; without one, the
 * last round's answers are chosen from by ensemble.strategy.
 *
 * A participant that fails (or is cut by the timeout) leaves the debate,
 * which goes on without it, unless fail_fast: then the debate ends with
 * an error.  A debate everyone answered in full is kept whole in L1
 * under the "debates" cache policy: the same question, participants,
 * rounds and judge are answered from there (replayed as events for a
 * stream) without a provider call.
 *
 * "stream": true sends SSE events as the debate goes: debate.round.started,
 * debate.answer as each answer comes, debate.round.completed,
 * debate.conclusion, then done.  A client that leaves cancels the calls.
 */


#include <openssl/rand.h>
#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_metrics.h"
#include "ngx_http_helix_cache.h"
#include "ngx_http_helix_auth.h"
#include "ngx_http_helix_gateway.h"
#include "ngx_http_helix_batch.h"
#include "ngx_http_helix_debate.h"


#define NGX_HTTP_HELIX_DEBATE_JUDGE  ((ngx_uint_t) -1)


typedef struct {
    ngx_str_t                   model;
    ngx_str_t                   role;       /* empty: none given */
    json_t                     *messages;   /* its conversation so far */
    json_t                     *last;       /* its answer this round */
    ngx_uint_t                  out;        /* the round it left, 0: in */
    json_t                     *error;      /* why it left */
    json_int_t                  usage[2];   /* prompt, completion */
} ngx_http_helix_debater_t;


typedef struct {
    ngx_http_request_t         *request;
    json_t                     *req;
    json_t                     *question;   /* as messages */
    ngx_http_helix_debater_t   *parts;
    ngx_uint_t                  nparts;
    ngx_uint_t                  rounds;
    ngx_uint_t                  round;      /* 1.., rounds + 1: judge's */
    json_t                     *judge;      /* asked for, or NULL */
    json_t                     *judged;     /* its record */
    json_int_t                  judge_usage[2];
    json_t                     *transcript;
    json_t                     *answers;    /* this round's, item order */
    ngx_http_helix_batch_t     *batch;      /* this round's */
    ngx_uint_t                 *who;        /* item -> participant */
    ngx_msec_t                  start;
    ngx_msec_t                  round_start;
    ngx_event_t                 timer;
    ngx_str_t                   id;
    time_t                      created;

    ngx_int_t                   policy;     /* -1: not cached */
    ngx_str_t                   key;

    ngx_http_helix_item_t      *bad;        /* the request's own fault */
    ngx_http_helix_item_t      *failed;     /* fail_fast's trigger */
    ngx_uint_t                  failed_who;

    ngx_chain_t                *held;       /* events before any answer */
    ngx_chain_t               **held_last;

    unsigned                    fail_fast:1;
    unsigned                    stream:1;
    unsigned                    holding:1;
    unsigned                    header_sent:1;
    unsigned                    gone:1;     /* the client, or its pool */
    unsigned                    timed_out:1;    /* this round */
    unsigned                    lost:1;     /* someone left: not cached */
} ngx_http_helix_debate_t;


typedef struct {
    ngx_pool_t                 *pool;
    u_char                     *data;
    size_t                      len;
    size_t                      cap;
    ngx_uint_t                  failed;
} ngx_http_helix_debate_buf_t;


static void ngx_http_helix_debate_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_helix_debate_parse(ngx_http_helix_debate_t *d,
    ngx_int_t *rcp);
static ngx_int_t ngx_http_helix_debate_parse_question(
    ngx_http_helix_debate_t *d, ngx_int_t *rcp);
static ngx_int_t ngx_http_helix_debate_parse_participants(
    ngx_http_helix_debate_t *d, ngx_int_t *rcp);
static ngx_int_t ngx_http_helix_debate_parse_options(
    ngx_http_helix_debate_t *d, ngx_int_t *rcp);
static ngx_int_t ngx_http_helix_debate_lookup(ngx_http_helix_debate_t *d,
    ngx_int_t *rcp);
static void ngx_http_helix_debate_cleanup(void *data);
static void ngx_http_helix_debate_round(ngx_http_helix_debate_t *d);
static void ngx_http_helix_debate_item(ngx_http_helix_batch_t *b,
    ngx_http_helix_item_t *item);
static void ngx_http_helix_debate_stop(ngx_http_helix_batch_t *b);
static void ngx_http_helix_debate_timeout(ngx_event_t *ev);
static void ngx_http_helix_debate_round_done(ngx_http_helix_batch_t *b);
static ngx_int_t ngx_http_helix_debate_leavers(ngx_http_helix_debate_t *d,
    ngx_http_helix_batch_t *b, ngx_uint_t *okp);
static ngx_int_t ngx_http_helix_debate_record(ngx_http_helix_debate_t *d,
    ngx_http_helix_batch_t *b, ngx_uint_t judge, ngx_uint_t ok);
static ngx_int_t ngx_http_helix_debate_next(ngx_http_helix_debate_t *d);
static json_t *ngx_http_helix_debate_judge_messages(
    ngx_http_helix_debate_t *d);
static void ngx_http_helix_debate_conclude(ngx_http_helix_debate_t *d);
static json_t *ngx_http_helix_debate_choose(ngx_http_helix_debate_t *d,
    ngx_http_helix_main_conf_t *hmcf);
static ngx_int_t ngx_http_helix_debate_parts_out(ngx_http_helix_debate_t *d,
    json_t *parts, json_int_t *total);
static void ngx_http_helix_debate_fail(ngx_http_helix_debate_t *d,
    ngx_uint_t status, u_char *msg, size_t len);
static void ngx_http_helix_debate_finish(ngx_http_helix_debate_t *d,
    ngx_int_t rc);
static ngx_int_t ngx_http_helix_debate_replay(ngx_http_helix_debate_t *d,
    ngx_str_t *body);
static json_t *ngx_http_helix_debate_summary(json_t *out);
static ngx_int_t ngx_http_helix_debate_event(ngx_http_helix_debate_t *d,
    const char *name, json_t *data);
static ngx_int_t ngx_http_helix_debate_frame(ngx_http_helix_debate_t *d,
    const char *name, ngx_str_t *data);
static ngx_int_t ngx_http_helix_debate_release(ngx_http_helix_debate_t *d);
static ngx_int_t ngx_http_helix_debate_send(ngx_http_helix_debate_t *d,
    ngx_chain_t *cl);
static ngx_int_t ngx_http_helix_debate_last(ngx_http_helix_debate_t *d);
static ngx_int_t ngx_http_helix_debate_arm(ngx_http_request_t *r);
static void ngx_http_helix_debate_writer(ngx_http_request_t *r);


static ngx_str_t  ngx_http_helix_debate_sse = ngx_string("text/event-stream");


ngx_int_t
ngx_http_helix_debate_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_helix_body_check(r);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_http_helix_body_read_start(r, ngx_http_helix_debate_body);
}


static void
ngx_http_helix_debate_body(ngx_http_request_t *r)
{
    u_char                       *p, rnd[8];
    size_t                        len;
    json_t                       *req;
    ngx_int_t                     rc;
    ngx_str_t                     body;
    json_error_t                  jerr;
    ngx_pool_cleanup_t           *cln;
    ngx_http_helix_debate_t      *d;
    ngx_http_helix_main_conf_t   *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    len = ngx_http_helix_body_length(r);

    if (len == 0) {
        ngx_http_finalize_request(r,
            ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                      NULL, "request body is empty"));
        return;
    }

    if (len > hmcf->max_request_body) {
        ngx_http_finalize_request(r,
            ngx_http_helix_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      "request_too_large", NULL,
                                      "request body of %uz bytes is larger "
                                      "than max_request_body (%uz bytes)",
                                      len, hmcf->max_request_body));
        return;
    }

    if (ngx_http_helix_body_read(r, len, &body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
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

    d = ngx_pcalloc(r->pool, sizeof(ngx_http_helix_debate_t));
    if (d == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    d->request = r;
    d->req = req;
    d->policy = -1;
    d->start = ngx_current_msec;
    d->created = ngx_time();

    switch (ngx_http_helix_debate_parse(d, &rc)) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        ngx_http_finalize_request(r, rc);
        return;

    default:
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (ngx_http_helix_debate_lookup(d, &rc) == NGX_OK) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    /* the debate's id: its answer and its calls' rows in the log */

    d->id.data = ngx_pnalloc(r->pool, sizeof("debate-") - 1 + 16);
    if (d->id.data == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        ngx_memcpy(rnd, &d->start, ngx_min(sizeof(rnd), sizeof(ngx_msec_t)));
        rnd[7] ^= (u_char) ngx_random();
    }

    p = ngx_cpymem(d->id.data, "debate-", sizeof("debate-") - 1);
    p = ngx_hex_dump(p, rnd, sizeof(rnd));
    d->id.len = p - d->id.data;

    d->transcript = json_array();

    if (d->transcript == NULL
        || ngx_http_helix_json_pool(r->pool, d->transcript) != NGX_OK)
    {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    cln->handler = ngx_http_helix_debate_cleanup;
    cln->data = d;

    d->timer.handler = ngx_http_helix_debate_timeout;
    d->timer.data = d;
    d->timer.log = r->connection->log;

    /* a client that goes away ends every call too */
    r->read_event_handler = ngx_http_test_reading;

    if (d->stream) {
        /* a request the gateway refuses is still a plain error answer */
        d->holding = 1;
        d->held_last = &d->held;
    }

    d->round = 1;
    ngx_http_helix_debate_round(d);
}


static ngx_uint_t
ngx_http_helix_debate_served(ngx_http_helix_main_conf_t *hmcf, json_t *model)
{
    size_t                       len;
    ngx_str_t                   *m;
    ngx_uint_t                   i, k;
    const char                  *name;
    ngx_http_helix_provider_t   *p;

    name = json_string_value(model);
    len = json_string_length(model);
    p = hmcf->providers.elts;

    for (k = 0; k < hmcf->providers.nelts; k++) {
        if (!p[k].enabled) {
            continue;
        }

        m = p[k].models.elts;

        for (i = 0; i < p[k].models.nelts; i++) {
            if (m[i].len == len && ngx_strncmp(m[i].data, name, len) == 0) {
                return 1;
            }
        }
    }

    return 0;
}


static char *
ngx_http_helix_debate_param(ngx_pool_t *pool, size_t i, const char *field)
{
    u_char  *p;

    p = ngx_pnalloc(pool, sizeof("participants[].") + NGX_SIZE_T_LEN
                          + ngx_strlen(field));
    if (p == NULL) {
        return NULL;
    }

    ngx_sprintf(p, "participants[%uz].%s%Z", i, field);

    return (char *) p;
}


static ngx_uint_t
ngx_http_helix_debate_opt_string(json_t *v)
{
    return v == NULL || json_is_null(v) || json_is_string(v);
}


static ngx_uint_t
ngx_http_helix_debate_opt_bool(json_t *v)
{
    return v == NULL || json_is_null(v) || json_is_boolean(v);
}


/*
 * {"topic" | "messages", "participants": [{"model", "role"?, "system"?}],
 *  "rounds"?, "judge": {"model", "system"?}?, "stream"?, "fail_fast"?}
 * NGX_OK; NGX_DECLINED: an error answer went, *rcp to finalize with.
 */

static ngx_int_t
ngx_http_helix_debate_parse(ngx_http_helix_debate_t *d, ngx_int_t *rcp)
{
    ngx_int_t  rc;

    rc = ngx_http_helix_debate_parse_question(d, rcp);

    if (rc == NGX_OK) {
        rc = ngx_http_helix_debate_parse_participants(d, rcp);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_helix_debate_parse_options(d, rcp);
    }

    return rc;
}


/* "topic" or "messages": the question every participant is asked */

static ngx_int_t
ngx_http_helix_debate_parse_question(ngx_http_helix_debate_t *d,
    ngx_int_t *rcp)
{
    size_t               i;
    json_t              *req, *topic, *msgs, *m;
    ngx_http_request_t  *r;

    r = d->request;
    req = d->req;

    topic = json_object_get(req, "topic");
    msgs = json_object_get(req, "messages");

    if (topic && msgs) {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid_value", "topic",
                                         "give \"topic\" or \"messages\", "
                                         "not both");
        return NGX_DECLINED;
    }

    if (topic) {
        if (!json_is_string(topic) || json_string_length(topic) == 0) {
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_type", "topic",
                                             "\"topic\" must be a non-empty "
                                             "string");
            return NGX_DECLINED;
        }

        d->question = json_pack("[{s:s,s:O}]", "role", "user",
                                "content", topic);

    } else if (msgs) {
        if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_type", "messages",
                                             "\"messages\" must be a "
                                             "non-empty array of messages");
            return NGX_DECLINED;
        }

        json_array_foreach(msgs, i, m) {
            if (!json_is_object(m)
                || !json_is_string(json_object_get(m, "role")))
            {
                *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                                 "invalid_type", "messages",
                                                 "message %uz must be an "
                                                 "object with a \"role\"", i);
                return NGX_DECLINED;
            }
        }

        d->question = json_copy(msgs);

    } else {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "missing_field", "topic",
                                         "a debate needs a \"topic\" or "
                                         "\"messages\"");
        return NGX_DECLINED;
    }

    if (d->question == NULL
        || ngx_http_helix_json_pool(r->pool, d->question) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* "participants": each one's model, role and system prompt */

static ngx_int_t
ngx_http_helix_debate_parse_participants(ngx_http_helix_debate_t *d,
    ngx_int_t *rcp)
{
    char                        *param;
    size_t                       i;
    json_t                      *req, *parts, *v, *role, *sys, *m;
    ngx_http_request_t          *r;
    ngx_http_helix_debater_t    *p;
    ngx_http_helix_main_conf_t  *hmcf;

    r = d->request;
    req = d->req;
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    parts = json_object_get(req, "participants");

    if (!json_is_array(parts) || json_array_size(parts) == 0) {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         parts ? "invalid_type"
                                               : "missing_field",
                                         "participants",
                                         "\"participants\" must be a "
                                         "non-empty array of {\"model\", "
                                         "\"role\"?, \"system\"?}");
        return NGX_DECLINED;
    }

    d->nparts = json_array_size(parts);

    if (d->nparts > hmcf->debate_max_participants) {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid_value", "participants",
                                         "a debate may have at most %ui "
                                         "participants "
                                         "(debates.max_participants), not "
                                         "%ui", hmcf->debate_max_participants,
                                         d->nparts);
        return NGX_DECLINED;
    }

    d->parts = ngx_pcalloc(r->pool,
                           d->nparts * sizeof(ngx_http_helix_debater_t));
    if (d->parts == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(parts, i, v) {
        p = &d->parts[i];
        m = json_object_get(v, "model");

        if (!json_is_object(v) || !json_is_string(m)
            || json_string_length(m) == 0)
        {
            param = ngx_http_helix_debate_param(r->pool, i, "model");
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             v && json_is_object(v) && !m
                                             ? "missing_field"
                                             : "invalid_type", param,
                                             "each participant must be an "
                                             "object with a \"model\"");
            return NGX_DECLINED;
        }

        role = json_object_get(v, "role");
        sys = json_object_get(v, "system");

        if (!ngx_http_helix_debate_opt_string(role)
            || !ngx_http_helix_debate_opt_string(sys))
        {
            param = ngx_http_helix_debate_param(r->pool, i,
                        ngx_http_helix_debate_opt_string(role) ? "system"
                                                               : "role");
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_type", param,
                                             "\"role\" and \"system\" must "
                                             "be strings");
            return NGX_DECLINED;
        }

        if (!ngx_http_helix_debate_served(hmcf, m)) {
            param = ngx_http_helix_debate_param(r->pool, i, "model");
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_NOT_FOUND,
                                             "model_not_found", param,
                                             "model \"%s\" is not served by "
                                             "any configured provider (see "
                                             "GET /v1/models)",
                                             json_string_value(m));
            return NGX_DECLINED;
        }

        p->model.data = (u_char *) json_string_value(m);
        p->model.len = json_string_length(m);

        if (json_is_string(role)) {
            p->role.data = (u_char *) json_string_value(role);
            p->role.len = json_string_length(role);
        }

        p->messages = json_array();

        if (p->messages == NULL
            || ngx_http_helix_json_pool(r->pool, p->messages) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (json_is_string(sys)) {
            m = json_pack("{s:s,s:O}", "role", "system", "content", sys);

        } else if (p->role.len) {
            m = json_pack("{s:s,s:s++}", "role", "system", "content",
                          "You take part in a debate as the ",
                          json_string_value(role), ".");

        } else {
            m = NULL;
        }

        if ((m && json_array_append_new(p->messages, m) != 0)
            || json_array_extend(p->messages, d->question) != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* "rounds", "judge", "stream", "fail_fast" */

static ngx_int_t
ngx_http_helix_debate_parse_options(ngx_http_helix_debate_t *d,
    ngx_int_t *rcp)
{
    json_t                      *req, *v, *m;
    json_int_t                   n;
    ngx_http_request_t          *r;
    ngx_http_helix_main_conf_t  *hmcf;

    r = d->request;
    req = d->req;
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    v = json_object_get(req, "rounds");

    if (v == NULL || json_is_null(v)) {
        d->rounds = ngx_min(2, hmcf->debate_max_rounds);

    } else {
        n = json_is_integer(v) ? json_integer_value(v) : 0;

        if (n < 1 || n > (json_int_t) hmcf->debate_max_rounds) {
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_value", "rounds",
                                             "\"rounds\" must be an integer "
                                             "from 1 to %ui "
                                             "(debates.max_rounds)",
                                             hmcf->debate_max_rounds);
            return NGX_DECLINED;
        }

        d->rounds = (ngx_uint_t) n;
    }

    v = json_object_get(req, "judge");

    if (v && !json_is_null(v)) {
        m = json_object_get(v, "model");

        if (!json_is_object(v) || !json_is_string(m)
            || json_string_length(m) == 0
            || !ngx_http_helix_debate_opt_string(json_object_get(v,
                                                                 "system")))
        {
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_type", "judge",
                                             "\"judge\" must be an object "
                                             "{\"model\", \"system\"?}");
            return NGX_DECLINED;
        }

        if (!ngx_http_helix_debate_served(hmcf, m)) {
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_NOT_FOUND,
                                             "model_not_found", "judge.model",
                                             "model \"%s\" is not served by "
                                             "any configured provider (see "
                                             "GET /v1/models)",
                                             json_string_value(m));
            return NGX_DECLINED;
        }

        d->judge = v;
    }

    v = json_object_get(req, "stream");

    if (!ngx_http_helix_debate_opt_bool(v)) {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid_type", "stream",
                                         "\"stream\" must be a boolean");
        return NGX_DECLINED;
    }

    d->stream = json_is_true(v);

    v = json_object_get(req, "fail_fast");

    if (!ngx_http_helix_debate_opt_bool(v)) {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid_type", "fail_fast",
                                         "\"fail_fast\" must be a boolean");
        return NGX_DECLINED;
    }

    d->fail_fast = json_is_boolean(v) ? json_is_true(v)
                                      : hmcf->debate_fail_fast;

    return NGX_OK;
}


/*
 * The whole debate from L1: same question, participants, rounds, judge
 * and call parameters, in the caller's tenant scope (or shared, as the
 * policy says).  NGX_OK: answered, *rcp to finalize with.
 */

static ngx_int_t
ngx_http_helix_debate_lookup(ngx_http_helix_debate_t *d, ngx_int_t *rcp)
{
    u_char                          *p;
    json_t                          *copy;
    ngx_int_t                        rc;
    ngx_str_t                        provider, body, *scope;
    ngx_http_request_t              *r;
    ngx_http_helix_loc_conf_t       *hlcf;
    ngx_http_helix_main_conf_t      *hmcf;
    ngx_http_helix_cache_policy_t   *pol;
    u_char                           hash[NGX_HTTP_HELIX_CACHE_HASH_LEN];

    static ngx_str_t  debates = ngx_string("debates");
    static ngx_str_t  shared = ngx_string("");
    static ngx_str_t  hit = ngx_string("HIT");
    static ngx_str_t  miss = ngx_string("MISS");

    r = d->request;
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);

    if (hmcf->cache_sh == NULL
        || hlcf->cache_policy == NGX_HTTP_HELIX_CACHE_OFF)
    {
        return NGX_DECLINED;
    }

    d->policy = hlcf->cache_policy;

    if (d->policy == NGX_HTTP_HELIX_CACHE_DEFAULT) {
        d->policy = ngx_http_helix_cache_policy(hmcf, &debates);

        if (d->policy == NGX_ERROR) {
            d->policy = -1;
            return NGX_DECLINED;
        }
    }

    pol = hmcf->cache.policies.elts;
    scope = pol[d->policy].shared ? &shared : ngx_http_helix_auth_scope(r);

    /* what does not change the answer is left out, the default made plain */

    copy = json_copy(d->req);
    if (copy == NULL) {
        d->policy = -1;
        return NGX_DECLINED;
    }

    json_object_del(copy, "fail_fast");

    if (json_object_set_new(copy, "rounds",
                            json_integer((json_int_t) d->rounds))
        != 0
        || ngx_http_helix_cache_hash(r->pool, NGX_HTTP_HELIX_EP_DEBATES,
                                     scope, copy, hash)
           != NGX_OK)
    {
        json_decref(copy);
        d->policy = -1;
        return NGX_DECLINED;
    }

    json_decref(copy);

    d->key.data = ngx_pnalloc(r->pool, sizeof("debate:") - 1
                                       + NGX_HTTP_HELIX_CACHE_HASH_LEN);
    if (d->key.data == NULL) {
        d->policy = -1;
        return NGX_DECLINED;
    }

    p = ngx_cpymem(d->key.data, "debate:", sizeof("debate:") - 1);
    p = ngx_cpymem(p, hash, NGX_HTTP_HELIX_CACHE_HASH_LEN);
    d->key.len = p - d->key.data;

    rc = ngx_http_helix_cache_lookup(hmcf, &d->key, r->pool, &provider,
                                     &body, NULL);

    ngx_http_helix_metrics_cache(hmcf, d->policy, rc == NGX_OK);

    if (rc != NGX_OK) {
        if (ngx_http_helix_add_header(r, "X-Cache", &miss) != NGX_OK) {
            d->policy = -1;
        }

        return NGX_DECLINED;
    }

    if (ngx_http_helix_add_header(r, "X-Cache", &hit) != NGX_OK) {
        *rcp = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_OK;
    }

    if (d->stream) {
        *rcp = ngx_http_helix_debate_replay(d, &body);
        return NGX_OK;
    }

    *rcp = ngx_http_helix_send_json(r, NGX_HTTP_OK, &body);
    return NGX_OK;
}


static void
ngx_http_helix_debate_cleanup(void *data)
{
    ngx_http_helix_debate_t *d = data;

    /* the request is going away: the calls end with its pool */

    d->gone = 1;

    if (d->batch) {
        d->batch->stop = 1;
    }

    if (d->timer.timer_set) {
        ngx_del_timer(&d->timer);
    }
}


static ngx_int_t
ngx_http_helix_debate_item_req(ngx_http_helix_debate_t *d, json_t *model,
    json_t *messages, json_t **one)
{
    json_t      *req, *v;
    ngx_uint_t   i;

    static const char  *passed[] = { "max_tokens", "temperature", "top_p",
                                     NULL };

    req = json_pack("{s:O,s:o}", "model", model, "messages",
                    json_copy(messages));

    if (req == NULL
        || ngx_http_helix_json_pool(d->request->pool, req) != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; passed[i]; i++) {
        v = json_object_get(d->req, passed[i]);

        if (v && json_object_set(req, passed[i], v) != 0) {
            return NGX_ERROR;
        }
    }

    *one = req;

    return NGX_OK;
}


/* one round: every participant still in at once; past the last, the judge */

static void
ngx_http_helix_debate_round(ngx_http_helix_debate_t *d)
{
    json_t                      *one, *list, *msgs, *model;
    ngx_uint_t                   i, k, n, judge;
    ngx_http_request_t          *r;
    ngx_http_helix_batch_t      *b;
    ngx_http_helix_debater_t    *p;
    ngx_http_helix_main_conf_t  *hmcf;

    r = d->request;
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    judge = (d->round > d->rounds);

    n = 0;

    for (i = 0; i < d->nparts; i++) {
        d->parts[i].last = NULL;
        n += (d->parts[i].out == 0);
    }

    if (judge) {
        n = 1;
    }

    b = ngx_pcalloc(r->pool, sizeof(ngx_http_helix_batch_t));
    d->who = ngx_palloc(r->pool, n * sizeof(ngx_uint_t));
    d->answers = json_array();
    list = json_array();

    if (b == NULL || d->who == NULL || d->answers == NULL || list == NULL
        || ngx_http_helix_json_pool(r->pool, d->answers) != NGX_OK
        || ngx_http_helix_json_pool(r->pool, list) != NGX_OK)
    {
        ngx_http_helix_debate_finish(d, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    b->request = r;
    b->endpoint = NGX_HTTP_HELIX_EP_DEBATES;
    b->log_id = d->id;
    b->log_base = (d->round - 1) * d->nparts;

    if (ngx_http_helix_batch_init(b, n) != NGX_OK) {
        ngx_http_helix_debate_finish(d, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    b->data = d;
    b->max = hmcf->ensemble_parallel
             ? ngx_min(n, hmcf->ensemble_max_providers) : 1;
    b->limit = b->max;
    b->item_done = ngx_http_helix_debate_item;
    b->complete = ngx_http_helix_debate_round_done;

    d->batch = b;
    d->timed_out = 0;
    d->round_start = ngx_current_msec;

    k = 0;

    for (i = 0; judge ? k < 1 : i < d->nparts; i++) {

        if (judge) {
            model = json_object_get(d->judge, "model");
            msgs = ngx_http_helix_debate_judge_messages(d);
            d->who[k] = NGX_HTTP_HELIX_DEBATE_JUDGE;

        } else {
            p = &d->parts[i];

            if (p->out) {
                continue;
            }

            model = json_stringn((char *) p->model.data, p->model.len);
            msgs = p->messages;
            d->who[k] = i;

            if (model == NULL
                || ngx_http_helix_json_pool(r->pool, model) != NGX_OK
                || json_array_append_new(list,
                                         json_integer((json_int_t) i))
                   != 0)
            {
                msgs = NULL;
            }
        }

        if (msgs == NULL
            || json_array_append_new(d->answers, json_null()) != 0
            || ngx_http_helix_debate_item_req(d, model, msgs, &one)
               != NGX_OK)
        {
            ngx_http_helix_debate_finish(d, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        b->items[k].endpoint = NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS;
        b->items[k].req = one;

        ngx_http_helix_batch_push(b, k);
        k++;
    }

    if (!judge && d->stream
        && ngx_http_helix_debate_event(d, "debate.round.started",
               json_pack("{s:s%,s:I,s:O}", "id", d->id.data, d->id.len,
                         "round", (json_int_t) d->round,
                         "participants", list))
           != NGX_OK)
    {
        ngx_http_helix_debate_finish(d, NGX_ERROR);
        return;
    }

    if (hmcf->debate_timeout) {
        ngx_add_timer(&d->timer, hmcf->debate_timeout);
    }

    ngx_http_helix_batch_run(b);
}


static json_t *
ngx_http_helix_debate_usage(json_int_t *usage)
{
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", usage[0],
                     "completion_tokens", usage[1],
                     "total_tokens", usage[0] + usage[1]);
}


/* a call's record in the transcript: who, and its answer or error */

static json_t *
ngx_http_helix_debate_entry(ngx_http_helix_debate_t *d, ngx_uint_t i,
    const char *outcome)
{
    json_t                    *e;
    ngx_http_helix_debater_t  *p;

    if (i == NGX_HTTP_HELIX_DEBATE_JUDGE) {
        return json_pack("{s:O,s:s}", "model",
                         json_object_get(d->judge, "model"),
                         "outcome", outcome);
    }

    p = &d->parts[i];

    e = json_pack("{s:I,s:I,s:s%}", "round", (json_int_t) d->round,
                  "participant", (json_int_t) i,
                  "model", (char *) p->model.data, p->model.len);

    if (e && p->role.len
        && json_object_set_new(e, "role",
                               json_stringn((char *) p->role.data,
                                            p->role.len))
           != 0)
    {
        json_decref(e);
        return NULL;
    }

    if (e && json_object_set_new(e, "outcome", json_string(outcome)) != 0) {
        json_decref(e);
        return NULL;
    }

    return e;
}


static void
ngx_http_helix_debate_item(ngx_http_helix_batch_t *b,
    ngx_http_helix_item_t *item)
{
    json_t                    *e, *answer, *c, *text, *u, *err;
    json_int_t                 pt, ct, *usage;
    ngx_uint_t                 k, i;
    ngx_http_request_t        *r;
    ngx_http_helix_debate_t   *d;
    ngx_http_helix_debater_t  *p;

    d = b->data;
    r = d->request;
    k = item - b->items;
    i = d->who[k];
    p = (i == NGX_HTTP_HELIX_DEBATE_JUDGE) ? NULL : &d->parts[i];

    if (item->status != NGX_HTTP_OK
        && item->provider.len == 0 && item->status < 500
        && (item->code == NULL
            || ngx_strcmp(item->code, "provider_error") != 0))
    {
        /* the gateway refused the call itself: every call would be */
        d->bad = item;
        ngx_http_helix_debate_stop(b);
        return;
    }

    if (d->holding && ngx_http_helix_debate_release(d) != NGX_OK) {
        ngx_http_helix_debate_stop(b);
        return;
    }

    answer = ngx_http_helix_batch_answer(item);

    if (answer && ngx_http_helix_json_pool(r->pool, answer) != NGX_OK) {
        answer = NULL;
    }

    if (answer == NULL) {
        e = ngx_http_helix_debate_entry(d, i, "failed");
        err = item->status == NGX_HTTP_OK
              ? json_pack("{s:s,s:s,s:n,s:s}", "message", "the answer is "
                          "not valid JSON", "type", "api_error", "param",
                          "code", "invalid_answer")
              : ngx_http_helix_batch_error(item);

        if (e == NULL || err == NULL
            || json_object_set_new(e, "status",
                                   json_integer((json_int_t) item->status))
               != 0
            || json_object_set(e, "error", err) != 0)
        {
            json_decref(e);
            json_decref(err);
            ngx_http_helix_debate_stop(b);
            return;
        }

        if (p) {
            p->out = d->round;
            p->error = err;

            if (ngx_http_helix_json_pool(r->pool, err) != NGX_OK) {
                p->error = NULL;
            }

        } else {
            json_decref(err);
        }

        d->lost = 1;

        if (d->fail_fast && d->failed == NULL) {
            d->failed = item;
            d->failed_who = i;
        }

    } else {
        c = json_object_get(json_array_get(json_object_get(answer, "choices"),
                                           0),
                            "message");
        text = json_object_get(c, "content");

        text = json_is_string(text) ? json_incref(text) : json_string("");

        if (text == NULL
            || ngx_http_helix_json_pool(r->pool, text) != NGX_OK)
        {
            ngx_http_helix_debate_stop(b);
            return;
        }

        u = json_object_get(answer, "usage");
        pt = json_integer_value(json_object_get(u, "prompt_tokens"));
        ct = json_integer_value(json_object_get(u, "completion_tokens"));

        usage = p ? p->usage : d->judge_usage;
        usage[0] += pt;
        usage[1] += ct;

        e = ngx_http_helix_debate_entry(d, i, "ok");

        if (e == NULL
            || json_object_set_new(e, "provider",
                                   json_stringn((char *) item->provider.data,
                                                item->provider.len))
               != 0
            || json_object_set(e, "content", text) != 0
            || (u && json_object_set(e, "usage", u) != 0)
            || json_object_set_new(e, "latency_ms",
                                   json_integer((json_int_t) item->latency))
               != 0
            || (item->tier
                && json_object_set_new(e, "cache", json_string("HIT")) != 0))
        {
            json_decref(e);
            ngx_http_helix_debate_stop(b);
            return;
        }

        if (p) {
            p->last = text;

            if (json_array_append_new(p->messages,
                                      json_pack("{s:s,s:O}",
                                                "role", "assistant",
                                                "content", text))
                != 0)
            {
                json_decref(e);
                ngx_http_helix_debate_stop(b);
                return;
            }
        }
    }

    if (json_array_set_new(d->answers, k, e) != 0) {
        ngx_http_helix_debate_stop(b);
        return;
    }

    if (p && d->stream
        && ngx_http_helix_debate_event(d, "debate.answer", json_incref(e))
           != NGX_OK)
    {
        ngx_http_helix_debate_stop(b);
        return;
    }

    if (d->failed) {
        ngx_http_helix_debate_stop(b);
    }
}


/* calls still running are cut, their places and claims given back */

static void
ngx_http_helix_debate_stop(ngx_http_helix_batch_t *b)
{
    ngx_uint_t              k;
    ngx_http_helix_item_t  *item;

    b->stop = 1;

    for (k = 0; k < b->nitems; k++) {
        item = &b->items[k];

        if (item->gw == NULL || item->done) {
            continue;
        }

        ngx_http_helix_item_cancel(item);

        item->done = 1;
        item->latency = ngx_current_msec - item->start;
        b->running--;
        b->finished++;
    }
}


static void
ngx_http_helix_debate_timeout(ngx_event_t *ev)
{
    ngx_connection_t         *c;
    ngx_http_helix_batch_t   *b;
    ngx_http_helix_debate_t  *d;

    d = ev->data;
    b = d->batch;
    c = d->request->connection;

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "helix: debate %V: round %ui timed out, %ui of %ui calls "
                  "still pending are cancelled", &d->id, d->round,
                  b->running + b->qlen, b->nitems);

    d->timed_out = 1;
    ngx_http_helix_debate_stop(b);
    ngx_http_helix_batch_run(b);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_helix_debate_round_done(ngx_http_helix_batch_t *b)
{
    u_char                    *p, *last;
    ngx_int_t                  rc;
    ngx_str_t                  msg;
    ngx_uint_t                 i, ok, judge, active, status;
    ngx_http_request_t        *r;
    ngx_http_helix_item_t     *item;
    ngx_http_helix_debate_t   *d;
    ngx_http_helix_debater_t  *dp;
    u_char                     buf[512];

    d = b->data;
    r = d->request;
    judge = (d->round > d->rounds);

    if (d->timer.timer_set) {
        ngx_del_timer(&d->timer);
    }

    if (d->gone) {
        ngx_http_helix_debate_finish(d, NGX_ERROR);
        return;
    }

    if (d->bad) {
        item = d->bad;

        if (!d->header_sent) {
            d->holding = 0;
            d->held = NULL;
            ngx_http_helix_debate_finish(d,
                ngx_http_helix_send_error(r, item->status, item->code,
                                          item->param, "%V",
                                          &item->message));
            return;
        }

        ngx_http_helix_debate_fail(d, item->status, item->message.data,
                                   item->message.len);
        return;
    }

    if (d->holding && ngx_http_helix_debate_release(d) != NGX_OK) {
        ngx_http_helix_debate_finish(d, NGX_ERROR);
        return;
    }

    /* calls cut by the timeout or by fail_fast: they leave too */

    rc = ngx_http_helix_debate_leavers(d, b, &ok);

    if (rc == NGX_OK) {
        rc = ngx_http_helix_debate_record(d, b, judge, ok);
    }

    if (rc != NGX_OK) {
        ngx_http_helix_debate_finish(d, rc);
        return;
    }

    p = buf;
    last = buf + sizeof(buf);

    if (d->failed) {
        msg = d->failed->message;

        if (d->failed->status == 0 || !d->failed->done || msg.len == 0) {
            ngx_str_set(&msg, "no answer within debates.round_timeout");
        }

        if (d->failed_who == NGX_HTTP_HELIX_DEBATE_JUDGE) {
            p = ngx_slprintf(p, last, "the judge failed and fail_fast is "
                             "on: %V", &msg);

        } else {
            dp = &d->parts[d->failed_who];
            p = ngx_slprintf(p, last, "participant %ui (%V) failed in round "
                             "%ui and fail_fast is on: %V", d->failed_who,
                             &dp->model, d->round, &msg);
        }

        status = d->timed_out ? NGX_HTTP_GATEWAY_TIME_OUT
                              : NGX_HTTP_BAD_GATEWAY;

        ngx_http_helix_debate_fail(d, status, buf, p - buf);
        return;
    }

    if (judge) {
        ngx_http_helix_debate_conclude(d);
        return;
    }

    active = 0;

    for (i = 0; i < d->nparts; i++) {
        active += (d->parts[i].out == 0);
    }

    if (active == 0) {
        p = ngx_slprintf(p, last, "every participant had failed by round "
                         "%ui", d->round);

        ngx_http_helix_debate_fail(d, d->timed_out ? NGX_HTTP_GATEWAY_TIME_OUT
                                                   : NGX_HTTP_BAD_GATEWAY,
                                   buf, p - buf);
        return;
    }

    if (d->round < d->rounds) {
        if (ngx_http_helix_debate_next(d) != NGX_OK) {
            ngx_http_helix_debate_finish(d, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        d->round++;
        ngx_http_helix_debate_round(d);
        return;
    }

    if (d->judge) {
        d->round++;
        ngx_http_helix_debate_round(d);
        return;
    }

    ngx_http_helix_debate_conclude(d);
}


/*
 * The round's items without an answer (cut by the timeout or by
 * fail_fast): their entries say so, their participants leave; *okp: how
 * many answered.  NGX_OK, or what to finish the debate with.
 */

static ngx_int_t
ngx_http_helix_debate_leavers(ngx_http_helix_debate_t *d,
    ngx_http_helix_batch_t *b, ngx_uint_t *okp)
{
    json_t      *e;
    ngx_uint_t   k, i, ok;

    ok = 0;

    for (k = 0; k < b->nitems; k++) {
        e = json_array_get(d->answers, k);

        if (!json_is_null(e)) {
            ok += json_is_string(json_object_get(e, "content"));
            continue;
        }

        i = d->who[k];
        e = ngx_http_helix_debate_entry(d, i, d->timed_out ? "timeout"
                                                            : "cancelled");

        if (e == NULL || json_array_set_new(d->answers, k, e) != 0) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (i != NGX_HTTP_HELIX_DEBATE_JUDGE) {
            d->parts[i].out = d->round;
        }

        d->lost = 1;

        if (d->timed_out && d->fail_fast && d->failed == NULL) {
            d->failed = &b->items[k];
            d->failed_who = i;
        }

        if (d->stream && i != NGX_HTTP_HELIX_DEBATE_JUDGE
            && ngx_http_helix_debate_event(d, "debate.answer",
                                           json_incref(e))
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    *okp = ok;

    return NGX_OK;
}


/* the round into the transcript (the judge's answer aside), its event */

static ngx_int_t
ngx_http_helix_debate_record(ngx_http_helix_debate_t *d,
    ngx_http_helix_batch_t *b, ngx_uint_t judge, ngx_uint_t ok)
{
    json_t      *round, *ev;
    ngx_msec_t   ms;

    ms = ngx_current_msec - d->round_start;

    if (judge) {
        d->judged = json_array_get(d->answers, 0);

        if (json_object_set_new(d->judged, "time_ms",
                                json_integer((json_int_t) ms))
            != 0)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else {
        round = json_pack("{s:I,s:I,s:O}", "round", (json_int_t) d->round,
                          "time_ms", (json_int_t) ms,
                          "answers", d->answers);

        if (round == NULL || json_array_append_new(d->transcript, round) != 0)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (d->stream) {
            ev = json_pack("{s:I,s:I,s:I,s:I}", "round",
                           (json_int_t) d->round, "time_ms", (json_int_t) ms,
                           "answered", (json_int_t) ok,
                           "failed", (json_int_t) (b->nitems - ok));

            if (ngx_http_helix_debate_event(d, "debate.round.completed", ev)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


static void
ngx_http_helix_debate_add(ngx_http_helix_debate_buf_t *sb, u_char *s,
    size_t len)
{
    u_char  *p;
    size_t   cap;

    if (sb->failed) {
        return;
    }

    if (sb->len + len > sb->cap) {
        cap = ngx_max(sb->cap * 2, sb->len + len);
        p = ngx_pnalloc(sb->pool, cap);

        if (p == NULL) {
            sb->failed = 1;
            return;
        }

        if (sb->len) {
            ngx_memcpy(p, sb->data, sb->len);
        }

        sb->data = p;
        sb->cap = cap;
    }

    ngx_memcpy(sb->data + sb->len, s, len);
    sb->len += len;
}


static void
ngx_http_helix_debate_addf(ngx_http_helix_debate_buf_t *sb,
    const char *fmt, ...)
{
    u_char   *p;
    va_list   args;
    u_char    tmp[512];

    va_start(args, fmt);
    p = ngx_vslprintf(tmp, tmp + sizeof(tmp), fmt, args);
    va_end(args);

    ngx_http_helix_debate_add(sb, tmp, p - tmp);
}


/* "[2] critic (gpt-4o):\n<its answer>\n\n" */

static void
ngx_http_helix_debate_add_answer(ngx_http_helix_debate_buf_t *sb,
    ngx_http_helix_debater_t *p, ngx_uint_t i, json_t *text)
{
    if (p->role.len) {
        ngx_http_helix_debate_addf(sb, "[%ui] %V (%V):\n", i + 1, &p->role,
                                   &p->model);

    } else {
        ngx_http_helix_debate_addf(sb, "[%ui] %V:\n", i + 1, &p->model);
    }

    ngx_http_helix_debate_add(sb, (u_char *) json_string_value(text),
                              json_string_length(text));
    ngx_http_helix_debate_add(sb, (u_char *) "\n\n", 2);
}


/* each participant still in hears what the others said this round */

static ngx_int_t
ngx_http_helix_debate_next(ngx_http_helix_debate_t *d)
{
    ngx_uint_t                    i, j, others;
    ngx_http_helix_debater_t     *p;
    ngx_http_helix_debate_buf_t   sb;

    for (i = 0; i < d->nparts; i++) {
        p = &d->parts[i];

        if (p->out) {
            continue;
        }

        ngx_memzero(&sb, sizeof(ngx_http_helix_debate_buf_t));
        sb.pool = d->request->pool;

        others = 0;

        for (j = 0; j < d->nparts; j++) {
            others += (j != i && d->parts[j].last != NULL);
        }

        if (others == 0) {
            ngx_http_helix_debate_addf(&sb, "Round %ui of %ui. No other "
                                       "participant answered in round %ui; "
                                       "give your answer again, revised if "
                                       "you see fit.", d->round + 1,
                                       d->rounds, d->round);

        } else {
            ngx_http_helix_debate_addf(&sb, "Round %ui of %ui. The other "
                                       "participants answered in round "
                                       "%ui:\n\n", d->round + 1, d->rounds,
                                       d->round);

            for (j = 0; j < d->nparts; j++) {
                if (j != i && d->parts[j].last) {
                    ngx_http_helix_debate_add_answer(&sb, &d->parts[j], j,
                                                     d->parts[j].last);
                }
            }

            ngx_http_helix_debate_addf(&sb, "Consider their answers and "
                                       "give your answer again, revised "
                                       "where they convinced you.");
        }

        if (sb.failed
            || json_array_append_new(p->messages,
                   json_pack("{s:s,s:s%}", "role", "user", "content",
                             (char *) sb.data, sb.len))
               != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* the judge reads the question and every round's answers */

static json_t *
ngx_http_helix_debate_judge_messages(ngx_http_helix_debate_t *d)
{
    size_t                        i, j;
    json_t                       *msgs, *m, *round, *e, *sys, *text;
    ngx_http_helix_debate_buf_t   sb;

    ngx_memzero(&sb, sizeof(ngx_http_helix_debate_buf_t));
    sb.pool = d->request->pool;

    ngx_http_helix_debate_addf(&sb, "The question:\n");

    json_array_foreach(d->question, i, m) {
        text = json_object_get(m, "content");

        if (json_is_string(text)) {
            if (json_array_size(d->question) > 1) {
                ngx_http_helix_debate_addf(&sb, "%s: ",
                    json_string_value(json_object_get(m, "role")));
            }

            ngx_http_helix_debate_add(&sb, (u_char *) json_string_value(text),
                                      json_string_length(text));
            ngx_http_helix_debate_add(&sb, (u_char *) "\n", 1);
        }
    }

    json_array_foreach(d->transcript, i, round) {
        ngx_http_helix_debate_addf(&sb, "\nRound %uz:\n\n", i + 1);

        json_array_foreach(json_object_get(round, "answers"), j, e) {
            text = json_object_get(e, "content");

            if (json_is_string(text)) {
                ngx_http_helix_debate_add_answer(&sb,
                    &d->parts[json_integer_value(
                                  json_object_get(e, "participant"))],
                    json_integer_value(json_object_get(e, "participant")),
                    text);
            }
        }
    }

    ngx_http_helix_debate_addf(&sb, "Write the final answer to the "
                               "question.");

    if (sb.failed) {
        return NULL;
    }

    sys = json_object_get(d->judge, "system");

    msgs = json_pack("[{s:s,s:s},{s:s,s:s%}]",
                     "role", "system",
                     "content", json_is_string(sys)
                                ? json_string_value(sys)
                                : "You are the judge of a debate.  Read the "
                                  "question and the participants' answers "
                                  "in every round, then write the best "
                                  "final answer to the question.",
                     "role", "user",
                     "content", (char *) sb.data, sb.len);

    if (msgs == NULL
        || ngx_http_helix_json_pool(d->request->pool, msgs) != NGX_OK)
    {
        return NULL;
    }

    return msgs;
}


static ngx_uint_t
ngx_http_helix_debate_weight(ngx_http_helix_main_conf_t *hmcf, json_t *name)
{
    ngx_uint_t                   k;
    ngx_http_helix_provider_t   *p;

    p = hmcf->providers.elts;

    for (k = 0; k < hmcf->providers.nelts; k++) {
        if (json_is_string(name)
            && p[k].name.len == json_string_length(name)
            && ngx_strncmp(p[k].name.data, json_string_value(name),
                           p[k].name.len)
               == 0)
        {
            return p[k].weight;
        }
    }

    return 0;
}


/*
 * The conclusion: the judge's, or among the last round's answers by
 * ensemble.strategy (the text most gave, ties to the heavier provider
 * and then to the participant listed first; or the heaviest provider)
 */

static void
ngx_http_helix_debate_conclude(ngx_http_helix_debate_t *d)
{
    json_t                      *out, *parts, *c;
    ngx_int_t                    rc;
    ngx_str_t                    body, provider;
    json_int_t                   total[2];
    ngx_http_request_t          *r;
    ngx_http_helix_main_conf_t  *hmcf;

    r = d->request;
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    c = ngx_http_helix_debate_choose(d, hmcf);

    if (c == NULL) {
        ngx_http_helix_debate_finish(d, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    parts = json_array();
    total[0] = d->judge_usage[0];
    total[1] = d->judge_usage[1];

    out = json_pack("{s:s%,s:s,s:I,s:I,s:o,s:O}",
                    "id", d->id.data, d->id.len,
                    "object", "debate",
                    "created", (json_int_t) d->created,
                    "rounds", (json_int_t) d->rounds,
                    "participants", parts,
                    "transcript", d->transcript);

    if (out == NULL || c == NULL
        || ngx_http_helix_json_pool(r->pool, out) != NGX_OK)
    {
        json_decref(c);
        ngx_http_helix_debate_finish(d, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (ngx_http_helix_debate_parts_out(d, parts, total) != NGX_OK) {
        json_decref(c);
        ngx_http_helix_debate_finish(d, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if ((d->judged
         && (json_object_set_new(d->judged, "usage",
                  ngx_http_helix_debate_usage(d->judge_usage))
             != 0
             || json_object_set(out, "judge", d->judged) != 0))
        || json_object_set_new(out, "conclusion", c) != 0
        || json_object_set_new(out, "usage",
                               ngx_http_helix_debate_usage(total))
           != 0
        || json_object_set_new(out, "time_ms",
               json_integer((json_int_t) (ngx_current_msec - d->start)))
           != 0
        || ngx_http_helix_json_dump(r->pool, out, &body) != NGX_OK)
    {
        ngx_http_helix_debate_finish(d, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* whole, and only if everyone answered: a failure is not kept */

    if (d->policy >= 0 && !d->lost) {
        ngx_str_set(&provider, "debate");
        ngx_http_helix_cache_store(hmcf, &d->key, d->policy, &provider,
                                   &body, r->connection->log);
    }

    if (!d->stream) {
        ngx_http_helix_debate_finish(d,
                        ngx_http_helix_send_json(r, NGX_HTTP_OK, &body));
        return;
    }

    ngx_str_set(&provider, "[DONE]");

    if (ngx_http_helix_debate_event(d, "debate.conclusion",
                                    ngx_http_helix_debate_summary(out))
        != NGX_OK
        || ngx_http_helix_debate_frame(d, "done", &provider) != NGX_OK)
    {
        ngx_http_helix_debate_finish(d, NGX_ERROR);
        return;
    }

    rc = ngx_http_helix_debate_last(d);
    ngx_http_helix_debate_finish(d, rc);
}


/* the judge's conclusion, or the last round's by ensemble.strategy */

static json_t *
ngx_http_helix_debate_choose(ngx_http_helix_debate_t *d,
    ngx_http_helix_main_conf_t *hmcf)
{
    json_t      *answers, *e, *f, *best, *c;
    ngx_uint_t   k, j, votes, best_votes, majority, w, best_w;

    if (d->judged
        && json_is_string(json_object_get(d->judged, "content")))
    {
        c = json_pack("{s:s,s:O,s:O}", "by", "judge",
                      "model", json_object_get(d->judged, "model"),
                      "content", json_object_get(d->judged, "content"));

    } else {
        majority = !(hmcf->ensemble_strategy.len == 6
                     && ngx_strncmp(hmcf->ensemble_strategy.data, "weight", 6)
                        == 0);

        answers = json_object_get(json_array_get(d->transcript,
                                      json_array_size(d->transcript) - 1),
                                  "answers");
        best = NULL;
        best_votes = 0;
        best_w = 0;

        json_array_foreach(answers, k, e) {
            if (!json_is_string(json_object_get(e, "content"))) {
                continue;
            }

            votes = 0;

            json_array_foreach(answers, j, f) {
                if (json_is_string(json_object_get(f, "content"))
                    && json_equal(json_object_get(e, "content"),
                                  json_object_get(f, "content")))
                {
                    votes++;
                }
            }

            w = ngx_http_helix_debate_weight(hmcf,
                                             json_object_get(e, "provider"));

            if (best == NULL
                || (majority && votes > best_votes)
                || ((!majority || votes == best_votes) && w > best_w))
            {
                best = e;
                best_votes = votes;
                best_w = w;
            }
        }

        if (best == NULL) {
            return NULL;
        }

        c = json_pack("{s:s,s:O,s:O,s:O,s:I}",
                      "by", majority ? "majority" : "weight",
                      "participant", json_object_get(best, "participant"),
                      "model", json_object_get(best, "model"),
                      "content", json_object_get(best, "content"),
                      "votes", (json_int_t) best_votes);
    }

    return c;
}


/* each participant: in or left, and its usage, into parts; summed */

static ngx_int_t
ngx_http_helix_debate_parts_out(ngx_http_helix_debate_t *d, json_t *parts,
    json_int_t *total)
{
    json_t                    *pe;
    ngx_uint_t                 i;
    ngx_http_helix_debater_t  *p;

    for (i = 0; i < d->nparts; i++) {
        p = &d->parts[i];
        total[0] += p->usage[0];
        total[1] += p->usage[1];

        pe = json_pack("{s:I,s:s%}", "participant", (json_int_t) i,
                       "model", (char *) p->model.data, p->model.len);

        if (pe == NULL || json_array_append_new(parts, pe) != 0
            || (p->role.len
                && json_object_set_new(pe, "role",
                       json_stringn((char *) p->role.data, p->role.len))
                   != 0)
            || json_object_set_new(pe, "status",
                                   json_string(p->out ? "left" : "in"))
               != 0
            || (p->out
                && json_object_set_new(pe, "left_in_round",
                                       json_integer((json_int_t) p->out))
                   != 0)
            || (p->error && json_object_set(pe, "error", p->error) != 0)
            || json_object_set_new(pe, "usage",
                                   ngx_http_helix_debate_usage(p->usage))
               != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* what debate.conclusion says: the answer without its transcript */

static json_t *
ngx_http_helix_debate_summary(json_t *out)
{
    json_t      *s, *v;
    ngx_uint_t   i;

    static const char  *keys[] = { "id", "conclusion", "judge",
                                   "participants", "usage", "time_ms", NULL };

    s = json_object();
    if (s == NULL) {
        return NULL;
    }

    for (i = 0; keys[i]; i++) {
        v = json_object_get(out, keys[i]);

        if (v && json_object_set(s, keys[i], v) != 0) {
            json_decref(s);
            return NULL;
        }
    }

    return s;
}


/* no conclusion: an OpenAI-style error, with the transcript so far */

static void
ngx_http_helix_debate_fail(ngx_http_helix_debate_t *d, ngx_uint_t status,
    u_char *msg, size_t len)
{
    json_t              *err, *out;
    ngx_int_t            rc;
    ngx_str_t            body;
    ngx_http_request_t  *r;

    r = d->request;

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "helix: debate %V: %ui %*s", &d->id, status, len, msg);

    err = json_pack("{s:s%,s:s,s:n,s:s}", "message", (char *) msg, len,
                    "type", ngx_http_helix_error_type(status),
                    "param", "code", "debate_failed");

    if (d->stream) {
        out = json_pack("{s:o}", "error", err);

        if (ngx_http_helix_debate_event(d, "error", out) != NGX_OK) {
            ngx_http_helix_debate_finish(d, NGX_ERROR);
            return;
        }

        rc = ngx_http_helix_debate_last(d);
        ngx_http_helix_debate_finish(d, rc);
        return;
    }

    out = json_pack("{s:o,s:s%,s:O}", "error", err,
                    "id", d->id.data, d->id.len,
                    "transcript", d->transcript);

    if (out == NULL || ngx_http_helix_json_pool(r->pool, out) != NGX_OK
        || ngx_http_helix_json_dump(r->pool, out, &body) != NGX_OK)
    {
        ngx_http_helix_debate_finish(d, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_helix_debate_finish(d, ngx_http_helix_send_json(r, status,
                                                             &body));
}


/* the end: the answer, or an nginx status, sent once */

static void
ngx_http_helix_debate_finish(ngx_http_helix_debate_t *d, ngx_int_t rc)
{
    ngx_http_request_t  *r;

    r = d->request;

    if (d->batch) {
        d->batch->stop = 1;
    }

    if (d->timer.timer_set) {
        ngx_del_timer(&d->timer);
    }

    if (d->header_sent && rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        /* a stream under way has no other status to give */
        rc = NGX_ERROR;
    }

    ngx_http_finalize_request(r, rc);
}


/* a cached debate as a stream: the events it gave the first time */

static ngx_int_t
ngx_http_helix_debate_replay(ngx_http_helix_debate_t *d, ngx_str_t *body)
{
    size_t     i, j, ok;
    json_t    *out, *round, *answers, *e, *list, *ev;
    ngx_str_t  done = ngx_string("[DONE]");

    out = json_loadb((char *) body->data, body->len, 0, NULL);

    if (out == NULL
        || ngx_http_helix_json_pool(d->request->pool, out) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json_array_foreach(json_object_get(out, "transcript"), i, round) {
        answers = json_object_get(round, "answers");
        list = json_array();
        ok = 0;

        json_array_foreach(answers, j, e) {
            ok += json_is_string(json_object_get(e, "content"));

            if (list == NULL
                || json_array_append(list, json_object_get(e, "participant"))
                   != 0)
            {
                json_decref(list);
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }

        ev = json_pack("{s:O,s:O,s:o}", "id", json_object_get(out, "id"),
                       "round", json_object_get(round, "round"),
                       "participants", list);

        if (ngx_http_helix_debate_event(d, "debate.round.started", ev)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        json_array_foreach(answers, j, e) {
            if (ngx_http_helix_debate_event(d, "debate.answer",
                                            json_incref(e))
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        ev = json_pack("{s:O,s:O,s:I,s:I}",
                       "round", json_object_get(round, "round"),
                       "time_ms", json_object_get(round, "time_ms"),
                       "answered", (json_int_t) ok,
                       "failed", (json_int_t) (json_array_size(answers) - ok));

        if (ngx_http_helix_debate_event(d, "debate.round.completed", ev)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ngx_http_helix_debate_event(d, "debate.conclusion",
                                    ngx_http_helix_debate_summary(out))
        != NGX_OK
        || ngx_http_helix_debate_frame(d, "done", &done) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_helix_debate_last(d);
}


/* SSE: "event: <name>\ndata: <json>\n\n", flushed as it goes */

static ngx_int_t
ngx_http_helix_debate_event(ngx_http_helix_debate_t *d, const char *name,
    json_t *data)
{
    ngx_str_t  s;

    if (data == NULL
        || ngx_http_helix_json_pool(d->request->pool, data) != NGX_OK
        || ngx_http_helix_json_dump(d->request->pool, data, &s) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_helix_debate_frame(d, name, &s);
}


static ngx_int_t
ngx_http_helix_debate_frame(ngx_http_helix_debate_t *d, const char *name,
    ngx_str_t *data)
{
    u_char       *p;
    size_t        len;
    ngx_buf_t    *b;
    ngx_pool_t   *pool;
    ngx_chain_t  *cl;

    pool = d->request->pool;

    len = sizeof("event: \ndata: \n\n") - 1 + ngx_strlen(name) + data->len;

    p = ngx_pnalloc(pool, len);
    b = ngx_calloc_buf(pool);
    cl = ngx_alloc_chain_link(pool);

    if (p == NULL || b == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    b->pos = p;
    b->last = ngx_sprintf(p, "event: %s\ndata: %V\n\n", name, data);
    b->memory = 1;
    b->flush = 1;

    cl->buf = b;
    cl->next = NULL;

    if (d->holding) {
        *d->held_last = cl;
        d->held_last = &cl->next;
        return NGX_OK;
    }

    return ngx_http_helix_debate_send(d, cl);
}


/* the first answer is in: the stream's header and what waited for it */

static ngx_int_t
ngx_http_helix_debate_release(ngx_http_helix_debate_t *d)
{
    ngx_chain_t  *cl;

    d->holding = 0;
    cl = d->held;
    d->held = NULL;

    return ngx_http_helix_debate_send(d, cl);
}


static ngx_int_t
ngx_http_helix_debate_send(ngx_http_helix_debate_t *d, ngx_chain_t *cl)
{
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    static ngx_str_t  no_cache = ngx_string("no-cache");
    static ngx_str_t  no = ngx_string("no");

    r = d->request;

    if (d->gone) {
        return NGX_ERROR;
    }

    if (!d->header_sent) {

#if (NGX_HTTP_GZIP)
        r->gzip_tested = 1;
        r->gzip_ok = 0;
#endif

        r->headers_out.status = NGX_HTTP_OK;
        r->headers_out.content_type = ngx_http_helix_debate_sse;
        r->headers_out.content_type_len = ngx_http_helix_debate_sse.len;
        r->headers_out.content_length_n = -1;
        ngx_http_clear_content_length(r);
        ngx_http_clear_accept_ranges(r);

        if (ngx_http_helix_add_header(r, "Cache-Control", &no_cache)
            != NGX_OK
            || ngx_http_helix_add_header(r, "X-Accel-Buffering", &no)
               != NGX_OK)
        {
            d->gone = 1;
            return NGX_ERROR;
        }

        d->header_sent = 1;
        r->write_event_handler = ngx_http_helix_debate_writer;

        rc = ngx_http_send_header(r);

        if (rc == NGX_ERROR || rc > NGX_OK) {
            d->gone = 1;
            return NGX_ERROR;
        }
    }

    if (cl == NULL) {
        return NGX_OK;
    }

    rc = ngx_http_output_filter(r, cl);

    if (rc == NGX_ERROR || ngx_http_helix_debate_arm(r) != NGX_OK) {
        d->gone = 1;
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_debate_last(ngx_http_helix_debate_t *d)
{
    ngx_buf_t           *b;
    ngx_chain_t          out;
    ngx_http_request_t  *r;

    r = d->request;

    if (d->gone) {
        return NGX_ERROR;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last_buf = 1;
    b->last_in_chain = 1;
    b->flush = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* what the client could not take yet waits for its write event */

static ngx_int_t
ngx_http_helix_debate_arm(ngx_http_request_t *r)
{
    ngx_event_t               *wev;
    ngx_http_core_loc_conf_t  *clcf;

    wev = r->connection->write;
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (!r->connection->buffered) {
        if (wev->timer_set) {
            ngx_del_timer(wev);
        }

        return NGX_OK;
    }

    if (!wev->delayed) {
        ngx_add_timer(wev, clcf->send_timeout);
    }

    return ngx_handle_write_event(wev, clcf->send_lowat);
}


/* the client's write events while the debate runs, within send_timeout */

static void
ngx_http_helix_debate_writer(ngx_http_request_t *r)
{
    ngx_connection_t  *c;

    c = r->connection;

    if (c->write->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client timed out");
        c->timedout = 1;

    } else if (ngx_http_output_filter(r, NULL) != NGX_ERROR
               && ngx_http_helix_debate_arm(r) == NGX_OK)
    {
        return;
    }

    c->error = 1;
    ngx_http_finalize_request(r, NGX_ERROR);
}
