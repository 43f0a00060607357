/*
 * Copyright (C) helix authors
 *
 * The completion log (database.completion_log): one row in "completions"
 * per chat/completion/embedding request, hit or miss, written after the
 * answer has gone.  The LOG phase only appends the row, in COPY's text
 * format, to a per-worker buffer; a timer or a full batch sends the
 * whole buffer as one COPY FROM STDIN (a third of the server's work of
 * an INSERT from JSON) while a second buffer fills.  While PostgreSQL
 * is away the rows wait (bounded by completion_log.buffer); rows that do
 * not fit are counted and the count is logged.  request_id is unique: a
 * batch sent again after a lost answer fails as a duplicate, and is
 * known to be written.
 */


#include "ngx_http_helix.h"
#include "ngx_http_helix_pg.h"
#include "ngx_http_helix_log.h"
#include "ngx_http_helix_metrics.h"


typedef struct {
    u_char                      *data;
    size_t                       len;
    ngx_uint_t                   rows;
} ngx_http_helix_log_buf_t;


typedef struct {
    ngx_http_helix_main_conf_t  *hmcf;
    ngx_log_t                   *log;
    size_t                       cap;
    ngx_http_helix_log_buf_t     fill;      /* rows being added */
    ngx_http_helix_log_buf_t     flight;    /* rows being written */
    ngx_http_helix_pg_query_t   *q;
    ngx_event_t                  timer;
    uint64_t                     prefix;    /* of request ids */
    uint64_t                     seq;
    ngx_uint_t                   dropped;   /* since the last report */
    ngx_uint_t                   dropped_total;
    ngx_uint_t                   failed;
} ngx_http_helix_log_t;


static ngx_int_t ngx_http_helix_log_handler(ngx_http_request_t *r);
static u_char *ngx_http_helix_log_str(u_char *p, ngx_str_t *v);
static size_t ngx_http_helix_log_str_len(ngx_str_t *v);
static ngx_table_elt_t *ngx_http_helix_log_header(ngx_list_t *headers,
    const char *name, size_t len);
static ngx_int_t ngx_http_helix_log_number(ngx_str_t *s, const char *key,
    size_t len);
static void ngx_http_helix_log_model(ngx_str_t *s, ngx_str_t *model);
static void ngx_http_helix_log_usage(ngx_str_t *s, ngx_int_t *pt,
    ngx_int_t *ct);
static u_char *ngx_http_helix_log_hex(u_char *p, uint64_t v);
static u_char *ngx_http_helix_log_uint(u_char *p, uint64_t n, u_char sep);
static void ngx_http_helix_log_schedule(ngx_msec_t delay);
static void ngx_http_helix_log_flush(ngx_event_t *ev);
static void ngx_http_helix_log_written(ngx_http_helix_pg_query_t *q,
    PGresult *res);


static ngx_http_helix_log_t  ngx_http_helix_log;
static ngx_int_t             ngx_http_helix_log_request_id = NGX_ERROR;


static ngx_http_helix_pg_stmt_t  ngx_http_helix_log_insert = {
    "helix_completions_copy",
    "COPY completions (request_id, session_id, api_key_name, provider_id, "
    "model, endpoint, cache_result, stream, prompt_tokens, "
    "completion_tokens, latency_ms, status, created_at) FROM STDIN",
    1, 0, 1
};


static ngx_str_t  ngx_http_helix_log_endpoints[] = {
    ngx_null_string,
    ngx_string("chat_completions"),
    ngx_string("completions"),
    ngx_string("embeddings")
};


ngx_int_t
ngx_http_helix_log_init(ngx_conf_t *cf, ngx_http_helix_main_conf_t *hmcf)
{
    ngx_str_t                   name = ngx_string("request_id");
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    if (!hmcf->database.configured || !hmcf->database.log_enabled) {
        return NGX_OK;
    }

    ngx_http_helix_log_request_id = ngx_http_get_variable_index(cf, &name);
    if (ngx_http_helix_log_request_id == NGX_ERROR) {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_helix_log_handler;

    return NGX_OK;
}


ngx_int_t
ngx_http_helix_log_init_process(ngx_cycle_t *cycle)
{
    ngx_fd_t                     fd;
    ngx_http_helix_log_t        *lg;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_helix_module);

    if (hmcf == NULL || !hmcf->database.configured
        || !hmcf->database.log_enabled)
    {
        return NGX_OK;
    }

    lg = &ngx_http_helix_log;

    lg->cap = ngx_max(hmcf->database.log_buffer, 1024);

    /* two buffers: one fills while the other is being written */

    lg->fill.data = ngx_alloc(lg->cap, cycle->log);
    lg->flight.data = ngx_alloc(lg->cap, cycle->log);

    if (lg->fill.data == NULL || lg->flight.data == NULL) {
        return NGX_ERROR;
    }

    lg->hmcf = hmcf;
    lg->log = cycle->log;

    /* once per worker: request ids of all workers and nodes differ */

    fd = ngx_open_file("/dev/urandom", NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE
        || read(fd, &lg->prefix, sizeof(lg->prefix))
           != (ssize_t) sizeof(lg->prefix))
    {
        lg->prefix = ((uint64_t) ngx_random() << 32) ^ ngx_random()
                     ^ ((uint64_t) ngx_pid << 16) ^ ngx_time();
    }

    if (fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(fd);
    }

    lg->timer.handler = ngx_http_helix_log_flush;
    lg->timer.data = lg;
    lg->timer.log = cycle->log;

    return NGX_OK;
}


void
ngx_http_helix_log_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t             left;
    ngx_http_helix_log_t  *lg;

    lg = &ngx_http_helix_log;

    if (lg->hmcf == NULL) {
        return;
    }

    if (lg->timer.timer_set) {
        ngx_del_timer(&lg->timer);
    }

    left = lg->fill.rows + lg->flight.rows;

    if (left || lg->dropped_total) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "helix: completion log: %ui rows not written at "
                      "exit, %ui dropped in all (buffer full)", left,
                      lg->dropped_total);
    }

    ngx_free(lg->fill.data);
    ngx_free(lg->flight.data);
    ngx_memzero(lg, sizeof(ngx_http_helix_log_t));
}


static ngx_int_t
ngx_http_helix_log_handler(ngx_http_request_t *r)
{
    u_char                      *p;
    size_t                       len;
    ngx_int_t                    pt, ct;
    ngx_str_t                    model, answer, provider, cache, session;
    ngx_str_t                    rid, *keyname;
    u_char                       ridbuf[32];
    ngx_uint_t                   ep, stream;
    ngx_msec_int_t               ms;
    ngx_time_t                  *tp;
    ngx_table_elt_t             *h;
    ngx_http_helix_log_t        *lg;
    u_char                      *iso;
    ngx_http_variable_value_t   *vv;
    ngx_http_helix_loc_conf_t   *hlcf;

    lg = &ngx_http_helix_log;
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);
    ep = hlcf->endpoint;

    if (lg->hmcf == NULL || r != r->main
        || (ep != NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS
            && ep != NGX_HTTP_HELIX_EP_COMPLETIONS
            && ep != NGX_HTTP_HELIX_EP_EMBEDDINGS))
    {
        return NGX_OK;
    }

    ngx_str_null(&model);
    ngx_str_null(&answer);
    ngx_str_null(&provider);
    ngx_str_null(&cache);
    ngx_str_null(&session);
    ngx_str_null(&rid);
    stream = 0;

    (void) ngx_http_helix_gateway_summary(r, &model, &answer, &stream);

    /*
     * $request_id if something has asked for it already (an access log
     * format, a header), so the row and that log agree; otherwise this
     * worker's random prefix and a counter: RAND_bytes() behind a fresh
     * $request_id would cost more than the whole row
     */
    vv = &r->variables[ngx_http_helix_log_request_id];

    if (vv->valid && !vv->not_found) {
        rid.data = vv->data;
        rid.len = vv->len;

    } else {
        rid.data = ridbuf;
        rid.len = ngx_http_helix_log_hex(
                      ngx_http_helix_log_hex(ridbuf, lg->prefix), ++lg->seq)
                  - ridbuf;
    }

    h = ngx_http_helix_log_header(&r->headers_out.headers,
                                  "X-Helix-Provider", 16);
    if (h) {
        provider = h->value;
    }

    h = ngx_http_helix_log_header(&r->headers_out.headers, "X-Cache", 7);
    if (h) {
        if (h->value.len == 3 && ngx_strncmp(h->value.data, "HIT", 3) == 0)
        {
            h = ngx_http_helix_log_header(&r->headers_out.headers,
                                          "X-Cache-Tier", 12);
            if (h && h->value.len == 2 && h->value.data[1] == '2') {
                ngx_str_set(&cache, "hit_l2");

            } else {
                ngx_str_set(&cache, "hit_l1");
            }

        } else if (h->value.len == 4
                   && ngx_strncmp(h->value.data, "MISS", 4) == 0)
        {
            ngx_str_set(&cache, "miss");

        } else {
            ngx_str_set(&cache, "bypass");
        }

    } else {
        ngx_str_set(&cache, "none");
    }

    h = ngx_http_helix_log_header(&r->headers_in.headers, "X-Session-ID",
                                  12);
    if (h) {
        session = h->value;
        session.len = ngx_min(session.len, 256);

        /* a client's bytes: not UTF-8 would reject the whole batch */
        for (p = session.data; p < session.data + session.len; p++) {
            if (*p < 0x20 || *p > 0x7e) {
                ngx_str_null(&session);
                break;
            }
        }
    }

    /* what the answer says, whichever tier it came from */

    ngx_http_helix_log_usage(&answer, &pt, &ct);

    if (answer.len) {
        ngx_http_helix_log_model(&answer, &model);
    }

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    keyname = ngx_http_helix_auth_key_name(r);

    len = ngx_http_helix_log_str_len(&rid)
          + ngx_http_helix_log_str_len(&session)
          + (keyname ? ngx_http_helix_log_str_len(keyname) : 0)
          + ngx_http_helix_log_str_len(&provider)
          + ngx_http_helix_log_str_len(&model)
          + sizeof("chat_completions") + cache.len
          + 4 * NGX_INT_T_LEN + sizeof("1970-09-28T12:00:00.000+06:00")
          + sizeof("\\N\tf\t\t\t\t\t\t\t\t\t\t\t\t\n");

    if (lg->fill.len + len > lg->cap) {
        lg->dropped++;
        lg->dropped_total++;
        ngx_http_helix_metrics_log_rows(lg->hmcf, NGX_HTTP_HELIX_LOG_DROPPED,
                                        1);

        if (lg->dropped == 1) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "helix: completion log buffer full (%uz bytes, "
                          "%ui rows waiting): rows are dropped and "
                          "counted until PostgreSQL takes them",
                          lg->cap, lg->fill.rows + lg->flight.rows);
        }

        return NGX_OK;
    }

    p = lg->fill.data + lg->fill.len;

    p = ngx_http_helix_log_str(p, &rid);
    p = ngx_http_helix_log_str(p, &session);
    p = keyname ? ngx_http_helix_log_str(p, keyname)
                : ngx_cpymem(p, "\\N\t", 3);
    p = ngx_http_helix_log_str(p, &provider);
    p = ngx_http_helix_log_str(p, &model);
    /* by hand: ngx_sprintf() was a third of the row's cost */

    p = ngx_cpymem(p, ngx_http_helix_log_endpoints[ep].data,
                   ngx_http_helix_log_endpoints[ep].len);
    *p++ = '\t';
    p = ngx_cpymem(p, cache.data, cache.len);
    *p++ = '\t';
    *p++ = stream ? 't' : 'f';
    *p++ = '\t';

    p = (pt >= 0) ? ngx_http_helix_log_uint(p, pt, '\t')
                  : ngx_cpymem(p, "\\N\t", 3);
    p = (ct >= 0) ? ngx_http_helix_log_uint(p, ct, '\t')
                  : ngx_cpymem(p, "\\N\t", 3);

    p = ngx_http_helix_log_uint(p, ms, '\t');
    p = ngx_http_helix_log_uint(p, r->headers_out.status, '\t');

    /* nginx's cached "2026-11-26T21:06:54+01:00", with the milliseconds */

    iso = ngx_cached_http_log_iso8601.data;

    p = ngx_cpymem(p, iso, 19);
    *p++ = '.';
    *p++ = (u_char) ('0' + tp->msec / 100 % 10);
    *p++ = (u_char) ('0' + tp->msec / 10 % 10);
    *p++ = (u_char) ('0' + tp->msec % 10);
    p = ngx_cpymem(p, iso + 19, 6);
    *p++ = '\n';

    lg->fill.len = p - lg->fill.data;
    lg->fill.rows++;

    if (lg->q == NULL && !lg->failed
        && lg->fill.rows >= ngx_max(lg->hmcf->database.log_batch, 1))
    {
        ngx_http_helix_log_schedule(0);

    } else if (!lg->timer.timer_set) {
        ngx_http_helix_log_schedule(lg->hmcf->database.log_flush);
    }

    return NGX_OK;
}


static size_t
ngx_http_helix_log_str_len(ngx_str_t *v)
{
    return 2 * v->len + sizeof("\\N\t");
}


/* a COPY text field and its tab: \N for none, escapes for the rest */

static u_char *
ngx_http_helix_log_str(u_char *p, ngx_str_t *v)
{
    u_char  *s, *last;

    if (v->data == NULL || v->len == 0) {
        return ngx_cpymem(p, "\\N\t", 3);
    }

    last = v->data + v->len;

    for (s = v->data; s < last; s++) {
        switch (*s) {
        case '\\':
            *p++ = '\\'; *p++ = '\\';
            break;
        case '\t':
            *p++ = '\\'; *p++ = 't';
            break;
        case '\n':
            *p++ = '\\'; *p++ = 'n';
            break;
        case '\r':
            *p++ = '\\'; *p++ = 'r';
            break;
        default:
            *p++ = *s;
        }
    }

    *p++ = '\t';

    return p;
}


static ngx_table_elt_t *
ngx_http_helix_log_header(ngx_list_t *headers, const char *name, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash && h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/* "key": <digits> in a JSON answer; -1 if it is not there */

static ngx_int_t
ngx_http_helix_log_number(ngx_str_t *s, const char *key, size_t len)
{
    u_char  *p, *last, *start;

    if (s->len == 0) {
        return -1;
    }

    last = s->data + s->len;

    p = memmem(s->data, s->len, key, len);
    if (p == NULL) {
        return -1;
    }

    p += len;

    while (p < last && (*p == ' ' || *p == ':')) {
        p++;
    }

    start = p;

    while (p < last && *p >= '0' && *p <= '9') {
        p++;
    }

    if (p == start || p - start > 9) {
        return -1;
    }

    return ngx_atoi(start, p - start);
}


/*
 * The usage counts of an answer.  OpenAI's answers, and ours, end with
 * their usage: it is looked for from the end (an embeddings answer can be
 * megabytes of vectors before it).  Inside a JSON string every quote is
 * escaped, so "usage" with its quotes is a key.
 */

static void
ngx_http_helix_log_usage(ngx_str_t *s, ngx_int_t *pt, ngx_int_t *ct)
{
    u_char     *p;
    ngx_str_t   tail;

    *pt = -1;
    *ct = -1;

    if (s->len < 7) {
        return;
    }

    for (p = s->data + s->len - 7; p >= s->data; p--) {
        if (*p == '"' && ngx_strncmp(p, "\"usage\"", 7) == 0) {
            break;
        }
    }

    if (p < s->data) {
        return;
    }

    tail.data = p;
    tail.len = s->data + s->len - p;

    *pt = ngx_http_helix_log_number(&tail, "\"prompt_tokens\"", 15);
    *ct = ngx_http_helix_log_number(&tail, "\"completion_tokens\"", 19);
}


static u_char *
ngx_http_helix_log_hex(u_char *p, uint64_t v)
{
    ngx_uint_t  i;

    static u_char  hex[] = "0123456789abcdef";

    for (i = 0; i < 16; i++) {
        p[15 - i] = hex[v & 0xf];
        v >>= 4;
    }

    return p + 16;
}


static u_char *
ngx_http_helix_log_uint(u_char *p, uint64_t n, u_char sep)
{
    u_char   buf[NGX_INT64_LEN], *d;

    d = buf + sizeof(buf);

    do {
        *--d = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    p = ngx_cpymem(p, d, buf + sizeof(buf) - d);
    *p++ = sep;

    return p;
}


/* the model that answered, as the answer names it */

static void
ngx_http_helix_log_model(ngx_str_t *s, ngx_str_t *model)
{
    u_char  *p, *last, *start;

    last = s->data + s->len;

    p = memmem(s->data, s->len, "\"model\"", 7);
    if (p == NULL) {
        return;
    }

    p += 7;

    while (p < last && (*p == ' ' || *p == ':')) {
        p++;
    }

    if (p == last || *p != '"') {
        return;
    }

    start = ++p;

    while (p < last && *p != '"' && *p != '\\') {
        p++;
    }

    if (p == last || *p != '"' || p - start > 256) {
        return;
    }

    model->data = start;
    model->len = p - start;
}


static void
ngx_http_helix_log_schedule(ngx_msec_t delay)
{
    ngx_http_helix_log_t  *lg;

    lg = &ngx_http_helix_log;

    if (lg->timer.timer_set) {
        ngx_del_timer(&lg->timer);
    }

    /*
     * a graceful stop waits for rows PostgreSQL can take; with it away,
     * they are counted as lost at exit rather than holding the worker
     */
    lg->timer.cancelable = lg->failed ? 1 : 0;

    ngx_add_timer(&lg->timer, delay);
}


static void
ngx_http_helix_log_flush(ngx_event_t *ev)
{
    ngx_str_t                  param;
    ngx_http_helix_log_t      *lg;
    ngx_http_helix_log_buf_t   tmp;

    lg = &ngx_http_helix_log;

    if (lg->q) {
        return;
    }

    if (lg->flight.rows == 0) {
        if (lg->fill.rows == 0) {
            return;
        }

        /* the other buffer: the client's rows never wait for a write */

        tmp = lg->flight;
        lg->flight = lg->fill;
        lg->fill = tmp;
        lg->fill.len = 0;
        lg->fill.rows = 0;
    }

    param.data = lg->flight.data;
    param.len = lg->flight.len;

    lg->q = ngx_http_helix_pg_query(NULL, &ngx_http_helix_log_insert, &param,
                                    ngx_http_helix_log_written, lg);

    if (lg->q == NULL) {
        /* PostgreSQL is known to be down: the rows wait */
        if (lg->failed++ == 0) {
            ngx_log_error(NGX_LOG_WARN, lg->log, 0,
                          "helix: completion log: %ui rows kept until "
                          "PostgreSQL takes them (it is unreachable)",
                          lg->flight.rows);
        }

        ngx_http_helix_log_schedule(1000);
    }
}


static void
ngx_http_helix_log_written(ngx_http_helix_pg_query_t *q, PGresult *res)
{
    ngx_http_helix_log_t  *lg = q->data;

    lg->q = NULL;

    if (res == NULL && q->rejected
        && ngx_strcmp(q->sqlstate, "23505") == 0)
    {
        /* sent before, its answer lost: the rows are there already */
        ngx_log_error(NGX_LOG_NOTICE, lg->log, 0,
                      "helix: completion log: %ui rows were written "
                      "already", lg->flight.rows);

    } else if (res == NULL && q->rejected) {
        /* not an outage: sending these rows again cannot help */
        ngx_log_error(NGX_LOG_ERR, lg->log, 0,
                      "helix: completion log: %ui rows rejected by "
                      "PostgreSQL and dropped: %s", lg->flight.rows,
                      q->error);

        lg->dropped_total += lg->flight.rows;
        ngx_http_helix_metrics_log_rows(lg->hmcf, NGX_HTTP_HELIX_LOG_REJECTED,
                                        lg->flight.rows);

    } else if (res == NULL) {
        if (lg->failed++ == 0) {
            ngx_log_error(NGX_LOG_WARN, lg->log, 0,
                          "helix: completion log: %ui rows kept until "
                          "PostgreSQL takes them (%s)", lg->flight.rows,
                          q->error ? q->error : "error");
        }

        ngx_http_helix_log_schedule(1000);
        return;

    } else {
        ngx_http_helix_metrics_log_rows(lg->hmcf, NGX_HTTP_HELIX_LOG_WRITTEN,
                                        lg->flight.rows);

        if (lg->failed || lg->dropped) {
            ngx_log_error(NGX_LOG_NOTICE, lg->log, 0,
                          "helix: completion log written again: %ui rows, "
                          "%ui dropped while the buffer was full",
                          lg->flight.rows, lg->dropped);
        }
    }

    lg->failed = 0;
    lg->dropped = 0;
    lg->flight.len = 0;
    lg->flight.rows = 0;

    if (lg->fill.rows) {
        ngx_http_helix_log_schedule(
                  lg->fill.rows >= lg->hmcf->database.log_batch
                  ? 0 : lg->hmcf->database.log_flush);
    }
}
