"""Core benchmark driver: `cargo bench -p resty_ffi --bench roundtrip` (post →
poll → respond → drain vs std mpsc + an eventfd) BENCH_RUNS times, medians;
writes target/bench/core.json."""

import os
import re
import shutil
import subprocess

import common

CASES = ("serial", "batch of 1000")


def main():
    cargo = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    rounds = int(max(20_000, 40_000 * common.SECONDS))
    env = {**os.environ, "ROUNDS": str(rounds)}
    cmd = [cargo, "bench", "--quiet", "--manifest-path", str(common.ROOT / "Cargo.toml"), "-p", "resty_ffi",
           "--bench", "roundtrip"]
    subprocess.run(cmd + ["--no-run"], check=True, env=env, capture_output=True)
    result = {"machine_before": common.machine(), "calls": rounds}
    samples = {case: [] for case in CASES}
    for r in range(common.RUNS):
        common.progress(f"core round trips, run {r + 1}/{common.RUNS}: {rounds} calls per case")
        out = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True).stdout
        for case in CASES:
            m = re.search(rf"^{re.escape(case)}\s+(\d+)\s+(\d+)\s+([\d.]+)x", out, re.M)
            samples[case].append({"core_ns": float(m.group(1)), "mpsc_ns": float(m.group(2)),
                                  "ratio": float(m.group(3))})
    result["cases"] = []
    for case in CASES:
        m = common.medians(samples[case], ("core_ns", "mpsc_ns", "ratio"))
        result["cases"].append({"case": case, **m})
        print(f"core {case:14}: {m['core_ns']:.0f} ns/call vs mpsc + eventfd {m['mpsc_ns']:.0f} "
              f"({m['ratio']:.2f}x)", flush=True)
    result["machine_after"] = common.machine()
    print(f"results: {common.save('core', result)}")


if __name__ == "__main__":
    main()
