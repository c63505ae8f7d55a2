package my_runtime;

import resty.ffi.Ffi;
import resty.ffi.FfiException;

/**
 * A resty_ffi runtime in Java: answers each request upper-cased; an empty or
 * nil request answers rc 22, "empty request".
 * Lua: local rt = ngx.load_ffi("ffi_java", "my_runtime.Upper,init")
 * with my_runtime.jar on CLASSPATH.
 */
public final class Upper {
    private Upper() {}

    /** Runs once per ngx.load_ffi(lib, cfg) key, per nginx worker / Envoy worker thread. */
    public static int init(String cfg, long tq) {
        return Ffi.serve(tq, 2, req -> {                       // a poll thread, 2 handler threads
            if (req.length == 0) {
                throw new FfiException(22, "empty request");    // false, 22, "empty request"
            }
            return new String(req).toUpperCase().getBytes();     // true, "HELLO"
        });
    }
}
