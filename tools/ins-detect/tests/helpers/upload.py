#!/usr/bin/env python3
"""A legitimately slow, large upload: upload.py HOST PORT SRC SECONDS BYTES

Repeatedly PUTs BYTES random bytes to http://HOST:PORT/upload/<n> from
source address SRC (the link is shaped by the test, so each upload takes
seconds) until SECONDS have passed. One JSON line per upload:
{"src","t0","t1","ok","status","bytes","error"}; ok = 201/204 answered
with the whole body sent. Bounded by SECONDS.
"""
import json
import os
import socket
import sys
import time

host, port, src, secs, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
end = time.time() + secs
n = 0
while time.time() < end:
    n += 1
    t0 = time.time()
    status, err, sent = 0, "", 0
    try:
        body = os.urandom(size)
        s = socket.socket()
        s.settimeout(60)
        s.bind((src, 0))
        s.connect((host, port))
        s.sendall(("PUT /upload/u%d-%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % (os.getpid(), n, size)).encode())
        for i in range(0, size, 4096):
            s.sendall(body[i:i + 4096])
            sent += len(body[i:i + 4096])
        buf = b""
        while True:
            c = s.recv(4096)
            if not c:
                break
            buf += c
        s.close()
        status = int(buf.split(b"\r\n", 1)[0].split()[1])
    except Exception as e:  # noqa: BLE001
        err = type(e).__name__ + ": " + str(e)
    t1 = time.time()
    print(json.dumps({"src": src, "t0": t0, "t1": t1, "ok": status in (201, 204) and sent == size,
                      "status": status, "bytes": sent, "error": err}), flush=True)
