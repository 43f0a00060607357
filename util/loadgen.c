/*
 * loadgen: a constant-rate HTTP/1.1 load generator for "make bench".
 *
 * Debian has wrk (closed loop: it measures throughput, and its latencies
 * leave out the requests it did not send while the server was slow) but
 * neither wrk2, vegeta, oha nor k6.  This is the part of wrk2 the bench
 * needs: C connections, each sending at R/C requests per second on a
 * fixed schedule; a request that could not go at its time (the connection
 * still waits for the previous answer) goes as soon as it can, and its
 * latency counts from the time it should have gone (no "coordinated
 * omission").  -R 0 is a closed loop: each connection sends again as soon
 * as it has the answer (at -c 1, the latency of one request at a time).
 *
 *   loadgen [-c conns] [-R rate] [-d seconds] [-n requests] [-t timeout]
 *           [-m method] [-H 'Name: value']... [-b body | -B file]
 *           [--ready FILE] http://127.0.0.1:PORT/path
 *
 * Two latencies per answer: to the first byte of the body ("ttfb", for a
 * stream the first frame) and to the end of the answer.  Histograms are
 * log-linear (64 buckets per power of two of nanoseconds: 1.6% at worst,
 * as HdrHistogram with two significant digits).  --ready FILE creates
 * FILE once C answers have started (C streams held open).  -n caps the
 * requests sent (-c 1000 -n 1000: one request per connection, at once).
 * "%SEQ%" in the body becomes the request's number (8 digits), so that
 * each request is a different one (no cache hit, no single flight).
 *
 * Output: one line of name=value pairs (microseconds), e.g.
 *   requests=5000 errors=0 timeouts=0 s2xx=5000 s503=0 sother=0
 *   rate=999.8 p50=91.2 p90=... p99=... p999=... max=...
 *   ttfb_p50=... ttfb_p99=...
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#define SUB      64                 /* buckets per power of two */
#define SUBBITS  6
#define NBUCKETS (48 * SUB)
#define HDRMAX   16384


typedef struct {
    uint64_t  count[NBUCKETS];
    uint64_t  n;
    uint64_t  max;
} hist_t;


enum { C_IDLE, C_SENDING, C_READING };
enum { B_NONE, B_LENGTH, B_CHUNKED, B_EOF };
enum { K_SIZE, K_EXT, K_DATA, K_DATA_END, K_TRAILER };


typedef struct {
    int       fd;
    int       connected;
    int       state;
    char     *req;                  /* its copy of the request (%SEQ%) */
    uint64_t  next;                 /* when its next request should go */
    uint64_t  intended;             /* when the current one should have */
    size_t    wpos;
    char     *hbuf;
    size_t    hlen;
    int       in_body;
    int       status;
    int       close;
    int       body;
    uint64_t  left;                 /* B_LENGTH / K_DATA: bytes to come */
    int       kstate;
    uint64_t  ksize;
    int       kline;
    int       first;                /* first body byte seen */
} conn_t;


static hist_t     h_total, h_ttfb;
static conn_t    *conns;
static int        nconns = 1, ep, tfd;
static double     rate;
static uint64_t   limit, sent, done_n, errors, timeouts, s2xx, s503, sother;
static uint64_t   started_n, ready_n, t_last;
static char      *req;
static size_t     req_len, seq_at;
static struct sockaddr_in  addr;
static const char *ready_file;


static uint64_t
now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + ts.tv_nsec;
}


static void
hist_add(hist_t *h, uint64_t v)
{
    int  e, i;

    if (v < SUB) {
        i = (int) v;

    } else {
        e = 63 - __builtin_clzll(v);
        i = (e - SUBBITS + 1) * SUB + (int) ((v >> (e - SUBBITS)) & (SUB - 1));
        if (i >= NBUCKETS) {
            i = NBUCKETS - 1;
        }
    }

    h->count[i]++;
    h->n++;
    if (v > h->max) {
        h->max = v;
    }
}


/* the middle of bucket i, in ns */
static double
hist_value(int i)
{
    int       e;
    uint64_t  lo;

    if (i < SUB) {
        return i;
    }

    e = i / SUB - 1 + SUBBITS;
    lo = ((uint64_t) (SUB + i % SUB)) << (e - SUBBITS);
    return lo + (double) (1ull << (e - SUBBITS)) / 2;
}


static double
hist_pct(hist_t *h, double p)
{
    int       i;
    uint64_t  want, seen;

    if (h->n == 0) {
        return 0;
    }

    want = (uint64_t) (h->n * p / 100.0 + 0.5);
    if (want < 1) {
        want = 1;
    }

    seen = 0;
    for (i = 0; i < NBUCKETS; i++) {
        seen += h->count[i];
        if (seen >= want) {
            return hist_value(i) > h->max ? h->max : hist_value(i);
        }
    }

    return h->max;
}


static void
conn_close(conn_t *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
    c->connected = 0;
}


static int
conn_open(conn_t *c)
{
    int                 fd, one = 1;
    struct epoll_event  ev;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    if (connect(fd, (struct sockaddr *) &addr, sizeof(addr)) < 0
        && errno != EINPROGRESS)
    {
        close(fd);
        return -1;
    }

    ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        return -1;
    }

    c->fd = fd;
    c->connected = 0;
    return 0;
}


static void
conn_fail(conn_t *c)
{
    errors++;
    done_n++;
    conn_close(c);
    c->state = C_IDLE;
}


static void
conn_write(conn_t *c)
{
    ssize_t  n;

    while (c->wpos < req_len) {
        n = send(c->fd, c->req + c->wpos, req_len - c->wpos, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                return;
            }
            conn_fail(c);
            return;
        }
        c->wpos += n;
    }

    c->state = C_READING;
    c->hlen = 0;
    c->in_body = 0;
    c->first = 0;
}


static void
request_start(conn_t *c, uint64_t intended)
{
    if (seq_at) {
        char  d[16];

        snprintf(d, sizeof(d), "%08llu", (unsigned long long) sent % 100000000);
        memcpy(c->req + seq_at, d, 8);
    }

    sent++;
    c->intended = intended;
    c->wpos = 0;
    c->state = C_SENDING;

    if (c->fd < 0 && conn_open(c) < 0) {
        conn_fail(c);
        return;
    }

    if (c->connected) {
        conn_write(c);
    }
}


static void
first_byte(conn_t *c, uint64_t t)
{
    FILE  *f;

    if (c->first) {
        return;
    }
    c->first = 1;
    hist_add(&h_ttfb, t - c->intended);

    if (ready_file && ++started_n == ready_n) {
        f = fopen(ready_file, "w");
        if (f) {
            fprintf(f, "%llu\n", (unsigned long long) started_n);
            fclose(f);
        }
    }
}


static void
response_done(conn_t *c, uint64_t t)
{
    first_byte(c, t);
    hist_add(&h_total, t - c->intended);
    done_n++;
    t_last = t;

    if (c->status >= 200 && c->status < 300) {
        s2xx++;
    } else if (c->status == 503) {
        s503++;
    } else {
        sother++;
    }

    if (c->close) {
        conn_close(c);
    }
    c->state = C_IDLE;
}


/* the header block is complete in c->hbuf[0..len) */
static int
parse_header(conn_t *c, size_t len)
{
    char    *p, *end, *line, *eol;
    size_t   n;

    p = c->hbuf;
    end = c->hbuf + len;

    if (len < 12 || strncmp(p, "HTTP/1.", 7) != 0) {
        return -1;
    }
    c->status = atoi(p + 9);
    c->close = (p[7] == '0');
    c->body = B_EOF;

    for (line = memchr(p, '\n', len) + 1; line < end; line = eol + 1) {
        eol = memchr(line, '\n', end - line);
        if (eol == NULL) {
            break;
        }
        n = eol - line;

        if (n > 15 && strncasecmp(line, "content-length:", 15) == 0) {
            c->body = B_LENGTH;
            c->left = strtoull(line + 15, NULL, 10);

        } else if (n > 18
                   && strncasecmp(line, "transfer-encoding:", 18) == 0
                   && memmem(line, n, "chunked", 7))
        {
            c->body = B_CHUNKED;
            c->kstate = K_SIZE;
            c->ksize = 0;

        } else if (n > 11 && strncasecmp(line, "connection:", 11) == 0) {
            if (memmem(line, n, "close", 5)) {
                c->close = 1;
            } else if (memmem(line, n, "keep-alive", 10)) {
                c->close = 0;
            }
        }
    }

    if (c->status == 204 || c->status == 304 || c->status / 100 == 1
        || (c->body == B_LENGTH && c->left == 0))
    {
        c->body = B_NONE;
    }

    if (c->body == B_EOF) {
        c->close = 1;
    }

    return 0;
}


/* body bytes; returns 1 when the answer is complete */
static int
body_bytes(conn_t *c, const char *p, size_t n)
{
    size_t  k;
    int     ch;

    switch (c->body) {

    case B_NONE:
        return 1;

    case B_LENGTH:
        c->left -= (n < c->left) ? n : c->left;
        return c->left == 0;

    case B_EOF:
        return 0;
    }

    while (n) {
        switch (c->kstate) {

        case K_DATA:
            k = (n < c->left) ? n : c->left;
            c->left -= k;
            p += k;
            n -= k;
            if (c->left == 0) {
                c->kstate = K_DATA_END;
            }
            continue;

        default:
            break;
        }

        ch = *p++;
        n--;

        switch (c->kstate) {

        case K_SIZE:
            if (ch >= '0' && ch <= '9') {
                c->ksize = c->ksize * 16 + (ch - '0');
            } else if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f') {
                c->ksize = c->ksize * 16 + ((ch | 0x20) - 'a' + 10);
            } else if (ch == ';') {
                c->kstate = K_EXT;
            } else if (ch == '\n') {
                goto size_done;
            }
            break;

        case K_EXT:
            if (ch == '\n') {
                goto size_done;
            }
            break;

        case K_DATA_END:
            if (ch == '\n') {
                c->kstate = K_SIZE;
                c->ksize = 0;
            }
            break;

        case K_TRAILER:
            if (ch == '\n') {
                if (c->kline == 0) {
                    return 1;
                }
                c->kline = 0;
            } else if (ch != '\r') {
                c->kline++;
            }
            break;
        }
        continue;

    size_done:
        if (c->ksize == 0) {
            c->kstate = K_TRAILER;
            c->kline = 0;
        } else {
            c->kstate = K_DATA;
            c->left = c->ksize;
        }
    }

    return 0;
}


static void
conn_read(conn_t *c)
{
    static char  buf[65536];
    ssize_t      n;
    size_t       k, off;
    char        *e;
    uint64_t     t;

    for ( ;; ) {
        if (c->fd < 0) {
            return;
        }

        n = recv(c->fd, buf, sizeof(buf), 0);

        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                return;
            }
            if (c->state == C_READING) {
                conn_fail(c);
            } else {
                conn_close(c);
            }
            return;
        }

        t = now_ns();

        if (n == 0) {
            if (c->state == C_READING && c->in_body && c->body == B_EOF) {
                response_done(c, t);
                conn_close(c);
            } else if (c->state != C_IDLE) {
                conn_fail(c);
            } else {
                conn_close(c);      /* an idle keepalive closed */
            }
            return;
        }

        if (c->state != C_READING) {
            continue;               /* nothing asked: ignore */
        }

        off = 0;

        if (!c->in_body) {
            k = (size_t) n;
            if (c->hlen + k > HDRMAX) {
                conn_fail(c);
                return;
            }
            memcpy(c->hbuf + c->hlen, buf, k);
            c->hlen += k;
            e = memmem(c->hbuf, c->hlen, "\r\n\r\n", 4);
            if (e == NULL) {
                continue;
            }
            k = e + 4 - c->hbuf;    /* header length */
            if (parse_header(c, k) < 0) {
                conn_fail(c);
                return;
            }
            c->in_body = 1;
            off = n - (c->hlen - k);

            if (c->body == B_NONE) {
                response_done(c, t);
                continue;
            }
        }

        if ((size_t) n > off) {
            first_byte(c, t);
            if (body_bytes(c, buf + off, n - off)) {
                response_done(c, t);
            }
        }
    }
}


static void
usage(void)
{
    fprintf(stderr,
            "usage: loadgen [-c conns] [-R rate] [-d seconds] [-n requests]"
            " [-t timeout]\n"
            "               [-m method] [-H header]... [-b body | -B file]"
            " [--ready FILE] URL\n");
    exit(2);
}


int
main(int argc, char **argv)
{
    int                  i, n, nh = 0, timeout_s = 60;
    char                *method = NULL, *body = NULL, *url, *host, *path;
    char                *hdrs[64], *colon, *e;
    double               secs = 5, interval;
    size_t               blen = 0, cap;
    uint64_t             t0, t, end, wait, deadline;
    FILE                *f;
    conn_t              *c;
    struct epoll_event   evs[256];
    struct itimerspec    its;

    for (i = 1; i < argc - 1; i++) {
        if (strcmp(argv[i], "-c") == 0) {
            nconns = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-R") == 0) {
            rate = atof(argv[++i]);
        } else if (strcmp(argv[i], "-d") == 0) {
            secs = atof(argv[++i]);
        } else if (strcmp(argv[i], "-n") == 0) {
            limit = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "-t") == 0) {
            timeout_s = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-m") == 0) {
            method = argv[++i];
        } else if (strcmp(argv[i], "-H") == 0 && nh < 64) {
            hdrs[nh++] = argv[++i];
        } else if (strcmp(argv[i], "-b") == 0) {
            body = argv[++i];
            blen = strlen(body);
        } else if (strcmp(argv[i], "-B") == 0) {
            f = fopen(argv[++i], "r");
            if (f == NULL) {
                perror(argv[i]);
                return 2;
            }
            body = malloc(1 << 20);
            blen = fread(body, 1, 1 << 20, f);
            fclose(f);
        } else if (strcmp(argv[i], "--ready") == 0) {
            ready_file = argv[++i];
        } else {
            usage();
        }
    }

    if (i != argc - 1 || nconns < 1 || rate < 0) {
        usage();
    }

    url = argv[argc - 1];
    if (strncmp(url, "http://", 7) != 0) {
        usage();
    }
    host = strdup(url + 7);
    path = strchr(host, '/');
    path = path ? strdup(path) : "/";
    *strchrnul(host, '/') = '\0';
    colon = strchr(host, ':');

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(colon ? atoi(colon + 1) : 80);
    if (colon) {
        *colon = '\0';
    }
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: an IPv4 address, please: %s\n", host);
        return 2;
    }
    if (colon) {
        *colon = ':';
    }

    if (method == NULL) {
        method = body ? "POST" : "GET";
    }

    cap = 1024 + blen + strlen(path) + strlen(host);
    for (i = 0; i < nh; i++) {
        cap += strlen(hdrs[i]) + 2;
    }
    req = malloc(cap);
    n = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: %s\r\n",
                 method, path, host);
    for (i = 0; i < nh; i++) {
        n += snprintf(req + n, cap - n, "%s\r\n", hdrs[i]);
    }
    e = body ? memmem(body, blen, "%SEQ%", 5) : NULL;
    if (body) {
        n += snprintf(req + n, cap - n, "Content-Length: %zu\r\n",
                      blen + (e ? 3 : 0));
    }
    n += snprintf(req + n, cap - n, "\r\n");
    if (e) {
        /* "%SEQ%" -> 8 digits, written per request */
        memcpy(req + n, body, e - body);
        seq_at = n + (e - body);
        memcpy(req + seq_at, "00000000", 8);
        memcpy(req + seq_at + 8, e + 5, blen - (e - body) - 5);
        n += blen + 3;

    } else if (body) {
        memcpy(req + n, body, blen);
        n += blen;
    }
    req_len = n;

    ready_n = nconns;
    ep = epoll_create1(0);

    /*
     * a request late by its wake-up counts as slow: wake up on a timerfd
     * (epoll_wait's milliseconds would add up to 1 ms), with no slack
     */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    {
        struct epoll_event  tev;

        tev.events = EPOLLIN;
        tev.data.ptr = NULL;
        if (tfd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev) < 0) {
            perror("loadgen: timerfd");
            return 1;
        }
    }
    conns = calloc(nconns, sizeof(conn_t));
    if (conns == NULL || ep < 0) {
        perror("loadgen");
        return 1;
    }

    /* connect first: the clock starts on open connections */
    for (i = 0; i < nconns; i++) {
        conns[i].fd = -1;
        conns[i].req = seq_at ? malloc(req_len) : req;
        if (conns[i].req && seq_at) {
            memcpy(conns[i].req, req, req_len);
        }
        conns[i].hbuf = malloc(HDRMAX);
        if (conns[i].req == NULL || conns[i].hbuf == NULL
            || conn_open(&conns[i]) < 0)
        {
            perror("loadgen: connect");
            return 1;
        }
    }

    deadline = now_ns() + 5000000000ull;
    for (n = 0; n < nconns && now_ns() < deadline; ) {
        int  k = epoll_wait(ep, evs, 256, 100);

        for (i = 0; i < k; i++) {
            c = evs[i].data.ptr;
            if (!c->connected && (evs[i].events & EPOLLOUT)) {
                int        err = 0;
                socklen_t  el = sizeof(err);

                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err == 0) {
                    c->connected = 1;
                    n++;
                }
            }
        }
    }

    interval = rate > 0 ? 1e9 * nconns / rate : 0;
    t0 = now_ns();
    end = t0 + (uint64_t) (secs * 1e9);

    for (i = 0; i < nconns; i++) {
        /* spread the connections over one interval */
        conns[i].next = t0 + (uint64_t) (interval * i / nconns);
    }

    for ( ;; ) {
        t = now_ns();
        wait = 10000000;            /* 10 ms at most between looks */

        for (i = 0; i < nconns; i++) {
            c = &conns[i];

            if (c->state != C_IDLE) {
                if (t - c->intended > (uint64_t) timeout_s * 1000000000ull) {
                    timeouts++;
                    conn_fail(c);
                    errors--;
                }
                continue;
            }

            if (t >= end || (limit && sent >= limit)) {
                continue;
            }

            if (rate == 0) {
                request_start(c, t);

            } else if (c->next <= t) {
                request_start(c, c->next);
                c->next += (uint64_t) interval;

            } else if (c->next - t < wait) {
                wait = c->next - t;
            }
        }

        if ((t >= end || (limit && sent >= limit)) && done_n >= sent) {
            break;
        }

        its.it_interval.tv_sec = 0;
        its.it_interval.tv_nsec = 0;
        its.it_value.tv_sec = (t + wait) / 1000000000ull;
        its.it_value.tv_nsec = (t + wait) % 1000000000ull;
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);

        n = epoll_wait(ep, evs, 256, 20);

        for (i = 0; i < n; i++) {
            c = evs[i].data.ptr;
            if (c == NULL) {
                uint64_t  x;

                (void) !read(tfd, &x, sizeof(x));
                continue;
            }

            if (c->fd < 0) {
                continue;
            }

            if (!c->connected && (evs[i].events & (EPOLLOUT | EPOLLERR))) {
                int        err = 0;
                socklen_t  el = sizeof(err);

                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    if (c->state != C_IDLE) {
                        conn_fail(c);
                    } else {
                        conn_close(c);
                    }
                    continue;
                }
                c->connected = 1;
            }

            if (c->state == C_SENDING && c->connected) {
                conn_write(c);
            }

            if (c->fd >= 0
                && (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)))
            {
                conn_read(c);
            }
        }
    }

    printf("requests=%llu errors=%llu timeouts=%llu s2xx=%llu s503=%llu"
           " sother=%llu rate=%.1f",
           (unsigned long long) h_total.n, (unsigned long long) errors,
           (unsigned long long) timeouts, (unsigned long long) s2xx,
           (unsigned long long) s503, (unsigned long long) sother,
           t_last > t0 ? h_total.n * 1e9 / (t_last - t0) : 0.0);
    printf(" p50=%.1f p90=%.1f p99=%.1f p999=%.1f max=%.1f",
           hist_pct(&h_total, 50) / 1e3, hist_pct(&h_total, 90) / 1e3,
           hist_pct(&h_total, 99) / 1e3, hist_pct(&h_total, 99.9) / 1e3,
           h_total.max / 1e3);
    printf(" ttfb_p50=%.1f ttfb_p90=%.1f ttfb_p99=%.1f ttfb_max=%.1f\n",
           hist_pct(&h_ttfb, 50) / 1e3, hist_pct(&h_ttfb, 90) / 1e3,
           hist_pct(&h_ttfb, 99) / 1e3, h_ttfb.max / 1e3);

    return 0;
}
