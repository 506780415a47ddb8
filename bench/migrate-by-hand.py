#!/usr/bin/python3
"""QEMU migrating a guest by hand, for bench/cluster.sh: over the source's QMP socket,
`migrate-set-parameters` (the same downtime limit Vessel uses), `migrate` to URI, polling
`query-migrate` until it completes; then the target's QMP until its guest runs.
Usage: migrate-by-hand.py SOURCE_QMP TARGET_QMP URI
Prints one JSON line: total_ms (migrate issued to target running), qemu_total_ms and
downtime_ms (QEMU's own figures), to_running_ms (completed to target running)."""
import json
import socket
import sys
import time


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.file = self.sock.makefile("rw")
        json.loads(self.file.readline())  # the greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, args=None):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        self.file.write(json.dumps(msg) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                sys.exit(f"{name}: {reply['error']['desc']}")


def main():
    source, target = Qmp(sys.argv[1]), Qmp(sys.argv[2])
    source.cmd("migrate-set-parameters", {"downtime-limit": 300})
    t0 = time.monotonic()
    source.cmd("migrate", {"uri": sys.argv[3]})
    while True:
        info = source.cmd("query-migrate")
        status = info.get("status")
        if status == "completed":
            break
        if status in ("failed", "cancelled"):
            sys.exit(f"migration {status}: {info.get('error-desc')}")
        time.sleep(0.01)
    done = time.monotonic()
    while not target.cmd("query-status")["running"]:
        time.sleep(0.005)
    running = time.monotonic()
    print(json.dumps({
        "total_ms": round((running - t0) * 1000),
        "qemu_total_ms": info.get("total-time"),
        "downtime_ms": info.get("downtime"),
        "to_running_ms": round((running - done) * 1000),
    }))


main()
