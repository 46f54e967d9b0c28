#!/bin/sh
# Sourced by dom0-init.sh: test 34, a hostile instance. One driver in the
# PVM (run dir /run/insh) with a local instance and an instance domain
# (ins1: `ins --xen-driver` joined over channel insh) started with the
# fault-injection flag --fault-inject-corrupt-ring-after-s: after serving a
# while it writes garbage and a producer index past capacity into the ring
# it produces and rings the doorbell. nginx under the shim on that driver
# (port 8088; its listener replicated to both instances). Then: only that
# instance is declared dead, the driver (same pid) still answers, nginx
# still serves byte-exact through the local instance.
# ins_tests=hostile on dom0's command line runs only this (boots pvm, ins1).
hostile_tests() {
  HS=45   # seconds of honest service before the corruption
  H=/run/insh
  HURL=http://169.254.100.2:8088; XURL=http://169.254.100.3:8088
  # 256 KiB rings (131 granted pages): in the whole lab test 7's driver
  # still holds 1 MiB rings (515 pages) and gntalloc grants at most 1,024
  # pages per domain by default.
  run pvm "mkdir -p $H && ins-ctl --run-dir $H up --instances 1 -- --ring-capacity 262144 --heartbeat-timeout-ms 60000 --handshake-timeout-ms 60000 && ins-ctl --run-dir $H attach-xen --domid $I --channel insh --rendezvous-s 300 && ins-ctl --run-dir $H list | sed 's/^/HLIST0 /'"; na=$N
  run ins1 "ins --xen-driver $P --xen-channel insh --instance-id 34 --heartbeat-ms 1000 --xen-rendezvous-s 300 --fault-inject-corrupt-ring-after-s $HS > /tmp/insh.log 2>&1 & echo \$! > /tmp/insh.pid"
  r=$(wait_cmd pvm $na 400); tj=$(up)
  if [ "$r" != 0 ]; then
    result hostile-instance fail "driver with a local and a Xen instance: exited $r"
    run ins1 "cat /tmp/insh.log"; wait_cmd ins1 $N 30 >/dev/null
    run pvm "ins-ctl --run-dir $H down"; wait_cmd pvm $N 60 >/dev/null
    return
  fi
  run pvm "cat $H/driver.pid | sed 's/^/HPID0 /'; mkdir -p /tmp/nginxh-body; sed 's|/tmp/nginx|/tmp/nginxh|g; s|listen 8080|listen 8088|' /etc/ins/nginx.conf > /tmp/nginx-h.conf; ins-ctl --run-dir $H run -- nginx -c /tmp/nginx-h.conf > /tmp/nginx-h.log 2>&1 &"
  wait_cmd pvm $N 60 >/dev/null
  want=$(cut -d' ' -f1 /srv/www/big.bin.sha256)
  # Before: both instances serve (the PVM's address, ins1's address).
  i=0; until curl -s -m 5 -o /dev/null $XURL/small.html || [ $i -gt 60 ]; do sleep 1; i=$((i+1)); done
  before=""
  for u in $HURL $XURL; do
    got=$(curl -sS -m 60 $u/big.bin | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] && before="$before ok" || before="$before bad"
  done
  echo "hostile: before the corruption, 1 MiB via the PVM / ins1:$before ($(since $tj) s after the join)"
  # The corruption comes $HS s after the join: wait (bounded) for the
  # driver's verdict.
  tf=$(up)
  run pvm "i=0; until grep -q 'instance declared dead' $H/*.log || [ \$i -gt $(( (HS + 90) * 10 )) ]; do usleep 100000; i=\$((i+1)); done; grep -h 'instance declared dead' $H/*.log | tail -n 2 | sed 's/^/HDEAD /'; cat $H/driver.pid | sed 's/^/HPID1 /'; kill -0 \$(cat $H/driver.pid) && echo HALIVE yes; ins-ctl --run-dir $H status > /dev/null && echo HSTATUS ok; ins-ctl --run-dir $H list | sed 's/^/HLIST1 /'; echo HLISTJ \$(ins-ctl --run-dir $H list --json | tr -d '\n ')"
  wait_cmd pvm $N $((HS + 180)) >/dev/null
  run ins1 "grep -h 'FAULT INJECTION' /tmp/insh.log | sed 's/^/HFAULT /'"; wait_cmd ins1 $N 30 >/dev/null
  sleep 2
  L=/var/log/xen/console/guest-pvm.log
  grep -E "HLIST0|HPID|HDEAD|HALIVE|HSTATUS|HLIST1|HLISTJ" $L | tail -n 12
  grep -h "HFAULT" /var/log/xen/console/guest-ins1.log | tail -n 1
  p0=$(sed -n 's/.*HPID0 \([0-9]*\).*/\1/p' $L | tail -n 1); p1=$(sed -n 's/.*HPID1 \([0-9]*\).*/\1/p' $L | tail -n 1)
  dead=0; grep -q "HDEAD" $L && dead=1
  alive=0; grep -q "HALIVE yes" $L && grep -q "HSTATUS ok" $L && [ -n "$p0" ] && [ "$p0" = "$p1" ] && alive=1
  # Only the local instance is left: one instance line, none for dom$I/insh.
  lj=$(grep "HLISTJ" $L | tail -n 1); live=$(echo "$lj" | grep -o '"state":"live"' | wc -l)
  nl=$(grep -c "HLIST1 " $L); xen_left=0; grep "HLIST1 " $L | grep -q "dom$I/insh" && xen_left=1
  # After: nginx still serves, byte-exact, through the remaining instance.
  after=0; small=0
  got=$(curl -sS -m 60 $HURL/big.bin | sha256sum | cut -d' ' -f1); [ "$got" = "$want" ] && after=1
  got=$(curl -sS -m 30 $HURL/small.html | sha256sum | cut -d' ' -f1); [ "$got" = "$(cut -d' ' -f1 /srv/www/small.html.sha256)" ] && small=1
  echo "hostile: after the corruption, via the PVM: 1 MiB ok=$after small ok=$small"
  echo "hostile: list json: $lj"
  [ $dead = 1 ] && [ $alive = 1 ] && [ $xen_left = 0 ] && [ "$live" = 1 ] && [ $after = 1 ] && [ $small = 1 ] && [ "$before" = " ok ok" ] \
    && result hostile-instance pass "ins in dom$I corrupted its ring (index past capacity, garbage): only it declared dead; driver pid $p0 unchanged, status answers; list: 1 live instance, no dom$I/insh; nginx byte-exact (1 MiB, small) through the local instance after" \
    || result hostile-instance fail "before='$before' dead=$dead alive=$alive (pid $p0 -> $p1) xen_left=$xen_left live=$live list_lines=$nl after=$after small=$small"
  run pvm "[ -f /tmp/nginxh.pid ] && kill \$(cat /tmp/nginxh.pid); sleep 1; ins-ctl --run-dir $H down"; wait_cmd pvm $N 60 >/dev/null
}

case " $(cat /proc/cmdline) " in *" ins_tests=hostile "*)
  echo "LAB_TESTS hostile"
  T0=$(up)
  create pvm & c1=$!; create ins1 & c2=$!
  wait $c1 || result create-pvm fail ""; wait $c2 || result create-ins1 fail ""
  for n in pvm ins1; do console $n; done
  for n in pvm ins1; do wait_up $n 300; done
  P=$(domid pvm); I=$(domid ins1)
  echo "DOMAINS pvm=dom$P ins1=dom$I, up $(since $T0) s after the first xl create"
  hostile_tests
  for n in pvm ins1; do run $n poweroff; done; sleep 2
  echo "XENLAB_DONE failed=$FAILED elapsed=$(since $T0) s"
  sync; poweroff -f ;;
esac
