/*
 * Copyright (C) helix authors
 *
 * Background tasks (POST /v1/tasks) in PostgreSQL.  The endpoint writes
 * the row and answers 202 once it has committed; GET shows it, DELETE
 * cancels it while pending.  Every worker of every nginx claims pending
 * tasks by priority then age (FOR UPDATE SKIP LOCKED), woken by
 * LISTEN/NOTIFY with a poll as backstop, under a lease it renews while
 * it works.  A task whose worker died goes back to pending when its
 * lease runs out; only the lease holder may store a result, so a task
 * completes once.  Tasks run through the gateway's own endpoints over
 * the loopback (libcurl multi_socket, _curl.c), so the cache, the
 * limits, fallback and metrics apply to them as to any client.  The
 * result is then POSTed to callback_url, with retries and backoff, signed
 * with tasks.callback_secret; the run's slot is free by then, and the
 * callback takes one of tasks.callback_concurrency of its own (none
 * free: left in the table for the next claim).  Finished tasks are
 * purged after tasks.retention by worker 0.
 *
 * A task remembers the name of the API key that posted it (never the
 * key): its calls are made on that key's behalf (X-Helix-Key-Name, which
 * the auth module believes only next to the internal secret), so they
 * are charged to its limits and logged under its name, and only that
 * key sees or cancels the task (others get 404).  A call that
 * finds the key at its limit (429 with retry-after-ms) is not a failure
 * and does not count as an attempt; the task waits, as follows:
 *
 *   - a completion (one call) goes back to pending with not_before set
 *     to when the key has room again, by the lease holder only and in
 *     the same statement that drops the lease, so exactly once holds as
 *     for any result (a lost lease means the update finds no row).  The
 *     worker's place is free for other keys' tasks meanwhile; the key's
 *     other pending tasks are pushed to the same time, so that claims do
 *     not run through all of them only to hear 429 again; the claim skips
 *     tasks before their not_before, and this worker wakes itself then
 *     (the poll would find it too).
 *   - a batch keeps its answered items in memory: the items that got 429
 *     are called again after the wait by a timer, under the lease, which
 *     goes on being renewed; no new items start meanwhile.
 *
 * A 429 without a wait (a request larger than the key's token limit can
 * ever allow) fails the task, as other 4xx do.
 *
 * An anonymous task (auth off, clients limited per address) remembers
 * the address it was posted from instead, and its calls name it
 * (X-Helix-Client-Addr, believed likewise only behind the secret): they
 * are charged to that address's bucket, and a 429 makes the task wait as
 * above, the address's other pending tasks pushed back with it.  Only
 * that address sees or cancels it, or whoever shows the task_token its
 * 202 carried (X-Helix-Task-Token; the table keeps its SHA-256).  Cache
 * warming names neither and is not limited.
 */


#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_auth.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_curl.h"
#include "ngx_http_helix_pg.h"
#include "ngx_http_helix_metrics.h"
#include "ngx_http_helix_secret.h"
#include "ngx_http_helix_tasks.h"


#define NGX_HTTP_HELIX_TASK_ID_LEN  64

/* a lease, or an anonymous task's token: 128 random bits in hex */
#define NGX_HTTP_HELIX_TASK_TOKEN_LEN  32


typedef struct ngx_http_helix_task_s  ngx_http_helix_task_t;

typedef struct {
    ngx_http_helix_task_t       *task;
    ngx_uint_t                   index;
} ngx_http_helix_task_call_t;


struct ngx_http_helix_task_s {
    ngx_pool_t                  *pool;
    ngx_log_t                   *log;
    ngx_queue_t                  queue;
    ngx_str_t                    id;
    ngx_str_t                    type;
    ngx_str_t                    callback_url;
    ngx_str_t                    key_name;  /* who posted it, or empty */
    ngx_str_t                    addr;      /* from where, if no key */
    ngx_str_t                    who;       /* either, for messages */
    ngx_str_t                    lease;
    ngx_int_t                    attempts;
    ngx_int_t                    max_attempts;
    json_t                      *payload;
    json_t                      *requests;  /* batch: of objects */
    json_t                      *results;   /* batch: in request order */
    ngx_uint_t                   next;
    ngx_uint_t                   running;
    ngx_uint_t                   done;

    ngx_str_t                    status;    /* completed, failed, pending */
    ngx_str_t                    result;
    ngx_str_t                    error;
    ngx_str_t                    report;    /* what callback_url gets */

    ngx_event_t                  renew;     /* the lease */
    ngx_event_t                  retry;     /* callback backoff */
    ngx_event_t                  later;     /* items at the key's limit */
    ngx_array_t                 *limited;   /* of ngx_uint_t: those items */
    ngx_msec_t                   wait;      /* the key has room again in */
    ngx_uint_t                   callback_attempts;
    unsigned                     finishing:1;
    unsigned                     callback:1;  /* a callback slot, not a
                                                 run's */
};


typedef struct {
    ngx_http_helix_main_conf_t  *hmcf;
    ngx_log_t                   *log;
    ngx_event_t                  poll;
    ngx_event_t                  wake;
    ngx_event_t                  later;     /* a waiting task may go on */
    ngx_queue_t                  tasks;
    ngx_uint_t                   running;
    ngx_uint_t                   claiming;
    ngx_uint_t                   again;
    ngx_uint_t                   callbacks; /* being delivered here */
    ngx_event_t                  purge;     /* finished tasks, worker 0 */
    ngx_uint_t                   purging;
    ngx_str_t                    base;      /* loopback URL */
    u_char                       lease[NGX_HTTP_HELIX_TASK_TOKEN_LEN];
} ngx_http_helix_tasks_t;


static void ngx_http_helix_tasks_post(ngx_http_request_t *r);
static ngx_int_t ngx_http_helix_tasks_body(ngx_http_request_t *r,
    ngx_str_t *body);
static ngx_int_t ngx_http_helix_tasks_check(ngx_http_request_t *r,
    json_t *req, ngx_str_t *params, ngx_int_t *rcp);
static ngx_int_t ngx_http_helix_tasks_check_payload(ngx_http_request_t *r,
    ngx_http_helix_main_conf_t *hmcf, json_t *type, json_t *payload,
    ngx_int_t *rcp);
static ngx_int_t ngx_http_helix_tasks_check_priority(ngx_http_request_t *r,
    ngx_http_helix_main_conf_t *hmcf, json_t *req, json_int_t *priorityp,
    ngx_int_t *rcp);
static ngx_int_t ngx_http_helix_tasks_check_callback(ngx_http_request_t *r,
    json_t *req, json_t *payload, ngx_str_t *url, ngx_int_t *rcp);
static void ngx_http_helix_tasks_inserted(ngx_http_helix_pg_query_t *q,
    PGresult *res);
static void ngx_http_helix_tasks_got(ngx_http_helix_pg_query_t *q,
    PGresult *res);
static void ngx_http_helix_tasks_cancelled(ngx_http_helix_pg_query_t *q,
    PGresult *res);
static ngx_int_t ngx_http_helix_tasks_unavailable(ngx_http_request_t *r,
    const char *why);
static ngx_str_t ngx_http_helix_tasks_token(ngx_http_request_t *r);
static ngx_http_helix_api_key_t *ngx_http_helix_tasks_key(
    ngx_http_request_t *r);

static void ngx_http_helix_tasks_tick(ngx_event_t *ev);
static void ngx_http_helix_tasks_notified(void *data);
static void ngx_http_helix_tasks_claim(ngx_event_t *ev);
static void ngx_http_helix_tasks_reclaimed(ngx_http_helix_pg_query_t *q,
    PGresult *res);
static void ngx_http_helix_tasks_claimed(ngx_http_helix_pg_query_t *q,
    PGresult *res);
static void ngx_http_helix_tasks_callbacks_got(ngx_http_helix_pg_query_t *q,
    PGresult *res);
static ngx_int_t ngx_http_helix_tasks_lease_params(
    ngx_http_helix_tasks_t *tk, ngx_str_t *params,
    u_char buf[3][NGX_INT_T_LEN + 256]);
static ngx_int_t ngx_http_helix_tasks_random(u_char *hex);
static void ngx_http_helix_tasks_purge(ngx_event_t *ev);
static void ngx_http_helix_tasks_purged(ngx_http_helix_pg_query_t *q,
    PGresult *res);
static void ngx_http_helix_task_start(PGresult *res, int row);
static ngx_http_helix_task_t *ngx_http_helix_task_new(PGresult *res,
    int row, int cb, ngx_uint_t callback);
static void ngx_http_helix_task_callback_start(PGresult *res, int row);
static void ngx_http_helix_task_cleanup(void *data);
static void ngx_http_helix_task_more(ngx_http_helix_task_t *t);
static ngx_int_t ngx_http_helix_task_call(ngx_http_helix_task_t *t,
    ngx_uint_t index);
static void ngx_http_helix_task_answer(ngx_http_helix_fetch_t *f);
static ngx_msec_t ngx_http_helix_task_limited(ngx_http_helix_fetch_t *f);
static ngx_int_t ngx_http_helix_task_wait(ngx_http_helix_task_t *t,
    ngx_uint_t index, ngx_msec_t wait);
static void ngx_http_helix_task_again(ngx_event_t *ev);
static void ngx_http_helix_task_finish(ngx_http_helix_task_t *t);
static void ngx_http_helix_task_stored(ngx_http_helix_pg_query_t *q,
    PGresult *res);
static ngx_int_t ngx_http_helix_task_report(ngx_http_helix_task_t *t);
static void ngx_http_helix_task_renew(ngx_event_t *ev);
static void ngx_http_helix_task_renewed(ngx_http_helix_pg_query_t *q,
    PGresult *res);
static void ngx_http_helix_task_callback(ngx_event_t *ev);
static void ngx_http_helix_task_called(ngx_http_helix_fetch_t *f);
static void ngx_http_helix_task_callback_done(ngx_http_helix_task_t *t,
    const char *status);
static char **ngx_http_helix_task_callback_headers(ngx_http_helix_task_t *t,
    ngx_array_t *headers);
static ngx_int_t ngx_http_helix_tasks_base(ngx_http_helix_tasks_t *tk);


static ngx_http_helix_tasks_t  ngx_http_helix_tasks;
static ngx_str_t               ngx_http_helix_tasks_none = ngx_string("");


/*
 * No row: the key ($6), or the address ($7) of an anonymous task, has
 * $8 tasks pending or running already (0: no cap).  One statement, no
 * lock: posts of one owner at the same instant may pass the cap by as
 * many as are at once in flight.  $9: an anonymous task's token (hex),
 * kept as its SHA-256.
 */

static ngx_http_helix_pg_stmt_t  ngx_http_helix_tasks_insert = {
    "helix_tasks_insert",
    "WITH t AS (INSERT INTO background_tasks (type, payload, priority, "
    "callback_url, max_attempts, api_key_name, client_addr, task_token) "
    "SELECT $1, $2::jsonb, $3::int, $4, $5::int, $6, $7, "
    "sha256(decode($9, 'hex')) "
    "WHERE $8::int = 0 OR (SELECT count(*) FROM (SELECT 1 "
    "FROM background_tasks WHERE status IN ('pending', 'running') "
    "AND (api_key_name = $6 OR ($6 IS NULL AND api_key_name IS NULL "
    "AND client_addr = $7)) LIMIT $8::int) o) < $8::int "
    "RETURNING id) "
    "SELECT id, pg_notify('helix_tasks', id) FROM t",
    9, 0, 0
};


/*
 * Who may see or cancel a task: the admin token ($5); a key's task, that
 * key ($2); an anonymous task, its address ($3) or whoever holds its
 * token ($4, hex).  A task with neither (from before 006): the admin.
 */

#define NGX_HTTP_HELIX_TASK_OWNED                                           \
    "($5::bool OR api_key_name = $2 OR (api_key_name IS NULL "              \
    "AND (client_addr = $3 OR task_token = sha256(decode($4, 'hex')))))"


static ngx_http_helix_pg_stmt_t  ngx_http_helix_tasks_get = {
    "helix_tasks_get",
    "SELECT json_build_object('task_id', id, 'type', type, "
    "'status', status, 'priority', priority, 'attempts', attempts, "
    "'result', result, 'error', error, 'callback_url', callback_url, "
    "'callback_status', callback_status, 'created_at', created_at, "
    "'updated_at', updated_at, 'started_at', started_at, "
    "'completed_at', completed_at, 'not_before', not_before, "
    "'api_key_name', api_key_name)::text "
    "FROM background_tasks WHERE id = $1 AND " NGX_HTTP_HELIX_TASK_OWNED,
    5, 0, 0
};


static ngx_http_helix_pg_stmt_t  ngx_http_helix_tasks_cancel = {
    "helix_tasks_cancel",
    "WITH c AS (UPDATE background_tasks SET status = 'cancelled', "
    "updated_at = now(), completed_at = now() "
    "WHERE id = $1 AND status = 'pending' "
    "AND " NGX_HTTP_HELIX_TASK_OWNED " RETURNING id) "
    "SELECT (SELECT count(*) FROM c), status FROM background_tasks "
    "WHERE id = $1 AND " NGX_HTTP_HELIX_TASK_OWNED,
    5, 0, 0
};


static ngx_http_helix_pg_stmt_t  ngx_http_helix_tasks_reclaim = {
    "helix_tasks_reclaim",
    "UPDATE background_tasks SET "
    "status = CASE WHEN attempts >= max_attempts THEN 'failed' "
    "ELSE 'pending' END, "
    "error = CASE WHEN attempts >= max_attempts THEN 'its worker went "
    "away ' || attempts || ' times (lease expired)' ELSE error END, "
    "completed_at = CASE WHEN attempts >= max_attempts THEN now() END, "
    "callback_status = CASE WHEN attempts >= max_attempts "
    "AND callback_url IS NOT NULL THEN 'pending' END, "
    "lease_owner = NULL, lease_expires_at = NULL, updated_at = now() "
    "WHERE status = 'running' AND lease_expires_at < now() "
    "RETURNING id, status",
    0, 0, 0
};


static ngx_http_helix_pg_stmt_t  ngx_http_helix_tasks_claim_stmt = {
    "helix_tasks_claim",
    "UPDATE background_tasks t SET status = 'running', "
    "attempts = t.attempts + 1, lease_owner = $1, "
    "lease_expires_at = now() + $2::int * interval '1 millisecond', "
    "started_at = now(), updated_at = now() "
    "FROM (SELECT id FROM background_tasks WHERE status = 'pending' "
    "AND (not_before IS NULL OR not_before <= now()) "
    "ORDER BY priority DESC, created_at LIMIT $3::int "
    "FOR UPDATE SKIP LOCKED) c "
    "WHERE t.id = c.id "
    "RETURNING t.id, t.type, t.payload::text, t.callback_url, t.attempts, "
    "t.max_attempts, t.api_key_name, t.client_addr",
    3, 0, 0
};


static ngx_http_helix_pg_stmt_t  ngx_http_helix_tasks_renew = {
    "helix_tasks_renew",
    "UPDATE background_tasks SET "
    "lease_expires_at = now() + $3::int * interval '1 millisecond', "
    "updated_at = now() "
    "WHERE id = $1 AND lease_owner = $2 "
    "AND (status = 'running' OR callback_status = 'pending')",
    3, 0, 0
};


/* only the lease holder stores: a task completes once */

static ngx_http_helix_pg_stmt_t  ngx_http_helix_tasks_store = {
    "helix_tasks_store",
    "UPDATE background_tasks SET status = $3, result = $4::jsonb, "
    "error = $5, updated_at = now(), "
    "completed_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END, "
    "callback_status = CASE WHEN $3 = 'pending' OR callback_url IS NULL "
    "THEN NULL ELSE 'pending' END, "
    "lease_owner = CASE WHEN $3 = 'pending' OR callback_url IS NULL "
    "THEN NULL ELSE lease_owner END, "
    "lease_expires_at = CASE WHEN $3 = 'pending' OR callback_url IS NULL "
    "THEN NULL ELSE now() + $6::int * interval '1 millisecond' END "
    "WHERE id = $1 AND lease_owner = $2 AND status = 'running' "
    "RETURNING id, CASE WHEN $3 = 'pending' "
    "THEN pg_notify('helix_tasks', id) END",
    6, 0, 0
};


/*
 * A completion whose key (or address) is at its limit: pending again
 * until $3 ms from now, the attempt not counted; by the lease holder
 * only.  The key's (or the address's anonymous) other pending tasks are
 * pushed back as far (those not being claimed or pushed by someone else
 * right now: SKIP LOCKED, no waits).
 */

static ngx_http_helix_pg_stmt_t  ngx_http_helix_tasks_later = {
    "helix_tasks_later",
    "WITH s AS (UPDATE background_tasks SET status = 'pending', "
    "attempts = greatest(attempts - 1, 0), error = $4, "
    "not_before = now() + $3::int * interval '1 millisecond', "
    "lease_owner = NULL, lease_expires_at = NULL, updated_at = now() "
    "WHERE id = $1 AND lease_owner = $2 AND status = 'running' "
    "RETURNING id, api_key_name, client_addr, not_before), "
    "o AS (UPDATE background_tasks b SET not_before = s.not_before, "
    "error = $4 "
    "FROM s, (SELECT id FROM background_tasks WHERE status = 'pending' "
    "AND (api_key_name = (SELECT api_key_name FROM s) "
    "OR (api_key_name IS NULL AND (SELECT api_key_name FROM s) IS NULL "
    "AND client_addr = (SELECT client_addr FROM s))) "
    "AND (not_before IS NULL OR not_before < (SELECT not_before FROM s)) "
    "FOR UPDATE SKIP LOCKED) k "
    "WHERE b.id = k.id RETURNING b.id) "
    "SELECT s.id, (SELECT count(*) FROM o) FROM s",
    4, 0, 0
};


static ngx_http_helix_pg_stmt_t  ngx_http_helix_tasks_callback_stmt = {
    "helix_tasks_callback",
    "UPDATE background_tasks SET callback_status = $2, "
    "callback_attempts = $3::int, "
    "lease_owner = NULL, lease_expires_at = NULL, updated_at = now() "
    "WHERE id = $1 AND callback_status = 'pending'",
    3, 0, 0
};


/* an attempt about to be made: whoever takes the callback up goes on */

static ngx_http_helix_pg_stmt_t  ngx_http_helix_tasks_callback_try = {
    "helix_tasks_callback_try",
    "UPDATE background_tasks SET callback_attempts = $3::int "
    "WHERE id = $1 AND lease_owner = $2 AND callback_status = 'pending'",
    3, 0, 0
};


/* no room for one more callback here: any worker's next claim takes it */

static ngx_http_helix_pg_stmt_t  ngx_http_helix_tasks_callback_leave = {
    "helix_tasks_callback_leave",
    "UPDATE background_tasks SET lease_owner = NULL, "
    "lease_expires_at = NULL "
    "WHERE id = $1 AND lease_owner = $2 AND callback_status = 'pending'",
    2, 0, 0
};


/*
 * Finished tasks older than tasks.retention ($1 ms), $2 at a time; not
 * one whose callback is still to go, nor one another node is deleting
 */

static ngx_http_helix_pg_stmt_t  ngx_http_helix_tasks_purge_stmt = {
    "helix_tasks_purge",
    "DELETE FROM background_tasks WHERE id IN (SELECT id "
    "FROM background_tasks WHERE status IN ('completed', 'failed', "
    "'cancelled') AND updated_at < now() - $1::bigint * interval "
    "'1 millisecond' AND callback_status IS DISTINCT FROM 'pending' "
    "LIMIT $2::int FOR UPDATE SKIP LOCKED)",
    2, 0, 0
};


/*
 * callbacks left pending by a worker that went away, or that had no
 * room for them: with the attempts made so far
 */

static ngx_http_helix_pg_stmt_t  ngx_http_helix_tasks_callbacks = {
    "helix_tasks_callbacks",
    "UPDATE background_tasks t SET lease_owner = $1, "
    "lease_expires_at = now() + $2::int * interval '1 millisecond', "
    "updated_at = now() "
    "FROM (SELECT id FROM background_tasks WHERE callback_status = "
    "'pending' AND (lease_expires_at IS NULL OR lease_expires_at < now()) "
    "LIMIT $3::int FOR UPDATE SKIP LOCKED) c "
    "WHERE t.id = c.id "
    "RETURNING t.id, t.status, t.result::text, t.error, t.callback_url, "
    "t.callback_attempts",
    3, 0, 0
};


/* ------------------------------------------------------------ endpoint */


ngx_int_t
ngx_http_helix_tasks_handler(ngx_http_request_t *r)
{
    u_char                      *p, *last;
    ngx_int_t                    rc;
    ngx_str_t                    id, *name, params[5];
    ngx_http_helix_pg_stmt_t    *stmt;
    ngx_http_helix_pg_pt         handler;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    /* the id is the last path segment: /v1/tasks/{id} */

    last = r->uri.data + r->uri.len;
    p = last;

    while (p > r->uri.data && p[-1] != '/') {
        p--;
    }

    id.data = p;
    id.len = last - p;

    if (id.len == 5 && ngx_strncmp(id.data, "tasks", 5) == 0) {
        id.len = 0;
    }

    if (r->method == NGX_HTTP_POST && id.len == 0) {
        if (!hmcf->database.configured) {
            return ngx_http_helix_tasks_unavailable(r, "no database is "
                                                    "configured");
        }

        /* too large is known before a byte of the body is read */

        rc = ngx_http_helix_body_check(r);

        if (rc != NGX_DECLINED) {
            return rc;
        }

        if (r->headers_in.content_length_n
            > (off_t) hmcf->tasks.max_payload)
        {
            rc = ngx_http_discard_request_body(r);
            if (rc != NGX_OK) {
                return rc;
            }

            return ngx_http_helix_send_error(r,
                                      NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      "request_too_large", NULL,
                                      "a task of %O bytes is larger than "
                                      "tasks.max_payload (%uz bytes)",
                                      r->headers_in.content_length_n,
                                      hmcf->tasks.max_payload);
        }

        return ngx_http_helix_body_read_start(r, ngx_http_helix_tasks_post);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (r->method == NGX_HTTP_POST
        || (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_DELETE)) == 0)
    {
        return ngx_http_helix_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                         "method_not_allowed", NULL,
                                         "%V is not allowed on %V",
                                         &r->method_name, &r->uri);
    }

    if (id.len == 0 || id.len > NGX_HTTP_HELIX_TASK_ID_LEN) {
        return ngx_http_helix_send_error(r, NGX_HTTP_NOT_FOUND,
                                         "task_not_found", NULL,
                                         "no task id in \"%V\" (GET or "
                                         "DELETE /v1/tasks/{id})", &r->uri);
    }

    for (p = id.data; p < last; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
        {
            return ngx_http_helix_send_error(r, NGX_HTTP_NOT_FOUND,
                                             "task_not_found", NULL,
                                             "no task \"%V\"", &id);
        }
    }

    if (!hmcf->database.configured) {
        return ngx_http_helix_tasks_unavailable(r, "no database is "
                                                "configured");
    }

    if (r->method == NGX_HTTP_DELETE) {
        stmt = &ngx_http_helix_tasks_cancel;
        handler = ngx_http_helix_tasks_cancelled;

    } else {
        stmt = &ngx_http_helix_tasks_get;
        handler = ngx_http_helix_tasks_got;
    }

    /*
     * a task is its key's alone, an anonymous one its address's and its
     * token holder's (and any task the admin token's): to any other it
     * does not exist (404, so that ids say nothing)
     */

    params[0] = id;
    ngx_str_null(&params[1]);
    params[2] = r->connection->addr_text;
    params[3] = ngx_http_helix_tasks_token(r);

    if (ngx_http_helix_auth_admin(r)) {
        ngx_str_set(&params[4], "t");

    } else {
        ngx_str_set(&params[4], "f");

        name = ngx_http_helix_auth_key_name(r);

        if (name) {
            params[1] = *name;
        }
    }

    if (ngx_http_helix_pg_query(r->pool, stmt, params, handler, r) == NULL) {
        return ngx_http_helix_tasks_unavailable(r, "PostgreSQL is "
                                                "unreachable");
    }

    r->main->count++;

    return NGX_DONE;
}


static ngx_int_t
ngx_http_helix_tasks_unavailable(ngx_http_request_t *r, const char *why)
{
    return ngx_http_helix_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "database_unavailable", NULL,
                                     "background tasks are unavailable: %s",
                                     why);
}


/* X-Helix-Task-Token, if it is one (32 hex digits): else none */

static ngx_str_t
ngx_http_helix_tasks_token(ngx_http_request_t *r)
{
    ngx_str_t         none = ngx_null_string;
    ngx_uint_t        i, j;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return none;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("X-Helix-Task-Token") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "X-Helix-Task-Token",
                               sizeof("X-Helix-Task-Token") - 1)
               == 0)
        {
            break;
        }
    }

    if (h[i].value.len != NGX_HTTP_HELIX_TASK_TOKEN_LEN) {
        return none;
    }

    for (j = 0; j < h[i].value.len; j++) {
        if (ngx_hextoi(&h[i].value.data[j], 1) == NGX_ERROR) {
            return none;
        }
    }

    return h[i].value;
}


static void
ngx_http_helix_tasks_post(ngx_http_request_t *r)
{
    u_char                      *p;
    json_t                      *req;
    ngx_int_t                    rc;
    ngx_str_t                    body, *name, params[9];
    json_error_t                 jerr;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    rc = ngx_http_helix_tasks_body(r, &body);

    if (rc == NGX_DECLINED) {
        ngx_http_finalize_request(r,
            ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                      "invalid_json", NULL,
                                      "request body is empty"));
        return;
    }

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        ngx_http_finalize_request(r,
            ngx_http_helix_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      "request_too_large", NULL,
                                      "request body is larger than "
                                      "max_request_body (%uz bytes)",
                                      hmcf->max_request_body));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (body.len > hmcf->tasks.max_payload) {
        /* chunked: its length was not announced */
        ngx_http_finalize_request(r,
            ngx_http_helix_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      "request_too_large", NULL,
                                      "a task of %uz bytes is larger than "
                                      "tasks.max_payload (%uz bytes)",
                                      body.len, hmcf->tasks.max_payload));
        return;
    }

    req = json_loadb((char *) body.data, body.len, 0, &jerr);

    if (req == NULL || ngx_http_helix_json_pool(r->pool, req) != NGX_OK) {
        ngx_http_finalize_request(r,
            ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                      "invalid_json", NULL,
                                      "request body is not valid JSON: %s",
                                      req ? "no memory" : jerr.text));
        return;
    }

    if (ngx_http_helix_tasks_check(r, req, params, &rc) != NGX_OK) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    /*
     * the key's name, never the key: its calls are made on its behalf;
     * no key: the calls are charged to the address, as its own would be,
     * and the task gets a token for reading it from elsewhere
     */

    name = ngx_http_helix_auth_key_name(r);

    ngx_str_null(&params[5]);
    ngx_str_null(&params[6]);
    ngx_str_null(&params[8]);

    if (name) {
        params[5] = *name;

    } else {
        params[6] = r->connection->addr_text;

        p = ngx_pnalloc(r->pool, NGX_HTTP_HELIX_TASK_TOKEN_LEN);

        if (p == NULL || ngx_http_helix_tasks_random(p) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        params[8].data = p;
        params[8].len = NGX_HTTP_HELIX_TASK_TOKEN_LEN;
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    params[7].data = p;
    params[7].len = ngx_sprintf(p, "%ui", hmcf->tasks.max_pending) - p;

    if (ngx_http_helix_pg_query(r->pool, &ngx_http_helix_tasks_insert,
                                params, ngx_http_helix_tasks_inserted, r)
        == NULL)
    {
        ngx_http_finalize_request(r,
            ngx_http_helix_tasks_unavailable(r, "PostgreSQL is "
                                             "unreachable"));
        return;
    }

    /* the body handler's reference is the one the query keeps */
}


static ngx_int_t
ngx_http_helix_tasks_body(ngx_http_request_t *r, ngx_str_t *body)
{
    size_t                       len;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    len = ngx_http_helix_body_length(r);

    if (len == 0) {
        return NGX_DECLINED;
    }

    if (len > hmcf->max_request_body) {
        /* chunked: its length was not announced */
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    return ngx_http_helix_body_read(r, len, body);
}


/*
 * The guide's shape: {"type", "payload": {..., "callback_url"?},
 * "priority"}.  NGX_DECLINED: *rcp is the answer already sent.
 */

static ngx_int_t
ngx_http_helix_tasks_check(ngx_http_request_t *r, json_t *req,
    ngx_str_t *params, ngx_int_t *rcp)
{
    char                        *s;
    u_char                      *p;
    json_t                      *type, *payload;
    json_int_t                   priority;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (!json_is_object(req)) {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid_type", NULL,
                                         "the request must be a JSON "
                                         "object");
        return NGX_DECLINED;
    }

    type = json_object_get(req, "type");

    if (!json_is_string(type)
        || (ngx_strcmp(json_string_value(type), "completion") != 0
            && ngx_strcmp(json_string_value(type), "batch_completion")
               != 0
            && ngx_strcmp(json_string_value(type), "debate") != 0))
    {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid_value", "type",
                                         "\"type\" must be \"completion\", "
                                         "\"batch_completion\" or "
                                         "\"debate\"");
        return NGX_DECLINED;
    }

    payload = json_object_get(req, "payload");

    if (!json_is_object(payload)) {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid_type", "payload",
                                         "\"payload\" must be an object");
        return NGX_DECLINED;
    }

    if (ngx_http_helix_tasks_check_payload(r, hmcf, type, payload, rcp)
        != NGX_OK
        || ngx_http_helix_tasks_check_priority(r, hmcf, req, &priority, rcp)
           != NGX_OK
        || ngx_http_helix_tasks_check_callback(r, req, payload, &params[3],
                                               rcp)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    params[0].data = (u_char *) json_string_value(type);
    params[0].len = json_string_length(type);

    s = json_dumps(payload, JSON_COMPACT);
    if (s == NULL) {
        *rcp = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DECLINED;
    }

    params[1].len = ngx_strlen(s);
    params[1].data = ngx_pnalloc(r->pool, params[1].len);

    if (params[1].data == NULL) {
        free(s);
        *rcp = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DECLINED;
    }

    ngx_memcpy(params[1].data, s, params[1].len);
    free(s);

    p = ngx_pnalloc(r->pool, 2 * NGX_INT_T_LEN);
    if (p == NULL) {
        *rcp = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DECLINED;
    }

    params[2].data = p;
    params[2].len = ngx_sprintf(p, "%L", (int64_t) priority) - p;

    p += NGX_INT_T_LEN;
    params[4].data = p;
    params[4].len = ngx_sprintf(p, "%ui",
                                ngx_max(hmcf->tasks.max_attempts, 1)) - p;

    return NGX_OK;
}


/* the payload a task of this type needs; NGX_DECLINED: *rcp was sent */

static ngx_int_t
ngx_http_helix_tasks_check_payload(ngx_http_request_t *r,
    ngx_http_helix_main_conf_t *hmcf, json_t *type, json_t *payload,
    ngx_int_t *rcp)
{
    size_t   i;
    json_t  *reqs, *v;

    if (json_string_value(type)[0] == 'b') {
        reqs = json_object_get(payload, "requests");

        if (!json_is_array(reqs) || json_array_size(reqs) == 0
            || json_array_size(reqs) > hmcf->batch_max_requests)
        {
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_value",
                                             "payload.requests",
                                             "\"payload.requests\" must be "
                                             "an array of 1 to %ui "
                                             "requests",
                                             hmcf->batch_max_requests);
            return NGX_DECLINED;
        }

        json_array_foreach(reqs, i, v) {
            if (!json_is_object(v)
                || (!json_is_string(json_object_get(v, "prompt"))
                    && !json_is_array(json_object_get(v, "messages"))))
            {
                *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                                 "invalid_value",
                                                 "payload.requests",
                                                 "request %uz of "
                                                 "\"payload.requests\" needs "
                                                 "\"prompt\" or "
                                                 "\"messages\"", i);
                return NGX_DECLINED;
            }
        }

    } else if (json_string_value(type)[0] == 'd') {
        /* the rest is POST /v1/debates's to check when the task runs */

        if (!json_is_array(json_object_get(payload, "participants"))
            || (!json_is_string(json_object_get(payload, "topic"))
                && !json_is_array(json_object_get(payload, "messages"))))
        {
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_value", "payload",
                                             "a debate task's \"payload\" "
                                             "needs \"participants\" and "
                                             "\"topic\" or \"messages\"");
            return NGX_DECLINED;
        }

    } else if (!json_is_string(json_object_get(payload, "prompt"))
               && !json_is_array(json_object_get(payload, "messages")))
    {
        *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid_value", "payload",
                                         "a completion task's \"payload\" "
                                         "needs \"prompt\" or \"messages\"");
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* -1000..1000, and above the cap only for a key that may */

static ngx_int_t
ngx_http_helix_tasks_check_priority(ngx_http_request_t *r,
    ngx_http_helix_main_conf_t *hmcf, json_t *req, json_int_t *priorityp,
    ngx_int_t *rcp)
{
    json_t                    *prio;
    json_int_t                 priority;
    ngx_uint_t                 max;
    ngx_http_helix_api_key_t  *key;

    prio = json_object_get(req, "priority");
    priority = 0;

    if (prio) {
        if (!json_is_integer(prio) || json_integer_value(prio) < -1000
            || json_integer_value(prio) > 1000)
        {
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_value", "priority",
                                             "\"priority\" must be an "
                                             "integer from -1000 to 1000");
            return NGX_DECLINED;
        }

        priority = json_integer_value(prio);

        /* the queue's order is shared: above the cap only if the key may */

        key = ngx_http_helix_tasks_key(r);

        max = (key && key->max_task_priority) ? key->max_task_priority
                                              : hmcf->tasks.max_priority;

        if (priority > (json_int_t) max) {
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_value", "priority",
                                             "\"priority\" may be at most "
                                             "%ui for %s (%s)", max,
                                             key ? "this key"
                                                 : "an anonymous client",
                                             (key && key->max_task_priority)
                                             ? "its max_task_priority"
                                             : "tasks.max_priority");
            return NGX_DECLINED;
        }
    }

    *priorityp = priority;

    return NGX_OK;
}


/* the callback URL, if any, in the payload or beside it: checked */

static ngx_int_t
ngx_http_helix_tasks_check_callback(ngx_http_request_t *r, json_t *req,
    json_t *payload, ngx_str_t *url, ngx_int_t *rcp)
{
    json_t      *cb;
    const char  *why;

    cb = json_object_get(payload, "callback_url");

    if (cb == NULL) {
        cb = json_object_get(req, "callback_url");
    }

    ngx_str_null(url);

    if (cb) {
        why = "must be an http:// or https:// URL";

        if (json_is_string(cb)) {
            url->data = (u_char *) json_string_value(cb);
            url->len = json_string_length(cb);

            why = ngx_http_helix_fetch_url_check(url);
        }

        if (why) {
            *rcp = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_value",
                                             "payload.callback_url",
                                             "\"callback_url\" %s", why);
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/* the API key the request came with, NULL: none */

static ngx_http_helix_api_key_t *
ngx_http_helix_tasks_key(ngx_http_request_t *r)
{
    ngx_str_t                   *name;
    ngx_uint_t                   i;
    ngx_http_helix_api_key_t    *key;
    ngx_http_helix_main_conf_t  *hmcf;

    name = ngx_http_helix_auth_key_name(r);

    if (name == NULL) {
        return NULL;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    key = hmcf->api_keys.elts;

    for (i = 0; i < hmcf->api_keys.nelts; i++) {
        if (&key[i].name == name) {
            return &key[i];
        }
    }

    return NULL;
}


static void
ngx_http_helix_tasks_inserted(ngx_http_helix_pg_query_t *q, PGresult *res)
{
    ngx_http_request_t  *r = q->data;

    u_char                      *p;
    ngx_str_t                    body;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (res == NULL) {
        ngx_http_finalize_request(r,
            ngx_http_helix_tasks_unavailable(r, q->error));
        return;
    }

    if (PQntuples(res) != 1) {
        ngx_http_finalize_request(r,
            ngx_http_helix_send_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                      "too_many_pending_tasks", NULL,
                                      "%s %s has %ui tasks pending or "
                                      "running already (tasks.max_pending)",
                                      q->values[5] ? "the key" : "the address",
                                      q->values[5] ? q->values[5]
                                                   : q->values[6],
                                      hmcf->tasks.max_pending));
        return;
    }

    /* the row has committed: the server was ready for the next query */

    ngx_http_helix_metrics_task(hmcf, NGX_HTTP_HELIX_TASK_SUBMITTED);

    p = ngx_pnalloc(r->pool, PQgetlength(res, 0, 0) + 128);
    if (p == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    body.data = p;
    p = ngx_sprintf(p, "{\"task_id\":\"%s\",\"status\":\"pending\"",
                    ngx_http_helix_pg_value(res, 0, 0));

    if (q->values[8]) {
        /* an anonymous task: who holds this may read or cancel it */
        p = ngx_sprintf(p, ",\"task_token\":\"%s\"", q->values[8]);
    }

    *p++ = '}';
    body.len = p - body.data;

    ngx_http_finalize_request(r,
                              ngx_http_helix_send_json(r, NGX_HTTP_ACCEPTED,
                                                       &body));
}


static void
ngx_http_helix_tasks_got(ngx_http_helix_pg_query_t *q, PGresult *res)
{
    ngx_http_request_t  *r = q->data;

    ngx_str_t  body;

    if (res == NULL) {
        ngx_http_finalize_request(r,
            ngx_http_helix_tasks_unavailable(r, q->error));
        return;
    }

    if (PQntuples(res) == 0) {
        ngx_http_finalize_request(r,
            ngx_http_helix_send_error(r, NGX_HTTP_NOT_FOUND,
                                      "task_not_found", NULL,
                                      "no task \"%s\"", q->values[0]));
        return;
    }

    body.len = PQgetlength(res, 0, 0);
    body.data = ngx_pnalloc(r->pool, body.len);

    if (body.data == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy(body.data, ngx_http_helix_pg_value(res, 0, 0), body.len);

    ngx_http_finalize_request(r,
                              ngx_http_helix_send_json(r, NGX_HTTP_OK, &body));
}


static void
ngx_http_helix_tasks_cancelled(ngx_http_helix_pg_query_t *q, PGresult *res)
{
    ngx_http_request_t  *r = q->data;

    u_char     *p;
    ngx_str_t   body;

    if (res == NULL) {
        ngx_http_finalize_request(r,
            ngx_http_helix_tasks_unavailable(r, q->error));
        return;
    }

    if (PQntuples(res) == 0) {
        ngx_http_finalize_request(r,
            ngx_http_helix_send_error(r, NGX_HTTP_NOT_FOUND,
                                      "task_not_found", NULL,
                                      "no task \"%s\"", q->values[0]));
        return;
    }

    if (ngx_http_helix_pg_value(res, 0, 0)[0] != '1') {
        ngx_http_finalize_request(r,
            ngx_http_helix_send_error(r, NGX_HTTP_CONFLICT,
                                      "task_not_pending", NULL,
                                      "task \"%s\" is %s: only a pending "
                                      "task can be cancelled",
                                      q->values[0],
                                      ngx_http_helix_pg_value(res, 0, 1)));
        return;
    }

    ngx_http_helix_metrics_task(
        ngx_http_get_module_main_conf(r, ngx_http_helix_module),
        NGX_HTTP_HELIX_TASK_CANCELLED);

    p = ngx_pnalloc(r->pool, ngx_strlen(q->values[0]) + 64);
    if (p == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    body.data = p;
    body.len = ngx_sprintf(p, "{\"task_id\":\"%s\",\"status\":\"cancelled\"}",
                           q->values[0])
               - p;

    ngx_http_finalize_request(r,
                              ngx_http_helix_send_json(r, NGX_HTTP_OK, &body));
}


/* -------------------------------------------------------------- runner */


ngx_int_t
ngx_http_helix_tasks_init_process(ngx_cycle_t *cycle)
{
    ngx_http_helix_tasks_t      *tk;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_helix_module);

    if (hmcf == NULL || !hmcf->database.configured || !hmcf->tasks.enabled
        || hmcf->tasks.concurrency == 0)
    {
        return NGX_OK;
    }

    tk = &ngx_http_helix_tasks;

    tk->hmcf = hmcf;
    tk->log = cycle->log;
    ngx_queue_init(&tk->tasks);

    tk->poll.handler = ngx_http_helix_tasks_tick;
    tk->poll.log = cycle->log;
    tk->poll.data = tk;
    tk->poll.cancelable = 1;

    tk->wake.handler = ngx_http_helix_tasks_claim;
    tk->wake.log = cycle->log;
    tk->wake.data = tk;

    tk->later.handler = ngx_http_helix_tasks_claim;
    tk->later.log = cycle->log;
    tk->later.data = tk;
    tk->later.cancelable = 1;

    /* after the workers are up; then every poll_interval */
    ngx_add_timer(&tk->poll, 100);

    /* one worker of each nginx purges (the others' deletes skip its rows) */

    if (ngx_worker == 0 && hmcf->tasks.retention) {
        tk->purge.handler = ngx_http_helix_tasks_purge;
        tk->purge.log = cycle->log;
        tk->purge.data = tk;
        tk->purge.cancelable = 1;

        ngx_add_timer(&tk->purge, hmcf->tasks.purge_interval);
    }

    return NGX_OK;
}


void
ngx_http_helix_tasks_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t             *q;
    ngx_http_helix_task_t   *t;
    ngx_http_helix_tasks_t  *tk;

    tk = &ngx_http_helix_tasks;

    if (tk->hmcf == NULL) {
        return;
    }

    tk->hmcf = NULL;

    if (tk->poll.timer_set) {
        ngx_del_timer(&tk->poll);
    }

    if (tk->later.timer_set) {
        ngx_del_timer(&tk->later);
    }

    if (tk->purge.timer_set) {
        ngx_del_timer(&tk->purge);
    }

    if (tk->wake.posted) {
        ngx_delete_posted_event(&tk->wake);
    }

    /* a task cut short here is taken up again when its lease expires */

    while (!ngx_queue_empty(&tk->tasks)) {
        q = ngx_queue_head(&tk->tasks);
        t = ngx_queue_data(q, ngx_http_helix_task_t, queue);

        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "helix: task %V left to its lease, the worker exits",
                      &t->id);

        ngx_destroy_pool(t->pool);
    }
}


static void
ngx_http_helix_tasks_tick(ngx_event_t *ev)
{
    ngx_http_helix_tasks_t  *tk = ev->data;

    if (ngx_exiting) {
        return;
    }

    (void) ngx_http_helix_pg_listen("helix_tasks",
                                    ngx_http_helix_tasks_notified, tk);

    /* tasks whose worker died first, then whatever is pending */

    if (!tk->claiming) {
        tk->claiming = 1;

        if (ngx_http_helix_pg_query(NULL, &ngx_http_helix_tasks_reclaim,
                                    NULL, ngx_http_helix_tasks_reclaimed, tk)
            == NULL)
        {
            tk->claiming = 0;
        }
    }

    ngx_add_timer(&tk->poll, tk->hmcf->tasks.poll_interval);
}


static void
ngx_http_helix_tasks_notified(void *data)
{
    ngx_http_helix_tasks_t  *tk = data;

    if (!tk->wake.posted && !ngx_exiting) {
        ngx_post_event(&tk->wake, &ngx_posted_events);
    }
}


static void
ngx_http_helix_tasks_reclaimed(ngx_http_helix_pg_query_t *q, PGresult *res)
{
    int                      i;
    ngx_str_t                params[3];
    ngx_http_helix_tasks_t  *tk = q->data;
    u_char                   buf[3][NGX_INT_T_LEN + 256];

    tk->claiming = 0;

    if (res == NULL) {
        return;
    }

    for (i = 0; i < PQntuples(res); i++) {
        ngx_log_error(NGX_LOG_NOTICE, tk->log, 0,
                      "helix: task %s: lease expired, now %s",
                      ngx_http_helix_pg_value(res, i, 0),
                      ngx_http_helix_pg_value(res, i, 1));

        ngx_http_helix_metrics_task(tk->hmcf,
                                ngx_http_helix_pg_value(res, i, 1)[0] == 'f'
                                    ? NGX_HTTP_HELIX_TASK_FAILED
                                    : NGX_HTTP_HELIX_TASK_RETRIED);
    }

    /*
     * then callbacks whose worker went away (or had no room), as many as
     * this worker's callback slots allow, then pending tasks
     */

    if (tk->hmcf == NULL || ngx_exiting) {
        return;
    }

    if (tk->callbacks >= tk->hmcf->tasks.callback_concurrency
        || ngx_http_helix_tasks_lease_params(tk, params, buf) != NGX_OK)
    {
        ngx_http_helix_tasks_claim(&tk->wake);
        return;
    }

    params[2].len = ngx_sprintf(buf[2], "%ui",
                                tk->hmcf->tasks.callback_concurrency
                                - tk->callbacks)
                    - buf[2];

    tk->claiming = 1;

    if (ngx_http_helix_pg_query(NULL, &ngx_http_helix_tasks_callbacks,
                                params, ngx_http_helix_tasks_callbacks_got,
                                tk)
        == NULL)
    {
        tk->claiming = 0;
    }
}


static void
ngx_http_helix_tasks_callbacks_got(ngx_http_helix_pg_query_t *q,
    PGresult *res)
{
    int                      i;
    ngx_http_helix_tasks_t  *tk = q->data;

    tk->claiming = 0;

    if (tk->hmcf == NULL) {
        return;
    }

    if (res) {
        for (i = 0; i < PQntuples(res); i++) {
            ngx_http_helix_task_callback_start(res, i);
        }
    }

    ngx_http_helix_tasks_claim(&tk->wake);
}


/*
 * a claim's lease token (random: hosts, containers and pids repeat),
 * lease time and how many
 */

static ngx_int_t
ngx_http_helix_tasks_lease_params(ngx_http_helix_tasks_t *tk,
    ngx_str_t *params, u_char buf[3][NGX_INT_T_LEN + 256])
{
    if (ngx_http_helix_tasks_random(tk->lease) != NGX_OK) {
        return NGX_ERROR;
    }

    params[0].data = tk->lease;
    params[0].len = NGX_HTTP_HELIX_TASK_TOKEN_LEN;

    params[1].data = buf[1];
    params[1].len = ngx_sprintf(buf[1], "%M", tk->hmcf->tasks.lease)
                    - buf[1];

    params[2].data = buf[2];
    params[2].len = ngx_sprintf(buf[2], "%ui",
                                tk->hmcf->tasks.concurrency - tk->running)
                    - buf[2];

    return NGX_OK;
}


/* 128 bits from OpenSSL's generator (seeded once), in hex */

static ngx_int_t
ngx_http_helix_tasks_random(u_char *hex)
{
    u_char  bin[NGX_HTTP_HELIX_TASK_TOKEN_LEN / 2];

    if (RAND_bytes(bin, sizeof(bin)) != 1) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "helix: RAND_bytes() failed");
        return NGX_ERROR;
    }

    ngx_hex_dump(hex, bin, sizeof(bin));

    return NGX_OK;
}


static void
ngx_http_helix_tasks_claim(ngx_event_t *ev)
{
    ngx_str_t                 params[3];
    ngx_uint_t                free;
    ngx_http_helix_tasks_t   *tk = ev->data;
    u_char                    buf[3][NGX_INT_T_LEN + 256];

    if (tk->hmcf == NULL || ngx_exiting) {
        return;
    }

    if (tk->claiming) {
        /* a wake-up during a claim: claim again after it */
        tk->again = 1;
        return;
    }

    free = tk->hmcf->tasks.concurrency - tk->running;

    if (free == 0
        || ngx_http_helix_tasks_lease_params(tk, params, buf) != NGX_OK)
    {
        return;
    }

    tk->claiming = 1;
    tk->again = 0;

    if (ngx_http_helix_pg_query(NULL, &ngx_http_helix_tasks_claim_stmt,
                                params, ngx_http_helix_tasks_claimed, tk)
        == NULL)
    {
        tk->claiming = 0;
    }
}


static void
ngx_http_helix_tasks_claimed(ngx_http_helix_pg_query_t *q, PGresult *res)
{
    int                      i, n;
    ngx_http_helix_tasks_t  *tk = q->data;

    tk->claiming = 0;

    if (res == NULL || tk->hmcf == NULL) {
        return;
    }

    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        ngx_http_helix_task_start(res, i);
    }

    /* as many as asked: there may be more */

    if ((n > 0 && tk->running < tk->hmcf->tasks.concurrency) || tk->again) {
        ngx_http_helix_tasks_notified(tk);
    }
}


/* finished tasks past tasks.retention, a batch at a time */

static void
ngx_http_helix_tasks_purge(ngx_event_t *ev)
{
    ngx_http_helix_tasks_t  *tk = ev->data;

    u_char      buf[2][NGX_INT_T_LEN];
    ngx_str_t   params[2];

    if (tk->hmcf == NULL || ngx_exiting) {
        return;
    }

    if (tk->purging) {
        ngx_add_timer(&tk->purge, tk->hmcf->tasks.purge_interval);
        return;
    }

    params[0].data = buf[0];
    params[0].len = ngx_sprintf(buf[0], "%M", tk->hmcf->tasks.retention)
                    - buf[0];
    params[1].data = buf[1];
    params[1].len = ngx_sprintf(buf[1], "%ui", tk->hmcf->tasks.purge_batch)
                    - buf[1];

    tk->purging = 1;

    if (ngx_http_helix_pg_query(NULL, &ngx_http_helix_tasks_purge_stmt,
                                params, ngx_http_helix_tasks_purged, tk)
        == NULL)
    {
        tk->purging = 0;
        ngx_add_timer(&tk->purge, tk->hmcf->tasks.purge_interval);
    }
}


static void
ngx_http_helix_tasks_purged(ngx_http_helix_pg_query_t *q, PGresult *res)
{
    ngx_http_helix_tasks_t  *tk = q->data;

    ngx_int_t  n;

    tk->purging = 0;

    if (tk->hmcf == NULL || ngx_exiting) {
        return;
    }

    n = 0;

    if (res) {
        n = ngx_atoi((u_char *) PQcmdTuples(res),
                     ngx_strlen(PQcmdTuples(res)));

        if (n > 0) {
            ngx_log_error(NGX_LOG_NOTICE, tk->log, 0,
                          "helix: purged %i finished tasks older than "
                          "tasks.retention (%M ms)", n,
                          tk->hmcf->tasks.retention);
        }
    }

    /* a full batch: there may be more, after what else is waiting */

    ngx_add_timer(&tk->purge, (ngx_uint_t) n == tk->hmcf->tasks.purge_batch
                              ? 1 : tk->hmcf->tasks.purge_interval);
}


/*
 * A task of this worker, under the lease the last claim took: its pool
 * owns it, queries and calls included.  cb: the column of callback_url;
 * callback: it takes a callback slot, not a run's.
 */

static ngx_http_helix_task_t *
ngx_http_helix_task_new(PGresult *res, int row, int cb, ngx_uint_t callback)
{
    ngx_pool_t              *pool;
    ngx_pool_cleanup_t      *cln;
    ngx_http_helix_task_t   *t;
    ngx_http_helix_tasks_t  *tk;

    tk = &ngx_http_helix_tasks;

    pool = ngx_create_pool(4096, tk->log);
    if (pool == NULL) {
        return NULL;
    }

    t = ngx_pcalloc(pool, sizeof(ngx_http_helix_task_t));
    cln = ngx_pool_cleanup_add(pool, 0);

    if (t == NULL || cln == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    t->pool = pool;
    t->log = tk->log;

    t->id.len = PQgetlength(res, row, 0);
    t->id.data = ngx_pnalloc(pool, t->id.len + 1);
    t->callback_url.len = PQgetlength(res, row, cb);
    t->callback_url.data = ngx_pnalloc(pool, t->callback_url.len + 1);
    t->lease.data = ngx_pnalloc(pool, NGX_HTTP_HELIX_TASK_TOKEN_LEN);

    if (t->id.data == NULL || t->callback_url.data == NULL
        || t->lease.data == NULL)
    {
        ngx_destroy_pool(pool);
        return NULL;
    }

    ngx_cpystrn(t->id.data,
                (u_char *) ngx_http_helix_pg_value(res, row, 0),
                t->id.len + 1);
    ngx_cpystrn(t->callback_url.data,
                (u_char *) ngx_http_helix_pg_value(res, row, cb),
                t->callback_url.len + 1);

    /* the claim's lease token, as the claim sent it */

    t->lease.len = NGX_HTTP_HELIX_TASK_TOKEN_LEN;
    ngx_memcpy(t->lease.data, tk->lease, NGX_HTTP_HELIX_TASK_TOKEN_LEN);

    cln->handler = ngx_http_helix_task_cleanup;
    cln->data = t;

    ngx_queue_insert_tail(&tk->tasks, &t->queue);

    if (callback) {
        t->callback = 1;
        tk->callbacks++;

    } else {
        tk->running++;
    }

    t->renew.handler = ngx_http_helix_task_renew;
    t->renew.data = t;
    t->renew.log = t->log;
    t->renew.cancelable = 1;
    ngx_add_timer(&t->renew, ngx_max(tk->hmcf->tasks.lease / 3, 1));

    t->retry.handler = ngx_http_helix_task_callback;
    t->retry.data = t;
    t->retry.log = t->log;
    t->retry.cancelable = 1;

    t->later.handler = ngx_http_helix_task_again;
    t->later.data = t;
    t->later.log = t->log;
    t->later.cancelable = 1;

    return t;
}


/* a callback left by a worker that went away: delivered from here */

static void
ngx_http_helix_task_callback_start(PGresult *res, int row)
{
    ngx_str_t               *v[3];
    ngx_uint_t               i;
    ngx_http_helix_task_t   *t;

    t = ngx_http_helix_task_new(res, row, 4, 1);
    if (t == NULL) {
        return;
    }

    t->finishing = 1;

    /* on from the attempts made before */
    t->callback_attempts = ngx_atoi(
                        (u_char *) ngx_http_helix_pg_value(res, row, 5),
                        PQgetlength(res, row, 5));

    if (t->callback_attempts == (ngx_uint_t) NGX_ERROR) {
        t->callback_attempts = 0;
    }

    v[0] = &t->status;
    v[1] = &t->result;
    v[2] = &t->error;

    for (i = 0; i < 3; i++) {
        v[i]->len = PQgetlength(res, row, i + 1);
        v[i]->data = ngx_pnalloc(t->pool, v[i]->len + 1);

        if (v[i]->data == NULL) {
            ngx_destroy_pool(t->pool);
            return;
        }

        ngx_memcpy(v[i]->data, ngx_http_helix_pg_value(res, row, i + 1),
                   v[i]->len);
    }

    ngx_log_error(NGX_LOG_NOTICE, t->log, 0,
                  "helix: task %V: callback taken up (its worker went "
                  "away or had no room), %ui attempts made", &t->id,
                  t->callback_attempts);

    if (ngx_http_helix_task_report(t) != NGX_OK) {
        ngx_destroy_pool(t->pool);
        return;
    }

    if (t->callback_attempts
        > ngx_http_helix_tasks.hmcf->tasks.callback_retries)
    {
        /* the worker that went away had made the last one */
        ngx_http_helix_task_callback_done(t, "failed");
        return;
    }

    ngx_http_helix_task_callback(&t->retry);
}


static void
ngx_http_helix_task_start(PGresult *res, int row)
{
    u_char                  *p;
    json_t                  *payload;
    ngx_pool_t              *pool;
    json_error_t             jerr;
    ngx_http_helix_task_t   *t;

    t = ngx_http_helix_task_new(res, row, 3, 0);
    if (t == NULL) {
        return;
    }

    pool = t->pool;

    t->type.len = PQgetlength(res, row, 1);
    t->type.data = ngx_pnalloc(pool, t->type.len + 1);

    if (t->type.data == NULL) {
        ngx_destroy_pool(pool);
        return;
    }

    ngx_cpystrn(t->type.data, (u_char *) ngx_http_helix_pg_value(res, row, 1),
                t->type.len + 1);

    /* the key that posted it: its calls are made on its behalf */

    if (!PQgetisnull(res, row, 6)) {
        t->key_name.len = PQgetlength(res, row, 6);
        t->key_name.data = ngx_pnalloc(pool, t->key_name.len);

        if (t->key_name.data == NULL) {
            ngx_destroy_pool(pool);
            return;
        }

        ngx_memcpy(t->key_name.data, ngx_http_helix_pg_value(res, row, 6),
                   t->key_name.len);

    } else if (!PQgetisnull(res, row, 7)) {
        /* an anonymous task: the address that posted it */

        t->addr.len = PQgetlength(res, row, 7);
        t->addr.data = ngx_pnalloc(pool, t->addr.len);

        if (t->addr.data == NULL) {
            ngx_destroy_pool(pool);
            return;
        }

        ngx_memcpy(t->addr.data, ngx_http_helix_pg_value(res, row, 7),
                   t->addr.len);
    }

    t->attempts = ngx_atoi((u_char *) ngx_http_helix_pg_value(res, row, 4),
                           PQgetlength(res, row, 4));
    t->max_attempts = ngx_atoi((u_char *) ngx_http_helix_pg_value(res, row, 5),
                               PQgetlength(res, row, 5));

    ngx_log_error(NGX_LOG_NOTICE, t->log, 0,
                  "helix: task %V (%V) claimed, attempt %i of %i",
                  &t->id, &t->type, t->attempts, t->max_attempts);

    /* the address goes into a header: nothing but printable characters */

    for (p = t->addr.data; p < t->addr.data + t->addr.len; p++) {
        if (*p <= ' ' || *p >= 0x7f) {
            ngx_str_set(&t->status, "failed");
            ngx_str_set(&t->error, "the stored client_addr is not an "
                        "address");
            ngx_http_helix_task_finish(t);
            return;
        }
    }

    payload = json_loads(ngx_http_helix_pg_value(res, row, 2), 0, &jerr);

    if (payload == NULL
        || ngx_http_helix_json_pool(pool, payload) != NGX_OK)
    {
        ngx_str_set(&t->status, "failed");
        ngx_str_set(&t->error, "the stored payload is not JSON");
        ngx_http_helix_task_finish(t);
        return;
    }

    t->payload = payload;

    if (t->type.data[0] == 'b') {
        t->requests = json_object_get(payload, "requests");
        t->results = json_array();

        if (t->results == NULL
            || ngx_http_helix_json_pool(pool, t->results) != NGX_OK)
        {
            ngx_destroy_pool(pool);
            return;
        }

    } else {
        t->requests = json_pack("[O]", payload);

        if (t->requests == NULL
            || ngx_http_helix_json_pool(pool, t->requests) != NGX_OK)
        {
            ngx_destroy_pool(pool);
            return;
        }
    }

    if (!json_is_array(t->requests) || json_array_size(t->requests) == 0) {
        ngx_str_set(&t->status, "failed");
        ngx_str_set(&t->error, "the payload has no requests");
        ngx_http_helix_task_finish(t);
        return;
    }

    if (t->results) {
        size_t  i;

        for (i = 0; i < json_array_size(t->requests); i++) {
            json_array_append_new(t->results, json_null());
        }
    }

    ngx_http_helix_task_more(t);
}


static void
ngx_http_helix_task_cleanup(void *data)
{
    ngx_http_helix_task_t  *t = data;

    ngx_http_helix_tasks_t  *tk;

    tk = &ngx_http_helix_tasks;

    if (t->renew.timer_set) {
        ngx_del_timer(&t->renew);
    }

    if (t->retry.timer_set) {
        ngx_del_timer(&t->retry);
    }

    if (t->later.timer_set) {
        ngx_del_timer(&t->later);
    }

    ngx_queue_remove(&t->queue);

    if (t->callback) {
        /* a callback's slot: the next poll fills it */
        tk->callbacks--;
        return;
    }

    tk->running--;

    if (tk->hmcf && !ngx_exiting) {
        /* room for one more */
        ngx_http_helix_tasks_notified(tk);
    }
}


/* a batch runs batch.max_concurrent requests at a time */

static void
ngx_http_helix_task_more(ngx_http_helix_task_t *t)
{
    ngx_uint_t               max;
    ngx_http_helix_tasks_t  *tk;

    tk = &ngx_http_helix_tasks;

    max = t->results ? ngx_max(tk->hmcf->batch_max_concurrent, 1) : 1;

    if (t->limited && t->limited->nelts) {
        /* the key is at its limit: nothing new until the wait is over */
        return;
    }

    while (t->running < max && t->next < json_array_size(t->requests)) {
        if (ngx_http_helix_task_call(t, t->next) != NGX_OK) {
            ngx_str_set(&t->status, "pending");
            ngx_str_set(&t->error, "could not start a loopback call");
            ngx_http_helix_task_finish(t);
            return;
        }

        t->next++;
        t->running++;
    }
}


static ngx_int_t
ngx_http_helix_task_call(ngx_http_helix_task_t *t, ngx_uint_t index)
{
    char                        *s, **h;
    u_char                      *p;
    json_t                      *req;
    ngx_str_t                    uri, secret;
    ngx_http_helix_fetch_t      *f;
    ngx_http_helix_tasks_t      *tk;
    ngx_http_helix_task_call_t  *call;

    tk = &ngx_http_helix_tasks;

    if (tk->base.len == 0 && ngx_http_helix_tasks_base(tk) != NGX_OK) {
        return NGX_ERROR;
    }

    req = json_deep_copy(json_array_get(t->requests, index));
    if (req == NULL || ngx_http_helix_json_pool(t->pool, req) != NGX_OK) {
        return NGX_ERROR;
    }

    /* the gateway's own fields only; a task answer is never a stream */

    json_object_del(req, "callback_url");
    json_object_del(req, "stream");

    s = json_dumps(req, JSON_COMPACT);
    if (s == NULL) {
        return NGX_ERROR;
    }

    f = ngx_pcalloc(t->pool, sizeof(ngx_http_helix_fetch_t));
    call = ngx_palloc(t->pool, sizeof(ngx_http_helix_task_call_t));

    if (f == NULL || call == NULL) {
        free(s);
        return NGX_ERROR;
    }

    f->body.len = ngx_strlen(s);
    f->body.data = ngx_pnalloc(t->pool, f->body.len + 1);

    if (f->body.data == NULL) {
        free(s);
        return NGX_ERROR;
    }

    ngx_memcpy(f->body.data, s, f->body.len + 1);
    free(s);

    f->url.data = ngx_pnalloc(t->pool, tk->base.len + 32);
    if (f->url.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(f->url.data, "%V%s%Z", &tk->base,
                    t->type.data[0] == 'd' ? "/v1/debates"
                    : json_object_get(req, "messages")
                    ? "/v1/chat/completions" : "/v1/completions");
    f->url.len = p - f->url.data - 1;

    uri.data = f->url.data + tk->base.len;
    uri.len = f->url.len - tk->base.len;

    f->headers = ngx_array_create(t->pool, 4, sizeof(char *));
    if (f->headers == NULL) {
        return NGX_ERROR;
    }

    h = ngx_array_push_n(f->headers,
                         (t->key_name.len || t->addr.len) ? 4 : 3);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h[0] = "Content-Type: application/json";
    h[1] = ngx_http_helix_fetch_header(t->pool, "X-Helix-Task", &t->id);

    /*
     * the internal secret: a key's task is that key, its limits and its
     * name in the completion log; an anonymous task is its address and
     * that address's limits; with neither (a row from before addresses
     * were kept) it passes limits, admitted when it was posted
     */

    if (ngx_http_helix_internal_sign(t->pool, &uri, &t->id, &t->key_name,
                                     &t->addr, &ngx_http_helix_tasks_none,
                                     tk->hmcf->tasks.timeout, &secret)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    h[2] = ngx_http_helix_fetch_header(t->pool, "X-Helix-Internal", &secret);

    if (t->key_name.len) {
        h[3] = ngx_http_helix_fetch_header(t->pool, "X-Helix-Key-Name",
                                           &t->key_name);

    } else if (t->addr.len) {
        h[3] = ngx_http_helix_fetch_header(t->pool, "X-Helix-Client-Addr",
                                           &t->addr);
    }

    if (h[1] == NULL || h[2] == NULL
        || ((t->key_name.len || t->addr.len) && h[3] == NULL))
    {
        return NGX_ERROR;
    }

    call->task = t;
    call->index = index;

    f->pool = t->pool;
    f->log = t->log;
    f->timeout = tk->hmcf->tasks.timeout;
    f->max_answer = tk->hmcf->max_response_body;
    f->handler = ngx_http_helix_task_answer;
    f->data = call;

    return ngx_http_helix_fetch(f);
}


static void
ngx_http_helix_task_answer(ngx_http_helix_fetch_t *f)
{
    ngx_http_helix_task_call_t  *call = f->data;

    char                   *s;
    json_t                 *answer, *item;
    ngx_msec_t              wait;
    ngx_http_helix_task_t  *t;

    t = call->task;
    t->running--;

    wait = ngx_http_helix_task_limited(f);

    if (wait) {
        /* the key is at its limit: not an attempt, the task waits */

        if (ngx_http_helix_task_wait(t, call->index, wait) != NGX_OK) {
            ngx_destroy_pool(t->pool);
        }

        return;
    }

    t->done++;

    answer = NULL;

    if (f->answer.len) {
        answer = json_loadb((char *) f->answer.data, f->answer.len, 0, NULL);

        if (answer && ngx_http_helix_json_pool(t->pool, answer) != NGX_OK) {
            answer = NULL;
        }
    }

    if (t->results) {
        /* a batch: every request has its own outcome */

        if (f->status >= 200 && f->status < 300 && answer) {
            item = json_pack("{s:I,s:I,s:O}",
                             "index", (json_int_t) call->index,
                             "status", (json_int_t) f->status,
                             "response", answer);

        } else {
            item = json_pack("{s:I,s:I,s:O?}", "index",
                             (json_int_t) call->index,
                             "status", (json_int_t) f->status,
                             "error", answer ? json_object_get(answer, "error")
                                             : NULL);
        }

        if (item) {
            json_array_set_new(t->results, call->index, item);
        }

        if (t->done < json_array_size(t->requests)) {
            ngx_http_helix_task_more(t);
            return;
        }

        answer = json_pack("{s:O}", "results", t->results);
        if (answer == NULL
            || ngx_http_helix_json_pool(t->pool, answer) != NGX_OK)
        {
            ngx_destroy_pool(t->pool);
            return;
        }

        ngx_str_set(&t->status, "completed");

    } else if (f->status >= 200 && f->status < 300 && answer) {
        ngx_str_set(&t->status, "completed");

    } else if (f->status >= 400 && f->status < 500 && f->status != 429) {
        /* the request itself is wrong: trying again cannot help */
        ngx_str_set(&t->status, "failed");

    } else {
        /* the gateway or a provider failed: worth another attempt */
        if (t->attempts < t->max_attempts) {
            ngx_str_set(&t->status, "pending");

        } else {
            ngx_str_set(&t->status, "failed");
        }
    }

    if (t->status.data[0] == 'c') {
        s = json_dumps(answer, JSON_COMPACT);

        if (s) {
            t->result.len = ngx_strlen(s);
            t->result.data = ngx_pnalloc(t->pool, t->result.len);

            if (t->result.data) {
                ngx_memcpy(t->result.data, s, t->result.len);
            }

            free(s);
        }

        if (t->result.data == NULL) {
            ngx_destroy_pool(t->pool);
            return;
        }

    } else {
        t->error.data = ngx_pnalloc(t->pool, 1024);

        if (t->error.data == NULL) {
            ngx_destroy_pool(t->pool);
            return;
        }

        if (f->status) {
            t->error.len = ngx_snprintf(t->error.data, 1024,
                                        "HTTP %l: %*s", f->status,
                                        ngx_min(f->answer.len, 900),
                                        f->answer.data)
                           - t->error.data;

        } else {
            t->error.len = ngx_snprintf(t->error.data, 1024,
                                        "no answer from the gateway: %V",
                                        &f->error)
                           - t->error.data;
        }
    }

    ngx_http_helix_task_finish(t);
}


/*
 * A 429 of the key's own limit says when to come back (retry-after-ms,
 * else Retry-After): that many ms; 0: not such an answer.  A 429 with
 * neither (a request over what the key may ever use) is a 4xx like any.
 */

static ngx_msec_t
ngx_http_helix_task_limited(ngx_http_helix_fetch_t *f)
{
    u_char     *p, *last;
    ngx_int_t   n, ms;

    if (f->status != NGX_HTTP_TOO_MANY_REQUESTS || f->answer_head.len == 0) {
        return 0;
    }

    last = f->answer_head.data + f->answer_head.len;

    ms = 1;
    p = ngx_strlcasestrn(f->answer_head.data, last,
                         (u_char *) "\nretry-after-ms:",
                         sizeof("\nretry-after-ms:") - 2);

    if (p == NULL) {
        ms = 1000;
        p = ngx_strlcasestrn(f->answer_head.data, last,
                             (u_char *) "\nretry-after:",
                             sizeof("\nretry-after:") - 2);
        if (p == NULL) {
            return 0;
        }

        p += sizeof("\nretry-after:") - 1;

    } else {
        p += sizeof("\nretry-after-ms:") - 1;
    }

    while (p < last && *p == ' ') {
        p++;
    }

    for (n = 0; p + n < last && p[n] >= '0' && p[n] <= '9'; n++) {
        /* void */
    }

    n = ngx_atoi(p, n);

    if (n <= 0 || n > 86400000 / ms) {
        return 0;
    }

    return (ngx_msec_t) (n * ms);
}


/*
 * A call found the key (or the address) at its limit: the task waits
 * (see the top)
 */

static ngx_int_t
ngx_http_helix_task_wait(ngx_http_helix_task_t *t, ngx_uint_t index,
    ngx_msec_t wait)
{
    ngx_uint_t  *i;

    if (t->who.len == 0) {
        t->who.data = ngx_pnalloc(t->pool, t->key_name.len + t->addr.len
                                           + sizeof("the address \"\""));
        if (t->who.data == NULL) {
            return NGX_ERROR;
        }

        if (t->key_name.len) {
            t->who.len = ngx_sprintf(t->who.data, "the key \"%V\"",
                                     &t->key_name)
                         - t->who.data;

        } else if (t->addr.len) {
            t->who.len = ngx_sprintf(t->who.data, "the address %V",
                                     &t->addr)
                         - t->who.data;

        } else {
            ngx_str_set(&t->who, "the gateway");
        }
    }

    if (t->results == NULL) {
        t->wait = wait;

        ngx_str_set(&t->status, "pending");

        t->error.data = ngx_pnalloc(t->pool, t->who.len + 128);
        if (t->error.data == NULL) {
            return NGX_ERROR;
        }

        t->error.len = ngx_sprintf(t->error.data, "waiting: %V is at its "
                                   "rate limit", &t->who)
                       - t->error.data;

        ngx_http_helix_task_finish(t);
        return NGX_OK;
    }

    if (t->limited == NULL) {
        t->limited = ngx_array_create(t->pool, 4, sizeof(ngx_uint_t));
        if (t->limited == NULL) {
            return NGX_ERROR;
        }
    }

    i = ngx_array_push(t->limited);
    if (i == NULL) {
        return NGX_ERROR;
    }

    *i = index;

    if (!t->later.timer_set) {
        ngx_log_error(NGX_LOG_NOTICE, t->log, 0,
                      "helix: task %V: request %ui waits %M ms for %V to "
                      "have room", &t->id, index, wait, &t->who);

        ngx_add_timer(&t->later, wait);
    }

    return NGX_OK;
}


/* a batch's items that found the key at its limit: once more */

static void
ngx_http_helix_task_again(ngx_event_t *ev)
{
    ngx_http_helix_task_t  *t = ev->data;

    ngx_uint_t   i, n, *index;

    index = t->limited->elts;
    n = t->limited->nelts;

    /* those that hear 429 again come back to the list */
    t->limited->nelts = 0;

    for (i = 0; i < n; i++) {
        if (ngx_http_helix_task_call(t, index[i]) != NGX_OK) {
            ngx_str_set(&t->status, "pending");
            ngx_str_set(&t->error, "could not start a loopback call");
            ngx_http_helix_task_finish(t);
            return;
        }

        t->running++;
    }

    ngx_http_helix_task_more(t);
}


static void
ngx_http_helix_task_finish(ngx_http_helix_task_t *t)
{
    u_char     buf[NGX_INT_T_LEN], wbuf[NGX_INT_T_LEN];
    ngx_str_t  params[6];

    if (t->finishing) {
        return;
    }

    t->finishing = 1;

    params[0] = t->id;
    params[1] = t->lease;
    params[2] = t->status;
    params[3] = t->result;
    params[4] = t->error;

    if (params[3].len == 0) {
        params[3].data = NULL;
    }

    if (params[4].len == 0) {
        params[4].data = NULL;
    }

    params[5].data = buf;
    params[5].len = ngx_sprintf(buf, "%M",
                                ngx_http_helix_tasks.hmcf->tasks.lease)
                    - buf;

    if (t->wait) {
        /* pending again, not before the key has room: id, lease, ms, why */
        params[2].data = wbuf;
        params[2].len = ngx_sprintf(wbuf, "%M", t->wait) - wbuf;
        params[3] = params[4];
    }

    if (ngx_http_helix_pg_query(t->pool,
                                t->wait ? &ngx_http_helix_tasks_later
                                        : &ngx_http_helix_tasks_store,
                                params, ngx_http_helix_task_stored, t)
        == NULL)
    {
        /* the lease runs out and another worker takes the task up */
        ngx_log_error(NGX_LOG_WARN, t->log, 0,
                      "helix: task %V: result not stored, PostgreSQL is "
                      "unreachable", &t->id);
        ngx_destroy_pool(t->pool);
    }
}


static void
ngx_http_helix_task_stored(ngx_http_helix_pg_query_t *q, PGresult *res)
{
    ngx_http_helix_task_t  *t = q->data;

    ngx_str_t                params[2];
    ngx_http_helix_tasks_t  *tk;

    if (res == NULL) {
        ngx_log_error(NGX_LOG_WARN, t->log, 0,
                      "helix: task %V: result not stored (%s)", &t->id,
                      q->error);
        ngx_destroy_pool(t->pool);
        return;
    }

    if (PQntuples(res) == 0) {
        ngx_log_error(NGX_LOG_NOTICE, t->log, 0,
                      "helix: task %V: its lease was lost, the result is "
                      "discarded", &t->id);
        ngx_destroy_pool(t->pool);
        return;
    }

    if (t->wait) {
        ngx_log_error(NGX_LOG_NOTICE, t->log, 0,
                      "helix: task %V pending until %V has room, in %M ms "
                      "(%s more of its tasks wait as long)",
                      &t->id, &t->who, t->wait,
                      ngx_http_helix_pg_value(res, 0, 1));

        /* this worker looks again then; the poll is the backstop */

        tk = &ngx_http_helix_tasks;

        if (tk->hmcf && !ngx_exiting
            && (!tk->later.timer_set
                || (ngx_msec_int_t) (tk->later.timer.key - ngx_current_msec)
                   > (ngx_msec_int_t) t->wait))
        {
            ngx_add_timer(&tk->later, t->wait);
        }

        ngx_destroy_pool(t->pool);
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, t->log, 0, "helix: task %V %V", &t->id,
                  &t->status);

    ngx_http_helix_metrics_task(ngx_http_helix_tasks.hmcf,
                                t->status.data[0] == 'c'
                                ? NGX_HTTP_HELIX_TASK_COMPLETED
                                : t->status.data[0] == 'f'
                                ? NGX_HTTP_HELIX_TASK_FAILED
                                : NGX_HTTP_HELIX_TASK_RETRIED);

    if (t->status.data[0] == 'p' || t->callback_url.len == 0) {
        ngx_destroy_pool(t->pool);
        return;
    }

    /*
     * the lease now covers the callback: renewed until it is delivered;
     * the run's slot goes to the next task, the callback takes one of
     * its own, or, with none free here, is left to the next claim
     */

    tk = &ngx_http_helix_tasks;

    tk->running--;
    t->callback = 1;

    if (!ngx_exiting) {
        ngx_http_helix_tasks_notified(tk);
    }

    if (tk->callbacks >= tk->hmcf->tasks.callback_concurrency) {
        ngx_log_error(NGX_LOG_NOTICE, t->log, 0,
                      "helix: task %V: callback left to the next claim "
                      "(%ui being delivered here)", &t->id, tk->callbacks);

        params[0] = t->id;
        params[1] = t->lease;

        (void) ngx_http_helix_pg_query(NULL,
                                       &ngx_http_helix_tasks_callback_leave,
                                       params, NULL, NULL);

        tk->callbacks++;  /* the cleanup takes it back */
        ngx_destroy_pool(t->pool);
        return;
    }

    tk->callbacks++;

    if (ngx_http_helix_task_report(t) != NGX_OK) {
        ngx_destroy_pool(t->pool);
        return;
    }

    ngx_http_helix_task_callback(&t->retry);
}


/* what callback_url gets: the same shape as GET /v1/tasks/{id} */

static ngx_int_t
ngx_http_helix_task_report(ngx_http_helix_task_t *t)
{
    u_char  *p;

    p = ngx_pnalloc(t->pool, t->id.len + t->result.len + 6 * t->error.len
                             + 128);
    if (p == NULL) {
        return NGX_ERROR;
    }

    t->report.data = p;

    p = ngx_sprintf(p, "{\"task_id\":\"%V\",\"status\":\"%V\"", &t->id,
                    &t->status);

    if (t->result.len) {
        p = ngx_sprintf(p, ",\"result\":%V", &t->result);
    }

    if (t->error.len) {
        p = ngx_cpymem(p, ",\"error\":\"", 10);
        p = (u_char *) ngx_escape_json(p, t->error.data, t->error.len);
        *p++ = '"';
    }

    *p++ = '}';
    t->report.len = p - t->report.data;

    return NGX_OK;
}


static void
ngx_http_helix_task_renew(ngx_event_t *ev)
{
    ngx_http_helix_task_t  *t = ev->data;

    u_char                   buf[NGX_INT_T_LEN];
    ngx_str_t                params[3];
    ngx_http_helix_tasks_t  *tk;

    tk = &ngx_http_helix_tasks;

    params[0] = t->id;
    params[1] = t->lease;
    params[2].data = buf;
    params[2].len = ngx_sprintf(buf, "%M", tk->hmcf->tasks.lease) - buf;

    (void) ngx_http_helix_pg_query(t->pool, &ngx_http_helix_tasks_renew,
                                   params, ngx_http_helix_task_renewed, t);

    ngx_add_timer(&t->renew, ngx_max(tk->hmcf->tasks.lease / 3, 1));
}


static void
ngx_http_helix_task_renewed(ngx_http_helix_pg_query_t *q, PGresult *res)
{
    ngx_http_helix_task_t  *t = q->data;

    if (res && PQcmdTuples(res)[0] == '0' && !t->finishing) {
        /* another worker has it now: this run's result would be void */
        ngx_log_error(NGX_LOG_WARN, t->log, 0,
                      "helix: task %V: lease lost, the run is abandoned",
                      &t->id);
        ngx_destroy_pool(t->pool);
    }
}


static void
ngx_http_helix_task_callback(ngx_event_t *ev)
{
    ngx_http_helix_task_t  *t = ev->data;

    const char              *why;
    u_char                   buf[NGX_INT_T_LEN];
    ngx_str_t                params[3];
    ngx_http_helix_fetch_t  *f;
    ngx_http_helix_tasks_t  *tk;

    tk = &ngx_http_helix_tasks;

    f = ngx_pcalloc(t->pool, sizeof(ngx_http_helix_fetch_t));
    if (f == NULL) {
        ngx_destroy_pool(t->pool);
        return;
    }

    f->headers = ngx_array_create(t->pool, 4, sizeof(char *));
    if (f->headers == NULL
        || ngx_http_helix_task_callback_headers(t, f->headers) == NULL)
    {
        ngx_destroy_pool(t->pool);
        return;
    }

    /* a row from before URLs were checked at POST */

    why = ngx_http_helix_fetch_url_check(&t->callback_url);

    if (why) {
        ngx_log_error(NGX_LOG_WARN, t->log, 0,
                      "helix: task %V: callback URL refused (it %s): %s",
                      &t->id, why,
                      ngx_http_helix_fetch_url_log(t->pool,
                                                   &t->callback_url));
        ngx_http_helix_task_callback_done(t, "refused");
        return;
    }

    /* counted before it is made: a worker that dies in it still used it */

    t->callback_attempts++;

    params[0] = t->id;
    params[1] = t->lease;
    params[2].data = buf;
    params[2].len = ngx_sprintf(buf, "%ui", t->callback_attempts) - buf;

    (void) ngx_http_helix_pg_query(NULL, &ngx_http_helix_tasks_callback_try,
                                   params, NULL, NULL);

    f->pool = t->pool;
    f->log = t->log;
    f->url = t->callback_url;
    f->body = t->report;
    f->timeout = tk->hmcf->tasks.callback_timeout;
    f->max_answer = tk->hmcf->tasks.callback_max_answer;
    f->guard = 1;
    f->allow = tk->hmcf->tasks.callback_allow;
    f->handler = ngx_http_helix_task_called;
    f->data = t;

    if (ngx_http_helix_fetch(f) != NGX_OK) {
        ngx_http_helix_task_callback_done(t, "failed");
    }
}


static void
ngx_http_helix_task_called(ngx_http_helix_fetch_t *f)
{
    ngx_http_helix_task_t  *t = f->data;

    ngx_msec_t               backoff;
    ngx_http_helix_tasks_t  *tk;

    tk = &ngx_http_helix_tasks;

    if (f->status >= 200 && f->status < 300) {
        ngx_log_error(NGX_LOG_NOTICE, t->log, 0,
                      "helix: task %V: callback delivered (HTTP %l, "
                      "attempt %ui%s)", &t->id, f->status,
                      t->callback_attempts,
                      f->cut ? ", its long answer cut" : "");
        ngx_http_helix_task_callback_done(t, "delivered");
        return;
    }

    if (f->status == 0 && f->refused.len) {
        /* the operator's rule, not a failure: trying again cannot help */
        ngx_log_error(NGX_LOG_WARN, t->log, 0,
                      "helix: task %V: callback address refused (%V, not "
                      "a public address nor in tasks.callback_allow): %s",
                      &t->id, &f->refused,
                      ngx_http_helix_fetch_url_log(t->pool,
                                                   &t->callback_url));
        ngx_http_helix_task_callback_done(t, "refused");
        return;
    }

    if (t->callback_attempts > tk->hmcf->tasks.callback_retries
        || ngx_exiting)
    {
        ngx_log_error(NGX_LOG_WARN, t->log, 0,
                      "helix: task %V: callback to %s failed %ui times, "
                      "given up", &t->id,
                      ngx_http_helix_fetch_url_log(t->pool,
                                                   &t->callback_url),
                      t->callback_attempts);
        ngx_http_helix_task_callback_done(t, "failed");
        return;
    }

    backoff = tk->hmcf->tasks.callback_backoff
              << ngx_min(t->callback_attempts - 1, 10);

    ngx_log_error(NGX_LOG_WARN, t->log, 0,
                  "helix: task %V: callback to %s failed (HTTP %l%s%V), "
                  "again in %M ms", &t->id,
                  ngx_http_helix_fetch_url_log(t->pool, &t->callback_url),
                  f->status, f->error.len ? ", " : "", &f->error, backoff);

    ngx_http_helix_metrics_task_callback(tk->hmcf,
                                         NGX_HTTP_HELIX_CALLBACK_RETRIED);

    ngx_add_timer(&t->retry, backoff);
}


static void
ngx_http_helix_task_callback_done(ngx_http_helix_task_t *t,
    const char *status)
{
    u_char     buf[NGX_INT_T_LEN];
    ngx_str_t  params[3];

    ngx_http_helix_metrics_task_callback(ngx_http_helix_tasks.hmcf,
                                         status[0] == 'd'
                                         ? NGX_HTTP_HELIX_CALLBACK_DELIVERED
                                         : status[0] == 'r'
                                         ? NGX_HTTP_HELIX_CALLBACK_REFUSED
                                         : NGX_HTTP_HELIX_CALLBACK_FAILED);

    params[0] = t->id;
    params[1].data = (u_char *) status;
    params[1].len = ngx_strlen(status);
    params[2].data = buf;
    params[2].len = ngx_sprintf(buf, "%ui", t->callback_attempts) - buf;

    /* no one waits for this one: it outlives the task */
    (void) ngx_http_helix_pg_query(NULL, &ngx_http_helix_tasks_callback_stmt,
                                   params, NULL, NULL);

    ngx_destroy_pool(t->pool);
}


/*
 * A callback's headers: the body's type; the task id as the idempotency
 * key (one task, one result: the same at every attempt, from any
 * worker); with tasks.callback_secret, the time and
 * "sha256=" HMAC-SHA256(secret, "<time>.<body>") in hex, so that the
 * receiver knows the sender and can refuse a replay.  NULL: no memory.
 */

static char **
ngx_http_helix_task_callback_headers(ngx_http_helix_task_t *t,
    ngx_array_t *headers)
{
    char                        **h;
    u_char                       *msg, *p;
    ngx_str_t                     v, secret;
    unsigned int                  len;
    u_char                        md[EVP_MAX_MD_SIZE];
    u_char                        hex[sizeof("sha256=") - 1
                                      + 2 * EVP_MAX_MD_SIZE];
    u_char                        ts[NGX_TIME_T_LEN];

    secret = ngx_http_helix_tasks.hmcf->tasks.callback_secret;

    h = ngx_array_push_n(headers, secret.len ? 4 : 2);
    if (h == NULL) {
        return NULL;
    }

    h[0] = "Content-Type: application/json";
    h[1] = ngx_http_helix_fetch_header(t->pool, "Idempotency-Key", &t->id);

    if (h[1] == NULL) {
        return NULL;
    }

    if (secret.len == 0) {
        return h;
    }

    v.data = ts;
    v.len = ngx_sprintf(ts, "%T", ngx_time()) - ts;

    msg = ngx_pnalloc(t->pool, v.len + 1 + t->report.len);
    if (msg == NULL) {
        return NULL;
    }

    p = ngx_cpymem(msg, v.data, v.len);
    *p++ = '.';
    p = ngx_cpymem(p, t->report.data, t->report.len);

    if (HMAC(EVP_sha256(), secret.data, (int) secret.len, msg, p - msg,
             md, &len)
        == NULL)
    {
        return NULL;
    }

    h[2] = ngx_http_helix_fetch_header(t->pool, "X-Helix-Timestamp", &v);

    p = ngx_cpymem(hex, "sha256=", sizeof("sha256=") - 1);
    p = ngx_hex_dump(p, md, len);

    v.data = hex;
    v.len = p - hex;

    h[3] = ngx_http_helix_fetch_header(t->pool, "X-Helix-Signature", &v);

    if (h[2] == NULL || h[3] == NULL) {
        return NULL;
    }

    return h;
}


/* the gateway's own address (helix_loopback), as a client reaches it */

static ngx_int_t
ngx_http_helix_tasks_base(ngx_http_helix_tasks_t *tk)
{
    tk->base = tk->hmcf->loopback;

    return tk->base.len ? NGX_OK : NGX_ERROR;
}
