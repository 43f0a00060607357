/*
 * Copyright (C) helix authors
 *
 * Redis Sentinel (redis.sentinel): where the master is.  Each worker asks
 * one Sentinel "SENTINEL get-master-addr-by-name" over hiredis's async API
 * on nginx events (the next Sentinel when one fails or says nothing
 * within redis.timeout; a whole round failed: again after
 * redis.breaker.backoff), and keeps one connection SUBSCRIBEd to
 * "+switch-master" so that a failover is heard of when it is done.  The
 * Redis pool asks again when it loses its master or a write is answered
 * READONLY.  Whatever a Sentinel says is checked: a numeric address and
 * a port, or it is not used.
 */


#include <hiredis/async.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_sentinel.h"


#define NGX_HTTP_HELIX_SENTINEL_ADDRLEN  64


typedef struct {
    redisAsyncContext               *ac;
    ngx_connection_t                *c;
} ngx_http_helix_sentinel_conn_t;


typedef struct {
    ngx_http_helix_redis_conf_t     *conf;
    ngx_http_helix_sentinel_pt       handler;
    ngx_log_t                       *log;
    ngx_uint_t                       next;      /* Sentinel asked next */
    ngx_uint_t                       tried;     /* in this round */
    ngx_uint_t                       again;     /* asked while asking */
    ngx_uint_t                       sub_next;
    ngx_uint_t                       exiting;
    ngx_event_t                      timeout;   /* of the question */
    ngx_event_t                      retry;     /* the next question */
    ngx_event_t                      resub;     /* subscribe again */
    ngx_http_helix_sentinel_conn_t   query;
    ngx_http_helix_sentinel_conn_t   sub;
} ngx_http_helix_sentinel_t;


static void ngx_http_helix_sentinel_query(void);
static void ngx_http_helix_sentinel_query_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_helix_sentinel_query_failed(const char *why);
static void ngx_http_helix_sentinel_subscribe(void);
static void ngx_http_helix_sentinel_sub_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static ngx_int_t ngx_http_helix_sentinel_master(u_char *addr, size_t len,
    u_char *port, size_t plen);
static redisAsyncContext *ngx_http_helix_sentinel_connect(
    ngx_http_helix_sentinel_conn_t *sc, ngx_http_helix_node_t *node);
static void ngx_http_helix_sentinel_timeout(ngx_event_t *ev);
static void ngx_http_helix_sentinel_retry(ngx_event_t *ev);
static void ngx_http_helix_sentinel_resub(ngx_event_t *ev);
static void ngx_http_helix_sentinel_add_read(void *privdata);
static void ngx_http_helix_sentinel_del_read(void *privdata);
static void ngx_http_helix_sentinel_add_write(void *privdata);
static void ngx_http_helix_sentinel_del_write(void *privdata);
static void ngx_http_helix_sentinel_cleanup(void *privdata);
static void ngx_http_helix_sentinel_read(ngx_event_t *ev);
static void ngx_http_helix_sentinel_write(ngx_event_t *ev);


static ngx_http_helix_sentinel_t  ngx_http_helix_sentinel;


ngx_int_t
ngx_http_helix_sentinel_init(ngx_cycle_t *cycle,
    ngx_http_helix_redis_conf_t *conf, ngx_http_helix_sentinel_pt handler)
{
    ngx_http_helix_sentinel_t  *st;

    st = &ngx_http_helix_sentinel;

    ngx_memzero(st, sizeof(ngx_http_helix_sentinel_t));

    st->conf = conf;
    st->handler = handler;
    st->log = cycle->log;

    /* workers start at different Sentinels: the questions spread */
    st->next = ngx_pid % conf->sentinel_nodes.nelts;
    st->sub_next = st->next + 1;

    /* data: the debug log reads an "fd" through it */
    st->timeout.handler = ngx_http_helix_sentinel_timeout;
    st->timeout.data = st;
    st->timeout.log = cycle->log;
    st->retry.handler = ngx_http_helix_sentinel_retry;
    st->retry.data = st;
    st->retry.log = cycle->log;
    st->retry.cancelable = 1;
    st->resub.handler = ngx_http_helix_sentinel_resub;
    st->resub.data = st;
    st->resub.log = cycle->log;
    st->resub.cancelable = 1;

    ngx_http_helix_sentinel_query();
    ngx_http_helix_sentinel_subscribe();

    return NGX_OK;
}


void
ngx_http_helix_sentinel_exit(void)
{
    ngx_http_helix_sentinel_t  *st;

    st = &ngx_http_helix_sentinel;

    if (st->conf == NULL) {
        return;
    }

    st->exiting = 1;

    if (st->timeout.timer_set) {
        ngx_del_timer(&st->timeout);
    }

    if (st->retry.timer_set) {
        ngx_del_timer(&st->retry);
    }

    if (st->resub.timer_set) {
        ngx_del_timer(&st->resub);
    }

    if (st->query.ac) {
        redisAsyncFree(st->query.ac);
    }

    if (st->sub.ac) {
        redisAsyncFree(st->sub.ac);
    }

    st->conf = NULL;
}


/* the master may have moved: ask (once, however many ask at a time) */

void
ngx_http_helix_sentinel_ask(void)
{
    ngx_http_helix_sentinel_t  *st;

    st = &ngx_http_helix_sentinel;

    if (st->conf == NULL || st->exiting) {
        return;
    }

    if (st->query.ac) {
        st->again = 1;
        return;
    }

    if (st->retry.timer_set) {
        /* a round failed: its backoff decides */
        return;
    }

    ngx_http_helix_sentinel_query();
}


static void
ngx_http_helix_sentinel_query(void)
{
    const char                   *argv[3];
    size_t                        lens[3];
    redisAsyncContext            *ac;
    ngx_http_helix_node_t  *node;
    ngx_http_helix_sentinel_t    *st;

    st = &ngx_http_helix_sentinel;

    node = st->conf->sentinel_nodes.elts;
    node += st->next % st->conf->sentinel_nodes.nelts;

    ac = ngx_http_helix_sentinel_connect(&st->query, node);
    if (ac == NULL) {
        ngx_http_helix_sentinel_query_failed("no connection");
        return;
    }

    argv[0] = "SENTINEL";
    lens[0] = sizeof("SENTINEL") - 1;
    argv[1] = "get-master-addr-by-name";
    lens[1] = sizeof("get-master-addr-by-name") - 1;
    argv[2] = (const char *) st->conf->sentinel_master.data;
    lens[2] = st->conf->sentinel_master.len;

    if (redisAsyncCommandArgv(ac, ngx_http_helix_sentinel_query_reply, NULL,
                              3, argv, lens)
        != REDIS_OK)
    {
        redisAsyncFree(ac);
        ngx_http_helix_sentinel_query_failed("not sent");
        return;
    }

    ngx_add_timer(&st->timeout, st->conf->timeout);
}


static void
ngx_http_helix_sentinel_query_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                 *reply = r;
    ngx_http_helix_sentinel_t  *st;

    st = &ngx_http_helix_sentinel;

    if (st->exiting) {
        return;
    }

    if (st->timeout.timer_set) {
        ngx_del_timer(&st->timeout);
    }

    if (reply == NULL) {
        /* the context is being freed: no connection, or the timeout */
        ngx_http_helix_sentinel_query_failed(ac->err ? ac->errstr
                                                     : "no answer");
        return;
    }

    /* the question is answered: the connection goes after this call */
    redisAsyncDisconnect(ac);

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[1]->type == REDIS_REPLY_STRING
        && ngx_http_helix_sentinel_master(
               (u_char *) reply->element[0]->str, reply->element[0]->len,
               (u_char *) reply->element[1]->str, reply->element[1]->len)
           == NGX_OK)
    {
        st->tried = 0;

        if (st->again) {
            st->again = 0;
            ngx_add_timer(&st->retry, 1);
        }

        return;
    }

    ngx_http_helix_sentinel_query_failed(
        reply->type == REDIS_REPLY_NIL ? "it knows no such master"
        : reply->type == REDIS_REPLY_ERROR ? reply->str : "a bad answer");
}


/* the next Sentinel at once; after a whole round, after the backoff */

static void
ngx_http_helix_sentinel_query_failed(const char *why)
{
    ngx_http_helix_node_t  *node;
    ngx_http_helix_sentinel_t    *st;

    st = &ngx_http_helix_sentinel;

    node = st->conf->sentinel_nodes.elts;
    node += st->next % st->conf->sentinel_nodes.nelts;

    ngx_log_error(NGX_LOG_WARN, st->log, 0,
                  "helix: redis sentinel %V did not say where master "
                  "\"%V\" is: %s", &node->name, &st->conf->sentinel_master,
                  why);

    st->next++;
    st->again = 0;

    if (st->retry.timer_set) {
        return;
    }

    if (++st->tried < st->conf->sentinel_nodes.nelts) {
        ngx_add_timer(&st->retry, 1);
        return;
    }

    st->tried = 0;
    ngx_add_timer(&st->retry, st->conf->breaker_backoff);
}


static void
ngx_http_helix_sentinel_retry(ngx_event_t *ev)
{
    ngx_http_helix_sentinel_t  *st;

    st = &ngx_http_helix_sentinel;

    if (st->conf == NULL || st->exiting) {
        return;
    }

    if (st->query.ac) {
        st->again = 1;
        return;
    }

    ngx_http_helix_sentinel_query();
}


static void
ngx_http_helix_sentinel_timeout(ngx_event_t *ev)
{
    ngx_http_helix_sentinel_t  *st;

    st = &ngx_http_helix_sentinel;

    /* its reply callback runs with NULL: the next Sentinel is asked */

    if (st->query.ac) {
        redisAsyncFree(st->query.ac);
    }
}


static void
ngx_http_helix_sentinel_subscribe(void)
{
    const char                   *argv[2];
    redisAsyncContext            *ac;
    ngx_http_helix_node_t  *node;
    ngx_http_helix_sentinel_t    *st;

    st = &ngx_http_helix_sentinel;

    node = st->conf->sentinel_nodes.elts;
    node += st->sub_next % st->conf->sentinel_nodes.nelts;

    ac = ngx_http_helix_sentinel_connect(&st->sub, node);

    argv[0] = "SUBSCRIBE";
    argv[1] = "+switch-master";

    if (ac != NULL
        && redisAsyncCommandArgv(ac, ngx_http_helix_sentinel_sub_reply, NULL,
                                 2, argv, NULL)
           == REDIS_OK)
    {
        return;
    }

    if (ac) {
        redisAsyncFree(ac);
    }

    st->sub_next++;
    ngx_add_timer(&st->resub, st->conf->breaker_backoff);
}


static void
ngx_http_helix_sentinel_sub_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    u_char                     *p, *last, *f[5];
    size_t                      flen[5];
    ngx_uint_t                  n;
    redisReply                 *reply = r, *msg;
    ngx_http_helix_sentinel_t  *st;

    st = &ngx_http_helix_sentinel;

    if (st->exiting) {
        return;
    }

    if (reply == NULL) {
        /* gone: another Sentinel, and a switch may have been missed */
        st->sub_next++;

        if (!st->resub.timer_set) {
            ngx_add_timer(&st->resub, st->conf->breaker_backoff);
        }

        ngx_http_helix_sentinel_ask();
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[0]->len != sizeof("message") - 1
        || ngx_strncmp(reply->element[0]->str, "message", 7) != 0
        || reply->element[2]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    /* "<master name> <old ip> <old port> <new ip> <new port>" */

    msg = reply->element[2];
    p = (u_char *) msg->str;
    last = p + msg->len;

    for (n = 0; n < 5 && p < last; n++) {
        f[n] = p;

        while (p < last && *p != ' ') {
            p++;
        }

        flen[n] = p - f[n];

        if (p < last) {
            p++;
        }
    }

    if (n != 5 || p != last
        || flen[0] != st->conf->sentinel_master.len
        || ngx_strncmp(f[0], st->conf->sentinel_master.data, flen[0]) != 0)
    {
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, st->log, 0,
                  "helix: redis sentinel: +switch-master \"%V\" to %*s:%*s",
                  &st->conf->sentinel_master, flen[3], f[3], flen[4], f[4]);

    (void) ngx_http_helix_sentinel_master(f[3], flen[3], f[4], flen[4]);
}


static void
ngx_http_helix_sentinel_resub(ngx_event_t *ev)
{
    ngx_http_helix_sentinel_t  *st;

    st = &ngx_http_helix_sentinel;

    if (st->conf == NULL || st->exiting) {
        return;
    }

    if (st->sub.ac) {
        ngx_add_timer(&st->resub, st->conf->breaker_backoff);
        return;
    }

    ngx_http_helix_sentinel_subscribe();
}


/* a Sentinel's answer is hostile too: numbers only, or nothing */

static ngx_int_t
ngx_http_helix_sentinel_master(u_char *addr, size_t len, u_char *port,
    size_t plen)
{
    ngx_int_t   p;
    u_char      a[NGX_HTTP_HELIX_SENTINEL_ADDRLEN];
#if (NGX_HAVE_INET6)
    u_char      in6[16];
#endif

    p = ngx_atoi(port, plen);

    if (len == 0 || len >= NGX_HTTP_HELIX_SENTINEL_ADDRLEN
        || p < 1 || p > 65535)
    {
        goto invalid;
    }

    if (ngx_inet_addr(addr, len) == INADDR_NONE
#if (NGX_HAVE_INET6)
        && ngx_inet6_addr(addr, len, in6) != NGX_OK
#endif
        )
    {
        goto invalid;
    }

    ngx_memcpy(a, addr, len);
    a[len] = '\0';

    ngx_http_helix_sentinel.handler(a, (ngx_uint_t) p);

    return NGX_OK;

invalid:

    ngx_log_error(NGX_LOG_WARN, ngx_http_helix_sentinel.log, 0,
                  "helix: redis sentinel gave a master address that is not "
                  "a numeric address and port, not used");

    return NGX_ERROR;
}


static redisAsyncContext *
ngx_http_helix_sentinel_connect(ngx_http_helix_sentinel_conn_t *sc,
    ngx_http_helix_node_t *node)
{
    const char                 *argv[2];
    ngx_connection_t           *c;
    redisAsyncContext          *ac;
    ngx_http_helix_sentinel_t  *st;

    st = &ngx_http_helix_sentinel;

    ac = redisAsyncConnect((char *) node->addr.data, (int) node->port);

    if (ac == NULL || ac->err) {
        if (ac) {
            redisAsyncFree(ac);
        }

        return NULL;
    }

    (void) redisEnableKeepAlive(&ac->c);

    c = ngx_get_connection(ac->c.fd, st->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        return NULL;
    }

    c->data = sc;
    c->read->handler = ngx_http_helix_sentinel_read;
    c->write->handler = ngx_http_helix_sentinel_write;
    c->read->log = c->log;
    c->write->log = c->log;

    sc->ac = ac;
    sc->c = c;

    ac->data = sc;
    ac->ev.data = sc;
    ac->ev.addRead = ngx_http_helix_sentinel_add_read;
    ac->ev.delRead = ngx_http_helix_sentinel_del_read;
    ac->ev.addWrite = ngx_http_helix_sentinel_add_write;
    ac->ev.delWrite = ngx_http_helix_sentinel_del_write;
    ac->ev.cleanup = ngx_http_helix_sentinel_cleanup;

    if (st->conf->sentinel_password.len) {
        argv[0] = "AUTH";
        argv[1] = (const char *) st->conf->sentinel_password.data;

        redisAsyncCommandArgv(ac, NULL, NULL, 2, argv, NULL);
    }

    return ac;
}


static void
ngx_http_helix_sentinel_add_read(void *privdata)
{
    ngx_http_helix_sentinel_conn_t  *sc = privdata;

    if (!sc->c->read->active) {
        ngx_add_event(sc->c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_helix_sentinel_del_read(void *privdata)
{
    ngx_http_helix_sentinel_conn_t  *sc = privdata;

    if (sc->c->read->active && !ngx_http_helix_sentinel.exiting) {
        ngx_del_event(sc->c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_helix_sentinel_add_write(void *privdata)
{
    ngx_http_helix_sentinel_conn_t  *sc = privdata;

    if (!sc->c->write->active) {
        ngx_add_event(sc->c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_helix_sentinel_del_write(void *privdata)
{
    ngx_http_helix_sentinel_conn_t  *sc = privdata;

    if (sc->c->write->active && !ngx_http_helix_sentinel.exiting) {
        ngx_del_event(sc->c->write, NGX_WRITE_EVENT, 0);
    }
}


/* hiredis frees the context: nginx stops watching, hiredis closes */

static void
ngx_http_helix_sentinel_cleanup(void *privdata)
{
    ngx_http_helix_sentinel_conn_t  *sc = privdata;

    if (sc->c == NULL) {
        return;
    }

    ngx_http_helix_sentinel_del_read(sc);
    ngx_http_helix_sentinel_del_write(sc);

    sc->c->fd = (ngx_socket_t) -1;
    ngx_free_connection(sc->c);

    sc->c = NULL;
    sc->ac = NULL;
}


static void
ngx_http_helix_sentinel_read(ngx_event_t *ev)
{
    ngx_connection_t                *c = ev->data;
    ngx_http_helix_sentinel_conn_t  *sc = c->data;

    redisAsyncHandleRead(sc->ac);
}


static void
ngx_http_helix_sentinel_write(ngx_event_t *ev)
{
    ngx_connection_t                *c = ev->data;
    ngx_http_helix_sentinel_conn_t  *sc = c->data;

    redisAsyncHandleWrite(sc->ac);
}
