"""Shared helpers for the INS monitoring scripts (Python standard library only).

The driver's management socket (DIR/ctl.sock, default /run/ins/ctl.sock)
speaks JSON lines: one request object per line, one reply per line.
`{"cmd":"flows","follow":true}` is answered once ({"ok":true,"flows":[...]})
and then streams one flow object per line. Flow object fields (cumulative
counters; the same names as tools/ins-flow/src/schema.rs):

    inst flow_id proto local remote bytes_in bytes_out segs_in segs_out
    start_ns last_ns state ("active"|"closed") reason tcp_flags v type

`{"cmd":"subscribe"}` (also on DIR/monitor.sock) streams the same flow
lines plus instance and mitigation events, each with "v":1 and "type";
the schema is in docs/monitor.md.

Mitigations use the same connection type: {"cmd":"block","prefix":"A/LEN"}
and {"cmd":"unblock","prefix":"A/LEN"}; the reply is {"ok":true,...} or
{"ok":false,"kind":...,"error":...}.
"""

import json
import socket

DEFAULT_SOCKET = "/run/ins/ctl.sock"

# Flow object field names, in one place.
F_INST = "inst"
F_FLOW_ID = "flow_id"
F_PROTO = "proto"
F_LOCAL = "local"
F_REMOTE = "remote"
F_BYTES_IN = "bytes_in"
F_BYTES_OUT = "bytes_out"
F_SEGS_IN = "segs_in"
F_SEGS_OUT = "segs_out"
F_START_NS = "start_ns"
F_LAST_NS = "last_ns"
F_STATE = "state"
F_REASON = "reason"
F_TCP_FLAGS = "tcp_flags"


def split_addr(s):
    """'1.2.3.4:80' or '[2001:db8::1]:80' -> (ip, port)."""
    host, _, port = s.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class Conn:
    """One JSON-lines connection to the driver."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""

    def fileno(self):
        return self.sock.fileno()

    def send(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def read_available(self):
        """Returns complete buffered lines as decoded objects, reading once
        from the socket if none is buffered (so call it when readable or
        when has_pending()). Raises EOFError when the driver closed."""
        if b"\n" not in self.buf:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("driver closed the connection")
            self.buf += data
        out = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line.strip():
                out.append(json.loads(line))
        return out

    def has_pending(self):
        """Whether a complete line is already buffered."""
        return b"\n" in self.buf

    def request(self, obj):
        """Sends one request and waits for its one-line reply."""
        self.send(obj)
        while True:
            while b"\n" not in self.buf:
                data = self.sock.recv(1 << 16)
                if not data:
                    raise EOFError("driver closed the connection")
                self.buf += data
            line, self.buf = self.buf.split(b"\n", 1)
            if line.strip():
                return json.loads(line)

    def close(self):
        self.sock.close()
