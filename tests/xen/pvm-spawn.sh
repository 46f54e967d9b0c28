#!/bin/sh
# In the PVM domU: an INS driver in Xen mode (run dir /run/inss) whose
# instances are domains that dom0's ins-xen-agent creates on its requests.
#   pvm-spawn.sh up N       ins-ctl up --xen --instances N (returns once N
#                           instance domains joined); data/spawn/domids =
#                           their domain ids
#   pvm-spawn.sh web        nginx under libshim.so on this driver (its
#                           listener is replicated onto every instance)
#   pvm-spawn.sh watch D    polls the instance list: data/spawn/gone = 1 once
#                           dom D's instance left it, data/spawn/joined = the
#                           domain of an instance that joined since `up`
#   pvm-spawn.sh down       ins-ctl down (the driver has its domains destroyed)
#   pvm-spawn.sh log [N]    the driver log's last warnings and domain events
set -e
export PATH=/opt/ins/bin:$PATH
D=/run/inss
# The live instances' domain ids, space-separated.
doms() {
  ins-ctl --run-dir $D list | awk '$3 == "live" && $9 ~ /^dom/ {split(substr($9, 4), a, "/"); print a[1]}' | tr '\n' ' ' | sed 's/ $//'
}
case "$1" in
up)
  mkdir -p $D
  # 256 KiB rings: each channel grants 129 pages, and the PVM's gntalloc
  # allows 1,024 pages in all (its `limit`); 1 MiB rings take 513.
  ins-ctl --run-dir $D up --xen --instances "$2" --timeout-s "${3:-900}" -- \
    --xen-channel-prefix s --ring-capacity 262144 --heartbeat-timeout-ms 60000 --handshake-timeout-ms 60000 \
    || { grep -E "WARN|ERROR" $D/driver.log | tail -n 8; exit 1; }
  ins-ctl --run-dir $D list | sed 's/^/XSPAWN_LIST /'
  xenstore-write data/spawn/domids "$(doms)"
  ;;
web)
  mkdir -p /tmp/nginxs-body
  sed 's|/tmp/nginx|/tmp/nginxs|g' /etc/ins/nginx.conf > /tmp/nginx-spawn.conf
  ins-ctl --run-dir $D run -- nginx -c /tmp/nginx-spawn.conf > /tmp/nginx-spawn.log 2>&1 &
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
down)
  ins-ctl --run-dir $D down
  ;;
log)
  grep -E "WARN|ERROR|domain" $D/driver.log | tail -n "${2:-20}" | sed 's/^/XSPAWN_LOG /'
  ;;
*) echo "usage: pvm-spawn.sh up N [TIMEOUT_S] | web | watch DOMID | down | log [N]"; exit 2 ;;
esac
