package demo.api;

import java.nio.charset.StandardCharsets;

import resty.ffi.Ffi;
import resty.ffi.FfiException;

/**
 * Runtimes on the resty.ffi API (no third-party jar):
 *
 *   ngx.load_ffi("ffi_java", "demo.api.Echo,init,4")   -- cfg: handler threads
 *
 * Echoes the request; "boom" throws, "rc:N" answers false, N, "custom failure".
 */
public class Echo {
    public static int init(String cfg, long tq) {
        return Ffi.serve(tq, cfg != null ? Integer.parseInt(cfg) : 1, Echo::handle);
    }

    static byte[] handle(byte[] req) throws FfiException {
        String text = new String(req, StandardCharsets.UTF_8);
        if (text.equals("boom")) {
            throw new IllegalArgumentException("bad input");
        }
        if (text.startsWith("rc:")) {
            throw new FfiException(Integer.parseInt(text.substring(3)), "custom failure");
        }
        return req;
    }

    /** Returns the rc given as cfg: ngx.load_ffi returns nil, rc unless 0. */
    public static int initRc(String cfg, long tq) {
        int rc = Integer.parseInt(cfg);
        return rc != 0 ? rc : Ffi.serve(tq, Echo::handle);
    }

    public static int initThrows(String cfg, long tq) {
        throw new IllegalStateException("init failed on purpose");
    }
}
