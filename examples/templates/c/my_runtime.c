/*
 * A resty_ffi runtime in C: answers each request upper-cased; an empty or
 * nil request answers rc 22, "empty request". Build: make
 * Lua: local rt = ngx.load_ffi("/path/to/libmy_runtime.so")
 *      local ok, res = rt:call("hello")        -- true, "HELLO"
 */
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The runtime ABI, provided by the host (the nginx module or the Envoy filter). */
void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *task, int *len);
void  ngx_http_lua_ffi_respond(void *task, int rc, char *rsp, int rsp_len);


static void *
serve(void *tq)
{
    int    i, len;
    char  *req, *rsp;
    void  *task;

    /* NULL: Lua unloaded the runtime; tq must not be used again. */
    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        req = ngx_http_lua_ffi_get_req(task, &len);

        if (len == 0) {
            /* rsp_len 0 with a non-NULL rsp: a C string. */
            ngx_http_lua_ffi_respond(task, 22, strdup("empty request"), 0);
            continue;
        }

        rsp = malloc(len);      /* the host frees it */
        if (rsp == NULL) {
            ngx_http_lua_ffi_respond(task, 12, NULL, 0);
            continue;
        }

        for (i = 0; i < len; i++) {
            rsp[i] = (char) toupper((unsigned char) req[i]);
        }

        ngx_http_lua_ffi_respond(task, 0, rsp, len);
    }

    return NULL;
}


/* Called once per ngx.load_ffi(lib, cfg) key, per nginx worker / Envoy worker
 * thread. cfg is NULL or a C string valid only during this call. */
int
libffi_init(char *cfg, void *tq)
{
    pthread_t  tid;

    (void) cfg;

    if (pthread_create(&tid, NULL, serve, tq) != 0) {
        return 1;               /* ngx.load_ffi returns nil, 1 */
    }

    pthread_detach(tid);
    return 0;
}
