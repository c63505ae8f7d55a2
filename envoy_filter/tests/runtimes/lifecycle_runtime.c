/*
 * A runtime that records its life, for tests that check runtimes are
 * unloaded: cfg is "<file>|<tag>"; it appends "init <tag>" to <file> in
 * libffi_init and "exit <tag>" when its poll thread sees the runtime
 * unloaded. Requests are echoed back.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resty_ffi.h"

typedef struct {
    void *tq;
    char file[512];
    char tag[128];
} lifecycle_t;

static pthread_mutex_t file_lock = PTHREAD_MUTEX_INITIALIZER;

static void record(const lifecycle_t *rt, const char *event)
{
    pthread_mutex_lock(&file_lock);
    FILE *f = fopen(rt->file, "a");
    if (f != NULL) {
        fprintf(f, "%s %s\n", event, rt->tag);
        fclose(f);
    }
    pthread_mutex_unlock(&file_lock);
}

static void *serve(void *arg)
{
    lifecycle_t *rt = arg;
    void *task;
    while ((task = ngx_http_lua_ffi_task_poll(rt->tq)) != NULL) {
        int len = 0;
        char *req = ngx_http_lua_ffi_get_req(task, &len);
        char *rsp = NULL;
        if (len > 0) {
            rsp = malloc(len);
            memcpy(rsp, req, len);
        }
        ngx_http_lua_ffi_respond(task, 0, rsp, len);
    }
    record(rt, "exit");
    free(rt);
    return NULL;
}

int libffi_init(char *cfg, void *tq)
{
    const char *bar = cfg != NULL ? strchr(cfg, '|') : NULL;
    if (bar == NULL || (size_t) (bar - cfg) >= sizeof(((lifecycle_t *) 0)->file)) {
        return 1;
    }
    lifecycle_t *rt = calloc(1, sizeof(*rt));
    rt->tq = tq;
    memcpy(rt->file, cfg, bar - cfg);
    snprintf(rt->tag, sizeof(rt->tag), "%s", bar + 1);
    record(rt, "init");
    pthread_t thread;
    if (pthread_create(&thread, NULL, serve, rt) != 0) {
        free(rt);
        return 2;
    }
    pthread_detach(thread);
    return 0;
}
