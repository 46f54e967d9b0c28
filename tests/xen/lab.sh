#!/bin/bash
# make test-xen: from nothing, build the lab (packages cached under
# /var/cache/ins/xen, images under target/xen), boot it, print results and
# figures; exit 0 iff every test passed.
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")")
ROOT=$(readlink -f "$HERE/../..")
OUT=${INS_XEN_OUT:-$ROOT/target/xen}
T0=$(date +%s)
"$HERE/build.sh"
T1=$(date +%s)
LOG=$OUT/logs/boot-$(date +%Y%m%d-%H%M%S).log
LOG=$LOG "$HERE/run.sh"
T2=$(date +%s)
grep -E "XENTEST|FIGURE|XAGENT|XSPAWN|spawn |XENCHAN_|XL_CREATE|DOMU |DOMAINS|PVM_WEB|fetch |keep-alive|SNOOP|XFLOW|XLIST|XGONE|UFLOW|ukr block|ukr limit|curl: port|kmod |KPVM|Kernel panic|FAILED|error" "$LOG" | tail -n 100 || true
echo "== build $((T1 - T0)) s, boot and tests $((T2 - T1)) s, total $((T2 - T0)) s"
python3 "$HERE/summary.py" "$LOG"
