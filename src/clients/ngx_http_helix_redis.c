/*
 * Copyright (C) helix authors
 *
 * Redis for L2: hiredis's async API on nginx events, a small pool of
 * connections per worker (commands are pipelined on each), and an nginx
 * timer per command, since hiredis 0.14 has none.  Redis going away only
 * makes commands answer NULL: the caller carries on without L2 (and
 * global limits with the local buckets).  A breaker per worker keeps a
 * silent Redis from costing every request its timeout: after
 * redis.breaker.failures commands in a row timed out or lost their
 * connection (or at once when no connection can be made) it opens, the
 * stuck connections are closed, and nothing is sent for a backoff that
 * doubles up to max_backoff; then one PING probes, and its answer closes
 * the breaker.  Opening and closing are logged once each.
 *
 * With redis.sentinel the address is the master's, as the Sentinels say
 * (ngx_http_helix_sentinel.c): nothing is sent until one has said it; a
 * new master closes every connection (the replies due come back NULL)
 * and the breaker, if open, probes the new one at once; a lost master
 * or a READONLY answer (a master demoted under us) makes it ask again.
 */


#include <hiredis/async.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_redis.h"
#include "ngx_http_helix_sentinel.h"
#include "ngx_http_helix_metrics.h"


#define NGX_HTTP_HELIX_REDIS_MAX_POOL  64


typedef struct {
    redisAsyncContext           *ac;
    ngx_connection_t            *c;
    ngx_event_t                  idle;      /* redis.pool.idle_timeout */
    ngx_uint_t                   open;
    ngx_uint_t                   lost;      /* counted by the breaker */
} ngx_http_helix_redis_conn_t;


typedef struct {
    ngx_http_helix_main_conf_t  *hmcf;
    ngx_log_t                   *log;
    ngx_uint_t                   size;
    ngx_uint_t                   next;
    ngx_uint_t                   state;     /* of the breaker */
    ngx_uint_t                   failures;  /* in a row */
    ngx_msec_t                   backoff;
    ngx_event_t                  probe;     /* open -> half-open */
    ngx_event_t                  close;     /* posted: stuck ones go */
    ngx_uint_t                   exiting;
    ngx_uint_t                   sentinel;
    ngx_uint_t                   switched;  /* to a new master */
    ngx_uint_t                   closing;   /* all of them, on purpose */
    ngx_uint_t                   master_port;
    u_char                       master[NGX_SOCKADDR_STRLEN + 1];
    ngx_http_helix_redis_op_t   *free;          /* ops to reuse */

    /* one SUBSCRIBEd connection, outside the pool */
    ngx_http_helix_redis_conn_t  sub;
    const char                  *channel;
    ngx_http_helix_redis_message_pt  message;
    ngx_event_t                  resub;

    ngx_http_helix_redis_conn_t  conns[NGX_HTTP_HELIX_REDIS_MAX_POOL];
} ngx_http_helix_redis_pool_t;



/*
 * What Redis may answer is bounded: an array of more elements than any of
 * our commands asks for is refused before hiredis allocates it (the
 * reader fails, the connection ends), and a reply that grows past the
 * largest value we store (an answer: max_response_body, and 1 MiB for the
 * key, provider and MAC) closes the connection before it is read on.
 */

#define NGX_HTTP_HELIX_REDIS_MAX_ELEMENTS  (64 * 1024)

static void *ngx_http_helix_redis_array(const redisReadTask *task,
    int elements);

static redisReplyObjectFunctions    ngx_http_helix_redis_fn;
static void                      *(*ngx_http_helix_redis_create_array)(
    const redisReadTask *task, int elements);

static ngx_http_helix_redis_conn_t *ngx_http_helix_redis_get(void);
static redisAsyncContext *ngx_http_helix_redis_connect(
    ngx_http_helix_redis_conn_t *rc);
static void ngx_http_helix_redis_connected(const redisAsyncContext *ac,
    int status);
static void ngx_http_helix_redis_failed(const char *what, const char *err,
    ngx_uint_t at_once);
static void ngx_http_helix_redis_open(const char *what, const char *err);
static void ngx_http_helix_redis_answered(void);
static void ngx_http_helix_redis_probe(ngx_event_t *ev);
static void ngx_http_helix_redis_close_all(ngx_event_t *ev);
static ngx_http_helix_redis_op_t *ngx_http_helix_redis_send(
    ngx_http_helix_redis_conn_t *rc, ngx_pool_t *pool,
    ngx_http_helix_redis_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen);
static void ngx_http_helix_redis_add_read(void *privdata);
static void ngx_http_helix_redis_del_read(void *privdata);
static void ngx_http_helix_redis_add_write(void *privdata);
static void ngx_http_helix_redis_del_write(void *privdata);
static void ngx_http_helix_redis_cleanup(void *privdata);
static void ngx_http_helix_redis_read(ngx_event_t *ev);
static void ngx_http_helix_redis_write(ngx_event_t *ev);
static void ngx_http_helix_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_helix_redis_timeout(ngx_event_t *ev);
static void ngx_http_helix_redis_op_cleanup(void *data);
static void ngx_http_helix_redis_op_free(ngx_http_helix_redis_op_t *op);
static void ngx_http_helix_redis_idle(ngx_event_t *ev);
static ngx_uint_t ngx_http_helix_redis_opened(void);
static void ngx_http_helix_redis_master(u_char *addr, ngx_uint_t port);
static void ngx_http_helix_redis_resub(ngx_event_t *ev);
static void ngx_http_helix_redis_sub_reply(redisAsyncContext *ac, void *r,
    void *privdata);


static ngx_http_helix_redis_pool_t  ngx_http_helix_redis;


ngx_int_t
ngx_http_helix_redis_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                   i;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_helix_module);

    if (hmcf == NULL || !hmcf->redis.configured
        || ((!hmcf->cache.l2_enabled || hmcf->cache_sh == NULL)
            && !hmcf->limit_redis && !hmcf->budget_redis))
    {
        return NGX_OK;
    }

    ngx_http_helix_redis.hmcf = hmcf;
    ngx_http_helix_redis.log = cycle->log;
    ngx_http_helix_redis.size = ngx_max(1, ngx_min(hmcf->redis.pool_size,
                                            NGX_HTTP_HELIX_REDIS_MAX_POOL));

    ngx_http_helix_redis.probe.handler = ngx_http_helix_redis_probe;
    ngx_http_helix_redis.probe.data = &ngx_http_helix_redis;
    ngx_http_helix_redis.probe.log = cycle->log;
    ngx_http_helix_redis.probe.cancelable = 1;
    ngx_http_helix_redis.close.handler = ngx_http_helix_redis_close_all;
    ngx_http_helix_redis.close.data = &ngx_http_helix_redis;
    ngx_http_helix_redis.close.log = cycle->log;

    ngx_http_helix_metrics_store_state(hmcf, NGX_HTTP_HELIX_STORE_REDIS,
                                       NGX_HTTP_HELIX_STORE_CLOSED);

    if (hmcf->redis.sentinel_nodes.nelts) {
        /* the connections are opened when a Sentinel has answered */
        ngx_http_helix_redis.sentinel = 1;
        ngx_http_helix_redis.master_port = 0;

        return ngx_http_helix_sentinel_init(cycle, &hmcf->redis,
                                            ngx_http_helix_redis_master);
    }

    /* min_idle connections are opened now, the rest when needed */

    for (i = 0; i < ngx_min(hmcf->redis.min_idle, ngx_http_helix_redis.size);
         i++)
    {
        (void) ngx_http_helix_redis_connect(&ngx_http_helix_redis.conns[i]);
    }

    return NGX_OK;
}


void
ngx_http_helix_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t  i;

    ngx_http_helix_redis.exiting = 1;

    ngx_http_helix_sentinel_exit();

    if (ngx_http_helix_redis.probe.timer_set) {
        ngx_del_timer(&ngx_http_helix_redis.probe);
    }

    if (ngx_http_helix_redis.close.posted) {
        ngx_delete_posted_event(&ngx_http_helix_redis.close);
    }

    for (i = 0; i < ngx_http_helix_redis.size; i++) {
        if (ngx_http_helix_redis.conns[i].ac) {
            redisAsyncFree(ngx_http_helix_redis.conns[i].ac);
        }
    }

    if (ngx_http_helix_redis.resub.timer_set) {
        ngx_del_timer(&ngx_http_helix_redis.resub);
    }

    if (ngx_http_helix_redis.sub.ac) {
        redisAsyncFree(ngx_http_helix_redis.sub.ac);
    }

    while (ngx_http_helix_redis.free) {
        ngx_http_helix_redis_op_t *op = ngx_http_helix_redis.free;

        ngx_http_helix_redis.free = op->data;
        ngx_free(op);
    }

    ngx_http_helix_redis.hmcf = NULL;
}


/* asked before a command: a no while the breaker is open is counted */

ngx_uint_t
ngx_http_helix_redis_available(void)
{
    if (ngx_http_helix_redis.hmcf == NULL) {
        return 0;
    }

    if (ngx_http_helix_redis.state != NGX_HTTP_HELIX_STORE_CLOSED
        || (ngx_http_helix_redis.sentinel
            && ngx_http_helix_redis.master_port == 0))
    {
        ngx_http_helix_metrics_store_rejected(ngx_http_helix_redis.hmcf,
                                              NGX_HTTP_HELIX_STORE_REDIS);
        return 0;
    }

    return 1;
}


static ngx_http_helix_redis_conn_t *
ngx_http_helix_redis_get(void)
{
    ngx_uint_t                    i, n;
    ngx_http_helix_redis_conn_t  *rc;

    n = ngx_http_helix_redis.size;

    for (i = 0; i < n; i++) {
        rc = &ngx_http_helix_redis.conns[ngx_http_helix_redis.next++ % n];

        if (rc->ac == NULL && ngx_http_helix_redis_connect(rc) == NULL) {
            if (ngx_http_helix_redis.state == NGX_HTTP_HELIX_STORE_OPEN) {
                return NULL;
            }

            continue;
        }

        if (ngx_http_helix_redis.hmcf->redis.idle_timeout) {
            ngx_add_timer(&rc->idle,
                          ngx_http_helix_redis.hmcf->redis.idle_timeout);
        }

        return rc;
    }

    return NULL;
}


static redisAsyncContext *
ngx_http_helix_redis_connect(ngx_http_helix_redis_conn_t *rc)
{
    int                           argc;
    const char                   *argv[3];
    ngx_connection_t             *c;
    redisAsyncContext            *ac;
    ngx_http_helix_redis_conf_t  *conf;
    u_char                        db[NGX_INT_T_LEN + 1];

    conf = &ngx_http_helix_redis.hmcf->redis;

    /*
     * non-blocking: the connect completes on a write event; to the
     * address looked up at load, so that hiredis looks nothing up
     */

    if (ngx_http_helix_redis.sentinel) {
        if (ngx_http_helix_redis.master_port == 0) {
            return NULL;
        }

        ac = redisAsyncConnect((char *) ngx_http_helix_redis.master,
                               (int) ngx_http_helix_redis.master_port);

    } else {
        ac = redisAsyncConnect((char *) (conf->addr.len ? conf->addr.data
                                                        : conf->host.data),
                               (int) conf->port);
    }

    if (ac == NULL || ac->err) {
        ngx_http_helix_redis_failed("connect", ac ? ac->errstr : "no memory",
                                    1);
        if (ac) {
            redisAsyncFree(ac);
        }

        return NULL;
    }

    /* a peer that vanished without a word is found out in time */
    (void) redisEnableKeepAlive(&ac->c);

    if (ngx_http_helix_redis_create_array == NULL) {
        ngx_http_helix_redis_fn = *ac->c.reader->fn;
        ngx_http_helix_redis_create_array =
                                    ngx_http_helix_redis_fn.createArray;
        ngx_http_helix_redis_fn.createArray = ngx_http_helix_redis_array;
    }

    ac->c.reader->fn = &ngx_http_helix_redis_fn;

    c = ngx_get_connection(ac->c.fd, ngx_http_helix_redis.log);
    if (c == NULL) {
        redisAsyncFree(ac);
        return NULL;
    }

    c->data = rc;
    c->read->handler = ngx_http_helix_redis_read;
    c->write->handler = ngx_http_helix_redis_write;
    c->read->log = c->log;
    c->write->log = c->log;

    rc->ac = ac;
    rc->c = c;
    rc->open = 1;
    rc->lost = 0;
    ngx_http_helix_metrics_redis_conns(ngx_http_helix_redis.hmcf, 1);

    rc->idle.handler = ngx_http_helix_redis_idle;
    rc->idle.data = rc;
    rc->idle.log = ngx_http_helix_redis.log;
    rc->idle.cancelable = 1;

    ac->data = rc;
    ac->ev.data = rc;
    ac->ev.addRead = ngx_http_helix_redis_add_read;
    ac->ev.delRead = ngx_http_helix_redis_del_read;
    ac->ev.addWrite = ngx_http_helix_redis_add_write;
    ac->ev.delWrite = ngx_http_helix_redis_del_write;
    ac->ev.cleanup = ngx_http_helix_redis_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_http_helix_redis_connected);

    /* queued first, so every later command runs authenticated */

    if (conf->password.len) {
        argc = 0;
        argv[argc++] = "AUTH";

        if (conf->username.len) {
            argv[argc++] = (char *) conf->username.data;
        }

        argv[argc++] = (char *) conf->password.data;

        redisAsyncCommandArgv(ac, NULL, NULL, argc, argv, NULL);
    }

    if (conf->db) {
        ngx_sprintf(db, "%ui%Z", conf->db);
        argv[0] = "SELECT";
        argv[1] = (char *) db;

        redisAsyncCommandArgv(ac, NULL, NULL, 2, argv, NULL);
    }

    return ac;
}


/*
 * A command timed out or lost its connection (at_once: no connection
 * could be made).  Enough of them in a row open the breaker.
 */

static void
ngx_http_helix_redis_failed(const char *what, const char *err,
    ngx_uint_t at_once)
{
    ngx_http_helix_redis_pool_t  *rp;

    rp = &ngx_http_helix_redis;

    if (rp->hmcf == NULL || rp->exiting || rp->closing) {
        return;
    }

    if (rp->sentinel) {
        /* the master may be gone for good: where is it now? */
        ngx_http_helix_sentinel_ask();
    }

    if (at_once) {
        ngx_http_helix_metrics_redis(rp->hmcf,
                                     NGX_HTTP_HELIX_REDIS_UNREACHABLE);
    }

    rp->failures++;

    if (rp->state == NGX_HTTP_HELIX_STORE_OPEN
        || (rp->state == NGX_HTTP_HELIX_STORE_CLOSED && !at_once
            && rp->failures < rp->hmcf->redis.breaker_failures))
    {
        return;
    }

    ngx_http_helix_redis_open(what, err);
}


static void
ngx_http_helix_redis_open(const char *what, const char *err)
{
    u_char                       *host;
    ngx_uint_t                    port;
    ngx_http_helix_redis_pool_t  *rp;
    ngx_http_helix_redis_conf_t  *conf;

    rp = &ngx_http_helix_redis;
    conf = &rp->hmcf->redis;

    host = rp->sentinel ? rp->master : conf->host.data;
    port = rp->sentinel ? rp->master_port : conf->port;

    if (rp->state == NGX_HTTP_HELIX_STORE_CLOSED) {
        rp->backoff = conf->breaker_backoff;

        /* once per outage, not once per request */
        ngx_log_error(NGX_LOG_WARN, rp->log, 0,
                      "helix: redis %s:%ui unreachable (%s: %s after %ui "
                      "failures in a row), breaker open: L2 and global "
                      "limits go without it, probed again in %M ms",
                      host, port, what, err, rp->failures, rp->backoff);

        ngx_http_helix_metrics_store_opened(rp->hmcf,
                                            NGX_HTTP_HELIX_STORE_REDIS);

    } else {
        /* the probe failed */
        rp->backoff = ngx_min(rp->backoff * 2, conf->breaker_max_backoff);

        ngx_log_error(NGX_LOG_INFO, rp->log, 0,
                      "helix: redis %s:%ui still unreachable (%s: %s), "
                      "probed again in %M ms", host, port, what, err,
                      rp->backoff);
    }

    rp->state = NGX_HTTP_HELIX_STORE_OPEN;
    ngx_http_helix_metrics_store_state(rp->hmcf, NGX_HTTP_HELIX_STORE_REDIS,
                                       rp->state);

    ngx_add_timer(&rp->probe, rp->backoff);

    /*
     * Not here: a hiredis callback may be on the stack, and freeing its
     * context under it is not safe.  Posted: still in this cycle, before
     * the probe's timer.
     */
    if (!rp->close.posted) {
        ngx_post_event(&rp->close, &ngx_posted_events);
    }
}


/* Redis answered something (an error reply too): it is alive */

static void
ngx_http_helix_redis_answered(void)
{
    ngx_http_helix_redis_pool_t  *rp;

    rp = &ngx_http_helix_redis;

    if (rp->state == NGX_HTTP_HELIX_STORE_OPEN) {
        /* a late answer on a connection about to close: the probe decides */
        return;
    }

    rp->failures = 0;

    if (rp->state == NGX_HTTP_HELIX_STORE_HALF_OPEN && !rp->exiting) {
        rp->state = NGX_HTTP_HELIX_STORE_CLOSED;
        rp->backoff = 0;

        ngx_log_error(NGX_LOG_NOTICE, rp->log, 0,
                      "helix: redis %s:%ui answers again, L2 is back "
                      "(breaker closed)",
                      rp->sentinel ? rp->master : rp->hmcf->redis.host.data,
                      rp->sentinel ? rp->master_port : rp->hmcf->redis.port);

        ngx_http_helix_metrics_store_state(rp->hmcf,
                                           NGX_HTTP_HELIX_STORE_REDIS,
                                           rp->state);
    }
}


/* the backoff is over: one PING on a new connection decides */

static void
ngx_http_helix_redis_probe(ngx_event_t *ev)
{
    const char                   *argv[1];
    ngx_http_helix_redis_pool_t  *rp;
    ngx_http_helix_redis_conn_t  *rc;

    rp = &ngx_http_helix_redis;

    if (rp->hmcf == NULL || rp->exiting
        || rp->state != NGX_HTTP_HELIX_STORE_OPEN)
    {
        return;
    }

    rp->state = NGX_HTTP_HELIX_STORE_HALF_OPEN;
    ngx_http_helix_metrics_store_state(rp->hmcf, NGX_HTTP_HELIX_STORE_REDIS,
                                       rp->state);

    rc = ngx_http_helix_redis_get();

    if (rc == NULL) {
        if (rp->state == NGX_HTTP_HELIX_STORE_HALF_OPEN) {
            ngx_http_helix_redis_open("probe", "no connection");
        }

        return;
    }

    argv[0] = "PING";

    if (ngx_http_helix_redis_send(rc, NULL, NULL, NULL, 1, argv, NULL)
        == NULL
        && rp->state == NGX_HTTP_HELIX_STORE_HALF_OPEN)
    {
        ngx_http_helix_redis_open("probe", "not sent");
    }
}


/*
 * The breaker opened: every connection goes.  hiredis calls the replies
 * still due with NULL as it frees them: their callers carry on without
 * Redis now, not at their timeout (and a caller whose request is gone
 * is not called: its op is done).
 */

static void
ngx_http_helix_redis_close_all(ngx_event_t *ev)
{
    ngx_uint_t                    i;
    ngx_http_helix_redis_pool_t  *rp;

    rp = &ngx_http_helix_redis;

    if (rp->hmcf == NULL
        || (rp->state != NGX_HTTP_HELIX_STORE_OPEN && !rp->switched))
    {
        return;
    }

    /* the old master's failures are not the new one's */
    rp->closing = rp->switched;
    rp->switched = 0;

    for (i = 0; i < rp->size; i++) {
        if (rp->conns[i].ac) {
            redisAsyncFree(rp->conns[i].ac);
        }
    }

    if (rp->closing && rp->sub.ac) {
        /* subscribed to the old master: to the new one, at once */
        redisAsyncFree(rp->sub.ac);

        if (rp->resub.timer_set) {
            ngx_del_timer(&rp->resub);
        }

        ngx_add_timer(&rp->resub, 1);
    }

    rp->closing = 0;
}


/*
 * A Sentinel said where the master is.  Another address than before:
 * the connections to the old one go, and an open breaker probes the new
 * one now instead of after its backoff.
 */

static void
ngx_http_helix_redis_master(u_char *addr, ngx_uint_t port)
{
    ngx_uint_t                    i, level;
    ngx_http_helix_redis_pool_t  *rp;

    rp = &ngx_http_helix_redis;

    if (rp->hmcf == NULL || rp->exiting) {
        return;
    }

    if (rp->master_port == port
        && ngx_strcmp(rp->master, addr) == 0)
    {
        return;
    }

    level = rp->master_port ? NGX_LOG_WARN : NGX_LOG_NOTICE;

    ngx_log_error(level, rp->log, 0,
                  "helix: redis master \"%V\" is %s:%ui (sentinel)%s",
                  &rp->hmcf->redis.sentinel_master, addr, port,
                  rp->master_port ? ", connections to the old one closed"
                                  : "");

    ngx_cpystrn(rp->master, addr, sizeof(rp->master));

    if (rp->master_port == 0) {
        rp->master_port = port;

        for (i = 0; i < ngx_min(rp->hmcf->redis.min_idle, rp->size); i++) {
            (void) ngx_http_helix_redis_connect(&rp->conns[i]);
        }

        return;
    }

    rp->master_port = port;
    rp->failures = 0;
    rp->switched = 1;

    if (!rp->close.posted) {
        ngx_post_event(&rp->close, &ngx_posted_events);
    }

    if (rp->state != NGX_HTTP_HELIX_STORE_CLOSED) {
        /* a probe in flight goes with its connection: a new one, soon */
        rp->state = NGX_HTTP_HELIX_STORE_OPEN;
        rp->backoff = rp->hmcf->redis.breaker_backoff;

        if (rp->probe.timer_set) {
            ngx_del_timer(&rp->probe);
        }

        ngx_add_timer(&rp->probe, 1);
    }
}


static void
ngx_http_helix_redis_connected(const redisAsyncContext *ac, int status)
{
    /* a stopped Redis's kernel accepts too: only an answer counts */

    if (status != REDIS_OK) {
        ngx_http_helix_redis_failed("connect", ac->errstr, 1);
    }
}


static void
ngx_http_helix_redis_add_read(void *privdata)
{
    ngx_http_helix_redis_conn_t  *rc = privdata;

    if (!rc->c->read->active) {
        ngx_add_event(rc->c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_helix_redis_del_read(void *privdata)
{
    ngx_http_helix_redis_conn_t  *rc = privdata;

    if (rc->c->read->active && !ngx_http_helix_redis.exiting) {
        ngx_del_event(rc->c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_helix_redis_add_write(void *privdata)
{
    ngx_http_helix_redis_conn_t  *rc = privdata;

    if (!rc->c->write->active) {
        ngx_add_event(rc->c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_helix_redis_del_write(void *privdata)
{
    ngx_http_helix_redis_conn_t  *rc = privdata;

    if (rc->c->write->active && !ngx_http_helix_redis.exiting) {
        ngx_del_event(rc->c->write, NGX_WRITE_EVENT, 0);
    }
}


/* hiredis frees the context: nginx stops watching, hiredis closes */

static void
ngx_http_helix_redis_cleanup(void *privdata)
{
    ngx_http_helix_redis_conn_t  *rc = privdata;

    if (rc->c == NULL) {
        return;
    }

    ngx_http_helix_redis_del_read(rc);
    ngx_http_helix_redis_del_write(rc);

    rc->c->fd = (ngx_socket_t) -1;
    ngx_free_connection(rc->c);

    if (rc->idle.timer_set) {
        ngx_del_timer(&rc->idle);
    }

    if (rc->open && ngx_http_helix_redis.hmcf) {
        ngx_http_helix_metrics_redis_conns(ngx_http_helix_redis.hmcf, -1);
    }

    rc->open = 0;
    rc->c = NULL;
    rc->ac = NULL;
}


static ngx_uint_t
ngx_http_helix_redis_opened(void)
{
    ngx_uint_t  i, n;

    for (i = 0, n = 0; i < ngx_http_helix_redis.size; i++) {
        n += (ngx_http_helix_redis.conns[i].ac != NULL);
    }

    return n;
}


/* an idle connection beyond min_idle is closed after idle_timeout */

static void
ngx_http_helix_redis_idle(ngx_event_t *ev)
{
    ngx_http_helix_redis_conn_t  *rc = ev->data;

    if (rc->ac == NULL) {
        return;
    }

    if (rc->ac->replies.head != NULL
        || ngx_http_helix_redis_opened()
           <= ngx_http_helix_redis.hmcf->redis.min_idle)
    {
        ngx_add_timer(&rc->idle,
                      ngx_http_helix_redis.hmcf->redis.idle_timeout);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ev->log, 0,
                  "helix: idle redis connection closed after %M ms",
                  ngx_http_helix_redis.hmcf->redis.idle_timeout);

    /* replies still due are delivered before it closes */
    redisAsyncDisconnect(rc->ac);
}


static void
ngx_http_helix_redis_read(ngx_event_t *ev)
{
    size_t                        max;
    redisReader                  *reader;
    ngx_connection_t             *c = ev->data;
    ngx_http_helix_redis_conn_t  *rc = c->data;

    reader = rc->ac->c.reader;
    max = ngx_http_helix_redis.hmcf->max_response_body + 1024 * 1024;

    if (reader && reader->err == 0 && reader->len - reader->pos > max) {
        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "helix: a redis reply of more than %uz bytes, "
                      "connection closed", max);

        /*
         * hiredis's own way out of a protocol error: the read below
         * fails, the connection ends, its commands fail
         */

        reader->err = REDIS_ERR_PROTOCOL;
        ngx_cpystrn((u_char *) reader->errstr,
                    (u_char *) "reply too large", sizeof(reader->errstr));
    }

    redisAsyncHandleRead(rc->ac);
}


static void *
ngx_http_helix_redis_array(const redisReadTask *task, int elements)
{
    if (elements > NGX_HTTP_HELIX_REDIS_MAX_ELEMENTS) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "helix: a redis reply array of %d elements refused "
                      "(at most %d), connection closed", elements,
                      NGX_HTTP_HELIX_REDIS_MAX_ELEMENTS);

        /* hiredis takes NULL for no memory: the reader fails */
        return NULL;
    }

    return ngx_http_helix_redis_create_array(task, elements);
}


static void
ngx_http_helix_redis_write(ngx_event_t *ev)
{
    ngx_connection_t             *c = ev->data;
    ngx_http_helix_redis_conn_t  *rc = c->data;

    redisAsyncHandleWrite(rc->ac);
}


/*
 * One connection per worker SUBSCRIBEd to a channel; each message goes
 * to the handler.  Lost (Redis away, a new master): subscribed again
 * after redis.breaker.backoff.  Messages published meanwhile are not
 * seen: the caller's data must not depend on them alone.
 */

ngx_int_t
ngx_http_helix_redis_subscribe(const char *channel,
    ngx_http_helix_redis_message_pt handler)
{
    ngx_http_helix_redis_pool_t  *rp;

    rp = &ngx_http_helix_redis;

    if (rp->hmcf == NULL) {
        return NGX_DECLINED;
    }

    rp->channel = channel;
    rp->message = handler;

    rp->resub.handler = ngx_http_helix_redis_resub;
    rp->resub.data = rp;
    rp->resub.log = rp->log;
    rp->resub.cancelable = 1;

    /* with Sentinel, once the master is known */
    ngx_add_timer(&rp->resub, 1);

    return NGX_OK;
}


static void
ngx_http_helix_redis_resub(ngx_event_t *ev)
{
    const char                   *argv[2];
    redisAsyncContext            *ac;
    ngx_http_helix_redis_pool_t  *rp;

    rp = &ngx_http_helix_redis;

    if (rp->hmcf == NULL || rp->exiting || rp->sub.ac) {
        return;
    }

    ac = NULL;

    if (!rp->sentinel || rp->master_port) {
        ac = ngx_http_helix_redis_connect(&rp->sub);

        if (ac) {
            /* helixagent_redis_connections counts the pool's only */
            rp->sub.open = 0;
            ngx_http_helix_metrics_redis_conns(rp->hmcf, -1);
        }
    }

    argv[0] = "SUBSCRIBE";
    argv[1] = rp->channel;

    if (ac
        && redisAsyncCommandArgv(ac, ngx_http_helix_redis_sub_reply, NULL, 2,
                                 argv, NULL)
           == REDIS_OK)
    {
        return;
    }

    if (ac) {
        redisAsyncFree(ac);
    }

    ngx_add_timer(&rp->resub, rp->hmcf->redis.breaker_backoff);
}


static void
ngx_http_helix_redis_sub_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                   *reply = r;
    ngx_http_helix_redis_pool_t  *rp;

    rp = &ngx_http_helix_redis;

    if (rp->exiting || rp->hmcf == NULL) {
        return;
    }

    if (reply == NULL) {
        if (!rp->resub.timer_set) {
            ngx_add_timer(&rp->resub, rp->hmcf->redis.breaker_backoff);
        }

        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    if (reply->element[0]->len == sizeof("subscribe") - 1
        && ngx_strncmp(reply->element[0]->str, "subscribe", 9) == 0)
    {
        ngx_log_error(NGX_LOG_INFO, rp->log, 0,
                      "helix: redis: subscribed to \"%s\"", rp->channel);
        return;
    }

    if (reply->element[0]->len == sizeof("message") - 1
        && ngx_strncmp(reply->element[0]->str, "message", 7) == 0
        && reply->element[2]->type == REDIS_REPLY_STRING)
    {
        rp->message((u_char *) reply->element[2]->str,
                    reply->element[2]->len);
    }
}


/*
 * Sends a command.  With a pool, the op belongs to that request: if the
 * request goes first, its handler is not called.  NULL: not sent (the
 * breaker is open, or no connection); the handler gets NULL when Redis
 * goes away under the command, or after redis.timeout.
 */

ngx_http_helix_redis_op_t *
ngx_http_helix_redis_command(ngx_pool_t *pool,
    ngx_http_helix_redis_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen)
{
    ngx_http_helix_redis_conn_t  *rc;

    /* the breaker open: the caller's failure path, at once */

    rc = ngx_http_helix_redis_available() ? ngx_http_helix_redis_get()
                                          : NULL;
    if (rc == NULL) {
        return NULL;
    }

    return ngx_http_helix_redis_send(rc, pool, handler, data, argc, argv,
                                     argvlen);
}


static ngx_http_helix_redis_op_t *
ngx_http_helix_redis_send(ngx_http_helix_redis_conn_t *rc, ngx_pool_t *pool,
    ngx_http_helix_redis_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen)
{
    ngx_http_helix_redis_op_t  *op;

    op = ngx_http_helix_redis.free;

    if (op) {
        ngx_http_helix_redis.free = op->data;

    } else {
        /* ops outlive requests (hiredis answers late), so not a pool */
        op = ngx_alloc(sizeof(ngx_http_helix_redis_op_t),
                       ngx_http_helix_redis.log);
        if (op == NULL) {
            return NULL;
        }
    }

    ngx_memzero(op, sizeof(ngx_http_helix_redis_op_t));
    op->handler = handler;
    op->data = data;

    if (pool) {
        op->cln = ngx_pool_cleanup_add(pool, 0);
        if (op->cln == NULL) {
            ngx_http_helix_redis_op_free(op);
            return NULL;
        }

        op->cln->handler = ngx_http_helix_redis_op_cleanup;
        op->cln->data = op;
    }

    /* formatted once: a retry sends the same bytes again */

    op->len = redisFormatCommandArgv(&op->cmd, argc, argv, argvlen);

    if (op->len < 0
        || redisAsyncFormattedCommand(rc->ac, ngx_http_helix_redis_reply, op,
                                      op->cmd, op->len)
           != REDIS_OK)
    {
        if (op->cln) {
            op->cln->handler = NULL;
        }

        ngx_http_helix_redis_op_free(op);
        return NULL;
    }

    op->timer.handler = ngx_http_helix_redis_timeout;
    op->timer.data = op;
    op->timer.log = ngx_http_helix_redis.log;

    ngx_add_timer(&op->timer, ngx_http_helix_redis.hmcf->redis.timeout);

    return op;
}


static void
ngx_http_helix_redis_finish(ngx_http_helix_redis_op_t *op, redisReply *reply)
{
    op->done = 1;

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    if (op->cln) {
        op->cln->handler = NULL;
        op->cln = NULL;
    }

    if (reply && reply->type == REDIS_REPLY_ERROR
        && ngx_http_helix_redis.sentinel && reply->len >= 8
        && ngx_strncmp(reply->str, "READONLY", 8) == 0)
    {
        /* a replica: the master moved and we missed it */
        ngx_http_helix_sentinel_ask();
    }

    if (reply && reply->type == REDIS_REPLY_ERROR && !op->errors) {
        ngx_log_error(NGX_LOG_WARN, ngx_http_helix_redis.log, 0,
                      "helix: redis error: %*s", reply->len, reply->str);
        ngx_http_helix_metrics_redis(ngx_http_helix_redis.hmcf,
                                     NGX_HTTP_HELIX_REDIS_ERROR);
        reply = NULL;
    }

    if (op->handler) {
        op->handler(op, reply);
    }
}


static void
ngx_http_helix_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_http_helix_redis_op_t    *op = privdata;
    ngx_http_helix_redis_conn_t  *rc;

    if (r) {
        ngx_http_helix_redis_answered();

    } else if (ac->err && !((ngx_http_helix_redis_conn_t *) ac->data)->lost) {
        /* lost with commands on it (once per connection) */
        ((ngx_http_helix_redis_conn_t *) ac->data)->lost = 1;
        ngx_http_helix_redis_failed("connection lost", ac->errstr, 0);
    }

    /* a timed out command is not sent again: it was answered NULL */

    if (r == NULL && !op->done && !ngx_http_helix_redis.exiting
        && !ngx_http_helix_redis.closing
        && ngx_http_helix_redis.state == NGX_HTTP_HELIX_STORE_CLOSED
        && op->retries < ngx_http_helix_redis.hmcf->redis.max_retries)
    {
        /* the connection went away under it: once more on another one */

        op->retries++;
        ngx_http_helix_metrics_redis(ngx_http_helix_redis.hmcf,
                                     NGX_HTTP_HELIX_REDIS_RETRY);

        rc = ngx_http_helix_redis_get();

        if (rc && rc->ac != ac
            && redisAsyncFormattedCommand(rc->ac, ngx_http_helix_redis_reply,
                                          op, op->cmd, op->len)
               == REDIS_OK)
        {
            return;
        }
    }

    if (!op->done) {
        ngx_http_helix_redis_finish(op, r);
    }

    /* hiredis is done with it, whoever else was */
    ngx_http_helix_redis_op_free(op);
}


static void
ngx_http_helix_redis_timeout(ngx_event_t *ev)
{
    ngx_http_helix_redis_op_t  *op = ev->data;

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "helix: redis did not answer within %M ms",
                  ngx_http_helix_redis.hmcf->redis.timeout);

    ngx_http_helix_metrics_redis(ngx_http_helix_redis.hmcf,
                                 NGX_HTTP_HELIX_REDIS_TIMEOUT);

    ngx_http_helix_redis_finish(op, NULL);

    /* op stays hiredis's until its reply or the connection's end */
    ngx_http_helix_redis_failed("timeout", "no answer in time", 0);
}


static void
ngx_http_helix_redis_op_cleanup(void *data)
{
    ngx_http_helix_redis_op_t  *op = data;

    /* the request is gone: its handler must not run */

    op->done = 1;
    op->cln = NULL;

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }
}


static void
ngx_http_helix_redis_op_free(ngx_http_helix_redis_op_t *op)
{
    if (op->cmd) {
        redisFreeCommand(op->cmd);
        op->cmd = NULL;
    }

    op->data = ngx_http_helix_redis.free;
    ngx_http_helix_redis.free = op;
}
