#!/usr/bin/env python3
"""Blocks sources whose connection rate or byte rate crosses a threshold.

    autoblock.py --config thresholds.json [--socket /run/ins/ctl.sock] [--dry-run]

Subscribes to the driver's flow stream (ctl.sock, `flows --follow`) and,
every `interval` seconds (one *sample*), computes per source address (the
flow's remote address):

  conn rate = new flows first seen in the sample / interval
  byte rate = bytes received from the source in the sample / interval
              (deltas of the cumulative bytes_in of each flow)

Hysteresis: a source is *flagged* (blocked with {"cmd":"block"}) when
either rate exceeds its threshold for `flag_samples` consecutive samples,
and *deflagged* (unblocked) after `deflag_samples` consecutive samples in
which both rates stay at or below `deflag_ratio` times the thresholds.
Connections the instance refuses from a blocked source are NOT reported
as flows (it resets them at accept), so a block hides the source's rate.
With "probe": true, deflagging therefore goes through probation: after
`deflag_samples` calm samples the block is replaced by a rate limit at the
thresholds ({"cmd":"limit"}, conn_rate/byte_rate per second); the
connections it admits are reported, and a source whose admitted rate goes
over `deflag_ratio` times a threshold is blocked again, while one that
stays calm for `deflag_samples` more samples has the limit cleared. Without
"probe" a blocked source is unblocked after `deflag_samples` samples
without visible traffic.

Thresholds file (JSON; re-read whenever its modification time changes):

  {"interval": 1.0, "conn_rate": 50, "byte_rate": 10000000,
   "flag_samples": 1, "deflag_samples": 5, "deflag_ratio": 0.5,
   "prefix_v4": 32, "prefix_v6": 128, "never_block": ["127.0.0.1"],
   "probe": false}

Every key is optional (defaults above); 0 disables a threshold.
"""

import argparse
import ipaddress
import json
import os
import select
import sys
import time

import inslib

DEFAULTS = {
    "interval": 1.0,
    "conn_rate": 50.0,
    "byte_rate": 10_000_000.0,
    "flag_samples": 1,
    "deflag_samples": 5,
    "deflag_ratio": 0.5,
    "prefix_v4": 32,
    "prefix_v6": 128,
    "never_block": [],
    "probe": False,
}


def validate(cfg):
    """Returns a complete, checked config (raises ValueError)."""
    out = dict(DEFAULTS)
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError("unknown keys: %s" % ", ".join(sorted(unknown)))
    out.update(cfg)
    for k in ("interval", "conn_rate", "byte_rate", "deflag_ratio"):
        if not isinstance(out[k], (int, float)) or out[k] < 0:
            raise ValueError("%s must be a non-negative number" % k)
    if out["interval"] <= 0:
        raise ValueError("interval must be positive")
    for k in ("flag_samples", "deflag_samples"):
        if not isinstance(out[k], int) or out[k] < 1:
            raise ValueError("%s must be an integer >= 1" % k)
    if not (0 <= out["prefix_v4"] <= 32 and 0 <= out["prefix_v6"] <= 128):
        raise ValueError("prefix lengths out of range")
    if not isinstance(out["probe"], bool):
        raise ValueError("probe must be true or false")
    out["never_block"] = [str(ipaddress.ip_address(a)) for a in out["never_block"]]
    return out


class Thresholds:
    """The thresholds file, reloaded when its mtime changes. A file that
    does not parse keeps the previous thresholds (and says so)."""

    def __init__(self, path, log=print):
        self.path = path
        self.log = log
        self.mtime = None
        self.cfg = dict(DEFAULTS)
        self.maybe_reload()

    def maybe_reload(self):
        try:
            m = os.stat(self.path).st_mtime_ns
        except OSError as e:
            self.log("autoblock: cannot stat %s: %s" % (self.path, e))
            return False
        if m == self.mtime:
            return False
        self.mtime = m
        try:
            with open(self.path) as f:
                self.cfg = validate(json.load(f))
        except (OSError, ValueError) as e:
            self.log("autoblock: keeping previous thresholds, %s: %s" % (self.path, e))
            return False
        self.log("autoblock: thresholds %s" % json.dumps(self.cfg, sort_keys=True))
        return True


class Detector:
    """Per-source rate accounting with flag/deflag hysteresis. Pure logic:
    feed flows with observe(), close a sample with tick(); tick() returns
    the actions [("block"|"probe"|"unblock", source_ip), ...]."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.flows = {}  # (inst, flow_id) -> last cumulative bytes_in
        self.sample = {}  # src -> [new conns, bytes]
        self.over = {}  # src -> consecutive samples over threshold
        self.under = {}  # blocked src -> consecutive samples under
        self.blocked = set()
        self.probation = set()  # blocked sources under a probe rate limit

    def observe(self, flow):
        src, _ = inslib.split_addr(flow[inslib.F_REMOTE])
        src = str(ipaddress.ip_address(src))
        key = (flow[inslib.F_INST], flow[inslib.F_FLOW_ID])
        total = flow[inslib.F_BYTES_IN]
        s = self.sample.setdefault(src, [0, 0])
        prev = self.flows.get(key)
        if prev is None or total < prev:
            s[0] += 1
            prev = 0
        s[1] += total - prev
        if flow[inslib.F_STATE] == "closed":
            self.flows.pop(key, None)
        else:
            self.flows[key] = total

    def tick(self):
        c = self.cfg
        iv = c["interval"]
        actions = []
        for src in set(self.sample) | set(self.over) | self.blocked:
            conns, nbytes = self.sample.get(src, (0, 0))
            cr, br = conns / iv, nbytes / iv
            over = (c["conn_rate"] > 0 and cr > c["conn_rate"]) or (
                c["byte_rate"] > 0 and br > c["byte_rate"]
            )
            if src in self.blocked:
                r = c["deflag_ratio"]
                calm = (c["conn_rate"] == 0 or cr <= c["conn_rate"] * r) and (
                    c["byte_rate"] == 0 or br <= c["byte_rate"] * r
                )
                if src in self.probation and not calm:
                    # Still pushing through the probe limit: block again.
                    self.probation.discard(src)
                    self.under[src] = 0
                    actions.append(("block", src))
                    continue
                self.under[src] = self.under.get(src, 0) + 1 if calm else 0
                if self.under[src] >= c["deflag_samples"] and c["probe"] and src not in self.probation:
                    self.probation.add(src)
                    self.under[src] = 0
                    actions.append(("probe", src))
                elif self.under[src] >= c["deflag_samples"]:
                    self.probation.discard(src)
                    self.blocked.discard(src)
                    self.under.pop(src, None)
                    self.over.pop(src, None)
                    actions.append(("unblock", src))
            elif src in c["never_block"]:
                continue
            elif over:
                self.over[src] = self.over.get(src, 0) + 1
                if self.over[src] >= c["flag_samples"]:
                    self.blocked.add(src)
                    self.under[src] = 0
                    actions.append(("block", src))
            else:
                self.over.pop(src, None)
        self.sample = {}
        return sorted(actions)


def prefix_of(src, cfg):
    ip = ipaddress.ip_address(src)
    n = cfg["prefix_v4"] if ip.version == 4 else cfg["prefix_v6"]
    return str(ipaddress.ip_network("%s/%d" % (src, n), strict=False))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="thresholds JSON file")
    ap.add_argument("--socket", default=inslib.DEFAULT_SOCKET)
    ap.add_argument("--dry-run", action="store_true", help="print actions, send nothing")
    a = ap.parse_args()
    th = Thresholds(a.config, log=lambda m: print(m, file=sys.stderr, flush=True))
    det = Detector(th.cfg)
    stream = inslib.Conn(a.socket)
    ctl = None if a.dry_run else inslib.Conn(a.socket)
    reply = stream.request({"cmd": "flows", "follow": True, "limit": 0})
    if not reply.get("ok"):
        sys.exit("driver refused: %s" % reply.get("error"))
    next_tick = time.monotonic() + th.cfg["interval"]
    try:
        while True:
            wait = max(0.0, next_tick - time.monotonic())
            if stream.has_pending() or select.select([stream], [], [], wait)[0]:
                for f in stream.read_available():
                    try:
                        det.observe(f)
                    except (KeyError, ValueError, TypeError) as e:
                        print("autoblock: skipped bad flow line: %s" % e, file=sys.stderr)
            if time.monotonic() < next_tick:
                continue
            if th.maybe_reload():
                det.cfg = th.cfg
            next_tick += th.cfg["interval"]
            for act, src in det.tick():
                p = prefix_of(src, th.cfg)
                if ctl is None:
                    print("%s %s (dry run)" % (act, p), flush=True)
                    continue
                c = th.cfg
                limit = {"cmd": "limit", "prefix": p,
                         "conn_rate": int(c["conn_rate"]), "byte_rate": int(c["byte_rate"])}
                if act == "probe":
                    # Limit first, then lift the block: no unlimited window.
                    reqs = [limit, {"cmd": "unblock", "prefix": p}]
                elif act == "unblock" and c["probe"]:
                    reqs = [dict(limit, conn_rate=0, byte_rate=0)]
                else:
                    reqs = [{"cmd": act, "prefix": p}]
                for req in reqs:
                    r = ctl.request(req)
                    print("%s %s: %s -> %s" % (act, p, req["cmd"], json.dumps(r)), flush=True)
    except (EOFError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
