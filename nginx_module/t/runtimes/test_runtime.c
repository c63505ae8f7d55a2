/*
 * A misbehaving-on-request runtime for the integration tests, written only
 * against the runtime C ABI. cfg: "threads=N" (default 1), "init_rc=N" or
 * "null_tag" (a NULL request is answered "NULL"; by default it echoes as empty).
 * Requests:
 *   "rc:<n>:<msg>"         answers rc n with msg (no response when msg is empty)
 *   "sleep:<ms>:<payload>" sleeps, then echoes payload
 *   "cstr:<text>"          answers text as a NUL-terminated string (rsp_len 0)
 *   "answer:<rc>:<size>:<rsp_len>:<ms>"
 *                          after <ms>, answers rc and rsp_len with a malloc()ed
 *                          rsp of <size> bytes and a NUL (rsp NULL when <size>
 *                          is 0; the bytes are 'x' when at most 1 MiB, else
 *                          untouched)
 *   "libc:<size>:<rsp_len>"
 *                          answers rc 0 and rsp_len with <size> bytes 'y' and a
 *                          NUL, allocated by glibc's own malloc, looked up in a
 *                          handle on libc.so.6 (as jnr-ffi's load("c") and
 *                          Python's ctypes.CDLL("libc.so.6") do; on Envoy the
 *                          process's malloc is tcmalloc's)
 *   "never"                never answers (the task is leaked on purpose)
 *   anything else          echoed back unchanged
 */

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "resty_ffi.h"


static void
respond_copy(void *task, int rc, const char *data, size_t len)
{
    char  *rsp = NULL;

    if (len > 0) {
        rsp = malloc(len);
        memcpy(rsp, data, len);
    }

    ngx_http_lua_ffi_respond(task, rc, rsp, (int) len);
}


#define FILLED_MAX  (1 << 20)


static int  null_tag;


/* "answer:<rc>:<size>:<rsp_len>:<ms>": a response exactly as described. */
static void
answer(void *task, char *spec)
{
    int     rc, rsp_len, ms;
    char   *rsp = NULL;
    size_t  size;

    rc = (int) strtol(spec, &spec, 10);
    size = strtoul(spec + 1, &spec, 10);
    rsp_len = (int) strtol(spec + 1, &spec, 10);
    ms = atoi(spec + 1);

    if (size > 0) {
        rsp = malloc(size + 1);
        if (rsp != NULL) {
            if (size <= FILLED_MAX) {
                memset(rsp, 'x', size);
            }
            rsp[size] = '\0';
        }
    }

    usleep(ms * 1000);
    ngx_http_lua_ffi_respond(task, rc, rsp, rsp_len);
}


static void *(*libc_malloc)(size_t);
static pthread_once_t  libc_once = PTHREAD_ONCE_INIT;


static void
find_libc_malloc(void)
{
    void  *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);

    *(void **) &libc_malloc = libc ? dlsym(libc, "malloc") : NULL;
}


/* "libc:<size>:<rsp_len>" */
static void
answer_libc(void *task, char *spec)
{
    int     rsp_len;
    char   *rsp;
    size_t  size;

    pthread_once(&libc_once, find_libc_malloc);
    if (libc_malloc == NULL) {
        respond_copy(task, 1, "no libc.so.6", 12);
        return;
    }

    size = strtoul(spec, &spec, 10);
    rsp_len = (int) strtol(spec + 1, NULL, 10);

    rsp = libc_malloc(size + 1);
    if (rsp != NULL) {
        memset(rsp, 'y', size);
        rsp[size] = '\0';
    }

    ngx_http_lua_ffi_respond(task, 0, rsp, rsp_len);
}


static void
handle(void *task)
{
    int          len;
    char        *req, *sep;
    const char  *msg;

    req = ngx_http_lua_ffi_get_req(task, &len);

    if (req == NULL && null_tag) {
        respond_copy(task, 0, "NULL", 4);
        return;
    }

    if (len > 3 && strncmp(req, "rc:", 3) == 0) {
        sep = strchr(req + 3, ':');
        msg = sep ? sep + 1 : "";
        respond_copy(task, atoi(req + 3), msg, strlen(msg));
        return;
    }

    if (len > 6 && strncmp(req, "sleep:", 6) == 0) {
        sep = strchr(req + 6, ':');
        usleep(atoi(req + 6) * 1000);
        msg = sep ? sep + 1 : "";
        respond_copy(task, 0, msg, len - (msg - req));
        return;
    }

    if (len > 7 && strncmp(req, "answer:", 7) == 0) {
        answer(task, req + 7);
        return;
    }

    if (len > 5 && strncmp(req, "libc:", 5) == 0) {
        answer_libc(task, req + 5);
        return;
    }

    if (len >= 5 && strncmp(req, "cstr:", 5) == 0) {
        ngx_http_lua_ffi_respond(task, 0, strdup(req + 5), 0);
        return;
    }

    if (len == 5 && strcmp(req, "never") == 0) {
        return;
    }

    respond_copy(task, 0, req, len);
}


static void *
serve(void *tq)
{
    void  *task;

    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        handle(task);
    }

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    int        i, threads = 1;
    pthread_t  tid;

    if (cfg != NULL && strncmp(cfg, "init_rc=", 8) == 0) {
        return atoi(cfg + 8);
    }

    if (cfg != NULL && strncmp(cfg, "threads=", 8) == 0) {
        threads = atoi(cfg + 8);
    }

    null_tag = cfg != NULL && strcmp(cfg, "null_tag") == 0;

    for (i = 0; i < threads; i++) {
        if (pthread_create(&tid, NULL, serve, tq) != 0) {
            return 1;
        }
        pthread_detach(tid);
    }

    return 0;
}
