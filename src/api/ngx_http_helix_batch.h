/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_BATCH_H_INCLUDED_
#define _NGX_HTTP_HELIX_BATCH_H_INCLUDED_


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_gateway.h"


typedef struct ngx_http_helix_batch_s  ngx_http_helix_batch_t;

typedef void (*ngx_http_helix_batch_pt)(ngx_http_helix_batch_t *b);
typedef void (*ngx_http_helix_batch_item_pt)(ngx_http_helix_batch_t *b,
    ngx_http_helix_item_t *item);


/* items run at most "max" at a time, in queue order */

struct ngx_http_helix_batch_s {
    ngx_http_request_t             *request;
    ngx_uint_t                      endpoint;

    ngx_http_helix_item_t          *items;
    ngx_uint_t                      nitems;
    ngx_uint_t                     *queue;      /* ring of item indexes */
    ngx_uint_t                      qhead;
    ngx_uint_t                      qlen;

    ngx_uint_t                      running;
    ngx_uint_t                      finished;
    ngx_uint_t                      max;        /* now */
    ngx_uint_t                      limit;      /* asked for */
    ngx_uint_t                      peak;

    ngx_http_helix_batch_pt         complete;   /* every item is done */
    ngx_http_helix_batch_item_pt    item_done;  /* one item is */

    void                           *data;       /* the kind's own state */
    ngx_event_t                     deadline;
    ngx_str_t                       log_id;     /* its items' rows */
    ngx_uint_t                      log_base;   /* row of item 0 */

    unsigned                        requeue:1;
    unsigned                        stop:1;
    unsigned                        scheduling:1;
    unsigned                        again:1;
    unsigned                        answered:1;
};


ngx_int_t ngx_http_helix_batch_init(ngx_http_helix_batch_t *b, ngx_uint_t n);
void ngx_http_helix_batch_push(ngx_http_helix_batch_t *b, ngx_uint_t i);
void ngx_http_helix_batch_fail(ngx_http_helix_batch_t *b, ngx_uint_t i,
    ngx_uint_t status, const char *code, char *param, const char *msg);
void ngx_http_helix_batch_run(ngx_http_helix_batch_t *b);
void ngx_http_helix_batch_finish(ngx_http_helix_batch_t *b, ngx_int_t rc);
ngx_int_t ngx_http_helix_batch_send(ngx_http_helix_batch_t *b, json_t *out);
json_t *ngx_http_helix_batch_error(ngx_http_helix_item_t *item);
json_t *ngx_http_helix_batch_answer(ngx_http_helix_item_t *item);

/*
 * The ensemble's start (ngx_http_helix_ensemble.c, which runs on this
 * file's scheduler): set by ngx_http_helix_module.c, so that batch.c
 * needs nothing of the file that uses it.
 */
typedef ngx_int_t (*ngx_http_helix_batch_start_pt)(ngx_http_helix_batch_t *b,
    json_t *req);

extern ngx_http_helix_batch_start_pt  ngx_http_helix_batch_ensemble;

ngx_int_t ngx_http_helix_batch_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_HELIX_BATCH_H_INCLUDED_ */
