package demo.http;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;

import resty.ffi.Ffi;
import resty.ffi.FfiException;

/**
 * An HTTP client runtime (java.net.http, HTTP/2 when the server speaks it):
 * the request is a URL, the answer its body; a status other than 200 answers
 * false, status, body. Requests overlap: one client, asynchronous sends.
 *
 *   ngx.load_ffi("ffi_java", "demo.http.Fetch,init")
 */
public class Fetch {
    public static int init(String cfg, long tq) {
        HttpClient client = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_2)
            .connectTimeout(Duration.ofSeconds(5))
            .build();
        return Ffi.serveAsync(tq, req -> {
            HttpRequest get = HttpRequest.newBuilder(URI.create(new String(req, StandardCharsets.UTF_8)))
                .timeout(Duration.ofSeconds(30))
                .build();
            return client.sendAsync(get, HttpResponse.BodyHandlers.ofByteArray()).thenCompose(rsp ->
                rsp.statusCode() == 200
                    ? CompletableFuture.completedFuture(rsp.body())
                    : CompletableFuture.failedFuture(
                          new FfiException(rsp.statusCode(), new String(rsp.body(), StandardCharsets.UTF_8))));
        });
    }
}
