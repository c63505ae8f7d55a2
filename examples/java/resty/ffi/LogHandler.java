package resty.ffi;

import java.nio.charset.StandardCharsets;
import java.util.logging.Formatter;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;

/**
 * A java.util.logging handler writing to the host's log: nginx's error log
 * (written by the worker, so {@code error_log}'s level and rotation apply) or
 * Envoy's log. Never blocks; a flooded host log drops lines and says how many.
 *
 * <pre>
 * Logger.getLogger("my.runtime").addHandler(new LogHandler(tq));
 * </pre>
 *
 * Lines are "logger LEVEL message" (and the stack trace of a thrown), unless
 * another formatter is set. SEVERE is nginx's err, WARNING warn, INFO and
 * CONFIG info, finer levels debug.
 */
public class LogHandler extends Handler {
    private final long tq;

    public LogHandler(long tq) {
        this.tq = tq;
        setFormatter(new Formatter() {
            @Override
            public String format(LogRecord r) {
                String text = r.getLoggerName() + " " + r.getLevel().getName() + " " + formatMessage(r);
                if (r.getThrown() != null) {
                    java.io.StringWriter trace = new java.io.StringWriter();
                    r.getThrown().printStackTrace(new java.io.PrintWriter(trace));
                    text += "\n" + trace;
                }
                return text;
            }
        });
    }

    static int level(Level level) {
        int v = level.intValue();
        if (v >= Level.SEVERE.intValue()) {
            return 4;
        }
        if (v >= Level.WARNING.intValue()) {
            return 5;
        }
        if (v >= Level.CONFIG.intValue()) {
            return 7;
        }
        return 8;
    }

    @Override
    public void publish(LogRecord record) {
        if (!isLoggable(record)) {
            return;
        }
        String text;
        try {
            text = getFormatter().format(record);
        } catch (RuntimeException e) {
            reportError(null, e, java.util.logging.ErrorManager.FORMAT_FAILURE);
            return;
        }
        Ffi.log(tq, level(record.getLevel()), text.getBytes(StandardCharsets.UTF_8));
    }

    @Override
    public void flush() {}

    @Override
    public void close() {}
}
