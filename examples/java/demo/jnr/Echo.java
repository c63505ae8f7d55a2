package demo.jnr;

import jnr.ffi.LibraryLoader;
import jnr.ffi.Pointer;
import jnr.ffi.byref.IntByReference;

/**
 * An echo runtime in the original lua-resty-ffi style: it calls the runtime
 * C ABI itself through jnr-ffi (Debian's libjnr-ffi-java on CLASSPATH).
 *
 *   ngx.load_ffi("ffi_java", "demo.jnr.Echo,init")
 *   ngx.load_ffi("ffi_java", "demo.jnr.Echo,init,c")   -- malloc from load("c")
 */
public class Echo {
    public interface Abi {
        Pointer ngx_http_lua_ffi_task_poll(Pointer tq);
        Pointer ngx_http_lua_ffi_get_req(Pointer task, IntByReference len);
        void ngx_http_lua_ffi_respond(Pointer task, int rc, Pointer rsp, int rspLen);
    }

    public interface Libc {
        Pointer malloc(long size);
        Pointer memcpy(Pointer dest, Pointer src, long n);
    }

    static void poll(long queue, String library) {
        // The process's malloc, which the host's free() matches (Envoy's is
        // tcmalloc's). load("c"), as the original's example did, gives glibc's:
        // the host then copies each answer on Envoy and gives it back to glibc.
        Libc libc = LibraryLoader.create(Libc.class).load(library);
        Abi abi = LibraryLoader.create(Abi.class).load(LibraryLoader.DEFAULT_LIBRARY);
        Pointer tq = Pointer.wrap(jnr.ffi.Runtime.getSystemRuntime(), queue);
        IntByReference len = new IntByReference();
        while (true) {
            Pointer task = abi.ngx_http_lua_ffi_task_poll(tq);
            if (task == null) {
                return; // unloaded
            }
            Pointer req = abi.ngx_http_lua_ffi_get_req(task, len);
            int n = len.intValue();
            Pointer rsp = null;
            if (n > 0) {
                rsp = libc.malloc(n);
                libc.memcpy(rsp, req, n);
            }
            abi.ngx_http_lua_ffi_respond(task, 0, rsp, n);
        }
    }

    public static int init(String cfg, long tq) {
        String library = "c".equals(cfg) ? "c" : LibraryLoader.DEFAULT_LIBRARY;
        Thread thread = new Thread(() -> poll(tq, library), "jnr-echo");
        thread.setDaemon(true);
        thread.start();
        return 0;
    }
}
