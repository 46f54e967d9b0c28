#!/usr/bin/env python3
"""A TCP forwarder (the protected program of the shape test, run under
the shim): forward.py LISTEN_PORT TARGET_HOST TARGET_PORT SECONDS

Accepts on LISTEN_PORT and relays each connection both ways to the
target until either side closes. Stops after SECONDS.
"""
import socket
import sys
import threading
import time

lp, th, tp, secs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])


def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve(c):
    try:
        t = socket.create_connection((th, tp), timeout=10)
    except OSError:
        c.close()
        return
    x = threading.Thread(target=pipe, args=(t, c), daemon=True)
    x.start()
    pipe(c, t)
    x.join(10)
    c.close()
    t.close()


l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", lp))
l.listen(256)
l.settimeout(0.5)
print("listening", flush=True)
end = time.time() + secs
while time.time() < end:
    try:
        c, _ = l.accept()
    except socket.timeout:
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
