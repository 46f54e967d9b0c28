#!/usr/bin/env python3
"""Native test servers: servers.py backend|sink|echo PORT SECONDS [HOST]

backend: answers each connection's request with 2048 bytes.
sink:    reads and discards everything.
echo:    sends back what it reads until the peer closes.
All stop after SECONDS; they listen on HOST (default all addresses).
"""
import socket
import sys
import threading
import time

kind, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
host = sys.argv[4] if len(sys.argv) > 4 else "0.0.0.0"
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port))
l.listen(128)
l.settimeout(0.5)
end = time.time() + secs


def serve(c):
    try:
        c.settimeout(10)
        if kind == "backend":
            c.recv(4096)
            c.sendall(b"A" * 2048)
        elif kind == "echo":
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
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
