/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_PG_H_INCLUDED_
#define _NGX_HTTP_HELIX_PG_H_INCLUDED_


#include <libpq-fe.h>

#include "ngx_http_helix.h"


/* a statement, prepared once per connection on first use */

typedef struct {
    const char                  *name;
    const char                  *sql;
    int                          nparams;
    ngx_uint_t                   index;     /* 1.., set by the pool */
    ngx_uint_t                   copy;      /* COPY FROM STDIN: the data
                                               is the one param, not
                                               copied: the caller keeps it
                                               until its handler runs */
} ngx_http_helix_pg_stmt_t;


typedef struct ngx_http_helix_pg_query_s  ngx_http_helix_pg_query_t;

/*
 * res is NULL when PostgreSQL could not run it (down, timeout, SQL
 * error: q->error says which); the pool frees res after the call
 */
typedef void (*ngx_http_helix_pg_pt)(ngx_http_helix_pg_query_t *q,
    PGresult *res);

typedef void (*ngx_http_helix_pg_notify_pt)(void *data);


struct ngx_http_helix_pg_query_s {
    ngx_http_helix_pg_stmt_t    *stmt;
    ngx_http_helix_pg_pt         handler;
    void                        *data;
    const char                  *error;

    ngx_queue_t                  queue;     /* waiting for a connection */
    ngx_event_t                  timer;     /* while it waits */
    ngx_pool_cleanup_t          *cln;
    void                        *conn;
    ngx_msec_t                   sent;
    ngx_msec_t                   deadline;  /* timeouts.database */
    ngx_msec_t                   queued_us; /* for the metrics */
    ngx_msec_t                   sent_us;
    int                          nparams;
    char                       **values;
    size_t                       len0;      /* of values[0] */
    char                         sqlstate[6];
    unsigned                     waiting:1;
    unsigned                     done:1;
    unsigned                     rejected:1;    /* by the server: SQL */
    unsigned                     full:1;        /* the pool was, when it
                                                   came */
    unsigned                     timedout:1;
};


ngx_int_t ngx_http_helix_pg_init_process(ngx_cycle_t *cycle);
void ngx_http_helix_pg_exit_process(ngx_cycle_t *cycle);

ngx_http_helix_pg_query_t *ngx_http_helix_pg_query(ngx_pool_t *pool,
    ngx_http_helix_pg_stmt_t *stmt, ngx_str_t *params,
    ngx_http_helix_pg_pt handler, void *data);
/*
 * A field of a result, never NULL: "" where libpq has none (a row or a
 * column the result lacks), so that a result of an unexpected shape (a
 * schema not migrated, a hostile server) is bad data, not a crash.
 */
char *ngx_http_helix_pg_value(PGresult *res, int row, int col);

ngx_int_t ngx_http_helix_pg_listen(const char *channel,
    ngx_http_helix_pg_notify_pt handler, void *data);


#endif /* _NGX_HTTP_HELIX_PG_H_INCLUDED_ */
