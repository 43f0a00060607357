/*
 * Copyright (C) helix authors
 *
 * What every libFuzzer harness of util/fuzz/ shares: the nginx globals
 * a module function expects outside a running nginx (page size, cached
 * time, a cycle with a quiet log), and a pool per input.  The harnesses
 * are linked with the whole nginx tree and the module, built with
 * -fsanitize=fuzzer-no-link,address by util/fuzz.sh; a harness that needs
 * a file's static functions includes that .c file, and util/fuzz.sh then
 * leaves its object out.
 */


#ifndef _HELIX_FUZZ_H_INCLUDED_
#define _HELIX_FUZZ_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


static ngx_log_t     fuzz_log;
static ngx_open_file_t  fuzz_log_file;
static ngx_cycle_t   fuzz_cycle;


static void
fuzz_init(void)
{
    static ngx_uint_t  done;

    if (done) {
        return;
    }

    done = 1;

    ngx_pagesize = getpagesize();
    for (ngx_pagesize_shift = 0; (ngx_uint_t) (1 << ngx_pagesize_shift)
                                 < ngx_pagesize; ngx_pagesize_shift++)
    {
        /* void */
    }

    ngx_cacheline_size = NGX_CPU_CACHE_LINE;
    ngx_pid = getpid();

    (void) ngx_strerror_init();
    ngx_time_init();

    /* nothing is logged unless FUZZ_LOG is set: the run stays readable */

    fuzz_log_file.fd = ngx_stderr;
    fuzz_log.file = &fuzz_log_file;
    fuzz_log.log_level = getenv("FUZZ_LOG") ? NGX_LOG_DEBUG : 0;

    fuzz_cycle.log = &fuzz_log;
    ngx_str_set(&fuzz_cycle.hostname, "fuzz");
    ngx_cycle = &fuzz_cycle;
}


static ngx_pool_t *
fuzz_pool(void)
{
    ngx_pool_t  *pool;

    pool = ngx_create_pool(4096, &fuzz_log);
    if (pool == NULL) {
        abort();
    }

    return pool;
}


#endif /* _HELIX_FUZZ_H_INCLUDED_ */
