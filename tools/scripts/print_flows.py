#!/usr/bin/env python3
"""Prints INS flow records as they arrive from the driver's ctl.sock.

    print_flows.py [--socket /run/ins/ctl.sock] [--backlog] [--json]

One line per flow report (interim reports while active, a final one when
closed); --json prints the raw JSON objects instead.
"""

import argparse
import json
import sys

import inslib


def fmt(f):
    secs = max(0, f[inslib.F_LAST_NS] - f[inslib.F_START_NS]) / 1e9
    return "%-6s %-3s %-45s <- %-45s in %10d B %6d seg  out %10d B %6d seg  %8.3fs %s%s" % (
        "%s:%s" % (f[inslib.F_INST], f[inslib.F_FLOW_ID]),
        f[inslib.F_PROTO],
        f[inslib.F_LOCAL],
        f[inslib.F_REMOTE],
        f[inslib.F_BYTES_IN],
        f[inslib.F_SEGS_IN],
        f[inslib.F_BYTES_OUT],
        f[inslib.F_SEGS_OUT],
        secs,
        f[inslib.F_STATE],
        (" (%s)" % f[inslib.F_REASON]) if f.get(inslib.F_REASON) else "",
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", default=inslib.DEFAULT_SOCKET)
    ap.add_argument("--backlog", action="store_true", help="print the recent backlog first")
    ap.add_argument("--json", action="store_true", help="print raw JSON lines")
    a = ap.parse_args()
    c = inslib.Conn(a.socket)
    req = {"cmd": "flows", "follow": True}
    if not a.backlog:
        req["limit"] = 0
    reply = c.request(req)
    if not reply.get("ok"):
        sys.exit("driver refused: %s" % reply.get("error"))
    show = (lambda f: json.dumps(f)) if a.json else fmt
    for f in reply.get("flows", []):
        print(show(f), flush=True)
    try:
        while True:
            for f in c.read_available():
                print(show(f), flush=True)
    except (EOFError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
