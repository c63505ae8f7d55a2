/*
 * An echo runtime written only against the runtime C ABI (SPEC §2): every
 * request comes back unchanged with rc 0, in a malloc()ed copy.
 *
 * cfg: NULL = one poll thread; "N" = N poll threads (1..16); "paused" = one
 * poll thread that waits for echo_runtime_resume(); "fail" = libffi_init
 * returns 42. echo_runtime_threads() counts poll threads still running.
 */

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "resty_ffi.h"

#define ECHO_INIT_FAILED 42
#define ECHO_BAD_CFG 22
#define ECHO_MAX_THREADS 16

static pthread_mutex_t echo_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t echo_resumed = PTHREAD_COND_INITIALIZER;
static int echo_paused;
static int echo_live;

void
echo_runtime_resume(void)
{
    pthread_mutex_lock(&echo_lock);
    echo_paused = 0;
    pthread_cond_broadcast(&echo_resumed);
    pthread_mutex_unlock(&echo_lock);
}

int
echo_runtime_threads(void)
{
    int live;

    pthread_mutex_lock(&echo_lock);
    live = echo_live;
    pthread_mutex_unlock(&echo_lock);
    return live;
}

static void *
echo_poll(void *tq)
{
    void *task;
    char *req, *rsp;
    int len;

    pthread_mutex_lock(&echo_lock);
    while (echo_paused) {
        pthread_cond_wait(&echo_resumed, &echo_lock);
    }
    pthread_mutex_unlock(&echo_lock);

    for ( ;; ) {
        task = ngx_http_lua_ffi_task_poll(tq);
        if (task == NULL) {
            break;
        }

        req = ngx_http_lua_ffi_get_req(task, &len);
        rsp = NULL;
        if (len > 0) {
            rsp = malloc(len);
            if (rsp == NULL) {
                ngx_http_lua_ffi_respond(task, 1, NULL, 0);
                continue;
            }
            memcpy(rsp, req, len);
        }

        /* rsp_len 0 with a NULL rsp: an empty answer */
        ngx_http_lua_ffi_respond(task, 0, rsp, len);
    }

    pthread_mutex_lock(&echo_lock);
    echo_live--;
    pthread_mutex_unlock(&echo_lock);
    return NULL;
}

int
libffi_init(char *cfg, void *tq)
{
    int i, n;
    pthread_t tid;

    n = 1;
    if (cfg != NULL && strcmp(cfg, "fail") == 0) {
        return ECHO_INIT_FAILED;
    }
    if (cfg != NULL && strcmp(cfg, "paused") == 0) {
        pthread_mutex_lock(&echo_lock);
        echo_paused = 1;
        pthread_mutex_unlock(&echo_lock);
    } else if (cfg != NULL) {
        n = atoi(cfg);
        if (n < 1 || n > ECHO_MAX_THREADS) {
            return ECHO_BAD_CFG;
        }
    }

    for (i = 0; i < n; i++) {
        pthread_mutex_lock(&echo_lock);
        echo_live++;
        pthread_mutex_unlock(&echo_lock);

        if (pthread_create(&tid, NULL, echo_poll, tq) != 0) {
            pthread_mutex_lock(&echo_lock);
            echo_live--;
            pthread_mutex_unlock(&echo_lock);
            /* the host unloads tq, which ends the threads already started */
            return ECHO_INIT_FAILED;
        }
        pthread_detach(tid);
    }

    return 0;
}
