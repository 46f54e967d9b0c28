#!/usr/bin/env python3
"""Flows of one kind for the shape test: tunnels.py KIND HOST PORT N [CERT]

KIND http: N plain HTTP GETs. tls: N HTTPS GETs (certificate not
checked: the test's own). obfs4: starts obfs4proxy in client mode and
opens N connections through it (SOCKS5, the bridge's CERT as argument),
each sending a short message and reading its echo. Sequential, bounded
by N; 10 s timeout per flow; paced to at most RATE flows a second
(environment TUNNELS_RATE, default 40): ins-detect's default threshold
counts more than 100 new connections a second from one address as a
flood and blocks it, which is right for a flood and wrong for this test. Prints one JSON line per flow:
{"kind","local","ok"} where local is this side's address:port.
"""
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

kind, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rate = float(os.environ.get("TUNNELS_RATE", "40"))
t0 = time.monotonic()


def pace(i):
    """Waits until flow i is due (i / rate seconds after the start)."""
    d = t0 + i / rate - time.monotonic()
    if d > 0:
        time.sleep(d)


def report(local, ok):
    print(json.dumps({"kind": kind, "local": local, "ok": ok}), flush=True)


def http_once(i):
    s = socket.create_connection((host, port), timeout=10)
    local = "%s:%d" % s.getsockname()[:2]
    s.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    buf = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        buf += c
    s.close()
    return local, buf.startswith(b"HTTP/1.1 200")


def tls_once(i):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection((host, port), timeout=10)
    local = "%s:%d" % raw.getsockname()[:2]
    s = ctx.wrap_socket(raw, server_hostname="test")
    s.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    buf = b""
    while True:
        try:
            c = s.recv(65536)
        except ssl.SSLError:
            break
        if not c:
            break
        buf += c
    s.close()
    return local, buf.startswith(b"HTTP/1.1 200")


def obfs4_client():
    state = tempfile.mkdtemp(prefix="obfs4c-")
    env = dict(os.environ, TOR_PT_MANAGED_TRANSPORT_VER="1", TOR_PT_STATE_LOCATION=state,
               TOR_PT_CLIENT_TRANSPORTS="obfs4", TOR_PT_EXIT_ON_STDIN_CLOSE="1")
    p = subprocess.Popen(["obfs4proxy"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("CMETHOD obfs4"):
            h, pt = line.split()[3].rsplit(":", 1)
            return p, (h, int(pt))
        if line.startswith(("CMETHOD-ERROR", "ENV-ERROR", "VERSION-ERROR")):
            raise SystemExit("obfs4proxy: " + line)
    raise SystemExit("obfs4proxy gave no CMETHOD")


def obfs4_once(proxy, cert, i):
    s = socket.create_connection(proxy, timeout=10)
    args = ("cert=%s;iat-mode=0" % cert).encode()
    user, pw = args[:255], args[255:] or b"\0"
    s.sendall(b"\x05\x01\x02")
    assert s.recv(2) == b"\x05\x02"
    s.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(pw)]) + pw)
    assert s.recv(2)[1] == 0
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack(">H", port))
    r = s.recv(10)
    if len(r) < 2 or r[1] != 0:
        raise OSError("socks connect refused")
    msg = b"hello through obfs4 %d " % i + os.urandom(200)
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        c = s.recv(65536)
        if not c:
            break
        got += c
    s.close()
    return "obfs4", got == msg


if kind == "obfs4":
    proc, proxy = obfs4_client()
    cert = sys.argv[5]
    t0 = time.monotonic()
    for i in range(n):
        pace(i)
        try:
            _, ok = obfs4_once(proxy, cert, i)
        except Exception:  # noqa: BLE001
            ok = False
        report("", ok)
    proc.stdin.close()
    proc.wait(5)
else:
    once = http_once if kind == "http" else tls_once
    for i in range(n):
        pace(i)
        try:
            local, ok = once(i)
        except Exception:  # noqa: BLE001
            local, ok = "", False
        report(local, ok)
