#!/usr/bin/python3
"""Sequential keep-alive requests against the daemon, over its unix socket or HTTPS.

usage: api_load.py unix SOCKET PATH N
       api_load.py https HOST:PORT CERT TOKEN PATH N
Prints one JSON line: requests, seconds, rps, p50_ms, p99_ms, bytes (of the last answer).
"""
import http.client
import json
import socket
import ssl
import sys
import time


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("vessel")
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.unix_path)
        self.sock = s


def main():
    kind = sys.argv[1]
    headers = {}
    if kind == "unix":
        conn = UnixConnection(sys.argv[2])
        path, n = sys.argv[3], int(sys.argv[4])
    elif kind == "https":
        host, port = sys.argv[2].rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=sys.argv[3])
        conn = http.client.HTTPSConnection(host, int(port), context=ctx)
        headers["Authorization"] = "Bearer " + sys.argv[4]
        path, n = sys.argv[5], int(sys.argv[6])
    else:
        sys.exit("unknown transport " + kind)
    lat = []
    size = 0
    # One warm-up request (connection set-up and TLS handshake are not what is measured).
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"{kind}: {r.status} {body[:200]!r}")
    t0 = time.perf_counter()
    for _ in range(n):
        s = time.perf_counter()
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            sys.exit(f"{kind}: {r.status} {body[:200]!r}")
        lat.append(time.perf_counter() - s)
        size = len(body)
    total = time.perf_counter() - t0
    lat.sort()
    print(json.dumps({
        "requests": n,
        "seconds": round(total, 3),
        "rps": round(n / total, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 2),
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2),
        "bytes": size,
    }))


if __name__ == "__main__":
    main()
