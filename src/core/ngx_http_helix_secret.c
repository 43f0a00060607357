/*
 * Copyright (C) helix authors
 *
 * Secrets, and the module's calls to itself.
 *
 * Secrets a client presents (API keys, the admin token) are compared in
 * time that does not tell how much of them matched.
 *
 * Background tasks and cache warming call the gateway's own endpoints
 * on the address "helix_loopback" names: an IP address on the loopback,
 * which must be one this nginx listens on in plain HTTP (checked at
 * start, so the calls and what they carry never go anywhere else).  Such
 * a call carries "X-Helix-Internal: v1.<expiry>.<hex HMAC-SHA256>" over
 * its method, URI, task id, the key, address or tenant it is made for
 * (a task's calls: the key or address that posted it; cache warming: the
 * tenant whose cache it fills), and the
 * expiry (unix seconds: the call's own timeout and a few seconds): a
 * header seen once is no use for another call, nor after its call.  The HMAC
 * key is made from the OpenSSL random generator once per master process
 * (all its workers share it, and it stays the same across reloads); it
 * never leaves the process.
 */


#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_secret.h"


#define NGX_HTTP_HELIX_MAC_LEN   32     /* SHA-256 */
#define NGX_HTTP_HELIX_SLACK     5      /* seconds past a call's timeout:
                                           its way here, a cached clock */


static ngx_int_t ngx_http_helix_internal_mac(ngx_pool_t *pool,
    ngx_str_t *method, ngx_str_t *uri, ngx_str_t *task, ngx_str_t *key_name,
    ngx_str_t *addr, ngx_str_t *tenant, time_t expiry, u_char *mac);
static ngx_int_t ngx_http_helix_hex(u_char c);


static u_char      ngx_http_helix_internal_key[32];
static ngx_uint_t  ngx_http_helix_internal_key_made;


/* how long it takes tells only the length of what was given */

ngx_uint_t
ngx_http_helix_secret_equal(ngx_str_t *given, ngx_str_t *secret)
{
    size_t  i;
    u_char  diff;

    if (secret->len == 0) {
        return 0;
    }

    diff = (given->len != secret->len);

    for (i = 0; i < given->len; i++) {
        diff |= given->data[i] ^ secret->data[i % secret->len];
    }

    return diff == 0;
}


ngx_int_t
ngx_http_helix_internal_init(ngx_conf_t *cf)
{
    if (ngx_http_helix_internal_key_made) {
        return NGX_OK;
    }

    if (RAND_bytes(ngx_http_helix_internal_key,
                   sizeof(ngx_http_helix_internal_key))
        != 1)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "helix: RAND_bytes() failed: no key for the "
                           "module's own calls");
        return NGX_ERROR;
    }

    ngx_http_helix_internal_key_made = 1;

    return NGX_OK;
}


/*
 * The X-Helix-Internal value of a POST to uri, for a task's key or
 * address, or for a tenant (at most one of the three is not empty).
 */

ngx_int_t
ngx_http_helix_internal_sign(ngx_pool_t *pool, ngx_str_t *uri,
    ngx_str_t *task, ngx_str_t *key_name, ngx_str_t *addr, ngx_str_t *tenant,
    ngx_msec_t lifetime, ngx_str_t *value)
{
    u_char     *p;
    time_t      expiry;
    ngx_str_t   method = ngx_string("POST");
    u_char      mac[NGX_HTTP_HELIX_MAC_LEN];

    expiry = ngx_time() + lifetime / 1000 + NGX_HTTP_HELIX_SLACK;

    if (ngx_http_helix_internal_mac(pool, &method, uri, task, key_name, addr,
                                    tenant, expiry, mac)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(pool, sizeof("v1..") - 1 + NGX_TIME_T_LEN
                          + 2 * NGX_HTTP_HELIX_MAC_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    value->data = p;
    p = ngx_sprintf(p, "v1.%T.", expiry);
    p = ngx_hex_dump(p, mac, NGX_HTTP_HELIX_MAC_LEN);
    value->len = p - value->data;

    return NGX_OK;
}


/*
 * NGX_OK: the value was made by this master for this very request (its
 * method and URI, and the task, key or address it names), and has not
 * expired; NGX_DECLINED: it was, but has expired; NGX_ERROR: it was not
 * (forged, altered, for another call, or malformed).
 */

ngx_int_t
ngx_http_helix_internal_verify(ngx_http_request_t *r, ngx_str_t *value,
    ngx_str_t *task, ngx_str_t *key_name, ngx_str_t *addr, ngx_str_t *tenant)
{
    u_char      *p, *dot, *last;
    time_t       expiry;
    ngx_int_t    hi, lo;
    ngx_uint_t   i;
    u_char       given[NGX_HTTP_HELIX_MAC_LEN];
    u_char       mac[NGX_HTTP_HELIX_MAC_LEN];

    if (!ngx_http_helix_internal_key_made
        || value->len < sizeof("v1.") - 1
        || ngx_strncmp(value->data, "v1.", sizeof("v1.") - 1) != 0)
    {
        return NGX_ERROR;
    }

    p = value->data + sizeof("v1.") - 1;
    last = value->data + value->len;

    dot = ngx_strlchr(p, last, '.');

    if (dot == NULL || dot == p || (size_t) (dot - p) > NGX_TIME_T_LEN
        || (size_t) (last - dot - 1) != 2 * NGX_HTTP_HELIX_MAC_LEN)
    {
        return NGX_ERROR;
    }

    expiry = ngx_atotm(p, dot - p);
    if (expiry == NGX_ERROR) {
        return NGX_ERROR;
    }

    p = dot + 1;

    for (i = 0; i < NGX_HTTP_HELIX_MAC_LEN; i++) {
        hi = ngx_http_helix_hex(p[2 * i]);
        lo = ngx_http_helix_hex(p[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            return NGX_ERROR;
        }

        given[i] = (u_char) (hi << 4 | lo);
    }

    if (ngx_http_helix_internal_mac(r->pool, &r->method_name,
                                    &r->unparsed_uri, task, key_name, addr,
                                    tenant, expiry, mac)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (CRYPTO_memcmp(given, mac, NGX_HTTP_HELIX_MAC_LEN) != 0) {
        return NGX_ERROR;
    }

    return expiry < ngx_time() ? NGX_DECLINED : NGX_OK;
}


/* fields one per line: none of them can hold a newline */

static ngx_int_t
ngx_http_helix_internal_mac(ngx_pool_t *pool, ngx_str_t *method,
    ngx_str_t *uri, ngx_str_t *task, ngx_str_t *key_name, ngx_str_t *addr,
    ngx_str_t *tenant, time_t expiry, u_char *mac)
{
    u_char        *msg, *p;
    size_t         len;
    unsigned int   n;

    len = sizeof("v1\n\n\n\nk:\n") - 1 + method->len + uri->len + task->len
          + ngx_max(ngx_max(key_name->len, addr->len), tenant->len)
          + NGX_TIME_T_LEN;

    msg = ngx_pnalloc(pool, len);
    if (msg == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(msg, "v1\n%V\n%V\n%V\n", method, uri, task);

    if (key_name->len) {
        p = ngx_sprintf(p, "k:%V", key_name);

    } else if (addr->len) {
        p = ngx_sprintf(p, "a:%V", addr);

    } else if (tenant->len) {
        p = ngx_sprintf(p, "t:%V", tenant);
    }

    p = ngx_sprintf(p, "\n%T", expiry);

    n = NGX_HTTP_HELIX_MAC_LEN;

    if (HMAC(EVP_sha256(), ngx_http_helix_internal_key,
             sizeof(ngx_http_helix_internal_key), msg, p - msg, mac, &n)
        == NULL
        || n != NGX_HTTP_HELIX_MAC_LEN)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_hex(u_char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/* helix_loopback 127.0.0.1:8080; */

char *
ngx_http_helix_loopback(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_helix_main_conf_t *hmcf = conf;

    size_t                n;
    ngx_int_t             rc;
    ngx_str_t            *value;
    ngx_uint_t            loopback;
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif
    u_char                text[NGX_SOCKADDR_STRLEN];

    if (hmcf->loopback.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rc = ngx_parse_addr_port(cf->pool, &hmcf->loopback_addr, value[1].data,
                             value[1].len);

    if (rc != NGX_OK || ngx_inet_get_port(hmcf->loopback_addr.sockaddr) == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "helix_loopback \"%V\": expected an IP address "
                           "and a port, as 127.0.0.1:8080 or [::1]:8080 "
                           "(no host names)", &value[1]);
        return NGX_CONF_ERROR;
    }

    hmcf->loopback_addr.name = value[1];
    loopback = 0;

    switch (hmcf->loopback_addr.sockaddr->sa_family) {

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) hmcf->loopback_addr.sockaddr;
        loopback = IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
        break;
#endif

    case AF_INET:
        sin = (struct sockaddr_in *) hmcf->loopback_addr.sockaddr;
        loopback = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
        break;
    }

    if (!loopback) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "helix_loopback \"%V\" is not on the loopback "
                           "(127.0.0.0/8 or ::1): the module's own calls "
                           "carry credentials and stay on this host",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    n = ngx_sock_ntop(hmcf->loopback_addr.sockaddr,
                      hmcf->loopback_addr.socklen, text,
                      NGX_SOCKADDR_STRLEN, 1);

    hmcf->loopback.data = ngx_pnalloc(cf->pool, sizeof("http://") - 1 + n);
    if (hmcf->loopback.data == NULL) {
        return NGX_CONF_ERROR;
    }

    hmcf->loopback.len = ngx_sprintf(hmcf->loopback.data, "http://%*s", n,
                                     text)
                         - hmcf->loopback.data;

    return NGX_CONF_OK;
}


/*
 * In postconfiguration, when the listen directives are known: tasks and
 * warming need helix_loopback, and helix_loopback a plain HTTP listener
 * of this nginx.
 */

ngx_int_t
ngx_http_helix_loopback_check(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf)
{
    in_port_t                   port;
    ngx_uint_t                  i, j, tasks;
    const char                 *who;
    struct sockaddr            *sa;
    ngx_http_conf_port_t       *cp;
    ngx_http_conf_addr_t       *addr, *found;
    ngx_http_core_main_conf_t  *cmcf;

    who = NULL;
    tasks = hmcf->database.configured && hmcf->tasks.enabled
            && hmcf->tasks.concurrency;

    if (tasks) {
        who = "background tasks (a database is configured and "
              "tasks.enabled is true)";

    } else if (hmcf->cache.enabled && hmcf->cache.l1_enabled
               && hmcf->cache.warming_enabled
               && hmcf->cache.warming_on_startup
               && hmcf->cache.warming_queries.nelts)
    {
        who = "cache warming (cache.warming)";
    }

    if (hmcf->loopback.len == 0) {
        if (who == NULL) {
            return NGX_OK;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "helix: %s call the gateway's own endpoints: "
                           "say where with \"helix_loopback 127.0.0.1:"
                           "<port>;\" in http{}, a listen address of this "
                           "nginx that serves them%s", who,
                           tasks ? ", or set tasks.enabled: false" : "");
        return NGX_ERROR;
    }

    sa = hmcf->loopback_addr.sockaddr;
    port = ngx_inet_get_port(sa);
    found = NULL;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    if (cmcf->ports) {
        cp = cmcf->ports->elts;

        for (i = 0; i < cmcf->ports->nelts; i++) {
            if (cp[i].port != port || cp[i].family != sa->sa_family) {
                continue;
            }

            addr = cp[i].addrs.elts;

            for (j = 0; j < cp[i].addrs.nelts; j++) {

                /* an address of its own wins over a wildcard */

                if (ngx_cmp_sockaddr(addr[j].opt.sockaddr,
                                     addr[j].opt.socklen, sa,
                                     hmcf->loopback_addr.socklen, 0)
                    == NGX_OK)
                {
                    found = &addr[j];
                    break;
                }

                if (addr[j].opt.wildcard) {
                    found = &addr[j];
                }
            }
        }
    }

    if (found == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "helix_loopback \"%V\": no listen directive of "
                           "this nginx takes that address",
                           &hmcf->loopback_addr.name);
        return NGX_ERROR;
    }

    if (found->opt.ssl || found->opt.http2 || found->opt.proxy_protocol) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "helix_loopback \"%V\": its listen has ssl, "
                           "http2 or proxy_protocol; the module's own "
                           "calls speak plain HTTP/1.1",
                           &hmcf->loopback_addr.name);
        return NGX_ERROR;
    }

    return NGX_OK;
}
