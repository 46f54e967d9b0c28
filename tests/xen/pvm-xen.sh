#!/bin/sh
# In the PVM domU: a second INS driver (run dir /run/insx) whose only
# instance is `ins` in another domain, joined over a Xen channel.
#   pvm-xen.sh attach DOMID CHANNEL  start the driver (no local instance) and
#                                    offer CHANNEL to DOMID; returns once the
#                                    instance joined (ins-ctl attach-xen)
#   pvm-xen.sh web                   nginx under libshim.so on this driver
#                                    (its listener lives in the Xen instance)
#   pvm-xen.sh flows [RUNDIR TAG]    the flow records of driver RUNDIR
#                                    (default /run/insx) as "TAG remote in
#                                    out state local" lines (default XFLOW),
#                                    then `ins-ctl list` as "XLIST" lines
#                                    (TAG less FLOW, then LIST)
#   pvm-xen.sh gone                  wait (60 s) until the driver has no
#                                    instance and no Xen channel left
#   pvm-xen.sh ukr-attach DOMID CH   a third driver (/run/insu) whose only
#                                    instance is the PV unikernel in DOMID:
#                                    the default 1 MiB rings (the unikernel
#                                    is booted with a 4 MiB foreign window),
#                                    offers CH, returns once it joined; then
#                                    `ins-ctl list` as "UKLIST" lines
#   pvm-xen.sh ukr-web               nginx under libshim.so on that driver
#   pvm-xen.sh ukr-more              on that driver too: UDP echo servers
#                                    (socat UDP4-RECVFROM:7007 and
#                                    UDP6-RECVFROM:7008 with ipv6only, fork,
#                                    PIPE) and a second nginx listening on
#                                    [::]:8081 only
#   pvm-xen.sh ukr-down              stop those, then that driver
#                                    (`ins-ctl down`: it closes the channel)
#   pvm-xen.sh ukr-big DOMID CH      a fourth driver (/run/insb) with the
#                                    default 1 MiB rings offers CH to DOMID
#                                    for 20 s (the unikernel must refuse:
#                                    prints "UKBIG attach exit N"), then down
set -e
export PATH=/opt/ins/bin:$PATH
D=/run/insx
field() { echo "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p"; }
case "$1" in
attach)
  mkdir -p $D
  ins-ctl --run-dir $D up --instances 0 -- --heartbeat-timeout-ms 60000 --handshake-timeout-ms 60000
  ins-ctl --run-dir $D attach-xen --domid "$2" --channel "$3" --rendezvous-s 300
  ins-ctl --run-dir $D list
  ;;
web)
  mkdir -p /tmp/nginxx-body
  sed 's|/tmp/nginx|/tmp/nginxx|g' /etc/ins/nginx.conf > /tmp/nginx-xen.conf
  ins-ctl --run-dir $D run -- nginx -c /tmp/nginx-xen.conf > /tmp/nginx-xen.log 2>&1 &
  echo "PVM_XEN_WEB started (nginx under the shim, driver $D)"
  ;;
flows)
  R=${2:-$D}; T=${3:-XFLOW}
  ins-ctl --run-dir $R flows --json | while IFS= read -r l; do
    echo "$T $(field "$l" remote) $(field "$l" bytes_in) $(field "$l" bytes_out) $(field "$l" state) $(field "$l" local)"
  done
  ins-ctl --run-dir $R list | sed "s/^/${T%FLOW}LIST /"
  ;;
gone)
  i=0
  while :; do
    l=$(ins-ctl --run-dir $D list --json); s=$(ins-ctl --run-dir $D status --json)
    [ "$l" = "[]" ] && echo "$s" | grep -q '"xen_channels":\[\]' && break
    i=$((i+1)); [ $i -gt 600 ] && { echo "XGONE still: $l"; echo "$s"; exit 1; }
    usleep 100000
  done
  echo "XGONE no instance and no xen channel left after $((i / 10)) s"
  tail -n 20 $D/*.log 2>/dev/null | grep -i -E "xen|instance" | tail -n 8
  ;;
ukr-attach)
  U=/run/insu; mkdir -p $U
  ins-ctl --run-dir $U up --instances 0 -- --heartbeat-timeout-ms 60000 --handshake-timeout-ms 60000
  ins-ctl --run-dir $U attach-xen --domid "$2" --channel "$3" --rendezvous-s 300
  ins-ctl --run-dir $U list | sed 's/^/UKLIST /'
  ;;
ukr-web)
  mkdir -p /tmp/nginxu-body
  sed 's|/tmp/nginx|/tmp/nginxu|g' /etc/ins/nginx.conf > /tmp/nginx-ukr.conf
  ins-ctl --run-dir /run/insu run -- nginx -c /tmp/nginx-ukr.conf > /tmp/nginx-ukr.log 2>&1 &
  echo "PVM_UKR_WEB started (nginx under the shim, driver /run/insu)"
  ;;
ukr-more)
  U=/run/insu
  ins-ctl --run-dir $U run -- socat UDP4-RECVFROM:7007,fork PIPE > /tmp/socat-ukr4.log 2>&1 &
  ins-ctl --run-dir $U run -- socat UDP6-RECVFROM:7008,ipv6only=1,fork PIPE > /tmp/socat-ukr6.log 2>&1 &
  mkdir -p /tmp/nginxv-body
  sed 's|/tmp/nginx|/tmp/nginxv|g; s|listen 8080;|listen [::]:8081;|' /etc/ins/nginx.conf > /tmp/nginx-ukr6.conf
  ins-ctl --run-dir $U run -- nginx -c /tmp/nginx-ukr6.conf > /tmp/nginx-ukr6.log 2>&1 &
  echo "PVM_UKR_MORE started (UDP echo on 7007 and [::]:7008, nginx on [::]:8081, under the shim, driver $U)"
  ;;
ukr-down)
  for f in /tmp/nginxu.pid /tmp/nginxv.pid; do [ ! -f $f ] || kill "$(cat $f)" 2>/dev/null || true; done
  pkill socat 2>/dev/null || true; sleep 1
  for f in /tmp/socat-ukr4.log /tmp/socat-ukr6.log /tmp/nginx-ukr6.log; do [ ! -s $f ] || sed "s|^|UKDOWN $f: |" $f | tail -n 3; done
  ins-ctl --run-dir /run/insu down
  grep -h -i "xen channel" /run/insu/*.log 2>/dev/null | tail -n 4 | sed 's/^/UKDOWN /'
  ;;
ukr-big)
  B=/run/insb; mkdir -p $B
  ins-ctl --run-dir $B up --instances 0 -- --heartbeat-timeout-ms 60000
  rc=0; ins-ctl --run-dir $B attach-xen --domid "$2" --channel "$3" --rendezvous-s 20 || rc=$?
  echo "UKBIG attach exit $rc"
  ins-ctl --run-dir $B down
  ;;
*) echo "usage: pvm-xen.sh attach DOMID CHANNEL | web | flows [RUNDIR TAG] | gone | ukr-attach DOMID CHANNEL | ukr-web | ukr-more | ukr-down | ukr-big DOMID CHANNEL"; exit 2 ;;
esac
