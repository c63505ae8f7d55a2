/*
 * The floor of the nginx serial echo: the same bytes moved the same way with
 * nothing else. A caller thread copies the payload into a request buffer
 * (resty_ffi copies the Lua string into the task), a second thread copies
 * the request into an answer buffer (the echo runtime), and the caller
 * compares the answer with the payload (LuaJIT interning the answer finds
 * the payload string). The threads hand over by spinning on one atomic, as
 * both sides of a fast ffi call do, and allocate nothing, so what is left is
 * the copying between two cores: about the least any echo through two
 * threads can cost.
 * usage: copy_floor <payload bytes> <seconds>  ->  "calls ns_per_call"
 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


enum { CALLER_TURN, RUNTIME_TURN, STOP };

static atomic_int   turn;
static size_t       size;
static char        *request;
static char        *answer;


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static int
wait_for(int expected)
{
    int  t;

    while ((t = atomic_load_explicit(&turn, memory_order_acquire)) != expected) {
        if (t == STOP) {
            return 0;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    return 1;
}


static void *
echo_runtime(void *unused)
{
    (void) unused;

    while (wait_for(RUNTIME_TURN)) {
        memcpy(answer, request, size);
        atomic_store_explicit(&turn, CALLER_TURN, memory_order_release);
    }
    return NULL;
}


int
main(int argc, char **argv)
{
    char       *payload;
    long        calls;
    double      seconds, start, deadline;
    pthread_t   runtime;

    if (argc != 3 || atol(argv[1]) <= 0 || atof(argv[2]) <= 0) {
        fprintf(stderr, "usage: copy_floor <payload bytes> <seconds>\n");
        return 2;
    }
    size = (size_t) atol(argv[1]);
    seconds = atof(argv[2]);
    payload = malloc(size);
    request = malloc(size);
    answer = malloc(size);
    if (payload == NULL || request == NULL || answer == NULL) {
        return 1;
    }
    memset(payload, 'x', size);
    atomic_store(&turn, CALLER_TURN);
    if (pthread_create(&runtime, NULL, echo_runtime, NULL) != 0) {
        return 1;
    }

    calls = 0;
    start = now();
    deadline = start + seconds;
    do {
        for (int i = 0; i < 16; i++, calls++) {
            memcpy(request, payload, size);
            atomic_store_explicit(&turn, RUNTIME_TURN, memory_order_release);
            wait_for(CALLER_TURN);
            if (memcmp(answer, payload, size) != 0) {
                abort();
            }
        }
    } while (now() < deadline);

    printf("%ld %.0f\n", calls, (now() - start) * 1e9 / calls);
    atomic_store_explicit(&turn, STOP, memory_order_release);
    pthread_join(runtime, NULL);
    return 0;
}
