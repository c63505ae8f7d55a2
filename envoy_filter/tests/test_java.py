"""The Java loader (examples/java) on Envoy through the shared fixture
tests/fixtures/runtime_cases.lua (nginx_module/t/test_java.py runs it on
nginx): both echo styles, exceptions, 200 concurrent clients over two worker
threads sharing one JVM, the HTTP client, hot reload, and a clean SIGTERM
shutdown with the JVM running."""

import os
import shutil
import subprocess
import tempfile

import harness

PORT, ADMIN, PORT_SIGTERM, ADMIN_SIGTERM = harness.free_ports(4)
JDK = "/usr/lib/jvm/java-17-openjdk-amd64"
JNR = [f"/usr/share/java/{jar}.jar" for jar in
       ("jnr-ffi", "jffi", "jnr-x86asm", "asm", "asm-commons", "asm-analysis", "asm-tree", "asm-util")]


HOT = """package hot;

public class Hot {
    public static int init(String cfg, long tq) {
        return resty.ffi.Ffi.serve(tq, req -> ("%s " + new String(req)).getBytes());
    }
}
"""


class State:
    def __init__(self):
        subprocess.run([str(harness.ROOT / "examples" / "java" / "build.sh"),
                        str(harness.RUNTIMES / "libffi_java.so"), str(harness.RELEASE / "include")], check=True)
        self.classes = tempfile.mkdtemp(prefix="resty_ffi_java_")
        os.environ["CLASSPATH"] = ":".join([str(harness.RUNTIMES / "examples.jar"), self.classes] + JNR)
        os.environ["JAVA_OPTS"] = "-Xmx128m -Djava.library.path=/usr/lib/x86_64-linux-gnu/jni"
        self.upstream, self.base = harness.slow_upstream()
        self.envoy = harness.Envoy([listener(PORT)], ADMIN, concurrency=2)

    def build_hot(self, version):
        src = os.path.join(self.classes, "Hot.java")
        with open(src, "w") as f:
            f.write(HOT % version)
        subprocess.run([f"{JDK}/bin/javac", "-nowarn", "-cp", str(harness.RUNTIMES / "resty_ffi.jar"),
                        "-d", self.classes, src], check=True)

    def stop(self):
        self.envoy.stop()
        self.upstream.shutdown()
        shutil.rmtree(self.classes, ignore_errors=True)


def listener(port):
    return harness.fixture_listener("java", port, harness.RUNTIME_CASES_SCRIPT)


def call(case, req=b"", port=PORT):
    return harness.post_case(port, case, req)


def case_echo_both_styles(_):
    harness.assert_echoes(call, ["java_jnr_echo", "java_jnr_libc_echo", "java_echo"])


def case_exceptions(_):
    assert call("java_echo", b"boom") == b"false|1|IllegalArgumentException: bad input"
    assert call("java_echo", b"rc:7") == b"false|7|custom failure"


def case_two_hundred_clients(_):
    harness.assert_two_hundred_clients(call, ["java_jnr_echo", "java_jnr_libc_echo", "java_echo"])


def case_http_client_fetches_concurrently(state):
    assert call("java_fetch", f"{state.base}/missing".encode()) == b"false|404|/missing"
    assert call("java_fetch", b"http://127.0.0.1:1/").startswith(b"false|1|ConnectException")
    harness.assert_fetches_overlap(call, "java_fetch", state.base)


def case_hot_reload(state):
    for version in ["v1", "version two", "v3"]:
        state.build_hot(version)
        # Each worker thread loads the new class.
        answers = harness.on_every_worker(lambda: harness.post_case_worker(PORT, "java_reload", b"x"))
        assert set(answers) == {f"true|{version} x".encode()}, answers
    assert state.envoy.alive()


def case_sigterm_with_jvm_loaded(_):
    harness.assert_clean_sigterm(listener(PORT_SIGTERM), ADMIN_SIGTERM, PORT_SIGTERM, "java_echo")


if __name__ == "__main__":
    harness.run([(name, fn) for name, fn in globals().items() if name.startswith("case_")],
                setup=State, teardown=State.stop)
