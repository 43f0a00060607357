/*
 * Copyright (C) helix authors
 *
 * PostgreSQL for the completion log and background tasks: libpq's async
 * API (PQconnectStart/PQconnectPoll, PQsendPrepare/PQsendQueryPrepared,
 * PQconsumeInput/PQisBusy/PQgetResult) on nginx events, a pool of
 * connections per worker sized by database.pool, and an nginx timer per
 * query (timeouts.database).  One query runs on a connection at a time;
 * the others wait in a queue, bounded by their own timer.  Sockets are
 * watched level-triggered, so libpq's "poll again" states (after
 * CONNECTION_MADE, a partial flush) never wait for an edge that already
 * passed.  libpq owns its sockets: nginx connections only watch them.
 *
 * A query's deadline moves with it onto its connection: a busy
 * connection always has a timer, and when it fires the connection goes
 * and its slot is free again, whether or not the query's owner is still
 * there.  A breaker per worker keeps a silent server from costing each
 * query its timeout in turn: after database.breaker.failures queries in
 * a row timed out or lost their connection (or at once when no
 * connection can be made) it opens, the pool's connections are closed
 * and queries fail at once; after a backoff (doubling up to
 * max_backoff) one new connection probes, and its login closes it.
 */


#include <sys/stat.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_pg.h"
#include "ngx_http_helix_metrics.h"


#define NGX_HTTP_HELIX_PG_STMTS  64


typedef enum {
    NGX_HTTP_HELIX_PG_CONNECTING = 0,
    NGX_HTTP_HELIX_PG_IDLE,
    NGX_HTTP_HELIX_PG_PREPARING,
    NGX_HTTP_HELIX_PG_BUSY,
    NGX_HTTP_HELIX_PG_CHECKING,
    NGX_HTTP_HELIX_PG_LISTENING
} ngx_http_helix_pg_state_e;


typedef struct {
    PGconn                      *conn;
    ngx_connection_t            *c;
    ino_t                        ino;
    ngx_uint_t                   state;
    ngx_queue_t                  link;      /* every connection */
    ngx_queue_t                  queue;     /* idle ones */
    ngx_event_t                  timer;     /* connect, the query's
                                               deadline, max_idle_time */
    ngx_msec_t                   born;
    ngx_msec_t                   used;
    uint64_t                     prepared;  /* by statement index */
    ngx_http_helix_pg_query_t   *q;
    PGresult                    *res;
    PGresult                    *err;
    ngx_uint_t                   copy;      /* 1: data, 2: end, 3: sent */
    unsigned                     listener:1;
    unsigned                     idle:1;
} ngx_http_helix_pg_conn_t;


typedef struct {
    ngx_http_helix_main_conf_t  *hmcf;
    ngx_log_t                   *log;
    ngx_uint_t                   open;      /* the listener aside */
    ngx_uint_t                   connecting;
    ngx_uint_t                   nidle;
    ngx_uint_t                   nwaiting;
    ngx_queue_t                  all;
    ngx_queue_t                  idle;
    ngx_queue_t                  waiting;
    ngx_uint_t                   state;     /* of the breaker */
    ngx_uint_t                   failures;  /* in a row */
    ngx_msec_t                   backoff;
    ngx_event_t                  probe;     /* open -> half-open */
    ngx_event_t                  close;     /* posted: the pool goes */
    ngx_uint_t                   exiting;
    ngx_uint_t                   nstmts;
    ngx_event_t                  health;
    ngx_event_t                  dispatch;

    ngx_http_helix_pg_conn_t    *listener;
    const char                  *channel;
    ngx_http_helix_pg_notify_pt  notify;
    void                        *notify_data;

    const char                  *keywords[16];
    const char                  *values[16];
    u_char                       port[NGX_INT_T_LEN + 1];
    u_char                       options[64];
    u_char                      *where;     /* "host:port[,...]", logs */
} ngx_http_helix_pg_t;


static ngx_int_t ngx_http_helix_pg_where(ngx_cycle_t *cycle,
    ngx_http_helix_database_conf_t *db);
static ngx_int_t ngx_http_helix_pg_hosts(ngx_cycle_t *cycle,
    ngx_http_helix_database_conf_t *db, ngx_uint_t *np);
static ngx_uint_t ngx_http_helix_pg_available(void);
static ngx_http_helix_pg_conn_t *ngx_http_helix_pg_connect(
    ngx_uint_t listener);
static ngx_int_t ngx_http_helix_pg_watch(ngx_http_helix_pg_conn_t *pc);
static void ngx_http_helix_pg_events(ngx_http_helix_pg_conn_t *pc,
    ngx_uint_t write);
static void ngx_http_helix_pg_event(ngx_event_t *ev);
static void ngx_http_helix_pg_poll(ngx_http_helix_pg_conn_t *pc);
static void ngx_http_helix_pg_connected(ngx_http_helix_pg_conn_t *pc);
static void ngx_http_helix_pg_failed(const char *what, const char *err,
    ngx_uint_t at_once);
static void ngx_http_helix_pg_open(const char *what, const char *err);
static void ngx_http_helix_pg_answered(void);
static void ngx_http_helix_pg_probe(ngx_event_t *ev);
static void ngx_http_helix_pg_close_all(ngx_event_t *ev);
static void ngx_http_helix_pg_release(ngx_http_helix_pg_conn_t *pc);
static void ngx_http_helix_pg_run(ngx_http_helix_pg_conn_t *pc,
    ngx_http_helix_pg_query_t *q);
static ngx_int_t ngx_http_helix_pg_flush(ngx_http_helix_pg_conn_t *pc);
static ngx_int_t ngx_http_helix_pg_copy(ngx_http_helix_pg_conn_t *pc);
static void ngx_http_helix_pg_read(ngx_http_helix_pg_conn_t *pc);
static void ngx_http_helix_pg_done(ngx_http_helix_pg_conn_t *pc);
static void ngx_http_helix_pg_notifies(ngx_http_helix_pg_conn_t *pc);
static void ngx_http_helix_pg_lost(ngx_http_helix_pg_conn_t *pc);
static void ngx_http_helix_pg_close(ngx_http_helix_pg_conn_t *pc,
    const char *reason);
static void ngx_http_helix_pg_dispatch(ngx_event_t *ev);
static void ngx_http_helix_pg_more(void);
static void ngx_http_helix_pg_fail_waiting(const char *reason);
static void ngx_http_helix_pg_deliver(ngx_http_helix_pg_query_t *q,
    PGresult *res, const char *error);
static void ngx_http_helix_pg_free(ngx_http_helix_pg_query_t *q);
static void ngx_http_helix_pg_query_timeout(ngx_event_t *ev);
static void ngx_http_helix_pg_query_cleanup(void *data);
static void ngx_http_helix_pg_conn_timer(ngx_event_t *ev);
static void ngx_http_helix_pg_health(ngx_event_t *ev);
static void ngx_http_helix_pg_gauge(void);
static void ngx_http_helix_pg_count(ngx_uint_t outcome);


static ngx_http_helix_pg_t  ngx_http_helix_pg;


static ngx_int_t
ngx_http_helix_pg_where(ngx_cycle_t *cycle,
    ngx_http_helix_database_conf_t *db)
{
    u_char                 *p;
    size_t                  len;
    ngx_uint_t              i;
    ngx_http_helix_node_t  *node;

    node = db->hosts.elts;
    len = db->host.len + NGX_INT_T_LEN + 2;

    for (i = 0; i < db->hosts.nelts; i++) {
        len += node[i].host.len + NGX_INT_T_LEN + 2;
    }

    p = ngx_pnalloc(cycle->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_helix_pg.where = p;

    if (db->hosts.nelts == 0) {
        p = ngx_sprintf(p, "%V:%ui", &db->host, db->port);
    }

    for (i = 0; i < db->hosts.nelts; i++) {
        p = ngx_sprintf(p, "%s%V:%ui", i ? "," : "", &node[i].host,
                        node[i].port);
    }

    *p = '\0';

    return NGX_OK;
}


/*
 * database.hosts: libpq gets them all, as comma-separated lists of
 * names, addresses (looked up at load) and ports, and chooses by
 * target_session_attrs on each new connection: after a failover, the
 * pool's next connection finds the new primary by itself.
 */

static ngx_int_t
ngx_http_helix_pg_hosts(ngx_cycle_t *cycle,
    ngx_http_helix_database_conf_t *db, ngx_uint_t *np)
{
    u_char                 *h, *a, *p;
    size_t                  hlen, alen;
    ngx_uint_t              i, n;
    ngx_http_helix_pg_t    *pg;
    ngx_http_helix_node_t  *node;

    pg = &ngx_http_helix_pg;
    node = db->hosts.elts;
    hlen = 0;
    alen = 0;

    for (i = 0; i < db->hosts.nelts; i++) {
        hlen += node[i].host.len + 1;
        alen += node[i].addr.len + 1;
    }

    h = ngx_pnalloc(cycle->pool, hlen);
    a = ngx_pnalloc(cycle->pool, alen);
    p = ngx_pnalloc(cycle->pool, db->hosts.nelts * (NGX_INT_T_LEN + 1));

    if (h == NULL || a == NULL || p == NULL) {
        return NGX_ERROR;
    }

    n = *np;

    pg->keywords[n] = "host";
    pg->values[n++] = (char *) h;
    pg->keywords[n] = "hostaddr";
    pg->values[n++] = (char *) a;
    pg->keywords[n] = "port";
    pg->values[n++] = (char *) p;
    pg->keywords[n] = "target_session_attrs";
    pg->values[n++] = (char *) db->target_session_attrs.data;

    for (i = 0; i < db->hosts.nelts; i++) {
        h = ngx_sprintf(h, "%s%V", i ? "," : "", &node[i].host);
        a = ngx_sprintf(a, "%s%V", i ? "," : "", &node[i].addr);
        p = ngx_sprintf(p, "%s%ui", i ? "," : "", node[i].port);
    }

    *h = '\0';
    *a = '\0';
    *p = '\0';

    *np = n;

    return NGX_OK;
}


ngx_int_t
ngx_http_helix_pg_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       n;
    ngx_http_helix_pg_t             *pg;
    ngx_http_helix_main_conf_t      *hmcf;
    ngx_http_helix_database_conf_t  *db;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_helix_module);

    if (hmcf == NULL || !hmcf->database.configured) {
        return NGX_OK;
    }

    pg = &ngx_http_helix_pg;
    db = &hmcf->database;

    pg->hmcf = hmcf;
    pg->log = cycle->log;

    ngx_queue_init(&pg->all);
    ngx_queue_init(&pg->idle);
    ngx_queue_init(&pg->waiting);

    ngx_sprintf(pg->port, "%ui%Z", db->port);

    if (ngx_http_helix_pg_where(cycle, db) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * The server gives up on a statement a little before the worker
     * does: a client told 503 finds nothing written behind its back.
     */
    ngx_sprintf(pg->options, "-c statement_timeout=%M%Z",
                hmcf->timeout_database > 200 ? hmcf->timeout_database - 100
                                             : hmcf->timeout_database / 2);

    n = 0;

    if (db->hosts.nelts) {
        if (ngx_http_helix_pg_hosts(cycle, db, &n) != NGX_OK) {
            return NGX_ERROR;
        }

        goto hosts_done;
    }

    /*
     * The address looked up at load: libpq's lookup would block the
     * worker.  The name stays for TLS and .pgpass.
     */
    pg->keywords[n] = "host";
    pg->values[n++] = (char *) db->host.data;

    if (db->addr.len) {
        pg->keywords[n] = "hostaddr";
        pg->values[n++] = (char *) db->addr.data;
    }

    pg->keywords[n] = "port";
    pg->values[n++] = (char *) pg->port;

hosts_done:
    pg->keywords[n] = "dbname";
    pg->values[n++] = (char *) db->name.data;
    pg->keywords[n] = "user";
    pg->values[n++] = (char *) db->user.data;

    if (db->password.len) {
        pg->keywords[n] = "password";
        pg->values[n++] = (char *) db->password.data;
    }

    pg->keywords[n] = "sslmode";
    pg->values[n++] = (char *) db->sslmode.data;
    pg->keywords[n] = "application_name";
    pg->values[n++] = "helix";
    pg->keywords[n] = "options";
    pg->values[n++] = (char *) pg->options;

    /* a server that vanished without a word is found out in time */
    pg->keywords[n] = "keepalives";
    pg->values[n++] = "1";
    pg->keywords[n] = "keepalives_idle";
    pg->values[n++] = "30";
    pg->keywords[n] = "keepalives_interval";
    pg->values[n++] = "10";
    pg->keywords[n] = "keepalives_count";
    pg->values[n++] = "3";
    pg->keywords[n] = NULL;
    pg->values[n] = NULL;

    pg->dispatch.handler = ngx_http_helix_pg_dispatch;
    pg->dispatch.log = cycle->log;
    pg->dispatch.data = pg;

    pg->probe.handler = ngx_http_helix_pg_probe;
    pg->probe.data = pg;
    pg->probe.log = cycle->log;
    pg->probe.cancelable = 1;
    pg->close.handler = ngx_http_helix_pg_close_all;
    pg->close.data = pg;
    pg->close.log = cycle->log;

    if (db->health_check) {
        pg->health.handler = ngx_http_helix_pg_health;
        pg->health.log = cycle->log;
        pg->health.data = pg;
        pg->health.cancelable = 1;
        ngx_add_timer(&pg->health, db->health_check);
    }

    ngx_http_helix_metrics_db_worker(hmcf, 1);
    ngx_http_helix_pg_gauge();
    ngx_http_helix_metrics_store_state(hmcf, NGX_HTTP_HELIX_STORE_DB,
                                       NGX_HTTP_HELIX_STORE_CLOSED);

    return NGX_OK;
}


void
ngx_http_helix_pg_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t                *qu;
    ngx_http_helix_pg_t        *pg;
    ngx_http_helix_pg_query_t  *q;

    pg = &ngx_http_helix_pg;

    if (pg->hmcf == NULL) {
        return;
    }

    pg->exiting = 1;

    if (pg->probe.timer_set) {
        ngx_del_timer(&pg->probe);
    }

    if (pg->close.posted) {
        ngx_delete_posted_event(&pg->close);
    }

    while (!ngx_queue_empty(&pg->waiting)) {
        qu = ngx_queue_head(&pg->waiting);
        q = ngx_queue_data(qu, ngx_http_helix_pg_query_t, queue);
        ngx_queue_remove(qu);
        q->waiting = 0;
        pg->nwaiting--;
        ngx_http_helix_pg_count(NGX_HTTP_HELIX_DB_ERROR);
        ngx_http_helix_pg_deliver(q, NULL, "the worker is exiting");
        ngx_http_helix_pg_free(q);
    }

    while (!ngx_queue_empty(&pg->all)) {
        qu = ngx_queue_head(&pg->all);
        ngx_http_helix_pg_close(ngx_queue_data(qu, ngx_http_helix_pg_conn_t,
                                               link),
                                "the worker is exiting");
    }

    if (pg->health.timer_set) {
        ngx_del_timer(&pg->health);
    }

    ngx_http_helix_metrics_db_worker(pg->hmcf, 0);

    pg->hmcf = NULL;
}


static ngx_uint_t
ngx_http_helix_pg_available(void)
{
    return ngx_http_helix_pg.hmcf != NULL && !ngx_http_helix_pg.exiting
           && ngx_http_helix_pg.state == NGX_HTTP_HELIX_STORE_CLOSED;
}


/*
 * Queues a statement.  NULL: PostgreSQL is known to be down (or no
 * memory), nothing was queued.  With a pool, the query belongs to that
 * request: if the request goes first, the handler is not called.
 * A param with data == NULL is SQL NULL.
 */

ngx_http_helix_pg_query_t *
ngx_http_helix_pg_query(ngx_pool_t *pool, ngx_http_helix_pg_stmt_t *stmt,
    ngx_str_t *params, ngx_http_helix_pg_pt handler, void *data)
{
    int                         i;
    size_t                      size;
    u_char                     *p;
    ngx_http_helix_pg_t        *pg;
    ngx_http_helix_pg_query_t  *q;

    pg = &ngx_http_helix_pg;

    if (!ngx_http_helix_pg_available()) {
        ngx_http_helix_pg_count(NGX_HTTP_HELIX_DB_ERROR);

        if (pg->hmcf && pg->state != NGX_HTTP_HELIX_STORE_CLOSED) {
            ngx_http_helix_metrics_store_rejected(pg->hmcf,
                                                  NGX_HTTP_HELIX_STORE_DB);
        }

        return NULL;
    }

    if (stmt->index == 0) {
        stmt->index = ++pg->nstmts;
    }

    size = sizeof(ngx_http_helix_pg_query_t)
           + stmt->nparams * sizeof(char *);

    /*
     * COPY's data is not copied (it can be megabytes, and a malloc() of
     * that size a batch costs page faults): the caller keeps it until
     * its handler has run
     */

    for (i = stmt->copy ? 1 : 0; i < stmt->nparams; i++) {
        size += params[i].len + 1;
    }

    /* queries outlive requests (PostgreSQL answers late): not a pool */

    q = ngx_alloc(size, pg->log);
    if (q == NULL) {
        ngx_http_helix_pg_count(NGX_HTTP_HELIX_DB_ERROR);
        return NULL;
    }

    ngx_memzero(q, sizeof(ngx_http_helix_pg_query_t));

    q->stmt = stmt;
    q->handler = handler;
    q->data = data;
    q->nparams = stmt->nparams;
    q->values = (char **) (q + 1);

    p = (u_char *) (q->values + stmt->nparams);

    for (i = 0; i < stmt->nparams; i++) {
        if (params[i].data == NULL) {
            q->values[i] = NULL;
            continue;
        }

        if (i == 0 && stmt->copy) {
            q->values[0] = (char *) params[0].data;
            continue;
        }

        q->values[i] = (char *) p;
        p = ngx_cpymem(p, params[i].data, params[i].len);
        *p++ = '\0';
    }

    q->len0 = stmt->nparams ? params[0].len : 0;

    if (pool) {
        q->cln = ngx_pool_cleanup_add(pool, 0);
        if (q->cln == NULL) {
            ngx_free(q);
            ngx_http_helix_pg_count(NGX_HTTP_HELIX_DB_ERROR);
            return NULL;
        }

        q->cln->handler = ngx_http_helix_pg_query_cleanup;
        q->cln->data = q;
    }

    /* while it waits; on a connection, the connection's timer */
    q->timer.handler = ngx_http_helix_pg_query_timeout;
    q->timer.data = q;
    q->timer.log = pg->log;
    q->deadline = ngx_current_msec + pg->hmcf->timeout_database;
    ngx_add_timer(&q->timer, pg->hmcf->timeout_database);

    /*
     * The queries before it take the idle connections, those being
     * opened and those the pool may still open: none left, it waits
     * for a query to finish.
     */
    q->full = pg->nwaiting + pg->open
              >= pg->nidle + pg->connecting + pg->hmcf->database.max_open;
    q->queued_us = ngx_http_helix_metrics_now_us();

    /* never the handler before the caller has the query: posted */

    ngx_queue_insert_tail(&pg->waiting, &q->queue);
    q->waiting = 1;
    pg->nwaiting++;

    ngx_http_helix_pg_gauge();

    if (!pg->dispatch.posted) {
        ngx_post_event(&pg->dispatch, &ngx_posted_events);
    }

    return q;
}


static void
ngx_http_helix_pg_dispatch(ngx_event_t *ev)
{
    ngx_queue_t                *qu;
    ngx_http_helix_pg_t        *pg;
    ngx_http_helix_pg_conn_t   *pc;
    ngx_http_helix_pg_query_t  *q;

    pg = &ngx_http_helix_pg;

    if (pg->hmcf == NULL) {
        return;
    }

    while (!ngx_queue_empty(&pg->waiting) && !ngx_queue_empty(&pg->idle)) {
        /* the most recently used: the others may reach max_idle_time */
        qu = ngx_queue_head(&pg->idle);
        pc = ngx_queue_data(qu, ngx_http_helix_pg_conn_t, queue);
        ngx_queue_remove(qu);
        pc->idle = 0;
        pg->nidle--;

        qu = ngx_queue_head(&pg->waiting);
        q = ngx_queue_data(qu, ngx_http_helix_pg_query_t, queue);
        ngx_queue_remove(qu);
        q->waiting = 0;
        pg->nwaiting--;

        ngx_http_helix_pg_run(pc, q);
    }

    ngx_http_helix_pg_more();
    ngx_http_helix_pg_gauge();
}


/* a connection of its own that LISTENs; the handler runs per wake-up */

ngx_int_t
ngx_http_helix_pg_listen(const char *channel,
    ngx_http_helix_pg_notify_pt handler, void *data)
{
    ngx_http_helix_pg_t  *pg;

    pg = &ngx_http_helix_pg;

    pg->channel = channel;
    pg->notify = handler;
    pg->notify_data = data;

    if (pg->listener) {
        return NGX_OK;
    }

    if (!ngx_http_helix_pg_available()) {
        return NGX_ERROR;
    }

    pg->listener = ngx_http_helix_pg_connect(1);

    return pg->listener ? NGX_OK : NGX_ERROR;
}


static ngx_http_helix_pg_conn_t *
ngx_http_helix_pg_connect(ngx_uint_t listener)
{
    PGconn                    *conn;
    ngx_http_helix_pg_t       *pg;
    ngx_http_helix_pg_conn_t  *pc;

    pg = &ngx_http_helix_pg;

    conn = PQconnectStartParams(pg->keywords, pg->values, 0);

    if (conn == NULL || PQstatus(conn) == CONNECTION_BAD) {
        ngx_http_helix_pg_failed("connect",
                                 conn ? PQerrorMessage(conn) : "no memory",
                                 1);
        if (conn) {
            PQfinish(conn);
        }

        return NULL;
    }

    pc = ngx_calloc(sizeof(ngx_http_helix_pg_conn_t), pg->log);
    if (pc == NULL) {
        PQfinish(conn);
        return NULL;
    }

    pc->conn = conn;
    pc->state = NGX_HTTP_HELIX_PG_CONNECTING;
    pc->listener = listener;
    pc->born = ngx_current_msec;

    pc->timer.handler = ngx_http_helix_pg_conn_timer;
    pc->timer.data = pc;
    pc->timer.log = pg->log;
    pc->timer.cancelable = 1;

    ngx_queue_insert_tail(&pg->all, &pc->link);

    if (!listener) {
        pg->open++;
        pg->connecting++;
        ngx_http_helix_pg_gauge();
    }

    if (ngx_http_helix_pg_watch(pc) != NGX_OK) {
        ngx_http_helix_pg_close(pc, "no nginx connection");
        return NULL;
    }

    /* libpq: wait until the socket is writable, then poll */
    ngx_http_helix_pg_events(pc, 1);

    ngx_add_timer(&pc->timer, pg->hmcf->timeout_database);

    return pc;
}


/*
 * An nginx connection for libpq's current socket.  While connecting,
 * libpq may drop a socket and open another (next address, SSL refused),
 * possibly with the same number: the inode tells them apart.
 */

static ngx_int_t
ngx_http_helix_pg_watch(ngx_http_helix_pg_conn_t *pc)
{
    int                fd;
    struct stat        st;
    ngx_connection_t  *c;

    fd = PQsocket(pc->conn);

    if (fd == -1 || fstat(fd, &st) == -1) {
        return NGX_ERROR;
    }

    c = pc->c;

    if (c && c->fd == fd && pc->ino == st.st_ino) {
        return NGX_OK;
    }

    if (c) {
        /* the old socket is closed already: forget it, no syscall */
        if (c->read->active) {
            ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->write->active) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->read->posted) {
            ngx_delete_posted_event(c->read);
        }

        if (c->write->posted) {
            ngx_delete_posted_event(c->write);
        }

        c->fd = (ngx_socket_t) -1;
        ngx_free_connection(c);
        pc->c = NULL;
    }

    c = ngx_get_connection(fd, ngx_http_helix_pg.log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pc;
    c->read->handler = ngx_http_helix_pg_event;
    c->write->handler = ngx_http_helix_pg_event;
    c->read->log = c->log;
    c->write->log = c->log;

    pc->c = c;
    pc->ino = st.st_ino;

    return NGX_OK;
}


/* level-triggered: read always, write while libpq has bytes to send */

static void
ngx_http_helix_pg_events(ngx_http_helix_pg_conn_t *pc, ngx_uint_t write)
{
    ngx_connection_t  *c = pc->c;

    if (!c->read->active) {
        ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }

    if (write && !c->write->active) {
        ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);

    } else if (!write && c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_http_helix_pg_event(ngx_event_t *ev)
{
    ngx_connection_t          *c = ev->data;
    ngx_http_helix_pg_conn_t  *pc = c->data;

    switch (pc->state) {

    case NGX_HTTP_HELIX_PG_CONNECTING:
        ngx_http_helix_pg_poll(pc);
        return;

    case NGX_HTTP_HELIX_PG_IDLE:
        if (!ev->write) {
            if (!PQconsumeInput(pc->conn)) {
                ngx_http_helix_pg_lost(pc);
                return;
            }

            if (pc->listener) {
                ngx_http_helix_pg_notifies(pc);
            }
        }

        return;

    default:
        if (ev->write && (pc->copy == 1 || pc->copy == 2)) {
            (void) ngx_http_helix_pg_copy(pc);

        } else if (ev->write) {
            (void) ngx_http_helix_pg_flush(pc);

        } else {
            ngx_http_helix_pg_read(pc);
        }
    }
}


static void
ngx_http_helix_pg_poll(ngx_http_helix_pg_conn_t *pc)
{
    PostgresPollingStatusType  st;

    st = PQconnectPoll(pc->conn);

    switch (st) {

    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
        if (ngx_http_helix_pg_watch(pc) != NGX_OK) {
            ngx_http_helix_pg_failed("connect", "no socket", 1);
            ngx_http_helix_pg_close(pc, "could not connect");
            return;
        }

        ngx_http_helix_pg_events(pc, st == PGRES_POLLING_WRITING);
        return;

    case PGRES_POLLING_OK:
        ngx_http_helix_pg_connected(pc);
        return;

    default:
        ngx_http_helix_pg_failed("connect", PQerrorMessage(pc->conn), 1);
        ngx_http_helix_pg_close(pc, "could not connect");
        return;
    }
}


static void
ngx_http_helix_pg_connected(ngx_http_helix_pg_conn_t *pc)
{
    ngx_http_helix_pg_t  *pg;

    pg = &ngx_http_helix_pg;

    if (pc->timer.timer_set) {
        ngx_del_timer(&pc->timer);
    }

    if (PQsetnonblocking(pc->conn, 1) != 0
        || ngx_http_helix_pg_watch(pc) != NGX_OK)
    {
        ngx_http_helix_pg_close(pc, "could not connect");
        return;
    }

    pc->state = NGX_HTTP_HELIX_PG_IDLE;

    /* the server ran the login: it is alive */
    ngx_http_helix_pg_answered();

    pc->born = ngx_current_msec;

    if (!pc->listener) {
        pg->connecting--;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, pg->log, 0,
                   "helix pg: connected, %ui open", pg->open);

    if (pc->listener) {
        u_char  sql[128];

        ngx_snprintf(sql, sizeof(sql), "LISTEN %s%Z", pg->channel);

        if (!PQsendQuery(pc->conn, (char *) sql)) {
            ngx_http_helix_pg_lost(pc);
            return;
        }

        pc->state = NGX_HTTP_HELIX_PG_LISTENING;
        ngx_http_helix_pg_flush(pc);
        return;
    }

    ngx_http_helix_pg_release(pc);
}


/*
 * A query timed out or lost its connection (at_once: no connection could
 * be made).  Enough of them in a row open the breaker.
 */

static void
ngx_http_helix_pg_failed(const char *what, const char *err,
    ngx_uint_t at_once)
{
    ngx_http_helix_pg_t  *pg;

    pg = &ngx_http_helix_pg;

    if (pg->hmcf == NULL || pg->exiting) {
        return;
    }

    pg->failures++;

    if (pg->state == NGX_HTTP_HELIX_STORE_OPEN
        || (pg->state == NGX_HTTP_HELIX_STORE_CLOSED && !at_once
            && pg->failures < pg->hmcf->database.breaker_failures))
    {
        return;
    }

    ngx_http_helix_pg_open(what, err);
}


static void
ngx_http_helix_pg_open(const char *what, const char *err)
{
    size_t                           len;
    ngx_http_helix_pg_t             *pg;
    ngx_http_helix_database_conf_t  *db;

    pg = &ngx_http_helix_pg;
    db = &pg->hmcf->database;

    len = ngx_strlen(err);

    while (len && (err[len - 1] == '\n' || err[len - 1] == ' ')) {
        len--;
    }

    if (pg->state == NGX_HTTP_HELIX_STORE_CLOSED) {
        pg->backoff = db->breaker_backoff;

        /* once per outage, not once per query */
        ngx_log_error(NGX_LOG_WARN, pg->log, 0,
                      "helix: postgresql %s unreachable (%s: %*s after "
                      "%ui failures in a row), breaker open: queries fail "
                      "at once, probed again in %M ms", pg->where,
                      what, len, err, pg->failures, pg->backoff);

        ngx_http_helix_metrics_store_opened(pg->hmcf,
                                            NGX_HTTP_HELIX_STORE_DB);

    } else {
        /* the probe failed */
        pg->backoff = ngx_min(pg->backoff * 2, db->breaker_max_backoff);

        ngx_log_error(NGX_LOG_INFO, pg->log, 0,
                      "helix: postgresql %s still unreachable (%s: %*s), "
                      "probed again in %M ms", pg->where, what, len, err,
                      pg->backoff);
    }

    pg->state = NGX_HTTP_HELIX_STORE_OPEN;
    ngx_http_helix_metrics_store_state(pg->hmcf, NGX_HTTP_HELIX_STORE_DB,
                                       pg->state);

    ngx_add_timer(&pg->probe, pg->backoff);

    /* not here: the connection that failed may be on the stack */
    if (!pg->close.posted) {
        ngx_post_event(&pg->close, &ngx_posted_events);
    }
}


/* the server answered (an SQL error too): it is alive */

static void
ngx_http_helix_pg_answered(void)
{
    ngx_http_helix_pg_t  *pg;

    pg = &ngx_http_helix_pg;

    if (pg->state == NGX_HTTP_HELIX_STORE_OPEN) {
        /* a late answer on a connection about to close: the probe decides */
        return;
    }

    pg->failures = 0;

    if (pg->state == NGX_HTTP_HELIX_STORE_HALF_OPEN && !pg->exiting) {
        pg->state = NGX_HTTP_HELIX_STORE_CLOSED;
        pg->backoff = 0;

        ngx_log_error(NGX_LOG_NOTICE, pg->log, 0,
                      "helix: postgresql %s answers again (breaker "
                      "closed)", pg->where);

        ngx_http_helix_metrics_store_state(pg->hmcf, NGX_HTTP_HELIX_STORE_DB,
                                           pg->state);
    }
}


/* the backoff is over: one new connection decides */

static void
ngx_http_helix_pg_probe(ngx_event_t *ev)
{
    ngx_http_helix_pg_t  *pg;

    pg = &ngx_http_helix_pg;

    if (pg->hmcf == NULL || pg->exiting
        || pg->state != NGX_HTTP_HELIX_STORE_OPEN)
    {
        return;
    }

    pg->state = NGX_HTTP_HELIX_STORE_HALF_OPEN;
    ngx_http_helix_metrics_store_state(pg->hmcf, NGX_HTTP_HELIX_STORE_DB,
                                       pg->state);

    if (ngx_http_helix_pg_connect(0) == NULL
        && pg->state == NGX_HTTP_HELIX_STORE_HALF_OPEN)
    {
        ngx_http_helix_pg_open("probe", "no connection");
    }
}


/*
 * The breaker opened: the queries waiting fail now, and the pool's
 * connections go (the queries on them fail too); the LISTEN connection
 * of the tasks stays, it holds no query.
 */

static void
ngx_http_helix_pg_close_all(ngx_event_t *ev)
{
    ngx_queue_t               *qu, *next;
    ngx_http_helix_pg_t       *pg;
    ngx_http_helix_pg_conn_t  *pc;

    pg = &ngx_http_helix_pg;

    if (pg->hmcf == NULL || pg->exiting
        || pg->state != NGX_HTTP_HELIX_STORE_OPEN)
    {
        return;
    }

    ngx_http_helix_pg_fail_waiting("PostgreSQL is unreachable");

    for (qu = ngx_queue_head(&pg->all);
         qu != ngx_queue_sentinel(&pg->all);
         qu = next)
    {
        next = ngx_queue_next(qu);
        pc = ngx_queue_data(qu, ngx_http_helix_pg_conn_t, link);

        if (pc->listener) {
            continue;
        }

        /* a query's handler may close others: start over after each */
        ngx_http_helix_pg_close(pc, "PostgreSQL is unreachable");
        next = ngx_queue_head(&pg->all);
    }
}


/* a connection free again: the next waiting query, or the idle list */

static void
ngx_http_helix_pg_release(ngx_http_helix_pg_conn_t *pc)
{
    ngx_queue_t                     *qu;
    ngx_http_helix_pg_t             *pg;
    ngx_http_helix_pg_query_t       *q;
    ngx_http_helix_database_conf_t  *db;

    pg = &ngx_http_helix_pg;
    db = &pg->hmcf->database;

    if (pc->timer.timer_set) {
        ngx_del_timer(&pc->timer);
    }

    pc->timer.cancelable = 1;
    pc->q = NULL;
    pc->copy = 0;
    pc->state = NGX_HTTP_HELIX_PG_IDLE;
    pc->used = ngx_current_msec;

    if (pg->exiting) {
        ngx_http_helix_pg_close(pc, NULL);
        return;
    }

    if (db->max_lifetime
        && ngx_current_msec - pc->born >= db->max_lifetime)
    {
        ngx_log_error(NGX_LOG_INFO, pg->log, 0,
                      "helix: postgresql connection closed after its "
                      "max_lifetime of %M ms", db->max_lifetime);
        ngx_http_helix_pg_close(pc, NULL);
        return;
    }

    if (!ngx_queue_empty(&pg->waiting)) {
        qu = ngx_queue_head(&pg->waiting);
        q = ngx_queue_data(qu, ngx_http_helix_pg_query_t, queue);
        ngx_queue_remove(qu);
        q->waiting = 0;
        pg->nwaiting--;

        ngx_http_helix_pg_gauge();
        ngx_http_helix_pg_run(pc, q);
        return;
    }

    if (pg->nidle >= db->max_idle) {
        ngx_http_helix_pg_close(pc, NULL);
        return;
    }

    ngx_queue_insert_head(&pg->idle, &pc->queue);
    pc->idle = 1;
    pg->nidle++;

    ngx_http_helix_pg_gauge();
    ngx_http_helix_pg_events(pc, 0);

    if (db->max_idle_time) {
        ngx_add_timer(&pc->timer, db->max_idle_time);
    }
}


static void
ngx_http_helix_pg_run(ngx_http_helix_pg_conn_t *pc,
    ngx_http_helix_pg_query_t *q)
{
    int                        ok;
    uint64_t                   bit;
    ngx_uint_t                 prepare;
    ngx_msec_int_t             left;
    ngx_http_helix_pg_t       *pg;
    ngx_http_helix_pg_stmt_t  *stmt;

    pg = &ngx_http_helix_pg;
    stmt = q->stmt;

    /*
     * The deadline goes with the query onto the connection: if its owner
     * goes away, the connection still has it, and its slot comes back.
     */

    if (q->timer.timer_set) {
        ngx_del_timer(&q->timer);
    }

    left = (ngx_msec_int_t) (q->deadline - ngx_current_msec);

    /* a query in flight holds a worker that is shutting down, as before */
    pc->timer.cancelable = 0;
    ngx_add_timer(&pc->timer, left > 0 ? (ngx_msec_t) left : 1);

    pc->q = q;
    q->conn = pc;

    if (q->sent == 0) {
        /* the slow query log counts from the first byte, prepare included */
        q->sent = ngx_current_msec;
        q->sent_us = ngx_http_helix_metrics_now_us();

        ngx_http_helix_metrics_db_wait(pg->hmcf, q->sent_us - q->queued_us);

        if (q->full) {
            ngx_http_helix_metrics_db_pool_full(pg->hmcf,
                                               NGX_HTTP_HELIX_DB_WAIT_SERVED);
        }
    }

    prepare = pg->hmcf->database.prepared_statements
              && stmt->index <= NGX_HTTP_HELIX_PG_STMTS
              && stmt->index <= pg->hmcf->database.statement_cache;

    bit = (uint64_t) 1 << ((stmt->index - 1) % NGX_HTTP_HELIX_PG_STMTS);

    if (stmt->copy) {
        /* the rows follow when the server asks for them */
        pc->state = NGX_HTTP_HELIX_PG_BUSY;
        pc->copy = 1;
        ok = PQsendQuery(pc->conn, stmt->sql);

    } else if (prepare && !(pc->prepared & bit)) {
        pc->state = NGX_HTTP_HELIX_PG_PREPARING;
        ok = PQsendPrepare(pc->conn, stmt->name, stmt->sql, stmt->nparams,
                           NULL);

    } else if (prepare) {
        pc->state = NGX_HTTP_HELIX_PG_BUSY;
        ok = PQsendQueryPrepared(pc->conn, stmt->name, q->nparams,
                                 (const char *const *) q->values,
                                 NULL, NULL, 0);

    } else {
        pc->state = NGX_HTTP_HELIX_PG_BUSY;
        ok = PQsendQueryParams(pc->conn, stmt->sql, q->nparams, NULL,
                               (const char *const *) q->values,
                               NULL, NULL, 0);
    }

    if (!ok) {
        ngx_http_helix_pg_lost(pc);
        return;
    }

    ngx_http_helix_pg_flush(pc);
}


static ngx_int_t
ngx_http_helix_pg_flush(ngx_http_helix_pg_conn_t *pc)
{
    int  rc;

    rc = PQflush(pc->conn);

    if (rc == -1) {
        ngx_http_helix_pg_lost(pc);
        return NGX_ERROR;
    }

    ngx_http_helix_pg_events(pc, rc == 1);

    return NGX_OK;
}


/* COPY FROM STDIN: the data, then its end; 0 from libpq: on write */

static ngx_int_t
ngx_http_helix_pg_copy(ngx_http_helix_pg_conn_t *pc)
{
    int                         rc;
    ngx_http_helix_pg_query_t  *q;

    q = pc->q;

    if (pc->copy == 1) {
        rc = PQputCopyData(pc->conn, q->values[0], (int) q->len0);

        if (rc == 0) {
            ngx_http_helix_pg_events(pc, 1);
            return NGX_AGAIN;
        }

        if (rc < 0) {
            ngx_http_helix_pg_lost(pc);
            return NGX_ERROR;
        }

        pc->copy = 2;
    }

    if (pc->copy == 2) {
        rc = PQputCopyEnd(pc->conn, NULL);

        if (rc == 0) {
            ngx_http_helix_pg_events(pc, 1);
            return NGX_AGAIN;
        }

        if (rc < 0) {
            ngx_http_helix_pg_lost(pc);
            return NGX_ERROR;
        }

        pc->copy = 3;
    }

    return ngx_http_helix_pg_flush(pc);
}


static void
ngx_http_helix_pg_read(ngx_http_helix_pg_conn_t *pc)
{
    PGresult  *res;

    if (!PQconsumeInput(pc->conn)) {
        ngx_http_helix_pg_lost(pc);
        return;
    }

    while (!PQisBusy(pc->conn)) {
        res = PQgetResult(pc->conn);

        if (res == NULL) {
            /* the server is ready again: the statement has committed */
            ngx_http_helix_pg_done(pc);
            return;
        }

        switch (PQresultStatus(res)) {

        case PGRES_COPY_IN:
            PQclear(res);

            if (pc->copy != 1 && pc->copy != 2) {
                ngx_http_helix_pg_close(pc, "unexpected COPY");
                return;
            }

            if (ngx_http_helix_pg_copy(pc) != NGX_OK) {
                /* closed, or the rest goes on a write event */
                return;
            }

            break;

        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
        case PGRES_EMPTY_QUERY:
            if (pc->res) {
                PQclear(pc->res);
            }

            pc->res = res;
            break;

        default:
            if (pc->err) {
                PQclear(pc->err);
            }

            pc->err = res;
        }
    }
}


static void
ngx_http_helix_pg_done(ngx_http_helix_pg_conn_t *pc)
{
    char                       *msg;
    size_t                      len;
    PGresult                   *res, *err;
    ngx_msec_t                  t;
    ngx_http_helix_pg_t        *pg;
    ngx_http_helix_pg_query_t  *q;

    pg = &ngx_http_helix_pg;

    res = pc->res;
    err = pc->err;
    pc->res = NULL;
    pc->err = NULL;

    q = pc->q;

    switch (pc->state) {

    case NGX_HTTP_HELIX_PG_PREPARING:
        if (res) {
            PQclear(res);
        }

        if (err == NULL) {
            pc->prepared |= (uint64_t) 1
                            << ((q->stmt->index - 1)
                                % NGX_HTTP_HELIX_PG_STMTS);
            ngx_http_helix_pg_run(pc, q);
            return;
        }

        break;

    case NGX_HTTP_HELIX_PG_CHECKING:
        if (pc->timer.timer_set) {
            ngx_del_timer(&pc->timer);
        }

        ngx_http_helix_pg_answered();

        if (res) {
            PQclear(res);
        }

        if (err) {
            PQclear(err);
            ngx_http_helix_pg_close(pc, NULL);
            return;
        }

        ngx_http_helix_pg_release(pc);
        return;

    case NGX_HTTP_HELIX_PG_LISTENING:
        if (res) {
            PQclear(res);
        }

        if (err) {
            PQclear(err);
            ngx_http_helix_pg_close(pc, NULL);
            return;
        }

        pc->state = NGX_HTTP_HELIX_PG_IDLE;
        ngx_http_helix_pg_events(pc, 0);
        ngx_http_helix_pg_notifies(pc);
        return;

    default:
        break;
    }

    /* an SQL error is an answer too */
    ngx_http_helix_pg_answered();

    t = ngx_current_msec - q->sent;

    if (pg->hmcf->database.slow_query_log
        && t >= pg->hmcf->database.slow_query_threshold)
    {
        ngx_log_error(NGX_LOG_WARN, pg->log, 0,
                      "helix: slow query \"%s\" took %M ms (threshold "
                      "%M ms): %s", q->stmt->name, t,
                      pg->hmcf->database.slow_query_threshold,
                      q->stmt->sql);
    }

    pc->q = NULL;
    q->conn = NULL;

    ngx_http_helix_metrics_db_query_time(pg->hmcf,
                                         ngx_http_helix_metrics_now_us()
                                         - q->sent_us);
    ngx_http_helix_pg_count(err ? NGX_HTTP_HELIX_DB_ERROR
                                : NGX_HTTP_HELIX_DB_OK);

    if (err) {
        msg = PQresultErrorMessage(err);
        len = ngx_strlen(msg);

        ngx_log_error(NGX_LOG_ERR, pg->log, 0,
                      "helix: postgresql query \"%s\" failed: %*s",
                      q->stmt->name, len && msg[len - 1] == '\n' ? len - 1
                                                                 : len, msg);

        q->rejected = 1;

        if (PQresultErrorField(err, PG_DIAG_SQLSTATE)) {
            ngx_cpystrn((u_char *) q->sqlstate,
                        (u_char *) PQresultErrorField(err, PG_DIAG_SQLSTATE),
                        sizeof(q->sqlstate));
        }

        ngx_http_helix_pg_deliver(q, NULL, msg);
        PQclear(err);

        if (res) {
            PQclear(res);
        }

    } else {
        ngx_http_helix_pg_deliver(q, res, NULL);

        if (res) {
            PQclear(res);
        }
    }

    ngx_http_helix_pg_free(q);

    ngx_http_helix_pg_release(pc);
}


static void
ngx_http_helix_pg_notifies(ngx_http_helix_pg_conn_t *pc)
{
    PGnotify             *n;
    ngx_uint_t            woken;
    ngx_http_helix_pg_t  *pg;

    pg = &ngx_http_helix_pg;
    woken = 0;

    while ((n = PQnotifies(pc->conn)) != NULL) {
        PQfreemem(n);
        woken = 1;
    }

    if (woken && pg->notify) {
        pg->notify(pg->notify_data);
    }
}


static void
ngx_http_helix_pg_lost(ngx_http_helix_pg_conn_t *pc)
{
    char                 *msg;
    size_t                len;
    ngx_uint_t            level;
    ngx_http_helix_pg_t  *pg;

    pg = &ngx_http_helix_pg;

    msg = PQerrorMessage(pc->conn);
    len = ngx_strlen(msg);
    level = pc->q ? NGX_LOG_WARN : NGX_LOG_INFO;

    ngx_log_error(level, pg->log, 0,
                  "helix: postgresql connection lost: %*s",
                  len && msg[len - 1] == '\n' ? len - 1 : len, msg);

    /* an idle one the server closed is no failure: a query's connection is */
    if (pc->q) {
        ngx_http_helix_pg_failed("connection lost", msg, 0);
    }

    ngx_http_helix_pg_close(pc, "the connection to PostgreSQL was lost");
}


/* reason != NULL: the query on it, if any, failed for that reason */

static void
ngx_http_helix_pg_close(ngx_http_helix_pg_conn_t *pc, const char *reason)
{
    ngx_uint_t                  flags;
    ngx_connection_t           *c;
    ngx_http_helix_pg_t        *pg;
    ngx_http_helix_pg_query_t  *q;

    pg = &ngx_http_helix_pg;

    q = pc->q;
    ngx_queue_remove(&pc->link);

    if (pc->idle) {
        ngx_queue_remove(&pc->queue);
        pg->nidle--;
    }

    if (pc->listener) {
        pg->listener = NULL;

    } else {
        pg->open--;

        if (pc->state == NGX_HTTP_HELIX_PG_CONNECTING) {
            pg->connecting--;
        }

        ngx_http_helix_pg_gauge();
    }

    if (pc->timer.timer_set) {
        ngx_del_timer(&pc->timer);
    }

    c = pc->c;

    if (c) {
        /* libpq closes the socket itself when it fails: no syscall then */
        flags = (PQsocket(pc->conn) == c->fd) ? 0 : NGX_CLOSE_EVENT;

        if (c->read->active) {
            ngx_del_event(c->read, NGX_READ_EVENT, flags);
        }

        if (c->write->active) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, flags);
        }

        if (c->read->posted) {
            ngx_delete_posted_event(c->read);
        }

        if (c->write->posted) {
            ngx_delete_posted_event(c->write);
        }

        c->fd = (ngx_socket_t) -1;
        ngx_free_connection(c);
    }

    if (pc->res) {
        PQclear(pc->res);
    }

    if (pc->err) {
        PQclear(pc->err);
    }

    PQfinish(pc->conn);
    ngx_free(pc);

    if (q) {
        q->conn = NULL;

        if (!q->timedout) {
            ngx_http_helix_pg_count(NGX_HTTP_HELIX_DB_ERROR);
        }

        ngx_http_helix_pg_deliver(q, NULL, reason ? reason : "closed");
        ngx_http_helix_pg_free(q);
    }

    if (pg->exiting) {
        return;
    }

    ngx_http_helix_pg_more();
}


/* queries wait and the pool may grow: open a connection for them */

static void
ngx_http_helix_pg_more(void)
{
    ngx_http_helix_pg_t  *pg;

    pg = &ngx_http_helix_pg;

    while (pg->nwaiting > pg->connecting
           && pg->open < pg->hmcf->database.max_open
           && ngx_http_helix_pg_available())
    {
        if (ngx_http_helix_pg_connect(0) == NULL) {
            break;
        }
    }

    if (pg->open == 0 && pg->nwaiting) {
        /* nothing left that could take them: fail now, not at timeout */
        ngx_http_helix_pg_fail_waiting("PostgreSQL is unreachable");
    }
}


static void
ngx_http_helix_pg_fail_waiting(const char *reason)
{
    ngx_queue_t                *qu;
    ngx_http_helix_pg_t        *pg;
    ngx_http_helix_pg_query_t  *q;

    pg = &ngx_http_helix_pg;

    while (!ngx_queue_empty(&pg->waiting)) {
        qu = ngx_queue_head(&pg->waiting);
        q = ngx_queue_data(qu, ngx_http_helix_pg_query_t, queue);
        ngx_queue_remove(qu);
        q->waiting = 0;
        pg->nwaiting--;

        ngx_http_helix_pg_count(NGX_HTTP_HELIX_DB_ERROR);
        ngx_http_helix_pg_deliver(q, NULL, reason);
        ngx_http_helix_pg_free(q);
    }

    ngx_http_helix_pg_gauge();
}


static void
ngx_http_helix_pg_deliver(ngx_http_helix_pg_query_t *q, PGresult *res,
    const char *error)
{
    if (q->done) {
        return;
    }

    q->done = 1;

    if (q->timer.timer_set) {
        ngx_del_timer(&q->timer);
    }

    if (q->cln) {
        q->cln->handler = NULL;
        q->cln = NULL;
    }

    q->error = error;

    if (q->handler) {
        q->handler(q, res);
    }
}


static void
ngx_http_helix_pg_free(ngx_http_helix_pg_query_t *q)
{
    if (q->timer.timer_set) {
        ngx_del_timer(&q->timer);
    }

    if (q->cln) {
        q->cln->handler = NULL;
    }

    ngx_free(q);
}


static void
ngx_http_helix_pg_query_timeout(ngx_event_t *ev)
{
    ngx_http_helix_pg_query_t  *q = ev->data;

    ngx_http_helix_pg_t  *pg;

    pg = &ngx_http_helix_pg;

    if (q->waiting) {
        ngx_log_error(NGX_LOG_WARN, pg->log, 0,
                      "helix: no postgresql connection for \"%s\" within "
                      "%M ms (%ui open, max_open %ui)", q->stmt->name,
                      pg->hmcf->timeout_database, pg->open,
                      pg->hmcf->database.max_open);

        ngx_queue_remove(&q->queue);
        q->waiting = 0;
        pg->nwaiting--;
        ngx_http_helix_pg_gauge();

        ngx_http_helix_pg_count(NGX_HTTP_HELIX_DB_TIMEOUT);

        if (q->full) {
            ngx_http_helix_metrics_db_pool_full(pg->hmcf,
                                              NGX_HTTP_HELIX_DB_WAIT_TIMEOUT);
        }

        ngx_http_helix_pg_deliver(q, NULL, "no database connection in time");
        ngx_http_helix_pg_free(q);
    }

    /* on a connection, the connection's timer has the deadline */
}


static void
ngx_http_helix_pg_query_cleanup(void *data)
{
    ngx_http_helix_pg_query_t  *q = data;

    /* the request is gone: its handler must not run */

    q->done = 1;
    q->cln = NULL;

    if (q->waiting) {
        ngx_queue_remove(&q->queue);
        q->waiting = 0;
        ngx_http_helix_pg.nwaiting--;
        ngx_http_helix_pg_gauge();
        ngx_http_helix_pg_free(q);
        return;
    }

    /*
     * On a connection: freed when the statement has run, or when the
     * connection's timer closes it at the query's deadline.
     */
}


/* connecting, a query on it: timeouts.database; idle: max_idle_time */

static void
ngx_http_helix_pg_conn_timer(ngx_event_t *ev)
{
    ngx_http_helix_pg_conn_t  *pc = ev->data;

    ngx_http_helix_pg_query_t  *q;

    if (pc->state == NGX_HTTP_HELIX_PG_CONNECTING) {
        ngx_http_helix_pg_close(pc, "could not connect in time");
        ngx_http_helix_pg_failed("connect", "timed out", 1);
        return;
    }

    if (pc->state == NGX_HTTP_HELIX_PG_CHECKING) {
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "helix: postgresql health check unanswered, "
                      "connection closed");
        ngx_http_helix_pg_close(pc, NULL);
        ngx_http_helix_pg_failed("health check", "no answer in time", 0);
        return;
    }

    if (pc->q) {
        /* libpq's cancel blocks: the connection goes, the query with it */

        q = pc->q;

        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "helix: postgresql query \"%s\" did not finish "
                      "within %M ms, its connection is closed%s",
                      q->stmt->name, ngx_http_helix_pg.hmcf->timeout_database,
                      q->done ? " (its owner had gone)" : "");

        q->timedout = 1;
        ngx_http_helix_pg_count(NGX_HTTP_HELIX_DB_TIMEOUT);

        ngx_http_helix_pg_close(pc, "the database query timed out");
        ngx_http_helix_pg_failed("query", "timed out", 0);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ev->log, 0,
                  "helix: idle postgresql connection closed after %M ms",
                  ngx_http_helix_pg.hmcf->database.max_idle_time);

    ngx_http_helix_pg_close(pc, NULL);
}


/* health_check: idle connections unused that long run "SELECT 1" */

static void
ngx_http_helix_pg_health(ngx_event_t *ev)
{
    ngx_queue_t               *qu, *next;
    ngx_msec_t                 every;
    ngx_http_helix_pg_t       *pg;
    ngx_http_helix_pg_conn_t  *pc;

    pg = &ngx_http_helix_pg;
    every = pg->hmcf->database.health_check;

    for (qu = ngx_queue_head(&pg->idle);
         qu != ngx_queue_sentinel(&pg->idle);
         qu = next)
    {
        next = ngx_queue_next(qu);
        pc = ngx_queue_data(qu, ngx_http_helix_pg_conn_t, queue);

        if (ngx_current_msec - pc->used < every) {
            continue;
        }

        ngx_queue_remove(qu);
        pc->idle = 0;
        pg->nidle--;

        if (pc->timer.timer_set) {
            ngx_del_timer(&pc->timer);
        }

        if (!PQsendQuery(pc->conn, "SELECT 1")) {
            ngx_http_helix_pg_lost(pc);
            continue;
        }

        pc->state = NGX_HTTP_HELIX_PG_CHECKING;
        ngx_add_timer(&pc->timer, pg->hmcf->timeout_database);
        ngx_http_helix_pg_flush(pc);
    }

    ngx_http_helix_pg_gauge();

    if (!ngx_exiting) {
        ngx_add_timer(&pg->health, every);
    }
}


/*
 * This worker's pool in its metrics row: busy is what is neither idle
 * nor connecting (a query, its prepare, a health check).
 */

static void
ngx_http_helix_pg_gauge(void)
{
    ngx_http_helix_pg_t  *pg;

    pg = &ngx_http_helix_pg;

    ngx_http_helix_metrics_db_pool(pg->open - pg->connecting - pg->nidle,
                                   pg->nidle, pg->connecting, pg->nwaiting);
}


static void
ngx_http_helix_pg_count(ngx_uint_t outcome)
{
    if (ngx_http_helix_pg.hmcf) {
        ngx_http_helix_metrics_db_query(ngx_http_helix_pg.hmcf, outcome);
    }
}


char *
ngx_http_helix_pg_value(PGresult *res, int row, int col)
{
    char  *v;

    if (res == NULL || row < 0 || row >= PQntuples(res)
        || col < 0 || col >= PQnfields(res))
    {
        return "";
    }

    v = PQgetvalue(res, row, col);

    return v ? v : "";
}
