#!/bin/sh
# PV dom0 /init for the INS Xen lab: toolstack, a bridge with vifs, three
# PV domUs (pvm: the protected VM running the driver side; ins1: an
# instance domain; snoop: a third domain), then the tests. Every test
# prints "XENTEST <name> PASS|FAIL ..."; domU consoles are copied into
# this log with a [name] prefix. Ends with XENLAB_DONE and powers off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/lib/xen-4.17/bin:/opt/ins/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run; mkdir -p /var /tmp; ln -sfn /run /var/run; mount -t tmpfs tmpfs /tmp
up() { cut -d' ' -f1 /proc/uptime; }
since() { awk "BEGIN{printf \"%.1f\", $(up)-$1}"; }
for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc xen-netback llc stp bridge; do
  insmod /lib/modules/$m.ko || echo "insmod $m failed"
done
mount -t xenfs xenfs /proc/xen
sed -i 's/^#*autoballoon=.*/autoballoon="off"/' /etc/xen/xl.conf; grep -q '^autoballoon=' /etc/xen/xl.conf || echo 'autoballoon="off"' >> /etc/xen/xl.conf
mkdir -p /run/xenstored /var/lib/xenstored /var/log/xen/console /var/lib/xen /run/xen /var/lock/subsys
xenstored --pid-file /run/xenstored.pid || echo "xenstored failed"
xen-init-dom0 || echo "xen-init-dom0 failed"
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console || echo "xenconsoled failed"
ip link set lo up
brctl addbr xenbr0
ip addr add 169.254.100.1/24 dev xenbr0 && ip link set xenbr0 up
# IPv6 on the bridge too (tests 35, 36: the unikernel instance's fd00:64::6);
# no duplicate address detection, so the address is usable at once.
echo 0 > /proc/sys/net/ipv6/conf/xenbr0/accept_dad 2>/dev/null
ip -6 addr add fd00:64::1/64 dev xenbr0 || echo "no IPv6 on xenbr0"
echo "DOM0_READY uptime=$(up)"

FAILED=0
result() { # name pass|fail detail
  if [ "$2" = pass ]; then echo "XENTEST $1 PASS $3"; else echo "XENTEST $1 FAIL $3"; FAILED=$((FAILED+1)); fi
}
create() { # name: xl create, then copy the domain's console into this log
  t=$(up)
  if xl create /etc/xen/$1.cfg >/tmp/xl-$1.log 2>&1; then
    echo "XL_CREATE $1 took $(since $t) s"
  else
    cat /tmp/xl-$1.log; echo "XENTEST create-$1 FAIL xl create failed"; return 1
  fi
}
console() {
  (tail -F /var/log/xen/console/guest-$1.log 2>/dev/null | while IFS= read -r l; do echo "[$1] $l"; done) &
}
domid() { xl domid $1 2>/dev/null; }
wait_up() { # name timeout
  d=$(domid $1); i=0
  until [ "$(xenstore-read /local/domain/$d/data/up 2>/dev/null)" = 1 ]; do
    i=$((i+1)); [ $i -gt $(($2*10)) ] && { result boot-$1 fail "no data/up after $2 s"; return 1; }
    usleep 100000
  done
  echo "DOMU $1 (dom$d) up at $(up) s"
}
# run NAME CMD: start the domain's next command; its number is left in $N.
# wait_cmd NAME N TIMEOUT: prints its exit status (or "timeout").
run() {
  eval "N=\${next_$1:-1}"; eval "next_$1=$((N + 1))"
  xenstore-write /local/domain/$(domid $1)/data/cmd$N "$2"
}
wait_cmd() {
  d=$(domid $1); i=0
  while :; do
    r=$(xenstore-read /local/domain/$d/data/result$2 2>/dev/null) && { echo "$r"; return 0; }
    i=$((i+1)); [ $i -gt $(($3*10)) ] && { echo timeout; return 0; }
    usleep 100000
  done
}
. /etc/ins/spawn.sh   # defines spawn_tests (tests 23-27) and ukspawn_tests (28-33); ins_tests=spawn runs only them
. /etc/ins/hostile.sh   # defines hostile_tests (test 34); ins_tests=hostile runs only it
. /etc/ins/kmod.sh   # defines kmod_tests (tests 39-46: ins.ko in a PVM, its instance domains); ins_tests=kmod runs only them

# ins_tests= on dom0's command line (INS_XEN_TESTS for run.sh) selects
# a part of the lab: "unikernel" boots only the PVM and runs the
# unikernel's tests (16-19, then 11-15); empty or "all": everything.
ONLY=$(sed -n 's/.*ins_tests=\([^ ]*\).*/\1/p' /proc/cmdline)
case "${ONLY:-all}" in all|unikernel|spawn|hostile|kmod) ;; *) echo "XENTEST ins-tests FAIL unknown ins_tests=$ONLY (all, unikernel, spawn, hostile, kmod)"; ONLY=all ;; esac
echo "LAB_TESTS ${ONLY:-all}"

T0=$(up)
if [ "$ONLY" = kmod ]; then
  kmod_tests
  echo "XENLAB_DONE failed=$FAILED elapsed=$(since $T0) s"
  sync; poweroff -f
fi
if [ "$ONLY" = unikernel ]; then
  create pvm || result create-pvm fail ""
  console pvm; wait_up pvm 300
  P=$(domid pvm)
  . /etc/ins/ukring.sh   # tests 16-19: the unikernel joins the driver (tests/xen/ukring.sh)
  run pvm poweroff; sleep 2
  . /etc/ins/unikernel.sh
  echo "XENLAB_DONE failed=$FAILED elapsed=$(since $T0) s"
  sync; poweroff -f
fi
# The three domains are built at once (dom0's memory is fixed: no ballooning).
create pvm & c1=$!; create ins1 & c2=$!; create snoop & c3=$!
wait $c1 || result create-pvm fail ""; wait $c2 || result create-ins1 fail ""; wait $c3 || result create-snoop fail ""
for n in pvm ins1 snoop; do console $n; done
for n in pvm ins1 snoop; do wait_up $n 300; done
P=$(domid pvm); I=$(domid ins1); S=$(domid snoop)
echo "DOMAINS pvm=dom$P ins1=dom$I snoop=dom$S, all up $(since $T0) s after the first xl create"
xl list
brctl showmacs xenbr0 2>/dev/null | head -5

# --- 1. nginx under the shim in the PVM, fetched from dom0 over the bridge
run pvm "sh /opt/ins/pvm-web.sh"
r=$(wait_cmd pvm $N 180)
if [ "$r" = 0 ]; then
  ok=1; URL=http://169.254.100.2:8080
  for f in small.html big.bin; do
    got=$(curl -sS -m 60 $URL/$f | sha256sum | cut -d' ' -f1)
    want=$(cut -d' ' -f1 /srv/www/$f.sha256)
    if [ "$got" = "$want" ]; then echo "fetch $f: sha256 ok ($(wc -c < /srv/www/$f) bytes)"; else echo "fetch $f: sha256 $got, want $want"; ok=0; fi
  done
  args=""; for i in $(seq 50); do args="$args $URL/small.html -o /dev/null"; done
  conns=$(curl -sS -m 120 -w '%{num_connects} %{http_code}\n' $args | awk '$2 == 200 {s+=$1; n++} END {print s" connections for "n" requests"}')
  echo "keep-alive: $conns"
  case "$conns" in "1 connections for 50 requests") ;; *) ok=0 ;; esac
  [ $ok = 1 ] && result nginx-under-shim pass "byte-exact small and 1 MiB, 50 requests on one connection" || result nginx-under-shim fail "see above"
else
  result nginx-under-shim fail "pvm-web.sh exited $r"
fi
run pvm "ins-ctl --run-dir /run/ins list; ins-ctl --run-dir /run/ins flows | tail -n 5; tail -n 15 /run/ins/*.log /tmp/nginx.log"
wait_cmd pvm $N 60 >/dev/null

# --- 2. plain TCP between the two domains over the bridge (baseline)
run ins1 "xenchan tcp-server --listen 169.254.100.3:7001 --rtt 200 --bulk-mib 16"; n2=$N
sleep 2
run pvm "xenchan tcp-client --connect 169.254.100.3:7001 --rtt 200 --bulk-mib 16"; n1=$N
r1=$(wait_cmd pvm $n1 240); r2=$(wait_cmd ins1 $n2 60)
[ "$r1" = 0 ] && [ "$r2" = 0 ] && result tcp-baseline pass "" || result tcp-baseline fail "client $r1 server $r2"

# --- 3. an INS channel over grant pages + event channels, rendezvous in xenstore
run pvm "xenchan driver --peer $I --name xch0 --messages 2000 --rtt 200 --bulk-mib 16 --hold-until data/release"; n1=$N
run ins1 "xenchan instance --peer $P --name xch0 --messages 2000 --rtt 200 --bulk-mib 16 --hold-until data/release"; n2=$N
# Wait until both sides finished the exchange and hold the channel open.
i=0; until grep -q "FIGURE ring_mib_s" /var/log/xen/console/guest-pvm.log 2>/dev/null || [ $i -gt 2400 ]; do usleep 100000; i=$((i+1)); done
echo "channel keys and permissions while connected:"
xenstore-ls -p /local/domain/$P/data/ins 2>&1 | grep -v ring-ref/ | sed 's/^/  /'
xenstore-ls -p /local/domain/$I/data/ins 2>&1 | sed 's/^/  /'
# --- 4. the third domain may neither read nor write the pair's keys
run snoop "xenchan snoop --driver $P --instance $I --name xch0"
r=$(wait_cmd snoop $N 120)
[ "$r" = 0 ] && result xenstore-perms pass "dom$S refused on every key of dom$P<->dom$I" || result xenstore-perms fail "snoop exited $r"
xenstore-write /local/domain/$P/data/release 1; xenstore-write /local/domain/$I/data/release 1
r1=$(wait_cmd pvm $n1 300); r2=$(wait_cmd ins1 $n2 60)
[ "$r1" = 0 ] && [ "$r2" = 0 ] && result xen-channel pass "driver $r1 instance $r2" || result xen-channel fail "driver $r1 instance $r2"
left=$(xenstore-ls /local/domain/$P/data/ins 2>/dev/null; xenstore-ls /local/domain/$I/data/ins 2>/dev/null)
[ -z "$left" ] && result stale-keys pass "both channel directories removed" || { echo "$left"; result stale-keys fail "keys left behind"; }

# --- 6. the real instance binary joins a driver over Xen (ins --xen-driver):
# hello, heartbeats on the ring, then the driver closes and ins exits 0
run pvm "xenchan serve-ins --peer $I --name ins0 --seconds 6"; n1=$N
run ins1 "ins --xen-driver $P --xen-channel ins0 --instance-id 7 --heartbeat-ms 500"; n2=$N
r1=$(wait_cmd pvm $n1 300); r2=$(wait_cmd ins1 $n2 120)
left=$(xenstore-ls /local/domain/$P/data/ins 2>/dev/null; xenstore-ls /local/domain/$I/data/ins 2>/dev/null)
[ "$r1" = 0 ] && [ "$r2" = 0 ] && [ -z "$left" ] && result ins-joins-over-xen pass "driver side $r1, ins exit $r2, keys removed" \
  || result ins-joins-over-xen fail "driver side $r1, ins exit $r2, left: $left"

# --- 7. the real driver takes an instance in another domain (attach-xen):
# a second driver in the PVM (no local instance) offers channel insx to
# ins1, where `ins --xen-driver` joins it; nginx under the shim on that
# driver listens through ins1's address; dom0 fetches, then the driver's
# flow records must carry exactly the bytes curl counted
. /etc/ins/flowcheck.sh
XF=/var/log/xen/console/guest-pvm.log
run pvm "sh /opt/ins/pvm-xen.sh attach $I insx"; na=$N
run ins1 "ins --xen-driver $P --xen-channel insx --instance-id 11 --heartbeat-ms 1000 --xen-rendezvous-s 300 > /tmp/insx.log 2>&1 & echo \$! > /tmp/insx.pid"
r=$(wait_cmd pvm $na 400)
if [ "$r" = 0 ]; then
  run pvm "sh /opt/ins/pvm-xen.sh web"; wait_cmd pvm $N 60 >/dev/null
  XURL=http://169.254.100.3:8080
  t=$(up); i=0
  until curl -s -m 5 -o /dev/null $XURL/small.html || [ $i -gt 180 ]; do sleep 1; i=$((i+1)); done
  echo "xen web: first answer through ins1 $(since $t) s after nginx started"
  # curl's byte counts per connection, then the instance's flow records
  # (sent when each flow closes) must carry exactly those (flowcheck.sh)
  ok=1; fetch_counted xen $XURL /tmp/xwant || ok=0
  flows_match XFLOW /tmp/xwant "sh /opt/ins/pvm-xen.sh flows"; flows=$FLOWS_MATCHED
  listed=0; grep -q "XLIST .* dom$I/insx" $XF && listed=1
  grep "XLIST" $XF | tail -n 2
  [ $ok = 1 ] && [ $flows = 3 ] && [ $listed = 1 ] \
    && result driver-over-xen pass "byte-exact small and 1 MiB and 50 requests on one connection through ins1 (dom$I); 3 flow records with curl's exact byte counts; list shows dom$I/insx" \
    || result driver-over-xen fail "fetches ok=$ok, flow records matched $flows of 3, listed=$listed"
else
  result driver-over-xen fail "attach-xen exited $r"
  run ins1 "cat /tmp/insx.log"; wait_cmd ins1 $N 30 >/dev/null
fi

# --- 34. a hostile instance domain corrupts its ring: only it dies, the
# driver and its local instance go on (tests/xen/hostile.sh); ins1 is
# still up here (test 9 destroys it)
hostile_tests

# --- 8. the instance process dies (kill -9): its kernel unmaps the grants,
# the unmap notification clears its alive word and fires the liveness port;
# the driver notices, revokes and removes its keys
state_of() { xenstore-read /local/domain/$P/data/ins/$1/state 2>/dev/null; }
wait_connected() { i=0; until [ "$(state_of $1)" = 4 ] || [ $i -gt 1200 ]; do usleep 100000; i=$((i+1)); done; }
run pvm "xenchan driver --peer $I --name xd1 --idle --until-peer-gone"; n1=$N
run ins1 "xenchan instance --peer $P --name xd1 --idle --hold-until data/never & echo \$! > /tmp/xd1.pid"
wait_cmd ins1 $N 30 >/dev/null
wait_connected xd1
t=$(up); run ins1 'kill -9 $(cat /tmp/xd1.pid)'
r=$(wait_cmd pvm $n1 180)
[ "$r" = 0 ] && [ -z "$(state_of xd1)" ] && grep -q "XENCHAN_CLOSED Driver: peer_left=true unmapped_before_revoke=true" /var/log/xen/console/guest-pvm.log \
  && result instance-killed pass "driver revoked and removed its keys $(since $t) s after kill -9" \
  || result instance-killed fail "driver exit $r, state '$(state_of xd1)'"

# --- 9. the instance domain is destroyed (xl destroy): its xenstore home
# vanishes, the driver's watch fires, it revokes and removes its keys
run pvm "xenchan driver --peer $I --name xd2 --idle --until-peer-gone"; n1=$N
run ins1 "xenchan instance --peer $P --name xd2 --idle --hold-until data/never"
wait_connected xd2
t=$(up); xl destroy ins1
r=$(wait_cmd pvm $n1 180)
[ "$r" = 0 ] && [ -z "$(state_of xd2)" ] \
  && result domain-destroyed pass "driver revoked and removed its keys $(since $t) s after xl destroy" \
  || result domain-destroyed fail "driver exit $r, state '$(state_of xd2)'"

# --- 10. the driver of test 7 saw its instance's domain go: the instance
# is marked dead (as a local one would be) and its channel torn down
run pvm "sh /opt/ins/pvm-xen.sh gone"
r=$(wait_cmd pvm $N 120)
[ "$r" = 0 ] && result xen-instance-dead pass "after xl destroy: no instance, no xen channel left on the driver" \
  || result xen-instance-dead fail "pvm-xen.sh gone exited $r"

. /etc/ins/ukring.sh   # tests 16-19: the unikernel joins the driver (tests/xen/ukring.sh)
spawn_tests   # tests 23-27: instance domains made by ins-xen-agent (tests/xen/spawn.sh)
ukspawn_tests   # tests 28-33: the same with PV unikernel instance domains (tests/xen/spawn.sh)
for n in pvm snoop; do run $n poweroff; done
sleep 2
. /etc/ins/unikernel.sh   # tests 11-15: the PV unikernel (tests/xen/unikernel.sh)
kmod_tests   # tests 39-46: ins.ko in a PVM whose kernel is tests/kmod's (tests/xen/kmod.sh)
echo "XENLAB_DONE failed=$FAILED elapsed=$(since $T0) s"
sync
poweroff -f
