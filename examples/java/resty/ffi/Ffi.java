package resty.ffi;

import java.util.concurrent.CompletionException;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;

/**
 * The resty_ffi runtime ABI for Java runtimes of libffi_java.so, no third-party
 * jar needed. A runtime class:
 *
 * <pre>
 * public class Upper {
 *     public static int init(String cfg, long tq) {
 *         return Ffi.serve(tq, req -&gt; new String(req).toUpperCase().getBytes());
 *     }
 * }
 * </pre>
 *
 * loaded by {@code ngx.load_ffi("ffi_java", "Upper,init")}. A handler's result is
 * Lua's {@code true, body}; an exception answers {@code false, rc, text}: rc from
 * {@link FfiException}, else 1 with "SimpleClassName: message".
 *
 * The natives are registered by libffi_java.so; outside of it they are unlinked.
 */
public final class Ffi {
    private Ffi() {}

    /** Blocks for the next task of queue {@code tq}; 0 once the runtime is unloaded. */
    public static native long poll(long tq);

    /** The request bytes of {@code task} (empty for a nil request). */
    public static native byte[] request(long task);

    /** Answers {@code task}, exactly once: rc 0 is {@code true, body}, else {@code false, rc, body}. */
    public static native void respond(long task, int rc, byte[] body);

    /**
     * Writes {@code msg} (UTF-8) to the host's log (nginx's error log, Envoy's
     * log) at {@code level}, nginx's numbering (4 err, 5 warn, 7 info, 8 debug),
     * prefixed with the runtime's library name (none when {@code tq} is 0).
     * Never blocks. {@link LogHandler} does it for java.util.logging.
     */
    public static native void log(long tq, int level, byte[] msg);

    /** A blocking handler: runs on the pool of {@link #serve(long, int, Handler)}. */
    @FunctionalInterface
    public interface Handler {
        byte[] handle(byte[] req) throws Exception;
    }

    /** An asynchronous handler: returns at once, answers when the stage completes. */
    @FunctionalInterface
    public interface AsyncHandler {
        CompletionStage<byte[]> handle(byte[] req) throws Exception;
    }

    /** {@link #serve(long, int, Handler)} with one handler thread. */
    public static int serve(long tq, Handler handler) {
        return serve(tq, 1, handler);
    }

    /**
     * Serves {@code tq}: a poll thread hands each request to a pool of
     * {@code threads} handler threads. On unload the requests in flight are
     * answered, then the threads end. Returns 0, the rc for the loader.
     */
    public static int serve(long tq, int threads, Handler handler) {
        ExecutorService pool = Executors.newFixedThreadPool(Math.max(1, threads), daemon("resty-ffi-handler"));
        daemon("resty-ffi-poll").newThread(() -> {
            long task;
            while ((task = poll(tq)) != 0) {
                long t = task;
                pool.execute(() -> answer(t, handler));
            }
            pool.shutdown();
        }).start();
        return 0;
    }

    /**
     * Serves {@code tq} with an asynchronous handler called on the poll
     * thread: it must not block. Returns 0, the rc for the loader.
     */
    public static int serveAsync(long tq, AsyncHandler handler) {
        daemon("resty-ffi-poll").newThread(() -> {
            long task;
            while ((task = poll(tq)) != 0) {
                long t = task;
                try {
                    handler.handle(request(t)).whenComplete((body, err) -> {
                        if (err != null) {
                            fail(t, err);
                        } else {
                            respond(t, 0, body);
                        }
                    });
                } catch (Throwable e) {
                    fail(t, e);
                }
            }
        }).start();
        return 0;
    }

    private static void answer(long task, Handler handler) {
        byte[] body;
        try {
            body = handler.handle(request(task));
        } catch (Throwable e) {
            fail(task, e);
            return;
        }
        respond(task, 0, body);
    }

    private static void fail(long task, Throwable e) {
        if (e instanceof CompletionException && e.getCause() != null) {
            e = e.getCause();
        }
        if (e instanceof FfiException) {
            respond(task, ((FfiException) e).rc(), bytes(e.getMessage()));
        } else {
            String msg = e.getMessage();
            respond(task, 1, bytes(e.getClass().getSimpleName() + (msg != null ? ": " + msg : "")));
        }
    }

    private static byte[] bytes(String s) {
        return s != null ? s.getBytes(java.nio.charset.StandardCharsets.UTF_8) : null;
    }

    private static ThreadFactory daemon(String name) {
        return r -> {
            Thread t = new Thread(r, name);
            t.setDaemon(true);
            return t;
        };
    }
}
