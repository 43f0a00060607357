/*
 * Copyright (C) helix authors
 *
 * SSE streams.  The provider's answer reaches us piece by piece in the
 * subrequest's body filter (ngx_http_helix_upstream.c, unbuffered); the
 * SSE parser here cuts it into events wherever the pieces end (events
 * split across reads, several in one read, CR, LF or CRLF line ends,
 * comments), each event is translated into the client's frames and the
 * frames are written to the client request with a flush: the first at
 * once, the next ones when buffer_size bytes wait or flush_interval has
 * passed (0: at once).  The answer is assembled on the way for the cache.
 *
 * The client request is not the subrequest's parent in nginx's output
 * sense (background subrequests write nothing): frames go straight into
 * the main request's filter chain, so gzip and chunked work as usual.
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_codec.h"
#include "ngx_http_helix_formats.h"
#include "ngx_http_helix_upstream.h"
#include "ngx_http_helix_metrics.h"
#include "ngx_http_helix_stream.h"
#include "ngx_http_helix_limit.h"
#include "ngx_http_helix_budget.h"


#define NGX_HTTP_HELIX_STREAM_MAX_CHOICES  NGX_HTTP_HELIX_CODEC_MAX_CHOICES
#define NGX_HTTP_HELIX_STREAM_EVENT_LEN    32


typedef struct {
    u_char                     *data;
    size_t                      len;
    size_t                      cap;
} ngx_http_helix_sbuf_t;


typedef struct {
    ngx_str_t                   id;
    ngx_str_t                   name;
    ngx_http_helix_sbuf_t       args;
} ngx_http_helix_stream_tool_t;


typedef struct {
    ngx_http_helix_sbuf_t       content;
    ngx_array_t                 tools;          /* stream_tool_t */
    char                       *finish;
    unsigned                    role:1;         /* role chunk sent */
    unsigned                    text:1;         /* content seen */
} ngx_http_helix_stream_choice_t;


struct ngx_http_helix_stream_s {
    ngx_http_request_t         *request;
    ngx_http_helix_call_t      *call;
    ngx_http_helix_provider_t  *provider;
    ngx_http_helix_codec_t     *codec;          /* the provider's format */
    ngx_http_helix_stream_in_t *in;             /* its state */
    ngx_http_helix_codec_t     *client;         /* NULL: OpenAI chunks */
    ngx_http_helix_stream_out_t *out_events;    /* the client's stream */
    ngx_uint_t                  endpoint;
    ngx_uint_t                  include_usage;
    ngx_str_t                   model;
    ngx_str_t                   id;
    time_t                      created;
    ngx_str_t                   cache_key;
    ngx_str_t                  *cache_state;

    /* Server-Timing, from the gateway (stream_timing_start) */
    ngx_msec_t                  start_us;   /* the request read */
    ngx_msec_t                  before_us;  /* earlier attempts' calls */
    ngx_msec_t                  gw_us;      /* at the first frame */
    ngx_msec_t                  ttfb_us;    /* the call's, to it */
    ngx_uint_t                  served;     /* log.h's cache results */
    unsigned                    timing:1;   /* the header too */
    unsigned                    timed:1;
    ngx_msec_t                  deadline;
    size_t                      max_body;
    size_t                      received;       /* this attempt's bytes */

    /* the SSE parser */
    ngx_http_helix_sbuf_t       line;
    ngx_http_helix_sbuf_t       data;
    u_char                      event[NGX_HTTP_HELIX_STREAM_EVENT_LEN];
    size_t                      event_len;

    /* the answer so far */
    ngx_array_t                 choices;        /* stream_choice_t */
    uint64_t                    prompt_tokens;
    uint64_t                    completion_tokens;
    ngx_str_t                   error;          /* the provider's event */
    json_t                     *ev;             /* a replayed answer */

    /* the client's side */
    ngx_chain_t                *out;
    ngx_chain_t                *cur;           /* the last link of out */
    ngx_chain_t                *free;
    ngx_chain_t                *busy;
    size_t                      pending;
    size_t                      buffer_size;
    ngx_msec_t                  flush_interval;
    ngx_event_t                 flush_ev;
    ngx_event_t                 abort_ev;

    unsigned                    pass:1;         /* chunks go as they are */
    unsigned                    cr:1;
    unsigned                    has_data:1;
    unsigned                    events:1;       /* this attempt has some */
    unsigned                    usage:1;
    unsigned                    finish_seen:1;
    unsigned                    ended:1;        /* provider's end seen */
    unsigned                    done:1;         /* end frames written */
    unsigned                    flush_now:1;
    unsigned                    header_sent:1;
    unsigned                    sent:1;
    unsigned                    client_error:1;
    unsigned                    last:1;         /* last_buf written */
    unsigned                    gzip:1;
    unsigned                    held:1;         /* the provider waits */
    unsigned                    slow:1;         /* it has waited */
    unsigned                    counted:1;      /* its end, in metrics */
};


static void ngx_http_helix_stream_timed(ngx_http_helix_stream_t *st);
static ngx_int_t ngx_http_helix_stream_consume(ngx_http_helix_call_t *call,
    u_char *data, size_t len);
static ngx_int_t ngx_http_helix_sse_parse(ngx_http_helix_stream_t *st,
    u_char *p, size_t len);
static ngx_int_t ngx_http_helix_sse_line(ngx_http_helix_stream_t *st,
    u_char *p, size_t len);
static ngx_int_t ngx_http_helix_sse_dispatch(ngx_http_helix_stream_t *st);
static ngx_int_t ngx_http_helix_stream_apply(ngx_http_helix_stream_t *st,
    u_char *data, size_t len);
static ngx_int_t ngx_http_helix_stream_delta(ngx_http_helix_stream_t *st,
    ngx_http_helix_delta_t *d, ngx_uint_t emit);
static ngx_int_t ngx_http_helix_stream_provider_error(
    ngx_http_helix_stream_t *st, ngx_str_t *msg);
static json_t *ngx_http_helix_stream_load(ngx_http_helix_stream_t *st,
    u_char *data, size_t len);
static ngx_int_t ngx_http_helix_stream_usage(ngx_http_helix_stream_t *st,
    json_t *u, const char *prompt, const char *completion);
static ngx_int_t ngx_http_helix_stream_role(ngx_http_helix_stream_t *st,
    ngx_uint_t index);
static ngx_int_t ngx_http_helix_stream_text(ngx_http_helix_stream_t *st,
    ngx_uint_t index, const char *text, size_t len, ngx_uint_t emit);
static ngx_int_t ngx_http_helix_stream_tool(ngx_http_helix_stream_t *st,
    ngx_uint_t index, ngx_int_t tool, ngx_str_t *id, ngx_str_t *name,
    const char *args, size_t len, ngx_uint_t emit);
static ngx_int_t ngx_http_helix_stream_finish(ngx_http_helix_stream_t *st,
    ngx_uint_t index, const char *reason, ngx_uint_t emit);
static ngx_int_t ngx_http_helix_stream_done(ngx_http_helix_stream_t *st);
static ngx_int_t ngx_http_helix_stream_out(ngx_http_helix_stream_t *st,
    ngx_uint_t kind, ngx_int_t tool, ngx_str_t *id, ngx_str_t *name,
    u_char *text, size_t len, const char *finish);
static ngx_int_t ngx_http_helix_stream_fail(ngx_http_helix_stream_t *st,
    ngx_str_t *msg);
static ngx_int_t ngx_http_helix_stream_chunk(ngx_http_helix_stream_t *st,
    ngx_uint_t index, json_t *delta, const char *finish);
static ngx_int_t ngx_http_helix_stream_json(ngx_http_helix_stream_t *st,
    json_t *frame);
static ngx_int_t ngx_http_helix_stream_write(ngx_http_helix_stream_t *st,
    u_char *p, size_t len);
static ngx_int_t ngx_http_helix_stream_frame(ngx_http_helix_stream_t *st,
    u_char *p, size_t len);
static ngx_int_t ngx_http_helix_stream_flush(ngx_http_helix_stream_t *st,
    ngx_uint_t last);
static void ngx_http_helix_stream_flush_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_helix_stream_arm(ngx_http_request_t *r);
static void ngx_http_helix_stream_writer(ngx_http_request_t *r);
static ngx_int_t ngx_http_helix_stream_assemble(ngx_http_helix_stream_t *st,
    ngx_str_t *answer);
static ngx_http_helix_stream_choice_t *ngx_http_helix_stream_choice(
    ngx_http_helix_stream_t *st, ngx_uint_t index);
static ngx_int_t ngx_http_helix_sbuf_add(ngx_pool_t *pool,
    ngx_http_helix_sbuf_t *s, u_char *p, size_t len);
static void ngx_http_helix_stream_cleanup(void *data);
static void ngx_http_helix_stream_abort_handler(ngx_event_t *ev);


static ngx_str_t  ngx_http_helix_sse_type = ngx_string("text/event-stream");


/* the streams' own module: the slot of a client request's stream */

static ngx_http_module_t  ngx_http_helix_stream_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_helix_stream_module = {
    NGX_MODULE_V1,
    &ngx_http_helix_stream_module_ctx,     /* module context */
    NULL,                                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


ngx_http_helix_stream_t *
ngx_http_helix_stream_create(ngx_http_request_t *r, ngx_uint_t endpoint,
    json_t *req)
{
    ngx_pool_cleanup_t          *cln;
    ngx_http_helix_stream_t     *st;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    st = ngx_pcalloc(r->pool, sizeof(ngx_http_helix_stream_t));
    if (st == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_helix_stream_cleanup;
    cln->data = st;

    st->request = r;

    /* its writer finds it here: nginx gives a write handler only r */
    ngx_http_set_ctx(r, st, ngx_http_helix_stream_module);
    st->endpoint = endpoint;
    st->include_usage = json_is_true(json_object_get(
                            json_object_get(req, "stream_options"),
                            "include_usage"));
    st->max_body = hmcf->max_response_body;
    st->buffer_size = hmcf->streaming_buffer_size;
    st->flush_interval = hmcf->streaming_flush_interval;
    st->gzip = (hmcf->streaming_compression.len == 4
                && ngx_strncmp(hmcf->streaming_compression.data, "gzip", 4)
                   == 0);

    st->flush_ev.handler = ngx_http_helix_stream_flush_handler;
    st->flush_ev.data = st;
    st->flush_ev.log = r->connection->log;

    st->abort_ev.handler = ngx_http_helix_stream_abort_handler;
    st->abort_ev.data = st;
    st->abort_ev.log = r->connection->log;

    return st;
}


void
ngx_http_helix_stream_client(ngx_http_helix_stream_t *st,
    ngx_http_helix_codec_t *client)
{
    st->client = client;
}


static void
ngx_http_helix_stream_cleanup(void *data)
{
    ngx_http_helix_stream_t  *st = data;

    if (st->flush_ev.timer_set) {
        ngx_del_timer(&st->flush_ev);
    }

    if (st->abort_ev.posted) {
        ngx_delete_posted_event(&st->abort_ev);
    }

    if (st->ev) {
        json_decref(st->ev);
    }

    if (!st->counted && st->call
        && (st->sent || st->request->connection->error))
    {
        /* ended with its request, the client gone before the provider */
        ngx_http_helix_metrics_stream(
            ngx_http_get_module_main_conf(st->request, ngx_http_helix_module),
            st->provider, NGX_HTTP_HELIX_STREAM_CLIENT_CLOSED);
    }
}


/*
 * The provider's side of a stream cannot be ended from inside its own
 * filter (an error there is the client connection's): a posted event
 * cuts the call instead.
 */

static void
ngx_http_helix_stream_abort_handler(ngx_event_t *ev)
{
    ngx_connection_t         *c;
    ngx_http_helix_stream_t  *st = ev->data;

    c = st->request->connection;

    ngx_http_helix_call_abort(st->call);

    ngx_http_run_posted_requests(c);
}


/*
 * What Server-Timing and the overhead histogram say of a stream, given by
 * the gateway before each attempt: when the request was read, the time
 * of earlier attempts' calls, where the answer comes from, and whether
 * the header is wanted ("helix_server_timing").
 */

void
ngx_http_helix_stream_timing_start(ngx_http_helix_stream_t *st,
    ngx_msec_t start_us, ngx_msec_t before_us, ngx_uint_t served,
    ngx_uint_t header)
{
    st->start_us = start_us;
    st->before_us = before_us;
    st->served = served;
    st->timing = header ? 1 : 0;
    st->timed = 0;
}


/* at the first frame: the provider's time to it, the gateway's own */

static void
ngx_http_helix_stream_timed(ngx_http_helix_stream_t *st)
{
    ngx_msec_t                   now, total;
    ngx_http_helix_main_conf_t  *hmcf;

    now = ngx_http_helix_metrics_now_us();
    total = now - st->start_us;

    st->ttfb_us = now - st->call->start_us;
    st->gw_us = (total > st->before_us + st->ttfb_us)
                ? total - st->before_us - st->ttfb_us : 0;
    st->timed = 1;

    hmcf = ngx_http_get_module_main_conf(st->request, ngx_http_helix_module);
    ngx_http_helix_metrics_overhead(hmcf, st->served, st->gw_us);
}


/* for the completion log: NGX_OK and the figures once the first frame went */

ngx_int_t
ngx_http_helix_stream_timing(ngx_http_helix_stream_t *st, ngx_msec_t *gw_us,
    ngx_msec_t *ttfb_us)
{
    if (!st->timed) {
        return NGX_DECLINED;
    }

    *gw_us = st->gw_us;
    *ttfb_us = st->ttfb_us;

    return NGX_OK;
}


ngx_int_t
ngx_http_helix_stream_attach(ngx_http_helix_stream_t *st,
    ngx_http_helix_call_t *call, ngx_str_t *model, ngx_str_t *cache_key,
    ngx_str_t *cache_state, ngx_msec_t deadline)
{
    ngx_pool_t  *pool;

    pool = st->request->pool;

    /* nothing of a failed attempt went to the client: start afresh */

    st->call = call;
    st->provider = call->provider;
    st->codec = ngx_http_helix_formats_codec(call->provider->type);
    st->pass = st->codec->passthrough && st->client == NULL;
    st->out_events = NULL;
    st->model = *model;
    st->cache_key = *cache_key;
    st->cache_state = cache_state;
    st->deadline = deadline;
    st->created = ngx_time();

    st->received = 0;
    st->line.len = 0;
    st->data.len = 0;
    st->event_len = 0;
    st->prompt_tokens = 0;
    st->completion_tokens = 0;
    ngx_str_null(&st->error);
    ngx_str_null(&st->id);

    st->cr = 0;
    st->has_data = 0;
    st->events = 0;
    st->usage = 0;
    st->finish_seen = 0;
    st->ended = 0;
    st->done = 0;

    if (ngx_array_init(&st->choices, pool, 1,
                       sizeof(ngx_http_helix_stream_choice_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the provider's own id, when its events give one, replaces it */

    if (ngx_http_helix_codec_chat_id(pool, &st->id) != NGX_OK) {
        return NGX_ERROR;
    }

    st->in = st->codec->stream_open(pool);
    if (st->in == NULL) {
        return NGX_ERROR;
    }

    call->consume = ngx_http_helix_stream_consume;
    call->stream = st;

    return NGX_OK;
}


ngx_uint_t
ngx_http_helix_stream_sent(ngx_http_helix_stream_t *st)
{
    return st->sent;
}


/* its header has gone: the client knows who answers and from where */

ngx_uint_t
ngx_http_helix_stream_started(ngx_http_helix_stream_t *st)
{
    return st->header_sent;
}


/* a piece of the provider's 2xx answer, from the subrequest's filter */

static ngx_int_t
ngx_http_helix_stream_consume(ngx_http_helix_call_t *call, u_char *data,
    size_t len)
{
    ngx_int_t                 rc;
    ngx_msec_t                left;
    ngx_http_helix_stream_t  *st;

    st = call->stream;

    if (st->call != call || st->last || st->client_error
        || st->abort_ev.posted)
    {
        return NGX_OK;
    }

    if (st->request->connection->buffered & NGX_HTTP_WRITE_BUFFERED) {
        /*
         * The client does not keep up: the provider waits (nginx stops
         * reading from it) until the client's write event drains what is
         * pending and runs the subrequest again.
         */

        if (!st->slow) {
            st->slow = 1;
            ngx_log_error(NGX_LOG_INFO, st->request->connection->log, 0,
                          "helix: stream client is slow, provider \"%V\" "
                          "waits for it", &st->provider->name);
        }

        st->held = 1;
        return NGX_AGAIN;
    }

    if (!st->events) {
        st->events = 1;

        /* the provider answers: from now on only the deadline counts */

        left = st->deadline - ngx_current_msec;

        if (call->timer.timer_set && (ngx_msec_int_t) left > 0) {
            call->timeout = left;
            ngx_add_timer(&call->timer, left);
        }
    }

    /* a stream is an answer too: max_response_body bounds it */

    st->received += len;

    if (st->received > st->max_body) {
        ngx_str_set(&st->error, "the stream is larger than "
                                "max_response_body");
        ngx_post_event(&st->abort_ev, &ngx_posted_events);
        return NGX_OK;
    }

    rc = ngx_http_helix_sse_parse(st, data, len);

    if (rc == NGX_ERROR) {
        /* out of memory, or the client's connection failed */

        if (!st->client_error) {
            ngx_post_event(&st->abort_ev, &ngx_posted_events);
            return NGX_OK;
        }

        return NGX_ERROR;
    }

    if (st->flush_now) {
        return ngx_http_helix_stream_flush(st, 0);
    }

    return NGX_OK;
}


/* the SSE parser: lines end in CR, LF or CRLF, even across pieces */

static ngx_int_t
ngx_http_helix_sse_parse(ngx_http_helix_stream_t *st, u_char *p, size_t len)
{
    u_char      *q, *last;
    ngx_int_t    rc;
    ngx_pool_t  *pool;

    pool = st->request->pool;
    last = p + len;

    while (p < last) {

        if (st->cr) {
            st->cr = 0;

            if (*p == '\n') {
                p++;
                continue;
            }
        }

        for (q = p; q < last && *q != '\n' && *q != '\r'; q++) {
            /* void */
        }

        if (q == last) {
            /* the rest of the line comes with the next piece */
            return ngx_http_helix_sbuf_add(pool, &st->line, p, q - p);
        }

        st->cr = (*q == '\r');

        if (st->line.len) {
            if (ngx_http_helix_sbuf_add(pool, &st->line, p, q - p)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            rc = ngx_http_helix_sse_line(st, st->line.data, st->line.len);
            st->line.len = 0;

        } else {
            rc = ngx_http_helix_sse_line(st, p, q - p);
        }

        if (rc != NGX_OK) {
            return rc;
        }

        p = q + 1;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_sse_line(ngx_http_helix_stream_t *st, u_char *p, size_t len)
{
    u_char  *colon, *v, *last;
    size_t   flen;

    if (len == 0) {
        return ngx_http_helix_sse_dispatch(st);
    }

    if (*p == ':') {
        /* a comment: keep-alives and the like */
        return NGX_OK;
    }

    last = p + len;
    colon = ngx_strlchr(p, last, ':');

    flen = (colon ? colon : last) - p;
    v = colon ? colon + 1 : last;

    if (v < last && *v == ' ') {
        v++;
    }

    if (flen == 4 && ngx_strncmp(p, "data", 4) == 0) {

        if (st->has_data
            && ngx_http_helix_sbuf_add(st->request->pool, &st->data,
                                       (u_char *) "\n", 1)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        st->has_data = 1;

        return ngx_http_helix_sbuf_add(st->request->pool, &st->data, v,
                                       last - v);
    }

    if (flen == 5 && ngx_strncmp(p, "event", 5) == 0) {
        st->event_len = ngx_min((size_t) (last - v),
                                NGX_HTTP_HELIX_STREAM_EVENT_LEN);
        ngx_memcpy(st->event, v, st->event_len);
    }

    /* id, retry and unknown fields mean nothing here */

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_sse_dispatch(ngx_http_helix_stream_t *st)
{
    ngx_int_t  rc;
    ngx_str_t  event;

    if (!st->has_data) {
        st->event_len = 0;
        return NGX_OK;
    }

    if (st->error.len || st->done) {
        /* after an error or the end, the rest is not the client's */
        rc = NGX_OK;

    } else {
        event.data = st->event;
        event.len = st->event_len;

        rc = st->codec->stream_event_in(st->in, &event, st->data.data,
                                        st->data.len);

        if (rc == NGX_OK) {
            rc = ngx_http_helix_stream_apply(st, st->data.data,
                                             st->data.len);
        }

        ngx_http_helix_codec_stream_release(st->in);
    }

    st->data.len = 0;
    st->has_data = 0;
    st->event_len = 0;

    return rc;
}


/*
 * What the provider's event said, in the client's frames; a chat client
 * gets an OpenAI provider's own chunks as they came, but for the usage
 * chunk the gateway asked for itself.
 */

static ngx_int_t
ngx_http_helix_stream_apply(ngx_http_helix_stream_t *st, u_char *data,
    size_t len)
{
    ngx_int_t                    rc;
    ngx_uint_t                   i, emit;
    ngx_http_helix_delta_t      *d;
    ngx_http_helix_stream_in_t  *in;

    in = st->in;
    emit = !(st->pass && in->pass
             && st->endpoint == NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS);

    d = in->deltas.elts;

    for (i = 0; i < in->deltas.nelts; i++) {

        switch (d[i].kind) {

        case NGX_HTTP_HELIX_DELTA_DONE:
            st->ended = 1;
            return ngx_http_helix_stream_done(st);

        case NGX_HTTP_HELIX_DELTA_ERROR:
            return ngx_http_helix_stream_provider_error(st, &d[i].text);

        default:
            rc = ngx_http_helix_stream_delta(st, &d[i], emit);
        }

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (emit || (in->usage_only && !st->include_usage)) {
        return NGX_OK;
    }

    return ngx_http_helix_stream_frame(st, data, len);
}


static ngx_int_t
ngx_http_helix_stream_delta(ngx_http_helix_stream_t *st,
    ngx_http_helix_delta_t *d, ngx_uint_t emit)
{
    switch (d->kind) {

    case NGX_HTTP_HELIX_DELTA_ID:
        st->id.data = ngx_pnalloc(st->request->pool, d->text.len);
        if (st->id.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(st->id.data, d->text.data, d->text.len);
        st->id.len = d->text.len;
        return NGX_OK;

    case NGX_HTTP_HELIX_DELTA_ROLE:
        return ngx_http_helix_stream_role(st, d->index);

    case NGX_HTTP_HELIX_DELTA_TEXT:
        return ngx_http_helix_stream_text(st, d->index,
                                          (const char *) d->text.data,
                                          d->text.len, emit);

    case NGX_HTTP_HELIX_DELTA_TOOL:
        return ngx_http_helix_stream_tool(st, d->index, d->tool, &d->id,
                                          &d->name,
                                          (const char *) d->text.data,
                                          d->text.len, emit);

    case NGX_HTTP_HELIX_DELTA_FINISH:
        return ngx_http_helix_stream_finish(st, d->index, d->finish, emit);

    default: /* NGX_HTTP_HELIX_DELTA_USAGE */

        if (d->has_prompt) {
            st->prompt_tokens = d->prompt;
        }

        if (d->has_completion) {
            st->completion_tokens = d->completion;
        }

        st->usage = 1;
        return NGX_OK;
    }
}


/* the provider's own error event, or an event that is not JSON */

static ngx_int_t
ngx_http_helix_stream_provider_error(ngx_http_helix_stream_t *st,
    ngx_str_t *msg)
{
    u_char  *p;
    size_t   n;

    n = ngx_min(msg->len, 300);

    p = ngx_pnalloc(st->request->pool, n);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, msg->data, n);
    st->error.data = p;
    st->error.len = n;

    ngx_log_error(NGX_LOG_WARN, st->request->connection->log, 0,
                  "helix: provider \"%V\" stream: %V", &st->provider->name,
                  &st->error);

    return NGX_OK;
}


/* a replayed answer's JSON */

static json_t *
ngx_http_helix_stream_load(ngx_http_helix_stream_t *st, u_char *data,
    size_t len)
{
    if (st->ev) {
        json_decref(st->ev);
    }

    st->ev = json_loadb((char *) data, len, 0, NULL);

    return json_is_object(st->ev) ? st->ev : NULL;
}


static ngx_int_t
ngx_http_helix_stream_usage(ngx_http_helix_stream_t *st, json_t *u,
    const char *prompt, const char *completion)
{
    json_t  *v;

    if (!json_is_object(u)) {
        return NGX_OK;
    }

    if (st->provider) {
        ngx_http_helix_budget_stream_usage(st->request, st->provider->type,
                                           u);
    }

    v = json_object_get(u, prompt);

    if (json_is_integer(v)) {
        st->prompt_tokens = json_integer_value(v);
        st->usage = 1;
    }

    v = json_object_get(u, completion);

    if (json_is_integer(v)) {
        st->completion_tokens = json_integer_value(v);
        st->usage = 1;
    }

    return NGX_OK;
}


static ngx_http_helix_stream_choice_t *
ngx_http_helix_stream_choice(ngx_http_helix_stream_t *st, ngx_uint_t index)
{
    ngx_http_helix_stream_choice_t  *ch;

    while (st->choices.nelts <= index) {
        ch = ngx_array_push(&st->choices);
        if (ch == NULL) {
            return NULL;
        }

        ngx_memzero(ch, sizeof(ngx_http_helix_stream_choice_t));

        if (ngx_array_init(&ch->tools, st->request->pool, 1,
                           sizeof(ngx_http_helix_stream_tool_t))
            != NGX_OK)
        {
            return NULL;
        }
    }

    return (ngx_http_helix_stream_choice_t *) st->choices.elts + index;
}


/* chat clients: the first chunk of each choice says who speaks */

static ngx_int_t
ngx_http_helix_stream_role(ngx_http_helix_stream_t *st, ngx_uint_t index)
{
    json_t                          *delta;
    ngx_http_helix_stream_choice_t  *ch;

    ch = ngx_http_helix_stream_choice(st, index);
    if (ch == NULL) {
        return NGX_ERROR;
    }

    if (ch->role || st->endpoint != NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS) {
        return NGX_OK;
    }

    ch->role = 1;

    if (st->client) {
        return index ? NGX_OK
                     : ngx_http_helix_stream_out(st,
                                                 NGX_HTTP_HELIX_DELTA_ROLE,
                                                 -1, NULL, NULL, NULL, 0,
                                                 NULL);
    }

    delta = json_pack("{s:s,s:s}", "role", "assistant", "content", "");
    if (delta == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_helix_stream_chunk(st, index, delta, NULL);
}


static ngx_int_t
ngx_http_helix_stream_text(ngx_http_helix_stream_t *st, ngx_uint_t index,
    const char *text, size_t len, ngx_uint_t emit)
{
    u_char                          *p;
    size_t                           n;
    json_t                          *delta;
    ngx_http_helix_stream_choice_t  *ch;

    ch = ngx_http_helix_stream_choice(st, index);
    if (ch == NULL) {
        return NGX_ERROR;
    }

    ch->text = 1;

    if (ngx_http_helix_sbuf_add(st->request->pool, &ch->content,
                                (u_char *) text, len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!emit || len == 0) {
        return NGX_OK;
    }

    if (st->client) {
        return index ? NGX_OK
                     : ngx_http_helix_stream_out(st,
                                                 NGX_HTTP_HELIX_DELTA_TEXT,
                                                 -1, NULL, NULL,
                                                 (u_char *) text, len, NULL);
    }

    if (st->endpoint == NGX_HTTP_HELIX_EP_COMPLETIONS) {

        if (index != 0) {
            return NGX_OK;
        }

        /* the guide's frame, spaces and all */

        n = ngx_escape_json(NULL, (u_char *) text, len);

        p = ngx_pnalloc(st->request->pool,
                        sizeof("{\"content\": \"\", \"done\": false}") - 1
                        + len + n);
        if (p == NULL) {
            return NGX_ERROR;
        }

        n = (u_char *) ngx_sprintf(p, "{\"content\": \"") - p;
        n = (u_char *) ngx_escape_json(p + n, (u_char *) text, len) - p;
        n = ngx_cpymem(p + n, "\", \"done\": false}",
                       sizeof("\", \"done\": false}") - 1) - p;

        return ngx_http_helix_stream_frame(st, p, n);
    }

    if (ngx_http_helix_stream_role(st, index) != NGX_OK) {
        return NGX_ERROR;
    }

    delta = json_pack("{s:s%}", "content", text, len);
    if (delta == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_helix_stream_chunk(st, index, delta, NULL);
}


/*
 * A tool call starts (tool < 0: the next one; id and name given) or its
 * arguments go on (tool: its index).
 */

static ngx_int_t
ngx_http_helix_stream_tool(ngx_http_helix_stream_t *st, ngx_uint_t index,
    ngx_int_t tool, ngx_str_t *id, ngx_str_t *name, const char *args,
    size_t len, ngx_uint_t emit)
{
    json_t                          *delta, *tc;
    ngx_str_t                        gen;
    ngx_uint_t                       start;
    ngx_http_helix_stream_tool_t    *t;
    ngx_http_helix_stream_choice_t  *ch;

    ch = ngx_http_helix_stream_choice(st, index);
    if (ch == NULL) {
        return NGX_ERROR;
    }

    if (tool < 0) {
        tool = ch->tools.nelts;
    }

    if (tool >= NGX_HTTP_HELIX_STREAM_MAX_CHOICES) {
        return NGX_OK;
    }

    start = 0;

    while (ch->tools.nelts <= (ngx_uint_t) tool) {
        t = ngx_array_push(&ch->tools);
        if (t == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(t, sizeof(ngx_http_helix_stream_tool_t));
        start = 1;
    }

    t = (ngx_http_helix_stream_tool_t *) ch->tools.elts + tool;

    if (id->data && t->id.len == 0) {
        t->id.len = id->len;
        t->id.data = ngx_pnalloc(st->request->pool, t->id.len);
        if (t->id.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(t->id.data, id->data, t->id.len);
    }

    if (start && t->id.len == 0) {
        /* Gemini gives none: the same form as the non-streaming path */
        if (ngx_http_helix_codec_chat_id(st->request->pool, &gen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        t->id.len = gen.len - 4;
        t->id.data = ngx_pnalloc(st->request->pool, t->id.len);
        if (t->id.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(ngx_cpymem(t->id.data, "call_", 5), gen.data + 9,
                   gen.len - 9);
    }

    if (name->data && t->name.len == 0) {
        t->name.len = name->len;
        t->name.data = ngx_pnalloc(st->request->pool, t->name.len);
        if (t->name.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(t->name.data, name->data, t->name.len);
    }

    if (ngx_http_helix_sbuf_add(st->request->pool, &t->args, (u_char *) args,
                                len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!emit || st->endpoint != NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS) {
        return NGX_OK;
    }

    if (ngx_http_helix_stream_role(st, index) != NGX_OK) {
        return NGX_ERROR;
    }

    if (st->client) {
        return index ? NGX_OK
                     : ngx_http_helix_stream_out(st,
                                                 NGX_HTTP_HELIX_DELTA_TOOL,
                                                 tool, &t->id, &t->name,
                                                 (u_char *) args, len, NULL);
    }

    if (start) {
        tc = json_pack("{s:I,s:s%,s:s,s:{s:s%,s:s%}}",
                       "index", (json_int_t) tool,
                       "id", t->id.data, t->id.len,
                       "type", "function",
                       "function",
                       "name", t->name.data ? (char *) t->name.data : "",
                       t->name.len,
                       "arguments", args, len);
    } else {
        tc = json_pack("{s:I,s:{s:s%}}", "index", (json_int_t) tool,
                       "function", "arguments", args, len);
    }

    if (tc == NULL) {
        return NGX_ERROR;
    }

    delta = json_pack("{s:[o]}", "tool_calls", tc);
    if (delta == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_helix_stream_chunk(st, index, delta, NULL);
}


static ngx_int_t
ngx_http_helix_stream_finish(ngx_http_helix_stream_t *st, ngx_uint_t index,
    const char *reason, ngx_uint_t emit)
{
    size_t                           len;
    json_t                          *delta;
    ngx_http_helix_stream_choice_t  *ch;

    ch = ngx_http_helix_stream_choice(st, index);
    if (ch == NULL) {
        return NGX_ERROR;
    }

    /* the provider's string goes with its event */

    len = ngx_strlen(reason) + 1;

    ch->finish = ngx_pnalloc(st->request->pool, len);
    if (ch->finish == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ch->finish, reason, len);
    st->finish_seen = 1;

    if (!emit || st->endpoint != NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS) {
        return NGX_OK;
    }

    if (ngx_http_helix_stream_role(st, index) != NGX_OK) {
        return NGX_ERROR;
    }

    if (st->client) {
        return index ? NGX_OK
                     : ngx_http_helix_stream_out(st,
                                                 NGX_HTTP_HELIX_DELTA_FINISH,
                                                 -1, NULL, NULL, NULL, 0,
                                                 ch->finish);
    }

    delta = json_object();
    if (delta == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_helix_stream_chunk(st, index, delta, reason);
}


/* the end frames: usage if asked for, then [DONE] or the guide's done */

static ngx_int_t
ngx_http_helix_stream_done(ngx_http_helix_stream_t *st)
{
    u_char  *p;
    json_t  *frame;

    if (st->done) {
        return NGX_OK;
    }

    st->done = 1;
    p = NULL;

    if (st->client) {
        return ngx_http_helix_stream_out(st, NGX_HTTP_HELIX_DELTA_DONE, -1,
                                         NULL, NULL, NULL, 0, NULL);
    }

    if (st->endpoint == NGX_HTTP_HELIX_EP_COMPLETIONS) {
        p = ngx_pnalloc(st->request->pool, 160);
        if (p == NULL) {
            return NGX_ERROR;
        }

        return ngx_http_helix_stream_frame(st, p,
                   ngx_sprintf(p, "{\"done\": true, \"usage\": "
                               "{\"prompt_tokens\": %uL, "
                               "\"completion_tokens\": %uL, "
                               "\"total_tokens\": %uL}}",
                               st->prompt_tokens, st->completion_tokens,
                               st->prompt_tokens + st->completion_tokens)
                   - p);
    }

    /* an OpenAI provider's usage chunk went to the client as it came */

    if (st->include_usage && !st->pass) {
        frame = json_pack("{s:s%,s:s,s:I,s:s%,s:[],s:{s:I,s:I,s:I}}",
                          "id", st->id.data, st->id.len,
                          "object", "chat.completion.chunk",
                          "created", (json_int_t) st->created,
                          "model", st->model.data, st->model.len,
                          "choices",
                          "usage",
                          "prompt_tokens", (json_int_t) st->prompt_tokens,
                          "completion_tokens",
                          (json_int_t) st->completion_tokens,
                          "total_tokens",
                          (json_int_t) (st->prompt_tokens
                                        + st->completion_tokens));

        if (ngx_http_helix_stream_json(st, frame) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_http_helix_stream_frame(st, (u_char *) "[DONE]", 6);
}


/* a cut stream: the error in the client's format, then the end */

static ngx_int_t
ngx_http_helix_stream_fail(ngx_http_helix_stream_t *st, ngx_str_t *msg)
{
    u_char      *p;
    size_t       len;
    ngx_uint_t   guide;

    guide = (st->endpoint == NGX_HTTP_HELIX_EP_COMPLETIONS);

    if (st->client) {
        st->done = 1;

        p = ngx_pnalloc(st->request->pool, msg->len + st->provider->name.len
                                           + sizeof("provider \"\": ") - 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        len = ngx_sprintf(p, "provider \"%V\": %V", &st->provider->name, msg)
              - p;

        return ngx_http_helix_stream_out(st, NGX_HTTP_HELIX_DELTA_ERROR, -1,
                                         NULL, NULL, p, len, NULL);
    }

    len = ngx_escape_json(NULL, msg->data, msg->len) + msg->len
          + 2 * st->provider->name.len + 200;

    p = ngx_pnalloc(st->request->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    /* OpenAI's error object; the guide's frames also say "done" */

    len = ngx_sprintf(p, guide ? "{\"error\": {\"message\": \"provider "
                                 "\\\"%V\\\": "
                               : "{\"error\":{\"message\":\"provider "
                                 "\\\"%V\\\": ",
                      &st->provider->name)
          - p;
    len = (u_char *) ngx_escape_json(p + len, msg->data, msg->len) - p;
    len = ngx_sprintf(p + len, guide ? "\", \"type\": \"api_error\", "
                                       "\"param\": null, \"code\": "
                                       "\"provider_error\"}, \"done\": true}"
                                     : "\",\"type\":\"api_error\","
                                       "\"param\":null,\"code\":"
                                       "\"provider_error\"}}")
          - p;

    if (ngx_http_helix_stream_frame(st, p, len) != NGX_OK) {
        return NGX_ERROR;
    }

    st->done = 1;

    if (guide) {
        return NGX_OK;
    }

    return ngx_http_helix_stream_frame(st, (u_char *) "[DONE]", 6);
}


/*
 * A delta for a client format's codec, the usage so far with it; its
 * events are written as "event: <type>" and "data: <json>".
 */

static ngx_int_t
ngx_http_helix_stream_out(ngx_http_helix_stream_t *st, ngx_uint_t kind,
    ngx_int_t tool, ngx_str_t *id, ngx_str_t *name, u_char *text,
    size_t len, const char *finish)
{
    ngx_uint_t               i;
    ngx_http_helix_sse_t    *e;
    ngx_http_helix_delta_t   d;

    if (st->out_events == NULL) {
        st->out_events = st->client->stream_out_open(st->request->pool,
                                                     &st->id, &st->model);
        if (st->out_events == NULL) {
            return NGX_ERROR;
        }
    }

    ngx_memzero(&d, sizeof(ngx_http_helix_delta_t));

    d.kind = kind;
    d.tool = tool;
    d.text.data = text;
    d.text.len = len;
    d.finish = finish;
    d.prompt = st->prompt_tokens;
    d.completion = st->completion_tokens;
    d.has_prompt = st->usage;
    d.has_completion = st->usage;

    if (id) {
        d.id = *id;
    }

    if (name) {
        d.name = *name;
    }

    st->out_events->events.nelts = 0;

    if (st->client->stream_out(st->out_events, &d) != NGX_OK) {
        return NGX_ERROR;
    }

    e = st->out_events->events.elts;

    for (i = 0; i < st->out_events->events.nelts; i++) {
        if (e[i].event.len
            && (ngx_http_helix_stream_write(st, (u_char *) "event: ", 7)
                != NGX_OK
                || ngx_http_helix_stream_write(st, e[i].event.data,
                                               e[i].event.len)
                   != NGX_OK
                || ngx_http_helix_stream_write(st, (u_char *) "\n", 1)
                   != NGX_OK))
        {
            return NGX_ERROR;
        }

        if (ngx_http_helix_stream_frame(st, e[i].data.data, e[i].data.len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* one chat.completion.chunk with one choice; delta is stolen */

static ngx_int_t
ngx_http_helix_stream_chunk(ngx_http_helix_stream_t *st, ngx_uint_t index,
    json_t *delta, const char *finish)
{
    json_t  *frame;

    frame = json_pack("{s:s%,s:s,s:I,s:s%,s:[{s:I,s:o,s:n,s:s?}]}",
                      "id", st->id.data, st->id.len,
                      "object", "chat.completion.chunk",
                      "created", (json_int_t) st->created,
                      "model", st->model.data, st->model.len,
                      "choices",
                      "index", (json_int_t) index,
                      "delta", delta,
                      "logprobs",
                      "finish_reason", finish);

    return ngx_http_helix_stream_json(st, frame);
}


static ngx_int_t
ngx_http_helix_stream_json(ngx_http_helix_stream_t *st, json_t *frame)
{
    u_char  *p;
    size_t   len;

    if (frame == NULL) {
        return NGX_ERROR;
    }

    len = json_dumpb(frame, NULL, 0, JSON_COMPACT);

    p = ngx_pnalloc(st->request->pool, len);
    if (p == NULL) {
        json_decref(frame);
        return NGX_ERROR;
    }

    len = json_dumpb(frame, (char *) p, len, JSON_COMPACT);
    json_decref(frame);

    if (len == 0) {
        return NGX_ERROR;
    }

    return ngx_http_helix_stream_frame(st, p, len);
}


/* "data: <payload>\n\n", then the flush policy decides */

static ngx_int_t
ngx_http_helix_stream_frame(ngx_http_helix_stream_t *st, u_char *p,
    size_t len)
{
    if (ngx_http_helix_stream_write(st, (u_char *) "data: ", 6) != NGX_OK
        || ngx_http_helix_stream_write(st, p, len) != NGX_OK
        || ngx_http_helix_stream_write(st, (u_char *) "\n\n", 2) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!st->sent || st->flush_interval == 0
        || st->pending >= st->buffer_size)
    {
        st->flush_now = 1;

    } else if (!st->flush_ev.timer_set) {
        ngx_add_timer(&st->flush_ev, st->flush_interval);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_stream_write(ngx_http_helix_stream_t *st, u_char *p,
    size_t len)
{
    size_t        size;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = st->out ? st->cur->buf : NULL;

    if (b == NULL || (size_t) (b->end - b->last) < len) {
        cl = ngx_chain_get_free_buf(st->request->pool, &st->free);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        b = cl->buf;
        size = ngx_max(len, ngx_max(st->buffer_size, 1024));

        if (b->start == NULL || (size_t) (b->end - b->start) < len) {
            b->start = ngx_palloc(st->request->pool, size);
            if (b->start == NULL) {
                return NGX_ERROR;
            }

            b->end = b->start + size;
        }

        b->pos = b->start;
        b->last = b->start;
        b->memory = 1;
        b->temporary = 1;
        b->flush = 0;
        b->last_buf = 0;
        b->last_in_chain = 0;
        b->tag = (ngx_buf_tag_t) &ngx_http_helix_stream_create;

        if (st->out) {
            st->cur->next = cl;

        } else {
            st->out = cl;
        }

        st->cur = cl;
    }

    b->last = ngx_cpymem(b->last, p, len);
    st->pending += len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_stream_header(ngx_http_helix_stream_t *st)
{
    ngx_http_request_t  *r;

    static ngx_str_t  no_cache = ngx_string("no-cache");
    static ngx_str_t  no = ngx_string("no");

    r = st->request;

#if (NGX_HTTP_GZIP)

    /*
     * "compression: gzip" lets nginx's gzip (gzip on, gzip_types
     * text/event-stream) compress the frames, flushed as they go;
     * "none" keeps streams plain whatever gzip says.
     */

    if (!st->gzip) {
        r->gzip_tested = 1;
        r->gzip_ok = 0;
    }

#endif

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_type = ngx_http_helix_sse_type;
    r->headers_out.content_type_len = ngx_http_helix_sse_type.len;
    r->headers_out.content_length_n = -1;
    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);

    if (ngx_http_helix_add_header(r, "Cache-Control", &no_cache)
        != NGX_OK
        || ngx_http_helix_add_header(r, "X-Accel-Buffering", &no)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* a replay's headers were set by the cache */

    if (st->call
        && (ngx_http_helix_add_header(r, "X-Helix-Provider",
                                             &st->provider->name)
            != NGX_OK
            || (st->cache_state
                && ngx_http_helix_add_header(r, "X-Cache",
                                                    st->cache_state)
                   != NGX_OK)
            || (st->cache_key.len
                && ngx_http_helix_add_header(r, "X-Cache-Key",
                                                    &st->cache_key)
                   != NGX_OK)))
    {
        return NGX_ERROR;
    }

    if (st->call && st->start_us) {
        ngx_http_helix_stream_timed(st);

        if (st->timing
            && ngx_http_helix_server_timing(r, st->cache_state, st->gw_us,
                                            st->ttfb_us, 1)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    st->header_sent = 1;

    r->write_event_handler = ngx_http_helix_stream_writer;

    return ngx_http_send_header(r);
}


static ngx_int_t
ngx_http_helix_stream_flush(ngx_http_helix_stream_t *st, ngx_uint_t last)
{
    ngx_int_t            rc;
    ngx_buf_t           *b;
    ngx_chain_t         *cl;
    ngx_http_request_t  *r;

    r = st->request;
    st->flush_now = 0;

    if (st->flush_ev.timer_set) {
        ngx_del_timer(&st->flush_ev);
    }

    if (st->client_error) {
        return NGX_ERROR;
    }

    if (!st->header_sent) {
        rc = ngx_http_helix_stream_header(st);

        if (rc == NGX_ERROR || rc > NGX_OK) {
            st->client_error = 1;
            return NGX_ERROR;
        }
    }

    if (st->out == NULL) {
        cl = ngx_chain_get_free_buf(r->pool, &st->free);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        b = cl->buf;
        b->pos = b->start;
        b->last = b->start;
        b->tag = (ngx_buf_tag_t) &ngx_http_helix_stream_create;
        b->memory = 0;
        b->temporary = 0;
        b->last_buf = 0;
        b->last_in_chain = 0;

        st->out = cl;
        st->cur = cl;
    }

    b = st->cur->buf;
    b->flush = 1;

    if (last) {
        b->last_buf = 1;
        b->last_in_chain = 1;
        st->last = 1;
    }

    if (st->pending) {
        if (!st->sent && st->call) {
            /* the first frame of a provider's stream: its time to it */
            ngx_http_helix_metrics_stream_first(
                ngx_http_get_module_main_conf(r, ngx_http_helix_module),
                st->provider, ngx_http_helix_request_time(r));
        }

        st->sent = 1;
    }

    st->pending = 0;

    rc = ngx_http_output_filter(r, st->out);

    ngx_chain_update_chains(r->pool, &st->free, &st->busy, &st->out,
                            (ngx_buf_tag_t) &ngx_http_helix_stream_create);

    st->out = NULL;

    if (rc == NGX_ERROR) {
        st->client_error = 1;
        return NGX_ERROR;
    }

    if (!last && ngx_http_helix_stream_arm(r) != NGX_OK) {
        st->client_error = 1;
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_helix_stream_flush_handler(ngx_event_t *ev)
{
    ngx_connection_t         *c;
    ngx_http_helix_stream_t  *st = ev->data;

    c = st->request->connection;

    if (ngx_http_helix_stream_flush(st, 0) != NGX_OK && st->call) {
        ngx_http_helix_call_abort(st->call);
    }

    ngx_http_run_posted_requests(c);
}


/* what the client could not take yet waits for its write event */

static ngx_int_t
ngx_http_helix_stream_arm(ngx_http_request_t *r)
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


/*
 * The client's write events while the stream runs, within send_timeout.
 * After the last frame nginx's own writer takes over.
 */

static void
ngx_http_helix_stream_writer(ngx_http_request_t *r)
{
    ngx_connection_t         *c;
    ngx_http_helix_stream_t  *st;

    c = r->connection;

    if (c->write->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client timed out");
        c->timedout = 1;

    } else if (ngx_http_output_filter(r, NULL) != NGX_ERROR
               && ngx_http_helix_stream_arm(r) == NGX_OK)
    {
        st = ngx_http_get_module_ctx(r, ngx_http_helix_stream_module);

        if (st && st->held && !(c->buffered & NGX_HTTP_WRITE_BUFFERED)
            && st->call && !st->call->done)
        {
            /* the client has caught up: the provider's turn again */

            st->held = 0;

            if (ngx_http_post_request(st->call->sr, NULL) != NGX_OK) {
                goto failed;
            }
        }

        return;
    }

failed:

    /* the provider call ends with the request */

    c->error = 1;
    ngx_http_finalize_request(r, NGX_ERROR);
}


ngx_int_t
ngx_http_helix_stream_end(ngx_http_helix_stream_t *st, ngx_str_t *answer,
    ngx_str_t *reason)
{
    ngx_int_t                    rc;
    ngx_uint_t                   ok;
    ngx_str_t                    msg;
    ngx_http_helix_call_t       *call;
    ngx_http_helix_main_conf_t  *hmcf;

    call = st->call;
    st->held = 0;
    ngx_str_null(answer);

    if (call->complete && !st->client_error) {
        /* a last event without its blank line */

        if (st->line.len) {
            rc = ngx_http_helix_sse_line(st, st->line.data, st->line.len);
            st->line.len = 0;

        } else {
            rc = NGX_OK;
        }

        if (rc == NGX_OK) {
            rc = ngx_http_helix_sse_dispatch(st);
        }

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        /* a format whose stream ends with its body */

        if (st->codec->stream_end_in && st->error.len == 0) {
            rc = st->codec->stream_end_in(st->in);

            if (rc == NGX_OK) {
                rc = ngx_http_helix_stream_apply(st, NULL, 0);
            }

            ngx_http_helix_codec_stream_release(st->in);

            if (rc != NGX_OK) {
                return NGX_ERROR;
            }
        }
    }

    hmcf = ngx_http_get_module_main_conf(st->request, ngx_http_helix_module);

    if (st->client_error || st->request->connection->error) {
        ngx_http_helix_metrics_stream(hmcf, st->provider,
                                      NGX_HTTP_HELIX_STREAM_CLIENT_CLOSED);
        st->counted = 1;
        return NGX_ERROR;
    }

    ok = (call->outcome == NGX_HTTP_HELIX_CALL_OK && call->complete
          && st->ended && st->error.len == 0);

    if (!ok) {
        if (st->error.len) {
            msg = st->error;

        } else if (call->outcome == NGX_HTTP_HELIX_CALL_TIMEOUT) {
            ngx_str_set(&msg, "timed out");

        } else if (!call->complete || call->outcome != NGX_HTTP_HELIX_CALL_OK)
        {
            ngx_str_set(&msg, "the stream was cut");

        } else {
            ngx_str_set(&msg, "the stream ended without its last event");
        }

        if (!st->sent) {
            *reason = msg;
            return NGX_DECLINED;
        }

        ngx_log_error(NGX_LOG_WARN, st->request->connection->log, 0,
                      "helix: provider \"%V\" stream failed after the first "
                      "frame: %V", &st->provider->name, &msg);

        ngx_http_helix_metrics_stream(hmcf, st->provider,
                                      NGX_HTTP_HELIX_STREAM_FAILED);
        st->counted = 1;

        if (ngx_http_helix_stream_fail(st, &msg) != NGX_OK) {
            return NGX_ERROR;
        }

    } else {
        ngx_http_helix_metrics_stream(hmcf, st->provider,
                                      NGX_HTTP_HELIX_STREAM_COMPLETED);
        st->counted = 1;

        ngx_http_helix_metrics_provider(hmcf, st->provider, call->latency,
                                        st->prompt_tokens,
                                        st->completion_tokens);

        ngx_http_helix_limit_charge(st->request,
                                    (ngx_uint_t) (st->prompt_tokens
                                                  + st->completion_tokens));
        ngx_http_helix_budget_charge(st->request, st->provider, &st->model,
                                     st->prompt_tokens,
                                     st->completion_tokens, NULL);

        if (ngx_http_helix_stream_assemble(st, answer) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    rc = ngx_http_helix_stream_flush(st, 1);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the answer as the non-streaming path would have given it */

static ngx_int_t
ngx_http_helix_stream_assemble(ngx_http_helix_stream_t *st,
    ngx_str_t *answer)
{
    json_t                          *out, *choices, *c, *msg, *calls, *tc;
    ngx_str_t                        id;
    ngx_uint_t                       i, k, chat;
    ngx_pool_t                      *pool;
    ngx_http_helix_stream_tool_t    *t;
    ngx_http_helix_stream_choice_t  *ch;

    pool = st->request->pool;
    chat = (st->endpoint == NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS);

    choices = json_array();
    if (choices == NULL || ngx_http_helix_json_pool(pool, choices) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ch = st->choices.elts;

    for (i = 0; i < st->choices.nelts; i++) {

        if (!chat) {
            c = json_pack("{s:s%,s:I,s:n,s:s?}",
                          "text", ch[i].content.data
                                  ? (char *) ch[i].content.data : "",
                          ch[i].content.len,
                          "index", (json_int_t) i,
                          "logprobs",
                          "finish_reason", ch[i].finish);

            if (c == NULL || json_array_append_new(choices, c) != 0) {
                return NGX_ERROR;
            }

            continue;
        }

        if (ch[i].text || ch[i].tools.nelts == 0) {
            msg = json_pack("{s:s,s:s%}", "role", "assistant", "content",
                            ch[i].content.data
                            ? (char *) ch[i].content.data : "",
                            ch[i].content.len);
        } else {
            msg = json_pack("{s:s,s:n}", "role", "assistant", "content");
        }

        if (msg == NULL) {
            return NGX_ERROR;
        }

        if (ch[i].tools.nelts) {
            calls = json_array();

            if (calls == NULL || json_object_set_new(msg, "tool_calls", calls))
            {
                json_decref(msg);
                return NGX_ERROR;
            }

            t = ch[i].tools.elts;

            for (k = 0; k < ch[i].tools.nelts; k++) {
                tc = json_pack("{s:s%,s:s,s:{s:s%,s:s%}}",
                               "id", t[k].id.data ? (char *) t[k].id.data
                                                  : "", t[k].id.len,
                               "type", "function",
                               "function",
                               "name", t[k].name.data ? (char *) t[k].name.data
                                                      : "", t[k].name.len,
                               "arguments", t[k].args.data
                                            ? (char *) t[k].args.data : "",
                               t[k].args.len);

                if (tc == NULL || json_array_append_new(calls, tc) != 0) {
                    json_decref(msg);
                    return NGX_ERROR;
                }
            }
        }

        c = json_pack("{s:I,s:o,s:n,s:s?}", "index", (json_int_t) i,
                      "message", msg, "logprobs",
                      "finish_reason", ch[i].finish);

        if (c == NULL || json_array_append_new(choices, c) != 0) {
            return NGX_ERROR;
        }
    }

    if (st->id.len == 0
        && ngx_http_helix_codec_chat_id(pool, &st->id) != NGX_OK)
    {
        return NGX_ERROR;
    }

    id = st->id;

    if (!chat && id.len > 9 && ngx_strncmp(id.data, "chatcmpl-", 9) == 0) {
        id.len -= 5;
        id.data = ngx_pnalloc(pool, id.len);
        if (id.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(ngx_cpymem(id.data, "cmpl-", 5), st->id.data + 9,
                   id.len - 5);
    }

    out = json_pack("{s:s%,s:s,s:I,s:s%,s:O,s:{s:I,s:I,s:I}}",
                    "id", id.data, id.len,
                    "object", chat ? "chat.completion" : "text_completion",
                    "created", (json_int_t) st->created,
                    "model", st->model.data, st->model.len,
                    "choices", choices,
                    "usage",
                    "prompt_tokens", (json_int_t) st->prompt_tokens,
                    "completion_tokens", (json_int_t) st->completion_tokens,
                    "total_tokens",
                    (json_int_t) (st->prompt_tokens + st->completion_tokens));

    if (out == NULL || ngx_http_helix_json_pool(pool, out) != NGX_OK) {
        json_decref(out);
        return NGX_ERROR;
    }

    return ngx_http_helix_json_dump(pool, out, answer);
}


/* a cached answer as frames: one chunk for the text of each choice */

ngx_int_t
ngx_http_helix_stream_replay(ngx_http_helix_stream_t *st,
    ngx_str_t *provider, ngx_str_t *body)
{
    size_t                      i, k;
    json_t                     *ans, *c, *msg, *v, *tc, *fn;
    ngx_str_t                   id, name;
    ngx_int_t                   index;
    const char                 *s;
    ngx_http_helix_provider_t  *replayed;

    ans = ngx_http_helix_stream_load(st, body->data, body->len);
    if (ans == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* no provider is called: every frame is built here, none passed on */

    replayed = ngx_pcalloc(st->request->pool,
                           sizeof(ngx_http_helix_provider_t));
    if (replayed == NULL) {
        return NGX_ERROR;
    }

    replayed->name = *provider;
    st->provider = replayed;
    st->pass = 0;

    if (ngx_array_init(&st->choices, st->request->pool, 1,
                       sizeof(ngx_http_helix_stream_choice_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    v = json_object_get(ans, "id");
    st->id.data = (u_char *) (json_is_string(v) ? json_string_value(v) : "");
    st->id.len = json_is_string(v) ? json_string_length(v) : 0;

    v = json_object_get(ans, "model");
    st->model.data = (u_char *) (json_is_string(v) ? json_string_value(v)
                                                   : "");
    st->model.len = json_is_string(v) ? json_string_length(v) : 0;

    v = json_object_get(ans, "created");
    st->created = json_is_integer(v) ? json_integer_value(v) : ngx_time();

    st->sent = 1;  /* no waiting for the first frame: it is all here */
    st->flush_interval = 0;

    json_array_foreach(json_object_get(ans, "choices"), i, c) {
        v = json_object_get(c, "index");
        index = json_is_integer(v) ? json_integer_value(v) : (ngx_int_t) i;

        if (index < 0 || index >= NGX_HTTP_HELIX_STREAM_MAX_CHOICES) {
            continue;
        }

        msg = json_object_get(c, "message");
        v = msg ? json_object_get(msg, "content") : json_object_get(c, "text");

        if (ngx_http_helix_stream_role(st, index) != NGX_OK) {
            return NGX_ERROR;
        }

        if (json_is_string(v)
            && ngx_http_helix_stream_text(st, index, json_string_value(v),
                                          json_string_length(v), 1)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        json_array_foreach(json_object_get(msg, "tool_calls"), k, tc) {
            fn = json_object_get(tc, "function");
            v = json_object_get(fn, "arguments");
            s = json_is_string(v) ? json_string_value(v) : "";

            ngx_http_helix_codec_string(json_object_get(tc, "id"), &id);
            ngx_http_helix_codec_string(json_object_get(fn, "name"), &name);

            if (ngx_http_helix_stream_tool(st, index, -1, &id, &name,
                                           s, ngx_strlen(s), 1)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        s = json_string_value(json_object_get(c, "finish_reason"));

        if (s && ngx_http_helix_stream_finish(st, index, s, 1) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    v = json_object_get(ans, "usage");
    ngx_http_helix_stream_usage(st, v, "prompt_tokens", "completion_tokens");

    if (ngx_http_helix_stream_done(st) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_helix_stream_flush(st, 1);
}


static ngx_int_t
ngx_http_helix_sbuf_add(ngx_pool_t *pool, ngx_http_helix_sbuf_t *s,
    u_char *p, size_t len)
{
    u_char  *n;
    size_t   cap;

    if (len == 0) {
        return NGX_OK;
    }

    if (s->len + len > s->cap) {
        cap = ngx_max(ngx_max(s->cap * 2, s->len + len), 256);

        n = ngx_pnalloc(pool, cap);
        if (n == NULL) {
            return NGX_ERROR;
        }

        if (s->len) {
            ngx_memcpy(n, s->data, s->len);
        }

        if (s->cap) {
            ngx_pfree(pool, s->data);
        }

        s->data = n;
        s->cap = cap;
    }

    ngx_memcpy(s->data + s->len, p, len);
    s->len += len;

    return NGX_OK;
}
