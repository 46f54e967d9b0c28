#!/usr/bin/env python3
"""Well-behaved HTTP clients for the attack tests.

clients.py URL_HOST PORT PATH SOURCES SECONDS [PAUSE]

One thread per source address in SOURCES (comma-separated, each bound
explicitly), each fetching http://URL_HOST:PORT/PATH with a new connection
(HTTP/1.1, Connection: close) and pausing PAUSE seconds (default 0.3)
between requests, for SECONDS seconds. A request succeeds when the
status is 200 and the body has the announced Content-Length; it fails on
any error or after a 10 s timeout. Prints one JSON line per request to
stdout: {"src","t0","t1","ok","status","bytes","error"} (Unix times).
Bounded: at most SECONDS / PAUSE requests per source.
"""
import json
import socket
import sys
import threading
import time

host, port, path, sources, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(","), float(sys.argv[5])
pause = float(sys.argv[6]) if len(sys.argv) > 6 else 0.3
lock = threading.Lock()
end = time.time() + secs


def fetch(src):
    t0 = time.time()
    status, n, err = 0, 0, ""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        s.bind((src, 0))
        s.connect((host, port))
        s.sendall(("GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path).encode())
        buf = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            buf += c
            if time.time() - t0 > 10:
                raise TimeoutError("slow")
        s.close()
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        cl = [l for l in lines if l.lower().startswith(b"content-length:")]
        want = int(cl[0].split(b":")[1]) if cl else len(body)
        n = len(body)
        ok = status == 200 and n == want
    except Exception as e:  # noqa: BLE001 - every failure is a failed request
        ok, err = False, type(e).__name__ + ": " + str(e)
    t1 = time.time()
    with lock:
        print(json.dumps({"src": src, "t0": t0, "t1": t1, "ok": ok, "status": status, "bytes": n, "error": err}), flush=True)


def loop(src):
    while time.time() < end:
        fetch(src)
        time.sleep(pause)


ts = [threading.Thread(target=loop, args=(s,)) for s in sources]
for t in ts:
    t.start()
for t in ts:
    t.join()
