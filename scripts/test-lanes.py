#!/usr/bin/python3
"""Runs the workspace's tests in parallel lanes: `cargo test` runs one test binary at a time.

Most of the suite's end-to-end binaries wait (on QEMU, etcd, timers, the network) much more
than they compute: one at a time, they kept the 2 CPUs of a CI machine 25-45 % busy. Here
each lane runs one binary at a time (with the harness's own `--test-threads`), the longest
expected first (times of the last run, kept in target/test-times.json; on a fresh clone the
estimates below), and the doc tests are one more job. A binary's whole output is printed
when it ends, under cargo's own "Running" line, so the log reads as cargo's does, grouped.

Usage: test-lanes.py [--lanes N] [-- HARNESS ARGS...]   (default: 2 lanes, --test-threads=2)
Exit status: 0 when every binary passed, 1 otherwise (every binary runs either way).
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

# Seconds a binary took in a run on 2 vCPUs (debug build), for the order on a fresh clone;
# anything not named here is estimated at DEFAULT_SECS. Only the order depends on them.
ESTIMATES = {
    "vesseld/test/readme": 240,
    "vesseld/test/cluster_live": 130,
    "vesseld/test/ceph": 115,
    "vesseld/test/hostile": 95,
    "vesseld/test/network": 80,
    "vesseld/test/dashboard": 80,
    "vesseld/test/snapshots": 75,
    "vesseld/test/cluster_ha_vm": 75,
    "vesseld/test/store": 65,
    "vesseld/test/systemd": 60,
    "doc tests": 60,
}
DEFAULT_SECS = 20


def main() -> int:
    args = sys.argv[1:]
    lanes = 2
    if args[:1] == ["--lanes"]:
        lanes = int(args[1])
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    harness = args or ["--test-threads=2"]
    if lanes < 1:
        sys.exit("--lanes must be at least 1")

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cargo = os.environ.get("CARGO", "cargo")
    built = subprocess.run(
        [cargo, "test", "--workspace", "--locked", "--no-run",
         "--message-format=json-render-diagnostics"],
        cwd=root, stdout=subprocess.PIPE, text=True, check=False)
    if built.returncode != 0:
        print(f"error: building the test binaries failed (exit {built.returncode})",
              file=sys.stderr)
        return 1
    jobs = []
    for line in built.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg["profile"]["test"]:
            continue
        target = msg["target"]
        manifest_dir = os.path.dirname(msg["manifest_path"])
        package = os.path.basename(manifest_dir)
        kind = target["kind"][0]
        src = os.path.relpath(target["src_path"], manifest_dir)
        if kind == "lib":
            src = "unittests " + src
        jobs.append({
            "key": f"{package}/{kind}/{target['name']}",
            "title": f"     Running {src} ({os.path.relpath(msg['executable'], root)})",
            "cmd": [msg["executable"], *harness],
            "cwd": manifest_dir,
            "env": {"CARGO_MANIFEST_DIR": manifest_dir, "CARGO_PKG_NAME": package,
                    "CARGO": cargo},
        })
    if not jobs:
        print("error: cargo built no test binary", file=sys.stderr)
        return 1
    jobs.append({
        "key": "doc tests",
        "title": "   Doc-tests (cargo test --workspace --doc)",
        "cmd": [cargo, "test", "--workspace", "--locked", "--doc", "--", *harness],
        "cwd": root,
        "env": {},
    })

    times_path = os.path.join(root, "target", "test-times.json")
    try:
        with open(times_path) as f:
            last = json.load(f)
    except (OSError, ValueError):
        last = {}
    for job in jobs:
        job["expected"] = last.get(job["key"], ESTIMATES.get(job["key"], DEFAULT_SECS))
    # Longest first: a long binary started last would end the run alone.
    jobs.sort(key=lambda j: j["expected"], reverse=True)

    queue_lock = threading.Lock()
    print_lock = threading.Lock()
    pending = list(jobs)
    results = {}

    def lane(n: int) -> None:
        while True:
            with queue_lock:
                if not pending:
                    return
                job = pending.pop(0)
            env = dict(os.environ, **job["env"])
            with tempfile.TemporaryFile() as out:
                started = time.monotonic()
                code = subprocess.run(job["cmd"], cwd=job["cwd"], env=env, stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      check=False).returncode
                took = time.monotonic() - started
                out.seek(0)
                text = out.read().decode("utf-8", "replace")
            results[job["key"]] = (code, took)
            with print_lock:
                print(f"{job['title']} [lane {n}, {took:.1f} s, exit {code}]", flush=True)
                sys.stdout.write(text)
                sys.stdout.flush()

    started = time.monotonic()
    threads = [threading.Thread(target=lane, args=(n,)) for n in range(1, lanes + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started

    last.update({k: round(took, 1) for k, (_, took) in results.items()})
    os.makedirs(os.path.dirname(times_path), exist_ok=True)
    with open(times_path, "w") as f:
        json.dump(last, f, indent=1, sort_keys=True)
    failed = sorted(k for k, (code, _) in results.items() if code != 0)
    busy = sum(took for _, took in results.values())
    print(f"\n{len(results)} test jobs in {lanes} lanes: {wall:.0f} s "
          f"({busy:.0f} s one after the other)", flush=True)
    if failed:
        print("failed: " + ", ".join(failed), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
