#!/usr/bin/python3
"""QEMU migrating a guest by hand, for bench/cluster.sh, with the settings Vessel uses
(multifd over 2 channels, a 300 ms downtime limit, no bandwidth cap): the target (a QEMU
started with `-incoming defer`, whose QMP socket may not exist yet) is told to listen on
URI, the source to migrate there; `query-migrate` is polled until it completes, then the
target's status until its guest runs.
Usage: migrate-by-hand.py SOURCE_QMP TARGET_QMP URI
Prints one JSON line: total_ms (from connecting to the target to its guest running),
qemu_total_ms and downtime_ms (QEMU's own figures), to_running_ms (completed to running)."""
import json
import socket
import sys
import time


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        for _ in range(500):
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.01)
        else:
            sys.exit(f"no QMP at {path}")
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
    t0 = time.monotonic()
    source, target = Qmp(sys.argv[1]), Qmp(sys.argv[2])
    caps = {"capabilities": [{"capability": "multifd", "state": True}]}
    for q in (source, target):
        q.cmd("migrate-set-capabilities", caps)
        q.cmd("migrate-set-parameters", {"multifd-channels": 2})
    target.cmd("migrate-incoming", {"uri": sys.argv[3]})
    source.cmd("migrate-set-parameters", {"downtime-limit": 300, "max-bandwidth": 0})
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
