/*
 * Copyright (C) helix authors
 *
 * The completion log (database.completion_log): one row in "completions"
 * per chat/completion/embedding request, hit or miss, written after the
 * answer has gone.  The LOG phase only appends the row, in COPY's binary
 * format (no escaping or number formatting here, no parsing in the
 * server), to a per-worker buffer; a timer or a full batch sends the
 * whole buffer as one COPY FROM STDIN while a second buffer fills.
 * While PostgreSQL is away the rows wait (bounded by
 * completion_log.buffer); rows that do not fit are counted and the count
 * is logged.  request_id is unique: a
 * batch sent again after a lost answer fails as a duplicate, and is
 * known to be written.
 */


#include "ngx_http_helix.h"
#include "ngx_http_helix_auth.h"
#include "ngx_http_helix_trace.h"
#include "ngx_http_helix_pg.h"
#include "ngx_http_helix_log.h"
#include "ngx_http_helix_metrics.h"


typedef struct {
    u_char                      *data;
    size_t                       len;
    ngx_uint_t                   rows;
} ngx_http_helix_log_buf_t;


/* COPY's binary format: a header, rows of length-prefixed fields, -1 */

#define NGX_HTTP_HELIX_LOG_HEADER   19
#define NGX_HTTP_HELIX_LOG_ID_LEN   32
#define NGX_HTTP_HELIX_LOG_FIELDS   17

/* timestamptz: microseconds since 2000-01-01 00:00:00 UTC */
#define NGX_HTTP_HELIX_LOG_PG_EPOCH  946684800

static u_char  ngx_http_helix_log_copy_header[NGX_HTTP_HELIX_LOG_HEADER] =
    "PGCOPY\n\377\r\n\0" "\0\0\0\0" "\0\0\0\0";


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
static void ngx_http_helix_log_request(ngx_http_request_t *r,
    ngx_http_helix_log_row_t *row);
static ngx_int_t ngx_http_helix_log_make_id(ngx_http_request_t *r,
    ngx_str_t *id);
static ngx_uint_t ngx_http_helix_log_variable_id(ngx_http_request_t *r,
    ngx_str_t *id);
static size_t ngx_http_helix_log_new_id(u_char *p);
static void ngx_http_helix_log_add(ngx_http_helix_log_row_t *row,
    ngx_log_t *log);
static ngx_inline u_char *ngx_http_helix_log_text(u_char *p, ngx_str_t *v);
static ngx_inline u_char *ngx_http_helix_log_int(u_char *p, int64_t v,
    ngx_uint_t width);
static u_char *ngx_http_helix_log_key(u_char *p, u_char *last,
    const char *key, size_t len);
static ngx_int_t ngx_http_helix_log_number(u_char **pp, u_char *last,
    const char *key, size_t len);
static void ngx_http_helix_log_model(ngx_str_t *s, ngx_str_t *model);
static void ngx_http_helix_log_usage(ngx_str_t *s, ngx_int_t *pt,
    ngx_int_t *ct);
static u_char *ngx_http_helix_log_hex(u_char *p, uint64_t v);
static void ngx_http_helix_log_schedule(ngx_msec_t delay);
static void ngx_http_helix_log_flush(ngx_event_t *ev);
static void ngx_http_helix_log_written(ngx_http_helix_pg_query_t *q,
    PGresult *res);


static u_char  ngx_http_helix_log_digits[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

static ngx_http_helix_log_t  ngx_http_helix_log;

ngx_http_helix_log_summary_pt  ngx_http_helix_log_summary;
static ngx_int_t             ngx_http_helix_log_request_id = NGX_ERROR;
static ngx_uint_t            ngx_http_helix_log_session_hash;


static ngx_http_helix_pg_stmt_t  ngx_http_helix_log_insert = {
    "helix_completions_copy",
    "COPY completions (request_id, session_id, api_key_name, provider_id, "
    "model, endpoint, cache_result, stream, prompt_tokens, "
    "completion_tokens, latency_ms, status, created_at, gateway_us, "
    "provider_us, trace_id, cost) FROM STDIN "
    "(FORMAT binary)",
    1, 0, 1
};


/* the endpoint column, by endpoint: those the LOG phase writes rows of */

static ngx_str_t  ngx_http_helix_log_endpoints[NGX_HTTP_HELIX_EPS] = {
    [NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS] = ngx_string("chat_completions"),
    [NGX_HTTP_HELIX_EP_COMPLETIONS] = ngx_string("completions"),
    [NGX_HTTP_HELIX_EP_EMBEDDINGS] = ngx_string("embeddings"),
    [NGX_HTTP_HELIX_EP_MESSAGES] = ngx_string("messages"),
    [NGX_HTTP_HELIX_EP_RESPONSES] = ngx_string("responses")
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

    ngx_http_helix_log_session_hash =
        ngx_hash_key((u_char *) "x-session-id", sizeof("x-session-id") - 1);

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

    /* each buffer is one COPY: its header is written once, rows follow */

    ngx_memcpy(lg->fill.data, ngx_http_helix_log_copy_header,
               NGX_HTTP_HELIX_LOG_HEADER);
    ngx_memcpy(lg->flight.data, ngx_http_helix_log_copy_header,
               NGX_HTTP_HELIX_LOG_HEADER);
    lg->fill.len = NGX_HTTP_HELIX_LOG_HEADER;
    lg->flight.len = NGX_HTTP_HELIX_LOG_HEADER;

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
    ngx_uint_t                  ep;
    ngx_http_helix_log_row_t    row;
    ngx_http_helix_summary_t    sum;
    ngx_http_helix_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);
    ep = hlcf->endpoint;

    if (ngx_http_helix_log.hmcf == NULL || r != r->main
        || (ep != NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS
            && ep != NGX_HTTP_HELIX_EP_COMPLETIONS
            && ep != NGX_HTTP_HELIX_EP_EMBEDDINGS
            && ep != NGX_HTTP_HELIX_EP_MESSAGES
            && ep != NGX_HTTP_HELIX_EP_RESPONSES))
    {
        return NGX_OK;
    }

    ngx_memzero(&row, sizeof(ngx_http_helix_log_row_t));
    ngx_memzero(&sum, sizeof(ngx_http_helix_summary_t));
    sum.cost = -1;

    if (ngx_http_helix_log_summary) {
        (void) ngx_http_helix_log_summary(r, &sum);
    }

    row.endpoint = &ngx_http_helix_log_endpoints[ep];
    row.model = sum.model;
    row.answer = sum.answer;
    row.meta = sum.meta;
    row.stream = sum.stream;
    row.status = r->headers_out.status;

    (void) ngx_http_helix_log_variable_id(r, &row.request_id);
    ngx_http_helix_log_request(r, &row);

    /* nothing served (an error): no provider, cache_result "none" */

    if (sum.served) {
        row.provider = sum.provider;
        row.cache = sum.cache;
    }

    row.latency = (ngx_msec_int_t) ngx_http_helix_request_time(r);
    row.gateway_us = sum.timed ? (int64_t) sum.gw_us : -1;
    row.provider_us = sum.timed && sum.cache >= NGX_HTTP_HELIX_LOG_MISS
                      ? (int64_t) sum.provider_us : -1;

    if (sum.cost >= 0) {
        row.cost = sum.cost;
        row.costed = 1;
    }

    ngx_http_helix_log_add(&row, r->connection->log);

    return NGX_OK;
}


/* who asked: the session the client named and its key */

static void
ngx_http_helix_log_request(ngx_http_request_t *r,
    ngx_http_helix_log_row_t *row)
{
    u_char           *p;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    row->key_name = ngx_http_helix_auth_key_name(r);

    if (ngx_http_helix_trace_id(r, &row->trace_id) == NULL) {
        ngx_str_null(&row->trace_id);
    }

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == ngx_http_helix_log_session_hash
            && h[i].key.len == sizeof("x-session-id") - 1
            && ngx_memcmp(h[i].lowcase_key, "x-session-id", 12) == 0)
        {
            break;
        }
    }

    row->session = h[i].value;
    row->session.len = ngx_min(row->session.len, 256);

    /* a client's bytes: not UTF-8 would reject the whole batch */

    for (p = row->session.data; p < row->session.data + row->session.len; p++)
    {
        if (*p < 0x20 || *p > 0x7e) {
            ngx_str_null(&row->session);
            return;
        }
    }
}


/*
 * One item of a batch, one member of an ensemble or one call of a debate:
 * a row of its own.
 * The caller says what it was (provider, model, answer, status, latency,
 * cache); the row's id is the batch's and k, its client the batch's.
 */

void
ngx_http_helix_log_item(ngx_http_request_t *r, ngx_str_t *batch_id,
    ngx_uint_t k, ngx_uint_t kind, ngx_http_helix_log_row_t *row)
{
    u_char                *p;
    ngx_str_t              rid;
    ngx_http_helix_log_t  *lg;

    static ngx_str_t  kinds[] = { ngx_string("completions_batch"),
                                  ngx_string("ensemble"),
                                  ngx_string("debate") };

    lg = &ngx_http_helix_log;
    if (lg->hmcf == NULL || row->status == 0) {
        return;
    }

    if (batch_id->len == 0) {
        /* the batch's own id, taken once: its rows share it */

        if (ngx_http_helix_log_make_id(r, batch_id) != NGX_OK) {
            return;
        }
    }

    p = ngx_pnalloc(r->pool, batch_id->len + 1 + NGX_INT_T_LEN);
    if (p == NULL) {
        return;
    }

    rid.data = p;
    rid.len = ngx_sprintf(p, "%V-%ui", batch_id, k) - p;

    ngx_http_helix_log_request(r, row);

    row->request_id = rid;
    row->endpoint = &kinds[kind];

    ngx_http_helix_log_add(row, r->connection->log);
}


/*
 * $request_id if something has asked for it already (an access log
 * format, a header), so the row and that log agree; otherwise this
 * worker's random prefix and a counter: RAND_bytes() behind a fresh
 * $request_id would cost more than the whole row
 */

static ngx_int_t
ngx_http_helix_log_make_id(ngx_http_request_t *r, ngx_str_t *id)
{
    u_char  *p;

    if (ngx_http_helix_log_variable_id(r, id)) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_HTTP_HELIX_LOG_ID_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    id->data = p;
    id->len = ngx_http_helix_log_new_id(p);

    return NGX_OK;
}


static ngx_uint_t
ngx_http_helix_log_variable_id(ngx_http_request_t *r, ngx_str_t *id)
{
    ngx_http_variable_value_t  *vv;

    vv = &r->variables[ngx_http_helix_log_request_id];

    if (vv->valid && !vv->not_found) {
        id->data = vv->data;
        id->len = vv->len;
        return 1;
    }

    return 0;
}


/* this worker's random prefix and its counter, in hex */

static size_t
ngx_http_helix_log_new_id(u_char *p)
{
    ngx_http_helix_log_t  *lg = &ngx_http_helix_log;

    return ngx_http_helix_log_hex(ngx_http_helix_log_hex(p, lg->prefix),
                                  ++lg->seq)
           - p;
}


static void
ngx_http_helix_log_add(ngx_http_helix_log_row_t *row, ngx_log_t *log)
{
    u_char                *p, ridbuf[NGX_HTTP_HELIX_LOG_ID_LEN];
    size_t                 len;
    int64_t                us;
    ngx_int_t              pt, ct;
    ngx_str_t              rid, *cache;
    ngx_time_t            *tp;
    ngx_http_helix_log_t  *lg;
    ngx_http_helix_answer_meta_t  meta;

    static ngx_str_t  caches[] = { ngx_string("none"), ngx_string("hit_l1"),
                                   ngx_string("hit_l2"), ngx_string("miss"),
                                   ngx_string("bypass") };

    lg = &ngx_http_helix_log;

    rid = row->request_id;

    if (rid.len == 0) {
        rid.data = ridbuf;
        rid.len = ngx_http_helix_log_new_id(ridbuf);
    }

    /* what the answer says, whichever tier it came from */

    if (row->meta == NULL) {
        ngx_http_helix_answer_meta(&row->answer, &meta);
        row->meta = &meta;
    }

    pt = row->meta->prompt_tokens;
    ct = row->meta->completion_tokens;

    if (row->meta->model_len) {
        row->model.data = row->answer.data + row->meta->model_off;
        row->model.len = row->meta->model_len;
    }

    cache = &caches[row->cache];

    /* the field count, 17 lengths, the text, 1 + 4 * 4 + 8 + 3 * 8 bytes */

    len = 2 + NGX_HTTP_HELIX_LOG_FIELDS * 4
          + rid.len + row->session.len + row->trace_id.len
          + (row->key_name ? row->key_name->len : 0)
          + row->provider.len + row->model.len
          + row->endpoint->len + cache->len + 1 + 4 * 4 + 8 + 3 * 8;

    /* and the trailer */

    if (lg->fill.len + len + 2 > lg->cap) {
        lg->dropped++;
        lg->dropped_total++;
        ngx_http_helix_metrics_log_rows(lg->hmcf, NGX_HTTP_HELIX_LOG_DROPPED,
                                        1);

        if (lg->dropped == 1) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "helix: completion log buffer full (%uz bytes, "
                          "%ui rows waiting): rows are dropped and "
                          "counted until PostgreSQL takes them",
                          lg->cap, lg->fill.rows + lg->flight.rows);
        }

        return;
    }

    p = lg->fill.data + lg->fill.len;

    *p++ = 0;
    *p++ = NGX_HTTP_HELIX_LOG_FIELDS;

    p = ngx_http_helix_log_text(p, &rid);
    p = ngx_http_helix_log_text(p, &row->session);
    p = ngx_http_helix_log_text(p, row->key_name);
    p = ngx_http_helix_log_text(p, &row->provider);
    p = ngx_http_helix_log_text(p, &row->model);
    p = ngx_http_helix_log_text(p, row->endpoint);
    p = ngx_http_helix_log_text(p, cache);

    p = ngx_http_helix_log_int(p, 1, 4);
    *p++ = row->stream ? 1 : 0;

    p = (pt >= 0) ? ngx_http_helix_log_int(ngx_http_helix_log_int(p, 4, 4),
                                           pt, 4)
                  : ngx_http_helix_log_int(p, -1, 4);
    p = (ct >= 0) ? ngx_http_helix_log_int(ngx_http_helix_log_int(p, 4, 4),
                                           ct, 4)
                  : ngx_http_helix_log_int(p, -1, 4);

    p = ngx_http_helix_log_int(ngx_http_helix_log_int(p, 4, 4),
                               ngx_min(ngx_max(row->latency, 0),
                                       NGX_MAX_INT32_VALUE), 4);
    p = ngx_http_helix_log_int(ngx_http_helix_log_int(p, 4, 4),
                               row->status, 4);

    tp = ngx_timeofday();
    us = ((int64_t) tp->sec - NGX_HTTP_HELIX_LOG_PG_EPOCH) * 1000000
         + (int64_t) tp->msec * 1000;

    p = ngx_http_helix_log_int(ngx_http_helix_log_int(p, 8, 4), us, 8);

    /* microseconds, bigint; NULL when not known */

    p = (row->gateway_us >= 0)
        ? ngx_http_helix_log_int(ngx_http_helix_log_int(p, 8, 4),
                                 row->gateway_us, 8)
        : ngx_http_helix_log_int(p, -1, 4);
    p = (row->provider_us >= 0)
        ? ngx_http_helix_log_int(ngx_http_helix_log_int(p, 8, 4),
                                 row->provider_us, 8)
        : ngx_http_helix_log_int(p, -1, 4);

    p = ngx_http_helix_log_text(p, &row->trace_id);

    /* micro-units of pricing.currency, bigint; NULL: not priced */

    p = row->costed ? ngx_http_helix_log_int(ngx_http_helix_log_int(p, 8, 4),
                                             row->cost, 8)
                    : ngx_http_helix_log_int(p, -1, 4);

    lg->fill.len = p - lg->fill.data;
    lg->fill.rows++;

    if (lg->q == NULL && !lg->failed
        && lg->fill.rows >= ngx_max(lg->hmcf->database.log_batch, 1))
    {
        ngx_http_helix_log_schedule(0);

    } else if (!lg->timer.timer_set) {
        ngx_http_helix_log_schedule(lg->hmcf->database.log_flush);
    }
}


/* a text field: its length, then its bytes; NULL when empty */

static ngx_inline u_char *
ngx_http_helix_log_text(u_char *p, ngx_str_t *v)
{
    if (v == NULL || v->len == 0) {
        return ngx_http_helix_log_int(p, -1, 4);
    }

    p = ngx_http_helix_log_int(p, v->len, 4);

    return ngx_cpymem(p, v->data, v->len);
}


/* network byte order, as wide as the field */

static ngx_inline u_char *
ngx_http_helix_log_int(u_char *p, int64_t v, ngx_uint_t width)
{
    uint32_t  v32;
    uint64_t  v64;

    if (width == 4) {
        v32 = htonl((uint32_t) v);
        return ngx_cpymem(p, &v32, 4);
    }

    v64 = htobe64((uint64_t) v);
    return ngx_cpymem(p, &v64, 8);
}


/*
 * Just after "key" (with its quotes) in a JSON text, or NULL.  Inside a
 * JSON string every quote is escaped, so a quote, the name and a quote
 * is a key; memchr() skips what lies between quotes at its own speed.
 */

static u_char *
ngx_http_helix_log_key(u_char *p, u_char *last, const char *key, size_t len)
{
    while ((size_t) (last - p) >= len) {
        p = memchr(p, '"', last - p - len + 1);

        if (p == NULL) {
            return NULL;
        }

        if (p[1] == (u_char) key[1] && ngx_memcmp(p, key, len) == 0) {
            return p + len;
        }

        p++;
    }

    return NULL;
}


/*
 * "key": <digits> in a JSON answer from *pp on, or -1; *pp is moved past
 * the number.  The key is looked for where it usually is (next) first.
 */

static ngx_int_t
ngx_http_helix_log_number(u_char **pp, u_char *last, const char *key,
    size_t len)
{
    u_char  *p, *start;

    p = *pp;

    while (p < last && (*p == ' ' || *p == ':' || *p == '{' || *p == ','
                        || *p == '\n'))
    {
        p++;
    }

    if ((size_t) (last - p) >= len && ngx_memcmp(p, key, len) == 0) {
        p += len;

    } else {
        p = ngx_http_helix_log_key(*pp, last, key, len);
        if (p == NULL) {
            return -1;
        }
    }

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

    *pp = p;

    return ngx_atoi(start, p - start);
}


/* the usage counts and the model of an answer, -1 and 0 when not said */

void
ngx_http_helix_answer_meta(ngx_str_t *answer,
    ngx_http_helix_answer_meta_t *meta)
{
    ngx_int_t  pt, ct;
    ngx_str_t  model;

    ngx_http_helix_log_usage(answer, &pt, &ct);

    meta->prompt_tokens = (int32_t) pt;
    meta->completion_tokens = (int32_t) ct;
    meta->model_off = 0;
    meta->model_len = 0;

    if (answer->len == 0) {
        return;
    }

    ngx_str_null(&model);
    ngx_http_helix_log_model(answer, &model);

    if (model.len) {
        meta->model_off = (uint32_t) (model.data - answer->data);
        meta->model_len = (uint32_t) model.len;
    }
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
    u_char     *p, *last, *usage;

    *pt = -1;
    *ct = -1;

    if (s->len < 7) {
        return;
    }

    last = s->data + s->len - 6;

    for ( ;; ) {
        p = memrchr(s->data, '"', last - s->data);

        if (p == NULL) {
            return;
        }

        if (p[1] == 'u' && ngx_memcmp(p, "\"usage\"", 7) == 0) {
            break;
        }

        last = p;
    }

    /* OpenAI's order: prompt_tokens, then completion_tokens */

    p += 7;
    usage = p;

    *pt = ngx_http_helix_log_number(&p, s->data + s->len,
                                    "\"prompt_tokens\"", 15);

    if (*pt < 0) {
        p = usage;
    }

    *ct = ngx_http_helix_log_number(&p, s->data + s->len,
                                    "\"completion_tokens\"", 19);

    if (*ct < 0 && *pt >= 0) {
        p = usage;
        *ct = ngx_http_helix_log_number(&p, s->data + s->len,
                                        "\"completion_tokens\"", 19);
    }

    if (*pt < 0 && *ct < 0) {
        /* an answer in a client's format: Anthropic's and Responses' names */

        p = usage;
        *pt = ngx_http_helix_log_number(&p, s->data + s->len,
                                        "\"input_tokens\"", 14);
        p = usage;
        *ct = ngx_http_helix_log_number(&p, s->data + s->len,
                                        "\"output_tokens\"", 15);
    }
}


static u_char *
ngx_http_helix_log_hex(u_char *p, uint64_t v)
{
    ngx_uint_t  i;

    /* two digits a byte */

    for (i = 16; i > 0; i -= 2) {
        ngx_memcpy(p + i - 2, &ngx_http_helix_log_digits[(v & 0xff) * 2], 2);
        v >>= 8;
    }

    return p + 16;
}


/* the model that answered, as the answer names it */

static void
ngx_http_helix_log_model(ngx_str_t *s, ngx_str_t *model)
{
    u_char  *p, *last, *start;

    last = s->data + s->len;

    p = ngx_http_helix_log_key(s->data, last, "\"model\"", 7);
    if (p == NULL) {
        return;
    }

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
        lg->fill.len = NGX_HTTP_HELIX_LOG_HEADER;
        lg->fill.rows = 0;
    }

    /* the trailer: room for it was kept when the rows were added */

    lg->flight.data[lg->flight.len] = 0xff;
    lg->flight.data[lg->flight.len + 1] = 0xff;

    param.data = lg->flight.data;
    param.len = lg->flight.len + 2;

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
    lg->flight.len = NGX_HTTP_HELIX_LOG_HEADER;
    lg->flight.rows = 0;

    if (lg->fill.rows) {
        ngx_http_helix_log_schedule(
                  lg->fill.rows >= lg->hmcf->database.log_batch
                  ? 0 : lg->hmcf->database.log_flush);
    }
}
