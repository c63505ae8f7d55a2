package demo.api;

import java.nio.charset.StandardCharsets;
import java.util.logging.Level;
import java.util.logging.Logger;

import resty.ffi.Ffi;
import resty.ffi.LogHandler;

/**
 * java.util.logging to the host's log (resty.ffi.LogHandler):
 *
 *   ngx.load_ffi("ffi_java", "demo.api.Log,init")
 *
 * A request "<LEVEL>:<text>" (SEVERE, WARNING, INFO, FINE) is logged by logger
 * "demo.log" and answered "logged".
 */
public class Log {
    static final Logger LOG = Logger.getLogger("demo.log");

    public static int init(String cfg, long tq) {
        LOG.setUseParentHandlers(false);
        LOG.setLevel(Level.ALL);
        LogHandler handler = new LogHandler(tq);
        handler.setLevel(Level.ALL);
        LOG.addHandler(handler);
        return Ffi.serve(tq, req -> {
            String[] parts = new String(req, StandardCharsets.UTF_8).split(":", 2);
            LOG.log(Level.parse(parts[0]), parts.length > 1 ? parts[1] : "");
            return "logged".getBytes(StandardCharsets.UTF_8);
        });
    }
}
