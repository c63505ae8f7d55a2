package resty.ffi;

/** Thrown by a handler to answer {@code false, rc, message} (rc 0 becomes 1). */
public class FfiException extends Exception {
    private final int rc;

    public FfiException(int rc, String message) {
        super(message);
        this.rc = rc != 0 ? rc : 1;
    }

    public int rc() {
        return rc;
    }
}
