/*
 * A C host that uses libresty_ffi.so through dlopen/dlsym only, like the nginx
 * module would: loads the echo runtime, runs 100,000 round trips, then checks
 * queue full, unload and load errors.
 *
 * usage: host_test <libresty_ffi.so> <echo runtime .so> <library without libffi_init>
 */

#include <dlfcn.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "resty_ffi.h"

#define ROUND_TRIPS 100000
#define IN_FLIGHT 100
#define DRAIN_MAX 64
#define MAX_PAYLOAD 4096
#define WAIT_MS 10000

/* The host API, resolved with dlsym; the types come from resty_ffi.h. */
static struct {
    __typeof__(&resty_ffi_sink_new) sink_new;
    __typeof__(&resty_ffi_sink_fd) sink_fd;
    __typeof__(&resty_ffi_sink_acknowledge) sink_acknowledge;
    __typeof__(&resty_ffi_sink_drain) sink_drain;
    __typeof__(&resty_ffi_sink_free) sink_free;
    __typeof__(&resty_ffi_runtime_load) runtime_load;
    __typeof__(&resty_ffi_runtime_post) runtime_post;
    __typeof__(&resty_ffi_runtime_unload) runtime_unload;
    __typeof__(&resty_ffi_runtime_free) runtime_free;
} api;

/* Test hooks of the echo runtime. */
static void (*echo_resume)(void);
static int (*echo_threads)(void);

static int failures;

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__,  \
                    #cond);                                                   \
            failures++;                                                       \
        }                                                                     \
    } while (0)

#define RESOLVE(lib, field, name)                                             \
    do {                                                                      \
        (field) = (__typeof__(field)) dlsym(lib, name);                       \
        if ((field) == NULL) {                                                \
            fprintf(stderr, "dlsym %s: %s\n", name, dlerror());               \
            exit(2);                                                          \
        }                                                                     \
    } while (0)

/* Sizes 0..MAX_PAYLOAD-1, with NUL bytes. */
static size_t
payload(unsigned long token, char *buf)
{
    size_t i, len;

    len = token * 13 % MAX_PAYLOAD;
    for (i = 0; i < len; i++) {
        buf[i] = (char) ((token + i * 7) % 251);
    }
    return len;
}

static int
wait_readable(int fd)
{
    struct pollfd pfd = { fd, POLLIN, 0 };

    return poll(&pfd, 1, WAIT_MS) == 1;
}

static void
wait_no_threads(void)
{
    int i;

    for (i = 0; i < WAIT_MS && echo_threads() != 0; i++) {
        usleep(1000);
    }
    CHECK(echo_threads() == 0);
}

/* Waits for answers and verifies them; returns how many arrived. */
static size_t
collect(resty_ffi_sink *sink, char *seen, unsigned long total)
{
    resty_ffi_completion out[DRAIN_MAX];
    char expected[MAX_PAYLOAD];
    size_t i, n, got, len;

    if (!wait_readable(api.sink_fd(sink))) {
        fprintf(stderr, "no answer within %d ms\n", WAIT_MS);
        failures++;
        return 0;
    }
    api.sink_acknowledge(sink);

    got = 0;
    do {
        n = api.sink_drain(sink, out, DRAIN_MAX);
        for (i = 0; i < n; i++) {
            CHECK(out[i].token < total && !seen[out[i].token]);
            CHECK(out[i].rc == 0);
            if (out[i].token < total) {
                seen[out[i].token] = 1;
                len = payload(out[i].token, expected);
                CHECK(out[i].rsp_len == len);
                CHECK(len == 0 ? out[i].rsp == NULL
                               : memcmp(out[i].rsp, expected, len) == 0);
            }
            free(out[i].rsp);
        }
        got += n;
    } while (n == DRAIN_MAX);

    return got;
}

static resty_ffi_runtime *
load(const char *lib, const char *cfg, size_t max_queue, int *init_rc,
    char *err, size_t err_len)
{
    return api.runtime_load(lib, cfg, cfg == NULL ? 0 : strlen(cfg),
                            max_queue, 0, 0, 0, init_rc, err, err_len);
}

static double
round_trips(const char *echo)
{
    char buf[MAX_PAYLOAD], err[256], *seen;
    int rc, init_rc;
    unsigned long posted, received;
    size_t len;
    struct timespec t0, t1;
    resty_ffi_sink *sink;
    resty_ffi_runtime *rt;

    sink = api.sink_new();
    CHECK(sink != NULL);
    rt = load(echo, "2", IN_FLIGHT, &init_rc, err, sizeof(err));
    if (sink == NULL || rt == NULL) {
        fprintf(stderr, "load %s: rc %d: %s\n", echo, init_rc, err);
        exit(1);
    }
    seen = calloc(ROUND_TRIPS, 1);
    CHECK(seen != NULL);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    posted = 0;
    received = 0;
    while (received < ROUND_TRIPS && failures == 0) {
        while (posted < ROUND_TRIPS && posted - received < IN_FLIGHT) {
            len = payload(posted, buf);
            rc = api.runtime_post(rt, sink, posted, len ? buf : NULL, len);
            CHECK(rc == RESTY_FFI_OK);
            posted++;
        }
        received += collect(sink, seen, ROUND_TRIPS);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(received == ROUND_TRIPS);

    CHECK(api.runtime_unload(rt) == RESTY_FFI_OK);
    wait_no_threads();
    api.runtime_free(rt);
    api.sink_free(sink);
    free(seen);

    return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec))
           / ROUND_TRIPS;
}

/* A full queue refuses at once; unload answers what was posted, then ends. */
static void
queue_full_and_unload(const char *echo)
{
    char buf[MAX_PAYLOAD], err[256], seen[4] = { 0 };
    int init_rc;
    unsigned long token;
    size_t len, received;
    resty_ffi_sink *sink;
    resty_ffi_runtime *rt;

    sink = api.sink_new();
    rt = load(echo, "paused", 4, &init_rc, err, sizeof(err));
    CHECK(sink != NULL && rt != NULL);
    if (sink == NULL || rt == NULL) {
        return;
    }

    for (token = 0; token < 4; token++) {
        len = payload(token, buf);
        CHECK(api.runtime_post(rt, sink, token, buf, len) == RESTY_FFI_OK);
    }
    CHECK(api.runtime_post(rt, sink, 4, "x", 1) == RESTY_FFI_QUEUE_FULL);

    CHECK(api.runtime_unload(rt) == RESTY_FFI_OK);
    CHECK(api.runtime_unload(rt) == RESTY_FFI_FINISHED);
    CHECK(api.runtime_post(rt, sink, 5, "x", 1) == RESTY_FFI_FINISHED);

    echo_resume();
    received = 0;
    while (received < 4 && failures == 0) {
        received += collect(sink, seen, 4);
    }
    CHECK(received == 4);
    wait_no_threads();

    api.runtime_free(rt);
    api.sink_free(sink);
}

static void
load_errors(const char *echo, const char *no_init)
{
    char err[256];
    int init_rc;

    err[0] = '\0';
    CHECK(load("/nonexistent/libnope.so", NULL, 8, &init_rc, err, sizeof(err))
          == NULL);
    CHECK(init_rc == 0);
    CHECK(strncmp(err, "resty_ffi: ", 11) == 0);
    CHECK(strstr(err, "/nonexistent/libnope.so") != NULL);
    CHECK(strstr(err, "cannot open shared object file") != NULL);
    printf("unknown library: %s\n", err);

    err[0] = '\0';
    CHECK(load("nope_ffi_test", NULL, 8, &init_rc, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "libnope_ffi_test.so") != NULL);

    err[0] = '\0';
    CHECK(load(no_init, NULL, 8, &init_rc, err, sizeof(err)) == NULL);
    CHECK(init_rc == 0);
    CHECK(strncmp(err, "resty_ffi: ", 11) == 0);
    CHECK(strstr(err, "no libffi_init") != NULL);
    printf("library without libffi_init: %s\n", err);

    err[0] = '\0';
    CHECK(load(echo, "fail", 8, &init_rc, err, sizeof(err)) == NULL);
    CHECK(init_rc == 42);
    CHECK(err[0] == '\0');

    /* a tiny error buffer gets a truncated, NUL-terminated message */
    CHECK(load(no_init, NULL, 8, &init_rc, err, 8) == NULL);
    CHECK(strcmp(err, "resty_f") == 0);
}

/* Fixtures are loaded by absolute path: a name without a slash is searched for. */
static char *
absolute(const char *path)
{
    char *abs;

    abs = realpath(path, NULL);
    if (abs == NULL) {
        fprintf(stderr, "%s: not found\n", path);
        exit(2);
    }
    return abs;
}

int
main(int argc, char **argv)
{
    void *core, *echo_lib;
    char *core_path, *echo, *no_init;
    double ns;

    if (argc != 4) {
        fprintf(stderr, "usage: %s <libresty_ffi.so> <echo runtime> <no-init lib>\n",
                argv[0]);
        return 2;
    }
    core_path = absolute(argv[1]);
    echo = absolute(argv[2]);
    no_init = absolute(argv[3]);

    /* global, so that runtimes loaded later resolve the runtime ABI */
    core = dlopen(core_path, RTLD_NOW | RTLD_GLOBAL);
    if (core == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    RESOLVE(core, api.sink_new, "resty_ffi_sink_new");
    RESOLVE(core, api.sink_fd, "resty_ffi_sink_fd");
    RESOLVE(core, api.sink_acknowledge, "resty_ffi_sink_acknowledge");
    RESOLVE(core, api.sink_drain, "resty_ffi_sink_drain");
    RESOLVE(core, api.sink_free, "resty_ffi_sink_free");
    RESOLVE(core, api.runtime_load, "resty_ffi_runtime_load");
    RESOLVE(core, api.runtime_post, "resty_ffi_runtime_post");
    RESOLVE(core, api.runtime_unload, "resty_ffi_runtime_unload");
    RESOLVE(core, api.runtime_free, "resty_ffi_runtime_free");

    /* only for the echo runtime's test hooks; the tests load it through the core */
    echo_lib = dlopen(echo, RTLD_NOW | RTLD_LOCAL);
    if (echo_lib == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    RESOLVE(echo_lib, echo_resume, "echo_runtime_resume");
    RESOLVE(echo_lib, echo_threads, "echo_runtime_threads");

    ns = round_trips(echo);

    queue_full_and_unload(echo);
    load_errors(echo, no_init);

    dlclose(echo_lib);
    free(core_path);
    free(echo);
    free(no_init);

    printf("c_host_test: %d round trips, %.0f ns each, %d in flight\n",
           ROUND_TRIPS, ns, IN_FLIGHT);
    printf("c_host_test: %s\n", failures == 0 ? "ok" : "FAILED");
    return failures == 0 ? 0 : 1;
}
