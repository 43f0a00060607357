/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_REDIS_H_INCLUDED_
#define _NGX_HTTP_HELIX_REDIS_H_INCLUDED_


#include <hiredis/hiredis.h>

#include "ngx_http_helix.h"


typedef struct ngx_http_helix_redis_op_s  ngx_http_helix_redis_op_t;

/* reply is NULL when Redis could not answer (down, timeout, error) */
typedef void (*ngx_http_helix_redis_pt)(ngx_http_helix_redis_op_t *op,
    redisReply *reply);


/* a message on a SUBSCRIBEd channel (hostile bytes, not terminated) */
typedef void (*ngx_http_helix_redis_message_pt)(u_char *msg, size_t len);


struct ngx_http_helix_redis_op_s {
    ngx_http_helix_redis_pt      handler;
    void                        *data;
    ngx_event_t                  timer;
    ngx_pool_cleanup_t          *cln;
    char                        *cmd;       /* formatted, for retries */
    int                          len;
    ngx_uint_t                   retries;
    unsigned                     done:1;
    unsigned                     errors:1;  /* the handler sees them */
};


ngx_int_t ngx_http_helix_redis_init_process(ngx_cycle_t *cycle);
void ngx_http_helix_redis_exit_process(ngx_cycle_t *cycle);

ngx_http_helix_redis_op_t *ngx_http_helix_redis_command(ngx_pool_t *pool,
    ngx_http_helix_redis_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen);
ngx_uint_t ngx_http_helix_redis_available(void);
ngx_int_t ngx_http_helix_redis_subscribe(const char *channel,
    ngx_http_helix_redis_message_pt handler);




#endif /* _NGX_HTTP_HELIX_REDIS_H_INCLUDED_ */
