#!/usr/bin/env python3
"""Checks a guest boot log: every test in expected.txt reported PASS, the
guest finished, and the kernel log has no oops, BUG or WARNING.

The guest prints `KMODTEST PASS <name>` or `KMODTEST FAIL <name>: <why>`.
Prints one line per test and `N passed, M failed`; exits 1 on any failure.
"""
import re
import sys

log_path, expected_path = sys.argv[1], sys.argv[2]
log = open(log_path, errors="replace").read()
expected = [l.split("#")[0].strip() for l in open(expected_path)]
expected = [e for e in expected if e]

results = {}
for m in re.finditer(r"KMODTEST (PASS|FAIL) ([\w.-]+)(.*)", log):
    status, name, rest = m.groups()
    if results.get(name) != "FAIL":
        results[name] = status
    if status == "FAIL":
        print(f"FAIL {name}{rest}")

bad = [l for l in log.splitlines()
       if re.search(r"\b(Oops|BUG:|WARNING:|kernel BUG|Call Trace|general protection|Kernel panic)", l)]
results["no-oops"] = "FAIL" if bad else "PASS"
for l in bad[:20]:
    print("kernel:", l)
results["guest-finished"] = "PASS" if "KMODTEST-DONE" in log else "FAIL"

passed = failed = 0
for name in expected + ["no-oops", "guest-finished"]:
    st = results.get(name, "MISSING")
    print(f"{'ok  ' if st == 'PASS' else 'FAIL'} {name}{'' if st in ('PASS', 'FAIL') else ' (not reported)'}")
    if st == "PASS":
        passed += 1
    else:
        failed += 1
if failed:
    print("--- tail of", log_path)
    print("\n".join(log.splitlines()[-40:]))
print(f"kmod: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
