#!/usr/bin/env python3
"""Native test servers: servers.py backend|sink PORT SECONDS

backend: answers each connection's request with 2048 bytes.
sink:    reads and discards everything.
Both stop after SECONDS.
"""
import socket
import sys
import threading
import time

kind, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", port))
l.listen(128)
l.settimeout(0.5)
end = time.time() + secs


def serve(c):
    try:
        c.settimeout(10)
        if kind == "backend":
            c.recv(4096)
            c.sendall(b"A" * 2048)
        else:
            while c.recv(65536):
                pass
    except OSError:
        pass
    c.close()


while time.time() < end:
    try:
        c, _ = l.accept()
    except socket.timeout:
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
