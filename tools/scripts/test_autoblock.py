"""Unit tests for autoblock's hysteresis and threshold reloading.

Run: python3 -m unittest discover -s tools/scripts -p 'test_*.py'
(also run by `cargo test -p ins-flow --test scripts`).
"""

import json
import os
import tempfile
import unittest

import autoblock


def flow(src, fid, bytes_in, state="closed", inst=1):
    return {
        "inst": inst, "flow_id": fid, "proto": "tcp", "local": "10.0.0.1:80",
        "remote": src, "bytes_in": bytes_in, "bytes_out": 0, "segs_in": 1,
        "segs_out": 1, "start_ns": 0, "last_ns": 0, "state": state, "reason": "",
    }


CFG = autoblock.validate({"interval": 1.0, "conn_rate": 10, "byte_rate": 1000,
                          "flag_samples": 2, "deflag_samples": 3, "deflag_ratio": 0.5})


class DetectorTest(unittest.TestCase):
    def setUp(self):
        self.d = autoblock.Detector(CFG)
        self.ids = iter(range(1, 10**6))

    def conns(self, src, n):
        for _ in range(n):
            self.d.observe(flow(src, next(self.ids), 1))

    def test_flag_needs_consecutive_samples_then_deflag_after_calm(self):
        self.conns("10.9.0.1:1000", 20)
        self.assertEqual(self.d.tick(), [])  # one sample over: not yet
        self.conns("10.9.0.1:1000", 20)
        self.assertEqual(self.d.tick(), [("block", "10.9.0.1")])
        # Still flooding (refused flows are reported too): stays blocked.
        self.conns("10.9.0.1:1000", 20)
        self.assertEqual(self.d.tick(), [])
        # Calm for 2 samples, then a burst above deflag level resets the count.
        self.assertEqual(self.d.tick(), [])
        self.assertEqual(self.d.tick(), [])
        self.conns("10.9.0.1:1000", 6)  # 6/s > 10 * 0.5
        self.assertEqual(self.d.tick(), [])
        self.assertEqual(self.d.tick(), [])
        self.assertEqual(self.d.tick(), [])
        self.assertEqual(self.d.tick(), [("unblock", "10.9.0.1")])
        self.assertEqual(self.d.blocked, set())

    def test_interrupted_flood_does_not_flag(self):
        for _ in range(4):
            self.conns("10.9.0.1:1000", 20)
            self.assertEqual(self.d.tick(), [])
            self.assertEqual(self.d.tick(), [])

    def test_well_behaved_source_untouched(self):
        for _ in range(5):
            self.conns("10.9.0.1:1000", 20)
            self.conns("10.9.0.2:1000", 3)
            acts = self.d.tick()
            self.assertNotIn(("block", "10.9.0.2"), acts)
        self.assertEqual(self.d.blocked, {"10.9.0.1"})

    def test_byte_rate_uses_deltas_of_cumulative_counters(self):
        src = "[2001:db8::7]:5000"
        self.d.observe(flow(src, 1, 600, "active"))
        self.assertEqual(self.d.tick(), [])
        self.d.observe(flow(src, 1, 1200, "active"))  # +600/s: under 1000
        self.assertEqual(self.d.tick(), [])
        self.d.observe(flow(src, 1, 2500, "active"))  # +1300/s
        self.assertEqual(self.d.tick(), [])
        self.d.observe(flow(src, 1, 4000, "closed"))  # +1500/s: 2nd sample over
        self.assertEqual(self.d.tick(), [("block", "2001:db8::7")])
        self.assertEqual(self.d.flows, {})

    def test_never_block(self):
        d = autoblock.Detector(autoblock.validate(dict(
            {k: CFG[k] for k in ("interval", "conn_rate", "byte_rate")},
            flag_samples=1, never_block=["10.9.0.1"])))
        for i in range(50):
            d.observe(flow("10.9.0.1:1", i, 1))
        self.assertEqual(d.tick(), [])

    def test_prefix(self):
        self.assertEqual(autoblock.prefix_of("10.1.2.3", dict(CFG, prefix_v4=24)), "10.1.2.0/24")
        self.assertEqual(autoblock.prefix_of("2001:db8::1", CFG), "2001:db8::1/128")


class ThresholdsTest(unittest.TestCase):
    def test_reload_on_change_and_keep_previous_on_error(self):
        logs = []
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "t.json")
            with open(p, "w") as f:
                json.dump({"conn_rate": 5}, f)
            th = autoblock.Thresholds(p, log=logs.append)
            self.assertEqual(th.cfg["conn_rate"], 5)
            self.assertFalse(th.maybe_reload())  # unchanged
            with open(p, "w") as f:
                json.dump({"conn_rate": 7, "deflag_samples": 2}, f)
            os.utime(p, ns=(th.mtime + 10**9, th.mtime + 10**9))
            self.assertTrue(th.maybe_reload())
            self.assertEqual((th.cfg["conn_rate"], th.cfg["deflag_samples"]), (7, 2))
            with open(p, "w") as f:
                f.write("{not json")
            os.utime(p, ns=(th.mtime + 10**9, th.mtime + 10**9))
            self.assertFalse(th.maybe_reload())
            self.assertEqual(th.cfg["conn_rate"], 7)
            self.assertTrue(any("keeping previous" in m for m in logs))

    def test_validation(self):
        for bad in ({"interval": 0}, {"flag_samples": 0}, {"bogus": 1},
                    {"prefix_v4": 33}, {"never_block": ["x"]}):
            with self.assertRaises(ValueError):
                autoblock.validate(bad)


if __name__ == "__main__":
    unittest.main()
