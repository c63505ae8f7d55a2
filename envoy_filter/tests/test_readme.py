"""The README example (examples/envoy/envoy.yaml, unchanged but for its ports)
answers, with --concurrency 1 and 2."""

import concurrent.futures

import harness

PORT, ADMIN = harness.free_ports(2)
EXAMPLE = harness.ROOT / "examples" / "envoy" / "envoy.yaml"


def start(concurrency):
    text = EXAMPLE.read_text()
    assert "port_value: 10000" in text and "port_value: 9901" in text
    text = text.replace("port_value: 10000", f"port_value: {PORT}").replace("port_value: 9901", f"port_value: {ADMIN}")
    return harness.Envoy(None, ADMIN, concurrency=concurrency, config_text=text)


def check(concurrency):
    envoy = start(concurrency)
    try:
        assert harness.request(PORT)[0::2] == (200, b"foobar\n")
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: harness.request(PORT), range(64)))
        assert all((status, body) == (200, b"foobar\n") for status, _, body in results), results[:3]
    except Exception:
        print(envoy.log_tail())
        raise
    finally:
        envoy.stop()


def case_readme_example_concurrency_1():
    check(1)


def case_readme_example_concurrency_2():
    check(2)


if __name__ == "__main__":
    harness.run([(name, fn) for name, fn in globals().items() if name.startswith("case_")])
