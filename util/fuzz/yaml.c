/*
 * Copyright (C) helix authors
 *
 * The helix.yaml loader (src/core/ngx_http_helix_yaml.c) as "helix_config"
 * runs it: the input is written to a file and loaded into a main
 * configuration with the defaults, under a configuration context that has
 * what the loader uses (pools, a log, the cycle).  Messages about a bad
 * file go to the quiet log.
 */


#include "fuzz.h"
#include "ngx_http_helix.h"
#include "ngx_http_helix_yaml.h"


static u_char  fuzz_yaml_name[64];


static void
fuzz_yaml_unlink(void)
{
    (void) unlink((char *) fuzz_yaml_name);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE                        *fp;
    ngx_str_t                    file;
    ngx_conf_t                   cf;
    ngx_pool_t                  *pool;
    ngx_http_helix_main_conf_t  *hmcf;

    fuzz_init();

    if (fuzz_yaml_name[0] == '\0') {
        ngx_sprintf(fuzz_yaml_name, "/tmp/helix-fuzz-yaml.%P%Z", ngx_pid);
        atexit(fuzz_yaml_unlink);
    }

    fp = fopen((char *) fuzz_yaml_name, "wb");
    if (fp == NULL) {
        abort();
    }

    if (size && fwrite(data, size, 1, fp) != 1) {
        abort();
    }

    fclose(fp);

    pool = fuzz_pool();

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.pool = pool;
    cf.temp_pool = pool;
    cf.cycle = (ngx_cycle_t *) ngx_cycle;
    cf.log = &fuzz_log;

    hmcf = ngx_pcalloc(pool, sizeof(ngx_http_helix_main_conf_t));

    if (ngx_http_helix_yaml_defaults(pool, hmcf) == NGX_OK) {
        file.data = fuzz_yaml_name;
        file.len = ngx_strlen(fuzz_yaml_name);

        (void) ngx_http_helix_yaml_load(&cf, hmcf, &file);
    }

    ngx_destroy_pool(pool);

    return 0;
}
