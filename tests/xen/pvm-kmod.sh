#!/bin/sh
# In the kernel-module PVM (kpvm: the Rust-enabled Linux of tests/kmod as
# a Xen PV domU): ins.ko instead of the user-space driver.
#   up        insmod ins.ko; two `ins --kmod /dev/ins` instances (sandboxed,
#             as a user runs them) join it; nginx under libshim.so on 8080
#             (the shim finds /dev/ins and uses the module: no daemon runs)
#   native    the same nginx without the shim on 8081 (figures' baseline)
#   kill1     SIGKILL the first instance; wait until the module lists it dead
#   down      stop nginx and the instances, unload the module; no oops, and
#             (kmemleak=on) no unreferenced object
#   xen-attach D [C]  `ins-ctl attach-xen --kmod`: the module grants
#             channel C (kx) to domain D (whose init runs `ins --xen-driver
#             <kpvm> --xen-channel C`), in the background; waits until the
#             module lists that instance live
#   xen-gone  after D's destruction: the module lists it dead, attach-xen
#             tore down (keys removed) and exited 0, no oops
#   xen-hostile  D's instance corrupts its ring: the module marks it dead
#             (corrupt ring), attach-xen sees the hang-up, D closes, the
#             keys go, attach-xen exits 0, no oops
#   probe D   insmod ins_xenprobe.ko, which grants pages and a port to dom D
#             (data/kprobe/peer) and publishes them (data/kprobe/*)
#   unprobe   rmmod ins_xenprobe; print its last log line; no oops
#   clean     the kernel log has no oops, warning or grant left pending
# Exit status 0 iff what the command checks holds.
export PATH=/opt/ins/bin:$PATH
W=/run/kmod
mkdir -p $W /tmp/nginx-body
status_until() { # filter pattern seconds: a line of /dev/ins
  i=0
  while [ $i -lt $(($3 * 10)) ]; do
    grep -F -- "$1" /dev/ins 2>/dev/null | grep -q -- "$2" && return 0
    usleep 100000; i=$((i + 1))
  done
  echo "KPVM: /dev/ins:"; cat /dev/ins; return 1
}
case "$1" in
up)
  echo "KPVM kernel $(uname -r)"
  if grep -q 'kmemleak=on' /proc/cmdline; then
    # Scans only when `down` asks (an automatic one would steal the
    # emulated CPU from the timed tests).
    mount -t debugfs none /sys/kernel/debug 2>/dev/null
    echo scan=off > /sys/kernel/debug/kmemleak
  fi
  insmod /lib/ins/ins.ko || { echo "KPVM insmod failed"; exit 1; }
  [ -c /dev/ins ] || { echo "KPVM no /dev/ins"; exit 1; }
  # A generous heartbeat timeout: under software emulation a loaded
  # domain's instance can be late.
  echo heartbeat_timeout_ms=10000 > /dev/ins || exit 1
  head -n 1 /dev/ins | grep ' heartbeat_timeout_ms=10000 ' || exit 1
  for n in 1 2; do
    RUST_LOG=info ins --kmod /dev/ins --heartbeat-ms 200 --kmod-ring 262144 > $W/ins$n.log 2>&1 &
    echo $! > $W/ins$n.pid
    status_until " pid $! " ' live .*channel open' 120 || { echo "KPVM instance $n did not join"; cat $W/ins$n.log; exit 1; }
  done
  LD_PRELOAD=/opt/ins/bin/libshim.so nginx -c /etc/ins/nginx.conf > $W/nginx.log 2>&1 &
  echo $! > $W/nginx.pid
  i=0
  until netstat -ltn 2>/dev/null | grep -q ':8080 '; do
    i=$((i + 1)); [ $i -gt 600 ] && { echo "KPVM nothing listens on 8080"; cat $W/nginx.log; exit 1; }
    usleep 100000
  done
  # Both instances listen (driver-core replicates the listener), and
  # nginx's sockets are the module's socket files.
  i=0
  until [ "$(netstat -ltn 2>/dev/null | grep -c ':8080 ')" = 2 ] || [ $i -gt 300 ]; do usleep 100000; i=$((i + 1)); done
  echo "KPVM listeners on 8080: $(netstat -ltn 2>/dev/null | grep -c ':8080 ')"
  ls -l /proc/$(cat $W/nginx.pid)/fd | grep -q 'ins-socket' || { echo "KPVM nginx has no ins-socket file"; ls -l /proc/$(cat $W/nginx.pid)/fd; exit 1; }
  [ "$(netstat -ltn 2>/dev/null | grep -c ':8080 ')" = 2 ] || exit 1
  ps | grep -v grep | grep -q ins-driver && { echo "KPVM a daemon runs"; exit 1; }
  grep -q 'Seccomp:[[:space:]]*2' /proc/$(cat $W/ins1.pid)/status || { echo "KPVM instance not sandboxed"; exit 1; }
  echo "KPVM_READY nginx under the shim through ins.ko, two instances"; cat /dev/ins
  ;;
native)
  sed 's/listen 8080;/listen 8081;/; s|pid /tmp/nginx.pid;|pid /tmp/nginx-native.pid;|' /etc/ins/nginx.conf > $W/native.conf
  nginx -c $W/native.conf > $W/native.log 2>&1 &
  echo $! > $W/native.pid
  i=0
  until netstat -ltn 2>/dev/null | grep -q ':8081 '; do
    i=$((i + 1)); [ $i -gt 300 ] && { cat $W/native.log; exit 1; }
    usleep 100000
  done
  ;;
kill1)
  # The module's list names a live instance's pid, a dead one only by id.
  p=$(cat $W/ins1.pid)
  id=$(sed -n "s/^instance \([0-9]*\) live pid $p .*/\1/p" /dev/ins)
  [ -n "$id" ] || { echo "KPVM pid $p not in the module's list"; cat /dev/ins; exit 1; }
  kill -KILL "$p"
  status_until "instance $id " '^instance [0-9]* dead ' 60 || exit 1
  echo "KPVM instance $id (pid $p) dead in the module's list"; cat /dev/ins
  ;;
down)
  for f in attach native nginx ins2 ins1; do [ -f $W/$f.pid ] && kill -TERM "$(cat $W/$f.pid)" 2>/dev/null; done
  i=0; while [ $i -lt 100 ] && ps | grep -v grep | grep -qE ' (nginx|ins) '; do usleep 100000; i=$((i + 1)); done
  rmmod ins || { echo "KPVM rmmod failed"; cat /dev/ins; exit 1; }
  [ ! -e /dev/ins ] || exit 1
  dmesg | grep -E 'BUG|Oops|WARNING|Call Trace' && exit 1
  echo "KPVM module unloaded, no oops"
  if grep -q 'kmemleak=on' /proc/cmdline && [ ! -w /sys/kernel/debug/kmemleak ]; then
    echo "KPVM kmemleak=on but no /sys/kernel/debug/kmemleak"; exit 1
  fi
  if [ -w /sys/kernel/debug/kmemleak ]; then
    # Linux's deferred grant list frees pages a second after their grant
    # could end: let it finish, then scan twice (kmemleak reports an
    # object only once two scans found it unreferenced).
    sleep 2
    echo scan > /sys/kernel/debug/kmemleak; sleep 1; echo scan > /sys/kernel/debug/kmemleak
    all=$(grep -c '^unreferenced object' /sys/kernel/debug/kmemleak)
    # (The module is gone, so its frames in the backtraces are bare
    # addresses: every unreferenced object counts, as in tests/kmod.)
    echo "KPVM kmemleak after unload: $all unreferenced objects"
    [ "$all" = 0 ] || { head -n 60 /sys/kernel/debug/kmemleak; exit 1; }
  fi
  ;;
xen-attach)
  C=${3:-kx}; echo "$C" > $W/xen.chan
  (ins-ctl attach-xen --kmod /dev/ins --domid "$2" --channel "$C" --rendezvous-s 300 --ring-capacity 262144; echo "rc=$?") > $W/attach.log 2>&1 &
  echo $! > $W/attach.pid
  status_until " xen dom$2 " ' live ' 300 || { echo "KPVM no instance from dom$2"; cat $W/attach.log; exit 1; }
  sed -n "s/^instance \([0-9]*\) live xen dom$2 .*/\1/p" /dev/ins > $W/xen.id
  echo "KPVM attach-xen: $(head -n 2 $W/attach.log | tr '\n' ' ')"
  cat /dev/ins
  ;;
xen-gone)
  id=$(cat $W/xen.id)
  status_until "instance $id " '^instance [0-9]* dead ' 60 || exit 1
  p=$(cat $W/attach.pid); i=0
  while kill -0 "$p" 2>/dev/null && [ $i -lt 600 ]; do usleep 100000; i=$((i + 1)); done
  echo "KPVM attach-xen: $(tail -n 2 $W/attach.log | tr '\n' ' ')"
  grep -q 'ended: the instance left' $W/attach.log && grep -q '^rc=0$' $W/attach.log || { cat $W/attach.log; exit 1; }
  xenstore-read data/ins/kx/state 2>/dev/null && { echo "KPVM channel keys left"; exit 1; }
  echo "KPVM $(dmesg | sed -n 's/.*\(xen channel pages: grants ended.*\)/\1/p' | tail -n 1)"
  echo "KPVM $(grep "^instance $id " /dev/ins)"
  dmesg | grep -E 'BUG|Oops|WARNING|Call Trace' && exit 1
  true
  ;;
xen-hostile)
  id=$(cat $W/xen.id); C=$(cat $W/xen.chan)
  status_until "instance $id " '^instance [0-9]* dead ' 120 || exit 1
  p=$(cat $W/attach.pid); i=0
  while kill -0 "$p" 2>/dev/null && [ $i -lt 600 ]; do usleep 100000; i=$((i + 1)); done
  echo "KPVM hostile: $(dmesg | grep "instance $id failed" | tail -n 1 | sed 's/^\[[^]]*\] //')"
  echo "KPVM attach-xen: $(tail -n 2 $W/attach.log | tr '\n' ' ')"
  dmesg | grep -q "instance $id failed: corrupt ring" || exit 1
  grep -q 'ended: the module declared the instance dead' $W/attach.log && grep -q '^rc=0$' $W/attach.log || { cat $W/attach.log; exit 1; }
  xenstore-read data/ins/$C/state 2>/dev/null && { echo "KPVM channel keys left"; exit 1; }
  echo "KPVM $(dmesg | sed -n 's/.*\(xen channel pages: grants ended.*\)/\1/p' | tail -n 1)"
  dmesg | grep -E 'BUG|Oops|WARNING|Call Trace' && exit 1
  true
  ;;
probe)
  xenstore-write data/kprobe/peer "$2" || exit 1
  insmod /lib/ins/ins_xenprobe.ko || { echo "KPVM insmod ins_xenprobe failed"; dmesg | grep ins_xenprobe; exit 1; }
  dmesg | grep 'ins_xenprobe:' | tail -n 1
  [ "$(xenstore-read data/kprobe/state)" = offered ]
  ;;
unprobe)
  rmmod ins_xenprobe || exit 1
  echo "KPVM $(dmesg | sed -n 's/.*\(ins_xenprobe: unloaded.*\)/\1/p' | tail -n 1)"
  xenstore-read data/kprobe/state 2>/dev/null && exit 1
  dmesg | grep -E 'BUG|Oops|WARNING|Call Trace' && exit 1
  true
  ;;
clean)
  ! dmesg | grep -E 'BUG|Oops|WARNING|Call Trace|leaking g\.e\.|still pending'
  ;;
*) echo "usage: pvm-kmod.sh up|native|kill1|xen-attach D [C]|xen-gone|xen-hostile|down|probe D|unprobe|clean"; exit 2 ;;
esac
