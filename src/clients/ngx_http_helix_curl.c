/*
 * Copyright (C) helix authors
 *
 * HTTP calls made without a client request (cache warming, webhooks,
 * background tasks): libcurl's multi_socket API driven by nginx events
 * and one nginx timer, per worker.  curl owns its sockets: nginx only
 * watches them, through connections that are freed, never closed, here.
 *
 * An answer is kept up to the call's max_answer, in a buffer that
 * doubles; past it the call ends, decided by the status already read.
 * A guarded call (a webhook: the URL is a client's) connects only to
 * public addresses, checked on the address curl is about to connect to,
 * so a name that resolves elsewhere the second time gains nothing.
 */


#include <curl/curl.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_curl.h"


/* header lines kept: enough for any sane answer's headers */
#define NGX_HTTP_HELIX_FETCH_HEAD_MAX  32768

#define NGX_HTTP_HELIX_FETCH_URL_MAX   2048


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
static curl_socket_t ngx_http_helix_curl_open(void *data,
    curlsocktype purpose, struct curl_sockaddr *address);
static ngx_uint_t ngx_http_helix_curl_public(struct sockaddr *sa,
    ngx_array_t *allow);
static ngx_uint_t ngx_http_helix_curl_v4_in_v6(u_char *p, uint32_t *v4);
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


/*
 * NULL when url may be fetched (http or https, printable ASCII, a host
 * and no user name or password, not overlong); else what is wrong.
 */

const char *
ngx_http_helix_fetch_url_check(ngx_str_t *url)
{
    u_char  *p, *host, *last;

    if (url->len > NGX_HTTP_HELIX_FETCH_URL_MAX) {
        return "is longer than 2048 characters";
    }

    last = url->data + url->len;

    for (p = url->data; p < last; p++) {
        if (*p <= ' ' || *p >= 0x7f) {
            return "must not hold spaces, control or non-ASCII characters";
        }
    }

    if (url->len > 7
        && ngx_strncasecmp(url->data, (u_char *) "http://", 7) == 0)
    {
        host = url->data + 7;

    } else if (url->len > 8
               && ngx_strncasecmp(url->data, (u_char *) "https://", 8) == 0)
    {
        host = url->data + 8;

    } else {
        return "must be an http:// or https:// URL";
    }

    for (p = host; p < last; p++) {
        if (*p == '/' || *p == '?' || *p == '#') {
            break;
        }

        if (*p == '@') {
            return "must not hold a user name or password";
        }
    }

    if (p == host) {
        return "has no host";
    }

    return NULL;
}


/* url for a log line: control and non-ASCII bytes and "\" as \xNN */

u_char *
ngx_http_helix_fetch_url_log(ngx_pool_t *pool, ngx_str_t *url)
{
    u_char         *p, *d, *last, *out;
    static u_char   hex[] = "0123456789ABCDEF";

    out = ngx_pnalloc(pool, url->len * 4 + 1);
    if (out == NULL) {
        return (u_char *) "(no memory)";
    }

    last = url->data + url->len;

    for (p = url->data, d = out; p < last; p++) {
        if (*p < ' ' || *p >= 0x7f || *p == '\\') {
            *d++ = '\\';
            *d++ = 'x';
            *d++ = hex[*p >> 4];
            *d++ = hex[*p & 0xf];
            continue;
        }

        *d++ = *p;
    }

    *d = '\0';

    return out;
}


/* starts a fetch; its handler runs once, when it has ended either way */

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

    /* http(s) only, one hop: a redirect is an answer, never followed */
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);

    if (f->max_answer) {
        /* an announced length past the cap ends the call at once */
        curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                         (curl_off_t) f->max_answer);
    }

    if (f->guard) {
        curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION,
                         ngx_http_helix_curl_open);
        curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, f);

        /* no proxy from the environment: it would be the address checked */
        curl_easy_setopt(easy, CURLOPT_PROXY, "");
    }

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


/*
 * Appends to a buffer that doubles, up to max bytes; past them the call
 * ends (a short count is CURLE_WRITE_ERROR to curl) with f->cut set.
 */

static size_t
ngx_http_helix_curl_append(ngx_http_helix_fetch_t *f, ngx_str_t *s,
    size_t *size, size_t max, char *ptr, size_t len)
{
    size_t   n, keep;
    u_char  *p;

    keep = ngx_min(len, max - s->len);

    if (s->len + keep + 1 > *size) {
        n = ngx_max(*size, 1024);

        while (n < s->len + keep + 1) {
            n *= 2;
        }

        n = ngx_min(n, max + 1);

        p = ngx_pnalloc(f->pool, n);
        if (p == NULL) {
            return 0;
        }

        if (s->len) {
            ngx_memcpy(p, s->data, s->len);
        }

        if (*size) {
            /* a large block goes back at once; a small one stays */
            (void) ngx_pfree(f->pool, s->data);
        }

        s->data = p;
        *size = n;
    }

    ngx_memcpy(s->data + s->len, ptr, keep);
    s->len += keep;
    s->data[s->len] = '\0';

    if (keep < len) {
        f->cut = 1;
        return 0;
    }

    return len;
}


static size_t
ngx_http_helix_curl_write(char *ptr, size_t size, size_t nmemb,
    void *userdata)
{
    ngx_http_helix_fetch_t  *f = userdata;

    return ngx_http_helix_curl_append(f, &f->answer, &f->answer_size,
                                      f->max_answer, ptr, size * nmemb);
}


static size_t
ngx_http_helix_curl_header(char *ptr, size_t size, size_t nmemb,
    void *userdata)
{
    ngx_http_helix_fetch_t  *f = userdata;

    return ngx_http_helix_curl_append(f, &f->answer_head, &f->head_size,
                                      NGX_HTTP_HELIX_FETCH_HEAD_MAX, ptr,
                                      size * nmemb);
}


/* a guarded call's socket: only for a public address, or one allowed */

static curl_socket_t
ngx_http_helix_curl_open(void *data, curlsocktype purpose,
    struct curl_sockaddr *address)
{
    ngx_http_helix_fetch_t  *f = data;

    u_char  text[NGX_SOCKADDR_STRLEN];

    if (purpose == CURLSOCKTYPE_IPCXN
        && ngx_http_helix_curl_public(&address->addr, f->allow))
    {
        return socket(address->family, address->socktype,
                      address->protocol);
    }

    /* the first address refused is the one told */

    if (f->refused.len == 0) {
        f->refused.len = ngx_sock_ntop(&address->addr, address->addrlen,
                                       text, NGX_SOCKADDR_STRLEN, 0);
        f->refused.data = ngx_pnalloc(f->pool, f->refused.len);

        if (f->refused.data == NULL) {
            f->refused.len = 0;

        } else {
            ngx_memcpy(f->refused.data, text, f->refused.len);
        }

        if (f->refused.len == 0) {
            ngx_str_set(&f->refused, "?");
        }
    }

    return CURL_SOCKET_BAD;
}


/* IPv4 ranges that are not public unicast (host order) */

static const struct {
    uint32_t                     net;
    uint32_t                     mask;
} ngx_http_helix_curl_v4_special[] = {
    { 0x00000000, 0xff000000 },   /* 0/8: "this network", 0.0.0.0 */
    { 0x0a000000, 0xff000000 },   /* 10/8 */
    { 0x64400000, 0xffc00000 },   /* 100.64/10: carrier-grade NAT */
    { 0x7f000000, 0xff000000 },   /* 127/8: loopback */
    { 0xa9fe0000, 0xffff0000 },   /* 169.254/16: link-local, metadata */
    { 0xac100000, 0xfff00000 },   /* 172.16/12 */
    { 0xc0000000, 0xffffff00 },   /* 192.0.0/24: IETF assignments */
    { 0xc0000200, 0xffffff00 },   /* 192.0.2/24: documentation */
    { 0xc0586300, 0xffffff00 },   /* 192.88.99/24: 6to4 relays */
    { 0xc0a80000, 0xffff0000 },   /* 192.168/16 */
    { 0xc6120000, 0xfffe0000 },   /* 198.18/15: benchmarking */
    { 0xc6336400, 0xffffff00 },   /* 198.51.100/24: documentation */
    { 0xcb007100, 0xffffff00 },   /* 203.0.113/24: documentation */
    { 0xe0000000, 0xf0000000 },   /* 224/4: multicast */
    { 0xf0000000, 0xf0000000 }    /* 240/4: reserved, broadcast */
};


/*
 * The IPv4 address an IPv6 one stands for, if any: ::ffff:a.b.c.d
 * (mapped), ::a.b.c.d (compatible; :: and ::1 fall here too),
 * ::ffff:0:a.b.c.d (translated), 64:ff9b::a.b.c.d (NAT64) and
 * 2002:aabb:ccdd::/48 (6to4).
 */

static ngx_uint_t
ngx_http_helix_curl_v4_in_v6(u_char *p, uint32_t *v4)
{
    static const u_char  zero[12];
    static const u_char  nat64[12] = { 0, 0x64, 0xff, 0x9b };

    if (p[0] == 0x20 && p[1] == 0x02) {
        *v4 = (uint32_t) p[2] << 24 | p[3] << 16 | p[4] << 8 | p[5];
        return 1;
    }

    if ((ngx_memcmp(p, zero, 10) == 0
         && ((p[10] == 0 && p[11] == 0) || (p[10] == 0xff && p[11] == 0xff)))
        || (ngx_memcmp(p, zero, 8) == 0 && p[8] == 0xff && p[9] == 0xff
            && p[10] == 0 && p[11] == 0)
        || ngx_memcmp(p, nat64, 12) == 0)
    {
        *v4 = (uint32_t) p[12] << 24 | p[13] << 16 | p[14] << 8 | p[15];
        return 1;
    }

    return 0;
}


/*
 * Whether a guarded call may connect to sa: a public unicast address,
 * or one in allow.  IPv4 inside IPv6 (mapped, compatible, translated,
 * NAT64, 6to4) is judged as that IPv4 address.
 */

static ngx_uint_t
ngx_http_helix_curl_public(struct sockaddr *sa, ngx_array_t *allow)
{
    u_char      *p;
    uint32_t     v4;
    ngx_uint_t   i, j, has4;
    ngx_cidr_t  *cidr;

    has4 = 0;
    v4 = 0;
    p = NULL;

    switch (sa->sa_family) {

    case AF_INET:
        v4 = ntohl(((struct sockaddr_in *) sa)->sin_addr.s_addr);
        has4 = 1;
        break;

    case AF_INET6:
        p = ((struct sockaddr_in6 *) sa)->sin6_addr.s6_addr;
        has4 = ngx_http_helix_curl_v4_in_v6(p, &v4);
        break;

    default:
        return 0;
    }

    if (allow) {
        cidr = allow->elts;

        for (i = 0; i < allow->nelts; i++) {

            if (cidr[i].family == AF_INET && has4) {
                if ((htonl(v4) & cidr[i].u.in.mask) == cidr[i].u.in.addr) {
                    return 1;
                }

                continue;
            }

            if (cidr[i].family == AF_INET6 && p) {
                for (j = 0; j < 16; j++) {
                    if ((p[j] & cidr[i].u.in6.mask.s6_addr[j])
                        != cidr[i].u.in6.addr.s6_addr[j])
                    {
                        break;
                    }
                }

                if (j == 16) {
                    return 1;
                }
            }
        }
    }

    if (has4) {
        for (i = 0; i < sizeof(ngx_http_helix_curl_v4_special)
                        / sizeof(ngx_http_helix_curl_v4_special[0]); i++)
        {
            if ((v4 & ngx_http_helix_curl_v4_special[i].mask)
                == ngx_http_helix_curl_v4_special[i].net)
            {
                return 0;
            }
        }

        return 1;
    }

    /*
     * IPv6: global unicast (2000::/3) only, and there not the special
     * 2001::/23 (Teredo, benchmarking, ORCHID) nor 2001:db8::/32 and
     * 3fff::/20 (documentation); unique local, link-local, multicast,
     * loopback and the rest lie outside 2000::/3
     */

    if ((p[0] & 0xe0) != 0x20
        || (p[0] == 0x20 && p[1] == 0x01 && p[2] < 0x02)
        || (p[0] == 0x20 && p[1] == 0x01 && p[2] == 0x0d && p[3] == 0xb8)
        || (p[0] == 0x3f && p[1] == 0xff && p[2] < 0x10))
    {
        return 0;
    }

    return 1;
}


/* curl tells which of its sockets to watch, and for what */

static int
ngx_http_helix_curl_socket(CURL *easy, curl_socket_t s, int what,
    void *userp, void *socketp)
{
    ngx_connection_t  *c = socketp;

    ngx_uint_t  flags;

    if (what == CURL_POLL_REMOVE) {
        if (c) {
            /*
             * at exit the event loop is gone: nothing to unwatch; a
             * socket curl has closed already (it may say so after the
             * close) the kernel has unwatched
             */

            flags = (fcntl(s, F_GETFD) == -1 && ngx_errno == NGX_EBADF)
                    ? NGX_CLOSE_EVENT : 0;

            if (c->read->active && !ngx_http_helix_curl.exiting) {
                ngx_del_event(c->read, NGX_READ_EVENT, flags);
            }

            if (c->write->active && !ngx_http_helix_curl.exiting) {
                ngx_del_event(c->write, NGX_WRITE_EVENT, flags);
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
    CURLcode                 rc;
    ngx_http_helix_fetch_t  *f;

    while ((msg = curl_multi_info_read(ngx_http_helix_curl.multi, &left))) {

        if (msg->msg != CURLMSG_DONE) {
            continue;
        }

        easy = msg->easy_handle;
        f = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &f);

        status = 0;
        rc = msg->data.result;

        if (f && rc == CURLE_FILESIZE_EXCEEDED) {
            f->cut = 1;
        }

        if (f && f->cut
            && (rc == CURLE_WRITE_ERROR || rc == CURLE_FILESIZE_EXCEEDED))
        {
            /* a long answer ends the call, not as a failure: its status */
            rc = CURLE_OK;
        }

        if (rc == CURLE_OK) {
            curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);

        } else if (f && f->refused.len && rc == CURLE_COULDNT_CONNECT) {
            ngx_str_set(&f->error, "address refused");

        } else if (f) {
            f->error.data = (u_char *) curl_easy_strerror(rc);
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
