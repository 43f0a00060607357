/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_UPSTREAM_H_INCLUDED_
#define _NGX_HTTP_HELIX_UPSTREAM_H_INCLUDED_


#include "ngx_http_helix.h"




typedef enum {
    NGX_HTTP_HELIX_CALL_OK = 0,
    NGX_HTTP_HELIX_CALL_FAILED,        /* status, connection, truncation */
    NGX_HTTP_HELIX_CALL_TIMEOUT,
    NGX_HTTP_HELIX_CALL_TOO_LARGE,
    NGX_HTTP_HELIX_CALL_BREAKER_OPEN,  /* not started */
    NGX_HTTP_HELIX_CALL_BUSY           /* not started: concurrency limit */
} ngx_http_helix_call_outcome_e;


typedef enum {
    NGX_HTTP_HELIX_BREAKER_CLOSED = 0,
    NGX_HTTP_HELIX_BREAKER_OPEN,
    NGX_HTTP_HELIX_BREAKER_HALF_OPEN
} ngx_http_helix_breaker_state_e;


typedef struct ngx_http_helix_call_s  ngx_http_helix_call_t;

typedef void (*ngx_http_helix_call_handler_pt)(ngx_http_helix_call_t *call);
typedef ngx_int_t (*ngx_http_helix_call_consume_pt)(
    ngx_http_helix_call_t *call, u_char *data, size_t len);


/* one provider call: a background subrequest whose answer is captured */

struct ngx_http_helix_call_s {
    ngx_http_request_t              *request;
    ngx_http_request_t              *sr;
    ngx_http_helix_provider_t       *provider;

    /* runs in the parent request's context once the call has ended */
    ngx_http_helix_call_handler_pt   handler;
    void                            *data;

    ngx_uint_t                       status;
    ngx_uint_t                       outcome;   /* call_outcome_e */
    ngx_str_t                        body;
    size_t                           capacity;
    size_t                           max_body;
    ngx_msec_t                       timeout;
    ngx_msec_t                       start;
    ngx_msec_t                       latency;
    ngx_msec_t                       start_us;  /* monotonic */
    ngx_msec_t                       latency_us;

    ngx_event_t                      timer;
    ngx_event_t                      posted;

    /*
     * a stream: each piece of a 2xx answer goes here, not into body;
     * NGX_AGAIN keeps it and what follows (kept) until the subrequest
     * is run again
     */
    ngx_http_helix_call_consume_pt   consume;
    void                            *stream;
    ngx_chain_t                     *kept;

    unsigned                         started:1;
    unsigned                         done:1;
    unsigned                         complete:1;
    unsigned                         held:1;
    unsigned                         probe:1;
    unsigned                         reported:1;
    unsigned                         no_answer:1;
};


typedef struct {
    ngx_uint_t                       state;     /* breaker_state_e */
    ngx_uint_t                       inflight;
    ngx_uint_t                       consecutive_failures;
    ngx_uint_t                       window_requests;
    ngx_uint_t                       window_failures;
    ngx_msec_t                       retry_in;  /* open: until half-open */
    uint64_t                         requests;
    uint64_t                         failures;
    uint64_t                         opened;
} ngx_http_helix_provider_state_t;


/*
 * A request waiting for a place at the concurrency limits.  handler runs
 * when it may look again (outcome SERVED: try; TIMEOUT: its time is up);
 * wait_done ends the wait with how it ended (metrics.h's queue outcomes).
 */

typedef struct ngx_http_helix_waiter_s  ngx_http_helix_waiter_t;

typedef void (*ngx_http_helix_waiter_pt)(ngx_http_helix_waiter_t *w,
    ngx_uint_t outcome);

struct ngx_http_helix_waiter_s {
    ngx_queue_t                      queue;
    ngx_event_t                      ev;
    ngx_msec_t                       until;     /* set by the caller */
    ngx_msec_t                       since_us;
    ngx_http_helix_waiter_pt         handler;   /* set by the caller */
    void                            *data;
    ngx_log_t                       *log;       /* set by the caller */
    ngx_http_helix_main_conf_t      *hmcf;
    unsigned                         queued:1;
};


ngx_int_t ngx_http_helix_wait_place(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_waiter_t *w);
ngx_int_t ngx_http_helix_wait_again(ngx_http_helix_waiter_t *w);
void ngx_http_helix_wait_done(ngx_http_helix_waiter_t *w,
    ngx_uint_t outcome);
ngx_uint_t ngx_http_helix_waiting_total(ngx_http_helix_main_conf_t *hmcf);


ngx_int_t ngx_http_helix_upstream_init_zone(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf);
ngx_int_t ngx_http_helix_upstream_init_process(ngx_cycle_t *cycle);
void ngx_http_helix_upstream_exit_process(ngx_cycle_t *cycle);

ngx_int_t ngx_http_helix_call_start(ngx_http_helix_call_t *call,
    ngx_str_t *uri, ngx_str_t *body, ngx_uint_t stream);
void ngx_http_helix_call_report(ngx_http_helix_call_t *call, ngx_uint_t ok);
void ngx_http_helix_call_abort(ngx_http_helix_call_t *call);

void ngx_http_helix_provider_state(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_provider_t *p, ngx_http_helix_provider_state_t *st);
ngx_uint_t ngx_http_helix_inflight_total(ngx_http_helix_main_conf_t *hmcf);
ngx_uint_t ngx_http_helix_worker_pids(ngx_pid_t *pids, ngx_uint_t max);


extern ngx_module_t  ngx_http_helix_filter_module;


#endif /* _NGX_HTTP_HELIX_UPSTREAM_H_INCLUDED_ */
