/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_ENSEMBLE_H_INCLUDED_
#define _NGX_HTTP_HELIX_ENSEMBLE_H_INCLUDED_


#include "ngx_http_helix.h"
#include "ngx_http_helix_batch.h"


/* an ensemble's request, on the batch scheduler (ngx_http_helix_batch.c) */
ngx_int_t ngx_http_helix_ensemble(ngx_http_helix_batch_t *b, json_t *req);


#endif /* _NGX_HTTP_HELIX_ENSEMBLE_H_INCLUDED_ */
