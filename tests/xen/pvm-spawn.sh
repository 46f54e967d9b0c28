#!/bin/sh
# In the PVM domU: an INS driver in Xen mode (run dir $SPAWN_DIR, default
# /run/inss) whose instances are domains that dom0's ins-xen-agent creates
# on its requests.
#   pvm-spawn.sh up N [T] [--unikernel]
#                           ins-ctl up --xen --instances N (returns once N
#                           instance domains joined; --unikernel: PV
#                           unikernels); data/spawn/domids = their domain ids;
#                           SPAWN_ROTATE_S=S: the driver's --rotate-s S
#   pvm-spawn.sh refused [T] ins-ctl up --xen --unikernel --instances 1
#                           against an agent that has no unikernel template:
#                           exits 0 when up failed (1) naming the agent's
#                           reason; then ins-ctl down
#   pvm-spawn.sh web        nginx under libshim.so on this driver (its
#                           listener is replicated onto every instance)
#   pvm-spawn.sh watch D    polls the instance list: data/spawn/gone = 1 once
#                           dom D's instance left it, data/spawn/joined = the
#                           domain of an instance that joined since `up`
#   pvm-spawn.sh scale N [--unikernel]
#                           ins-ctl scale N --xen [--unikernel] (returns once
#                           N instances are live: up, a new domain joined;
#                           down, one drained and stopped, its domain
#                           destroyed); data/spawn/domids = the live ones
#   pvm-spawn.sh down       ins-ctl down (the driver has its domains destroyed)
#   pvm-spawn.sh log [N]    the driver log's last warnings and domain events
set -e
export PATH=/opt/ins/bin:$PATH
D=${SPAWN_DIR:-/run/inss}
TAG=$(basename $D)
# The live instances' domain ids, space-separated.
doms() {
  ins-ctl --run-dir $D list | awk '$3 == "live" && $9 ~ /^dom/ {split(substr($9, 4), a, "/"); print a[1]}' | tr '\n' ' ' | sed 's/ $//'
}
case "$1" in
up)
  mkdir -p $D
  # 256 KiB rings: each channel grants 131 pages, and the PVM's gntalloc
  # allows 1,024 pages in all (its `limit`); 1 MiB rings take 515.
  # (A unikernel maps the 131 pages in its foreign window: 2 MiB, 512
  # pages, by default.) Channel names: s<N>, k<N> for unikernels.
  case "${4:-}" in --unikernel) UK=--unikernel; PRE=k ;; *) UK=; PRE=s ;; esac
  ins-ctl --run-dir $D up --xen $UK --instances "$2" --timeout-s "${3:-900}" -- \
    --xen-channel-prefix $PRE --ring-capacity 262144 --heartbeat-timeout-ms 60000 --handshake-timeout-ms 60000 \
    ${SPAWN_ROTATE_S:+--rotate-s $SPAWN_ROTATE_S} \
    || { grep -E "WARN|ERROR" $D/driver.log | tail -n 8; exit 1; }
  ins-ctl --run-dir $D list | sed 's/^/XSPAWN_LIST /'
  xenstore-write data/spawn/domids "$(doms)"
  ;;
refused)
  mkdir -p $D
  t=$(cut -d' ' -f1 /proc/uptime)
  rc=0; out=$(ins-ctl --run-dir $D up --xen --unikernel --instances 1 --timeout-s "${2:-120}" -- \
    --xen-channel-prefix r --xen-retry-ms 60000 2>&1) || rc=$?
  echo "$out" | sed 's/^/XSPAWN_REFUSED /'
  echo "XSPAWN_REFUSED up exited $rc after $(awk "BEGIN{printf \"%.1f\", $(cut -d' ' -f1 /proc/uptime)-$t}") s"
  grep -E "refused" $D/driver.log | tail -n 2 | sed 's/^/XSPAWN_REFUSED_LOG /'
  ins-ctl --run-dir $D down > /dev/null
  [ $rc = 1 ] && echo "$out" | grep -q "makes no unikernel instance domains"
  ;;
web)
  mkdir -p /tmp/nginx-$TAG-body
  sed "s|/tmp/nginx|/tmp/nginx-$TAG|g" /etc/ins/nginx.conf > /tmp/nginx-$TAG.conf
  ins-ctl --run-dir $D run -- nginx -c /tmp/nginx-$TAG.conf > /tmp/nginx-$TAG.log 2>&1 &
  echo "XSPAWN web started (nginx under the shim, driver $D)"
  ;;
watch)
  old=" $(xenstore-read data/spawn/domids) "
  xenstore-write data/spawn/gone 0; xenstore-write data/spawn/joined none
  gone=0; i=0
  while [ $i -lt 3000 ]; do
    now=" $(doms) "
    if [ $gone = 0 ]; then
      case "$now" in *" $2 "*) ;; *) gone=1; xenstore-write data/spawn/gone 1; echo "XSPAWN dom$2's instance left the list" ;; esac
    fi
    for d in $now; do
      case "$old" in *" $d "*) ;; *)
        if [ $gone = 1 ]; then
          xenstore-write data/spawn/joined "$d"; echo "XSPAWN replacement dom$d joined"
          ins-ctl --run-dir $D list | sed 's/^/XSPAWN_LIST /'
          exit 0
        fi ;;
      esac
    done
    i=$((i+1)); usleep 100000
  done
  echo "XSPAWN watch gave up: list $now"; exit 1
  ;;
scale)
  ins-ctl --run-dir $D scale "$2" --xen ${3:-} --timeout-s 600 \
    || { grep -E "WARN|ERROR" $D/driver.log | tail -n 8; exit 1; }
  ins-ctl --run-dir $D list | sed 's/^/XSPAWN_LIST /'
  xenstore-write data/spawn/domids "$(doms)"
  ;;
down)
  ins-ctl --run-dir $D down
  ;;
log)
  grep -E "WARN|ERROR|domain" $D/driver.log | tail -n "${2:-20}" | sed 's/^/XSPAWN_LOG /'
  ;;
*) echo "usage: pvm-spawn.sh up N [TIMEOUT_S] [--unikernel] | refused [TIMEOUT_S] | web | watch DOMID | scale N [--unikernel] | down | log [N]"; exit 2 ;;
esac
