#!/usr/bin/env python3
"""A connection flood from many addresses: flood.py HOST PORT SOURCES RATE SECONDS

One thread per source address (comma-separated), each opening RATE
connections per second for SECONDS seconds: connect, send a GET, read
the answer, close (1 s timeouts). Bounded: at most RATE x SECONDS
attempts per source. Prints one JSON line per attempt: {"src","t","ok"}.
"""
import json
import socket
import sys
import threading
import time

host, port, sources, rate, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), float(sys.argv[4]), float(sys.argv[5])
lock = threading.Lock()
t0 = time.time()
out = []


def run(src):
    mine = []
    i = 0
    while True:
        due = t0 + i / rate
        if due >= t0 + secs:
            break
        d = due - time.time()
        if d > 0:
            time.sleep(d)
        i += 1
        t = time.time()
        ok = False
        try:
            s = socket.socket()
            s.settimeout(1.0)
            s.bind((src, 0))
            s.connect((host, port))
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            ok = s.recv(12).startswith(b"HTTP/1.1 200")
            s.close()
        except OSError:
            pass
        mine.append({"src": src, "t": t, "ok": ok})
    with lock:
        out.extend(mine)


ts = [threading.Thread(target=run, args=(s,)) for s in sources]
for t in ts:
    t.start()
for t in ts:
    t.join()
for r in sorted(out, key=lambda r: r["t"]):
    print(json.dumps(r))
