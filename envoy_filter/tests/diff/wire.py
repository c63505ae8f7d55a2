"""HTTP on the wire for the differential suite: one request over HTTP/1.1 or
HTTP/2 (prior knowledge) with full control of chunks and trailers, and an
HTTP/2 upstream that records what it received.

A request is a `Request`; an answer is an `Answer` (everything the client
saw, including how the stream ended). The upstream's behaviour is chosen by
request headers, so scripts (and their httpCalls) can ask for it:

    x-up-status: N            answer status N (default 200)
    x-up-body: TEXT           answer body (default "upstream <path>\\n")
    x-up-headers: k=v;k=v2    extra answer headers (repeats allowed)
    x-up-trailers: k=v;...    answer trailers
    x-up-chunks: N            send the body in N DATA frames, 50 ms apart
    x-up-delay-ms: N          wait N ms before answering
    x-up-no-body: 1           headers only, end of stream on them

Every request the upstream gets is recorded, in the order they ended.
"""

import dataclasses
import socket
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

CHUNK_GAP = 0.05  # between body chunks, so that Envoy hands each one over alone
TIMEOUT = 5


@dataclasses.dataclass
class Request:
    method: str = "GET"
    path: str = "/"
    headers: list = dataclasses.field(default_factory=list)  # [(name, value)]
    body: object = None        # bytes, or a list of byte chunks sent CHUNK_GAP apart
    trailers: list = None      # [(name, value)]

    def chunks(self):
        if self.body is None:
            return []
        return list(self.body) if isinstance(self.body, list) else [self.body]


@dataclasses.dataclass
class Answer:
    status: int = None
    reason: str = None         # HTTP/1.1 only
    headers: list = dataclasses.field(default_factory=list)
    body: bytes = b""
    trailers: list = None
    outcome: str = "complete"  # or "reset <code>", "closed" (HTTP/1.1 EOF mid-answer), "timeout"


# ----------------------------------------------------------------- HTTP/1.1 --

class _Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("latin-1")

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def rest(self):
        try:
            while True:
                self.fill()
        except EOFError:
            data, self.buf = self.buf, b""
            return data

    def fields(self):
        out = []
        while True:
            line = self.line()
            if not line:
                return out
            name, _, value = line.partition(":")
            out.append((name.strip().lower(), value.strip()))


def http1(port, req):
    chunked = isinstance(req.body, list) or req.trailers is not None
    head = [f"{req.method} {req.path} HTTP/1.1", "host: diff"]
    head += [f"{k}: {v}" for k, v in req.headers]
    if chunked:
        head.append("transfer-encoding: chunked")
    elif req.body is not None:
        head.append(f"content-length: {len(req.body)}")
    answer = Answer()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if chunked:
            for i, chunk in enumerate(req.chunks()):
                if i:
                    time.sleep(CHUNK_GAP)
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            tail = "".join(f"{k}: {v}\r\n" for k, v in req.trailers or [])
            sock.sendall(f"0\r\n{tail}\r\n".encode("latin-1"))
        elif req.body:
            sock.sendall(req.body)
        reader = _Reader(sock)
        try:
            while answer.status is None or answer.status < 200:
                version, status, answer.reason = (reader.line().split(" ", 2) + [""])[:3]
                answer.status = int(status)
                answer.headers = reader.fields()
            names = dict(answer.headers)
            if req.method == "HEAD" or answer.status in (204, 304):
                pass
            elif names.get("transfer-encoding") == "chunked":
                while True:
                    size = int(reader.line().split(";")[0], 16)
                    if size == 0:
                        answer.trailers = reader.fields() or None
                        break
                    answer.body += reader.exactly(size)
                    reader.line()
            elif "content-length" in names:
                answer.body = reader.exactly(int(names["content-length"]))
            else:
                answer.body = reader.rest()
        except EOFError:
            answer.outcome = "closed"
        except socket.timeout:
            answer.outcome = "timeout"
    return answer


# ------------------------------------------------------------------- HTTP/2 --

def _fields(pairs):
    return [(k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
            for k, v in pairs]


def _send_data(conn, sid, data, end_stream):
    """DATA frames of at most the peer's frame size (within the initial window)."""
    size = conn.max_outbound_frame_size
    for at in range(0, max(len(data), 1), size):
        conn.send_data(sid, data[at:at + size], end_stream=end_stream and at + size >= len(data))


def http2(port, req):
    answer = Answer()
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, validate_inbound_headers=False))
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        headers = [(":method", req.method), (":path", req.path), (":scheme", "http"), (":authority", "diff")]
        chunks = req.chunks()
        end_on_headers = not chunks and req.trailers is None
        conn.send_headers(sid, headers + [(k.lower(), v) for k, v in req.headers], end_stream=end_on_headers)
        sock.sendall(conn.data_to_send())
        for i, chunk in enumerate(chunks):
            if i:
                time.sleep(CHUNK_GAP)
            _send_data(conn, sid, chunk, i == len(chunks) - 1 and req.trailers is None)
            sock.sendall(conn.data_to_send())
        if req.trailers is not None:
            conn.send_headers(sid, req.trailers, end_stream=True)
            sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + TIMEOUT
        pending, ended, goaway = b"", False, False
        try:
            while answer.outcome == "complete" and not ended:
                if time.monotonic() > deadline:
                    raise socket.timeout
                data = sock.recv(65536)
                if not data:
                    answer.outcome = "closed"
                    break
                pending += data
                # One frame at a time: an error in a frame (a body longer than
                # its content-length, say) must not hide the events before it.
                while len(pending) >= 9 and len(pending) >= 9 + int.from_bytes(pending[:3], "big"):
                    size = 9 + int.from_bytes(pending[:3], "big")
                    frame, pending = pending[:size], pending[size:]
                    if frame[3] == 7:
                        # GOAWAY: h2 would close the whole connection, but the
                        # streams below its last stream id still get answered.
                        goaway = True
                        continue
                    for event in conn.receive_data(frame):
                        ended = _on_client_event(conn, sid, answer, event) or ended
                sock.sendall(conn.data_to_send())
        except socket.timeout:
            answer.outcome = "timeout"
        except h2.exceptions.ProtocolError as e:
            answer.outcome = f"protocol error {type(e).__name__}"
        if goaway:
            answer.outcome += " after goaway"
    return answer


def _on_client_event(conn, sid, answer, event):
    """Adds `event` to `answer`; True when the stream ended."""
    if isinstance(event, h2.events.ResponseReceived):
        fields = _fields(event.headers)
        answer.status = int(dict(fields)[":status"])
        answer.headers = [kv for kv in fields if kv[0] != ":status"]
    elif isinstance(event, h2.events.DataReceived):
        answer.body += event.data
        conn.acknowledge_received_data(event.flow_controlled_length, sid)
    elif isinstance(event, h2.events.TrailersReceived):
        answer.trailers = _fields(event.headers)
    elif isinstance(event, h2.events.StreamReset):
        answer.outcome = f"reset {int(event.error_code)}"
    elif isinstance(event, h2.events.StreamEnded):
        return True
    return False


CLIENTS = {"h1": http1, "h2": http2}


# ------------------------------------------------------------ the upstream --

@dataclasses.dataclass
class Received:
    method: str
    path: str
    headers: list
    body: bytes = b""
    trailers: list = None


class RecordingUpstream:
    """An HTTP/2 (prior knowledge) server on 127.0.0.1 that answers as the
    x-up-* request headers say and appends every request to `records`."""

    def __init__(self):
        self.records = []
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.closing = True
        self.server.close()

    def _accept(self):
        while not self.closing:
            try:
                sock, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=_UpstreamConnection(self, sock).serve, daemon=True).start()


class _UpstreamConnection:
    def __init__(self, upstream, sock):
        self.upstream, self.sock = upstream, sock
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, validate_inbound_headers=False))
        self.lock = threading.Lock()
        self.streams = {}

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                pass

    def serve(self):
        with self.lock:
            self.conn.initiate_connection()
            self.flush()
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                with self.lock:
                    for event in self.conn.receive_data(data):
                        self.on_event(event)
                    self.flush()
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            self.sock.close()

    def on_event(self, event):
        if isinstance(event, h2.events.RequestReceived):
            fields = _fields(event.headers)
            pseudo = dict(kv for kv in fields if kv[0].startswith(":"))
            self.streams[event.stream_id] = Received(pseudo.get(":method"), pseudo.get(":path"), fields)
        elif isinstance(event, h2.events.DataReceived):
            self.streams[event.stream_id].body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self.streams[event.stream_id].trailers = _fields(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            received = self.streams.pop(event.stream_id)
            asked = dict(received.headers)
            with self.upstream.lock:
                self.upstream.records.append(received)
            threading.Thread(target=self.answer, args=(event.stream_id, received, asked), daemon=True).start()
        elif isinstance(event, h2.events.StreamReset):
            self.streams.pop(event.stream_id, None)

    def answer(self, sid, received, asked):
        time.sleep(int(asked.get("x-up-delay-ms", "0")) / 1000)
        body = asked.get("x-up-body", f"upstream {received.path}\n").encode()
        trailers = _pairs(asked.get("x-up-trailers"))
        no_body = asked.get("x-up-no-body") == "1"
        headers = [(":status", asked.get("x-up-status", "200")), ("content-type", "text/plain"),
                   ("x-upstream", "1")] + _pairs(asked.get("x-up-headers"))
        if not no_body and not trailers and "x-up-chunks" not in asked:
            headers.append(("content-length", str(len(body))))
        n = max(1, int(asked.get("x-up-chunks", "1")))
        parts = [body[i * len(body) // n:(i + 1) * len(body) // n] for i in range(n)]
        try:
            with self.lock:
                self.conn.send_headers(sid, headers, end_stream=no_body)
                self.flush()
            if no_body:
                return
            for i, part in enumerate(parts):
                if i:
                    time.sleep(CHUNK_GAP)
                with self.lock:
                    _send_data(self.conn, sid, part, i == n - 1 and not trailers)
                    self.flush()
            if trailers:
                with self.lock:
                    self.conn.send_headers(sid, trailers, end_stream=True)
                    self.flush()
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            pass  # the caller gave up (e.g. an httpCall timeout)


def _pairs(spec):
    if not spec:
        return []
    return [tuple(item.split("=", 1)) for item in spec.split(";")]
