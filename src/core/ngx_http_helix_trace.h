/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_TRACE_H_INCLUDED_
#define _NGX_HTTP_HELIX_TRACE_H_INCLUDED_


#include "ngx_http_helix.h"


#define NGX_HTTP_HELIX_TRACEPARENT_LEN  55   /* 00-<32>-<16>-<2> */


typedef struct {
    u_char                      trace_id[32];   /* hex */
    u_char                      parent_id[16];  /* the client's span */
    u_char                      span_id[16];    /* the gateway's */
    u_char                      flags[2];
    ngx_str_t                   tracestate;     /* the client's, as it came */
    ngx_str_t                   traceparent;    /* the gateway's */
    unsigned                    incoming:1;     /* the client named one */
} ngx_http_helix_trace_t;


ngx_http_helix_trace_t *ngx_http_helix_trace(ngx_http_request_t *r);
ngx_int_t ngx_http_helix_trace_headers(ngx_http_request_t *r,
    ngx_list_t *headers);
ngx_str_t *ngx_http_helix_trace_id(ngx_http_request_t *r, ngx_str_t *id);


extern ngx_module_t  ngx_http_helix_trace_module;


#endif /* _NGX_HTTP_HELIX_TRACE_H_INCLUDED_ */
