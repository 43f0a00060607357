/*
 * Copyright (C) helix authors
 *
 * HTTP calls made without a client request (cache warming, webhooks,
 * background tasks): libcurl's multi_socket API driven by nginx events
 * and one nginx timer, per worker.  curl owns its sockets: nginx only
 * watches them, through connections that are freed, never closed, here.
 */


#include <curl/curl.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_curl.h"


typedef struct {
    CURLM                       *multi;
    ngx_event_t                  timer;
    ngx_log_t                   *log;
    ngx_uint_t                   running;
    ngx_uint_t                   exiting;
} ngx_http_helix_curl_t;


static int ngx_http_helix_curl_socket(CURL *easy, curl_socket_t s, int what,
    void *userp, void *socketp);
static int ngx_http_helix_curl_timer(CURLM *multi, long timeout_ms,
    void *userp);
static void ngx_http_helix_curl_event(ngx_event_t *ev);
static void ngx_http_helix_curl_timeout(ngx_event_t *ev);
static void ngx_http_helix_curl_action(curl_socket_t s, int mask);
static void ngx_http_helix_curl_done(void);
static size_t ngx_http_helix_curl_write(char *ptr, size_t size,
    size_t nmemb, void *userdata);
static size_t ngx_http_helix_curl_header(char *ptr, size_t size,
    size_t nmemb, void *userdata);
static void ngx_http_helix_fetch_cleanup(void *data);


static ngx_http_helix_curl_t  ngx_http_helix_curl;


ngx_int_t
ngx_http_helix_curl_init_process(ngx_cycle_t *cycle)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "helix: curl_global_init() failed");
        return NGX_ERROR;
    }

    ngx_http_helix_curl.multi = curl_multi_init();
    if (ngx_http_helix_curl.multi == NULL) {
        return NGX_ERROR;
    }

    ngx_http_helix_curl.log = cycle->log;
    ngx_http_helix_curl.timer.handler = ngx_http_helix_curl_timeout;
    ngx_http_helix_curl.timer.log = cycle->log;
    ngx_http_helix_curl.timer.data = &ngx_http_helix_curl;
    ngx_http_helix_curl.timer.cancelable = 1;

    curl_multi_setopt(ngx_http_helix_curl.multi, CURLMOPT_SOCKETFUNCTION,
                      ngx_http_helix_curl_socket);
    curl_multi_setopt(ngx_http_helix_curl.multi, CURLMOPT_TIMERFUNCTION,
                      ngx_http_helix_curl_timer);

    return NGX_OK;
}


void
ngx_http_helix_curl_exiting(void)
{
    ngx_http_helix_curl.exiting = 1;
}


void
ngx_http_helix_curl_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_helix_curl.exiting = 1;

    if (ngx_http_helix_curl.multi == NULL) {
        return;
    }

    if (ngx_http_helix_curl.timer.timer_set) {
        ngx_del_timer(&ngx_http_helix_curl.timer);
    }

    curl_multi_cleanup(ngx_http_helix_curl.multi);
    ngx_http_helix_curl.multi = NULL;

    curl_global_cleanup();
}


/* starts a fetch; its handler runs once, when it has ended either way */

/* "name: value", a line of f->headers, from the pool */

char *
ngx_http_helix_fetch_header(ngx_pool_t *pool, const char *name,
    ngx_str_t *value)
{
    size_t   len;
    u_char  *p;

    len = ngx_strlen(name);

    p = ngx_pnalloc(pool, len + sizeof(": ") - 1 + value->len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_sprintf(p, "%s: %V%Z", name, value);

    return (char *) p;
}


ngx_int_t
ngx_http_helix_fetch(ngx_http_helix_fetch_t *f)
{
    CURL                *easy;
    char               **h;
    ngx_uint_t           i;
    struct curl_slist   *list, *l;
    ngx_pool_cleanup_t  *cln;

    if (ngx_http_helix_curl.multi == NULL) {
        return NGX_ERROR;
    }

    easy = curl_easy_init();
    if (easy == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(f->pool, 0);
    if (cln == NULL) {
        curl_easy_cleanup(easy);
        return NGX_ERROR;
    }

    f->easy = easy;
    cln->handler = ngx_http_helix_fetch_cleanup;
    cln->data = f;

    list = NULL;

    if (f->headers) {
        h = f->headers->elts;

        for (i = 0; i < f->headers->nelts; i++) {
            l = curl_slist_append(list, h[i]);
            if (l == NULL) {
                curl_slist_free_all(list);
                return NGX_ERROR;
            }

            list = l;
        }
    }

    f->slist = list;

    curl_easy_setopt(easy, CURLOPT_URL, (char *) f->url.data);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, f);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, ngx_http_helix_curl_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION,
                     ngx_http_helix_curl_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, f);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) f->timeout);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);

    if (list) {
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
    }

    if (f->body.len) {
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, (char *) f->body.data);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) f->body.len);
    }

    if (curl_multi_add_handle(ngx_http_helix_curl.multi, easy) != CURLM_OK) {
        return NGX_ERROR;
    }

    ngx_http_helix_curl.running++;

    return NGX_OK;
}


static void
ngx_http_helix_fetch_cleanup(void *data)
{
    ngx_http_helix_fetch_t *f = data;

    if (f->easy) {
        if (ngx_http_helix_curl.multi) {
            curl_multi_remove_handle(ngx_http_helix_curl.multi, f->easy);
        }

        curl_easy_cleanup(f->easy);
        f->easy = NULL;
    }

    if (f->slist) {
        curl_slist_free_all(f->slist);
        f->slist = NULL;
    }
}


static size_t
ngx_http_helix_curl_append(ngx_http_helix_fetch_t *f, ngx_str_t *s,
    char *ptr, size_t len)
{
    u_char  *p;

    p = ngx_pnalloc(f->pool, s->len + len + 1);
    if (p == NULL) {
        return 0;
    }

    if (s->len) {
        ngx_memcpy(p, s->data, s->len);
    }

    ngx_memcpy(p + s->len, ptr, len);
    s->data = p;
    s->len += len;
    p[s->len] = '\0';

    return len;
}


static size_t
ngx_http_helix_curl_write(char *ptr, size_t size, size_t nmemb,
    void *userdata)
{
    return ngx_http_helix_curl_append(userdata,
                                      &((ngx_http_helix_fetch_t *)
                                        userdata)->answer,
                                      ptr, size * nmemb);
}


static size_t
ngx_http_helix_curl_header(char *ptr, size_t size, size_t nmemb,
    void *userdata)
{
    return ngx_http_helix_curl_append(userdata,
                                      &((ngx_http_helix_fetch_t *)
                                        userdata)->answer_head,
                                      ptr, size * nmemb);
}


/* curl tells which of its sockets to watch, and for what */

static int
ngx_http_helix_curl_socket(CURL *easy, curl_socket_t s, int what,
    void *userp, void *socketp)
{
    ngx_connection_t  *c = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (c) {
            /* at exit the event loop is gone: nothing to unwatch */

            if (c->read->active && !ngx_http_helix_curl.exiting) {
                ngx_del_event(c->read, NGX_READ_EVENT, 0);
            }

            if (c->write->active && !ngx_http_helix_curl.exiting) {
                ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
            }

            /* the socket is curl's to close */
            c->fd = (ngx_socket_t) -1;
            ngx_free_connection(c);
            curl_multi_assign(ngx_http_helix_curl.multi, s, NULL);
        }

        return 0;
    }

    if (c == NULL) {
        c = ngx_get_connection(s, ngx_http_helix_curl.log);
        if (c == NULL) {
            return -1;
        }

        c->read->handler = ngx_http_helix_curl_event;
        c->write->handler = ngx_http_helix_curl_event;
        c->read->log = c->log;
        c->write->log = c->log;
        c->data = &ngx_http_helix_curl;

        curl_multi_assign(ngx_http_helix_curl.multi, s, c);
    }

    /* level-triggered: curl need not read a socket dry on each call */

    if ((what & CURL_POLL_IN) && !c->read->active) {
        ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);

    } else if (!(what & CURL_POLL_IN) && c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }

    if ((what & CURL_POLL_OUT) && !c->write->active) {
        ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);

    } else if (!(what & CURL_POLL_OUT) && c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }

    return 0;
}


static int
ngx_http_helix_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    ngx_event_t  *ev = &ngx_http_helix_curl.timer;

    if (timeout_ms < 0) {
        if (ev->timer_set) {
            ngx_del_timer(ev);
        }

        return 0;
    }

    ngx_add_timer(ev, timeout_ms ? (ngx_msec_t) timeout_ms : 1);

    return 0;
}


static void
ngx_http_helix_curl_event(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    ngx_http_helix_curl_action(c->fd, ev->write ? CURL_CSELECT_OUT
                                                : CURL_CSELECT_IN);
}


static void
ngx_http_helix_curl_timeout(ngx_event_t *ev)
{
    ngx_http_helix_curl_action(CURL_SOCKET_TIMEOUT, 0);
}


static void
ngx_http_helix_curl_action(curl_socket_t s, int mask)
{
    int  running;

    if (ngx_http_helix_curl.multi == NULL) {
        return;
    }

    curl_multi_socket_action(ngx_http_helix_curl.multi, s, mask, &running);

    ngx_http_helix_curl_done();
}


static void
ngx_http_helix_curl_done(void)
{
    int                      left;
    long                     status;
    CURL                    *easy;
    CURLMsg                 *msg;
    ngx_http_helix_fetch_t  *f;

    while ((msg = curl_multi_info_read(ngx_http_helix_curl.multi, &left))) {

        if (msg->msg != CURLMSG_DONE) {
            continue;
        }

        easy = msg->easy_handle;
        f = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &f);

        status = 0;

        if (msg->data.result == CURLE_OK) {
            curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);

        } else if (f) {
            f->error.data = (u_char *) curl_easy_strerror(msg->data.result);
            f->error.len = ngx_strlen(f->error.data);
        }

        curl_multi_remove_handle(ngx_http_helix_curl.multi, easy);
        curl_easy_cleanup(easy);
        ngx_http_helix_curl.running--;

        if (f == NULL) {
            continue;
        }

        f->easy = NULL;
        f->status = status;

        if (f->handler) {
            f->handler(f);
        }
    }
}
