# Sourced by dom0-init.sh (uses its helpers: run, wait_cmd, result,
# console, create, wait_up, domid, up, since, $P). Defines spawn_tests:
# tests 23-27, the driver in Xen mode with instance domains made by
# ins-xen-agent in dom0, and ukspawn_tests: tests 28-33, the same with PV
# unikernel instance domains (ins-ctl up --xen --unikernel). With
# ins_tests=spawn on dom0's command line (INS_XEN_TESTS=spawn for run.sh)
# it boots only the PVM, runs both and powers off.
#
# What counts as a failed request (test 25): a fetch through the surviving
# instance's address that does not return 200 with the exact bytes, at any
# time. Requests through the destroyed domain's address fail once it is
# gone (no host answers; one in flight may be reset): they are counted and
# printed, not failures.
skey() { xenstore-read /local/domain/$P/data/spawn/$1 2>/dev/null; }
ip_of() { sed -n "s/^XAGENT created .* domid=$1 name=.* ip=\([0-9.]*\)$/\1/p" /tmp/xagent.log | tail -n 1; }
fetch_ok() { # ip file: byte-exact through that address
  got=$(curl -sS -m 120 http://$1:8080/$2 | sha256sum | cut -d' ' -f1)
  [ "$got" = "$(cut -d' ' -f1 /srv/www/$2.sha256)" ]
}
first_answer() { # ip timeout_s
  i=0; until curl -s -m 5 -o /dev/null http://$1:8080/small.html; do
    i=$((i+1)); [ $i -gt $2 ] && return 1; sleep 1
  done
}
rate() { # ip tag [port]: requests/s through that address (port 8080), printed as figures
  # (not checked): 200 requests on one keep-alive connection, then 40
  # requests on a new connection each (curl started per request, as the
  # load loop does: the same cost either way, so compare the two kinds of
  # domain, not the absolute numbers)
  local args="" n t0 el ok port=${3:-8080}
  for n in $(seq 200); do args="$args http://$1:$port/small.html -o /dev/null"; done
  t0=$(up); ok=$(curl -s -m 300 -w '%{http_code}\n' $args | grep -c '^200$'); el=$(since $t0)
  echo "$2 rate: $ok of 200 keep-alive requests in $el s"
  echo "FIGURE $2_ka_rps $(awk "BEGIN{printf \"%.1f\", $ok / ($el > 0 ? $el : 0.1)}") req/s"
  t0=$(up); ok=0
  for n in $(seq 40); do
    [ "$(curl -s -m 20 -o /dev/null -w '%{http_code}' http://$1:$port/small.html)" = 200 ] && ok=$((ok+1))
  done
  el=$(since $t0)
  echo "$2 rate: $ok of 40 requests on new connections in $el s"
  echo "FIGURE $2_conn_rps $(awk "BEGIN{printf \"%.1f\", $ok / ($el > 0 ? $el : 0.1)}") req/s"
}
load() { # ip tag max: a bounded curl loop, one line per request
  i=0; : > /tmp/load.$2
  while [ $i -lt $3 ] && [ ! -e /tmp/load.stop ]; do
    t=$(up)
    c=$(curl -sS -m 10 -o /tmp/load.$2.body -w '%{http_code}' http://$1:8080/small.html 2>/tmp/load.$2.err)
    if [ "$c" = 200 ] && cmp -s /tmp/load.$2.body /srv/www/small.html; then echo "$t ok" >> /tmp/load.$2
    else echo "$t fail $c $(head -c 80 /tmp/load.$2.err | tr '\n' ' ')" >> /tmp/load.$2; fi
    i=$((i+1))
  done
}

spawn_tests() {
  XB=/run/xenstored/socket; [ -S $XB ] || XB=/dev/xen/xenbus
  mkdir -p /run/ins-xen-agent
  ins-xen-agent --pvm $P --template /etc/ins/inst.cfg --kernel /boot/vmlinuz-domU --ramdisk /boot/domU.cpio.gz \
    --memory ${INS_SPAWN_MEM:-192} --bridge xenbr0 --ip-range 169.254.100.20-169.254.100.29 --max-domains 3 \
    --xenbus $XB > /tmp/xagent.log 2>&1 &
  AGENT=$!
  sleep 1
  if ! kill -0 $AGENT 2>/dev/null; then
    cat /tmp/xagent.log; result xen-spawn-up fail "ins-xen-agent exited at start"; return 0
  fi
  agent_reader

  # --- 23. ins-ctl up --xen --instances 2: the agent creates two domains,
  # both join the driver in the PVM
  t=$(up)
  run pvm "sh /opt/ins/pvm-spawn.sh up 2 600"; r=$(wait_cmd pvm $N 660)
  D=$(skey domids); set -- $D; A=${1:-}; B=${2:-}
  IA=$(ip_of "$A"); IB=$(ip_of "$B")
  echo "spawn: up exited $r after $(since $t) s; instance domains: dom$A ($IA) dom$B ($IB)"
  xl list
  if [ "$r" = 0 ] && [ $# = 2 ] && [ -n "$IA" ] && [ -n "$IB" ]; then
    echo "FIGURE spawn_up_s $(since $t) s"
    echo "FIGURE spawn_domain_mem_mib $(xl list $A | awk 'NR==2{print $3}') MiB"
    result xen-spawn-up pass "ins-ctl up --xen --instances 2: dom$A ($IA) and dom$B ($IB), created by ins-xen-agent, joined in $(since $t) s"
  else
    result xen-spawn-up fail "up exited $r, live domains '$D'"
    grep -E "XAGENT|WARN|ERROR" /tmp/xagent.log | tail -n 5
    run pvm "sh /opt/ins/pvm-spawn.sh log 30"; wait_cmd pvm $N 30 >/dev/null
    return 0
  fi

  # --- 24. nginx under the shim on that driver, served byte-exact through
  # both instance domains' addresses
  run pvm "sh /opt/ins/pvm-spawn.sh web"; wait_cmd pvm $N 60 >/dev/null
  ok=1
  for ip in $IA $IB; do
    first_answer $ip 180 || { echo "spawn web: no answer through $ip"; ok=0; continue; }
    for f in small.html big.bin; do
      if fetch_ok $ip $f; then echo "spawn fetch $f through $ip: sha256 ok"; else echo "spawn fetch $f through $ip: wrong bytes"; ok=0; fi
    done
  done
  [ $ok = 1 ] && result xen-spawn-web pass "small and 1 MiB byte-exact through dom$A ($IA) and dom$B ($IB)" \
    || { result xen-spawn-web fail "see above"; return 0; }
  rate $IA spawn

  # --- 25. xl destroy dom$A under load: the driver marks its instance
  # dead, nginx keeps serving through dom$B, the balancer gets a
  # replacement domain from the agent
  rm -f /tmp/load.stop
  load $IB survivor 3000 & LS=$!
  load $IA victim 3000 & LV=$!
  run pvm "sh /opt/ins/pvm-spawn.sh watch $A"; nw=$N
  i=0; until [ "$(skey gone)" = 0 ] || [ $i -gt 300 ]; do usleep 100000; i=$((i+1)); done
  sleep 5
  TD=$(up); xl destroy $A; TX=$(up)
  echo "spawn: xl destroy dom$A at $TD s (dom0 uptime), returned after $(awk "BEGIN{printf \"%.1f\", $TX-$TD}") s"
  i=0; until [ "$(skey gone)" = 1 ] || [ $i -gt 1200 ]; do usleep 100000; i=$((i+1)); done
  TG=$(up); detect=$(awk "BEGIN{printf \"%.1f\", $TG-$TD}"); after_xl=$(awk "BEGIN{printf \"%.1f\", $TG-$TX}")
  i=0; until [ "$(skey joined)" != none ] && [ -n "$(skey joined)" ] || [ $i -gt 6000 ]; do usleep 100000; i=$((i+1)); done
  TJ=$(up); C=$(skey joined); IC=$(ip_of "$C")
  replace=$(awk "BEGIN{printf \"%.1f\", $TJ-$TD}")
  sleep 3   # a few more requests through the survivor after the join
  touch /tmp/load.stop; wait $LS $LV
  wait_cmd pvm $nw 30 >/dev/null
  s_ok=$(grep -c ' ok' /tmp/load.survivor); s_fail=$(grep -c ' fail' /tmp/load.survivor)
  s_after=$(awk -v t=$TG '$1 > t && $2 == "ok"' /tmp/load.survivor | wc -l)
  v_before=$(awk -v t=$TD '$1 < t && $2 == "ok"' /tmp/load.victim | wc -l)
  v_fail=$(grep -c ' fail' /tmp/load.victim)
  grep ' fail' /tmp/load.survivor | head -n 3
  echo "spawn load: survivor dom$B $s_ok ok, $s_fail failed ($s_after ok after the driver noticed); victim dom$A $v_before ok before the destroy, $v_fail failed after it"
  echo "FIGURE spawn_xl_destroy_s $(awk "BEGIN{printf \"%.1f\", $TX-$TD}") s"
  echo "FIGURE spawn_detect_s $detect s"
  echo "FIGURE spawn_detect_after_xl_destroy_s $after_xl s"
  echo "FIGURE spawn_replace_s $replace s"
  if [ "$(skey gone)" = 1 ] && [ "$s_fail" = 0 ] && [ "$s_after" -gt 0 ] && [ "$v_before" -gt 0 ]; then
    result xen-spawn-failover pass "xl destroy dom$A under load: its instance left the driver's list $detect s after the destroy began ($after_xl s after xl destroy returned); dom$B served $s_ok requests, none failed ($s_after after the driver noticed)"
  else
    result xen-spawn-failover fail "gone=$(skey gone) survivor ok=$s_ok failed=$s_fail after=$s_after victim-before=$v_before"
  fi

  # --- 26. the replacement domain joined and the listener was replicated
  # onto it: nginx answers through its address
  if [ -n "$IC" ] && [ "$C" != "$A" ] && [ "$C" != "$B" ] && first_answer $IC 120 && fetch_ok $IC small.html && fetch_ok $IC big.bin; then
    result xen-spawn-replacement pass "dom$C ($IC) created by the agent joined $replace s after the destroy; small and 1 MiB byte-exact through it"
  else
    result xen-spawn-replacement fail "joined '$C' ip '$IC'"
  fi
  grep -E "XAGENT (request|destroyed|gone)" /tmp/xagent.log | tail -n 4

  # --- 27. ins-ctl down: the driver has the agent destroy its domains
  run pvm "sh /opt/ins/pvm-spawn.sh down"; r=$(wait_cmd pvm $N 120)
  i=0; while xl list | grep -q "^ins$P-" && [ $i -lt 600 ]; do usleep 100000; i=$((i+1)); done
  left=$(xl list | grep "^ins$P-" | awk '{print $1}' | tr '\n' ' ')
  [ "$r" = 0 ] && [ -z "$left" ] && result xen-spawn-down pass "ins-ctl down: the agent destroyed dom$B and dom$C on the driver's requests" \
    || result xen-spawn-down fail "down exited $r, domains left: $left"
  kill $AGENT 2>/dev/null
}

# Copies the agents' log (/tmp/xagent.log) here, and each domain they
# create's console; once.
agent_reader() {
  [ -n "${AGENT_READER:-}" ] && return 0
  AGENT_READER=1; : >> /tmp/xagent.log
  (tail -F /tmp/xagent.log 2>/dev/null | while IFS= read -r l; do
     echo "[agent] $l"
     case "$l" in "XAGENT created "*) n=${l##*name=}; console "${n%% *}" ;; esac
   done) &
}

# An agent with the spawn tests' options plus "$@", its output added to
# /tmp/xagent.log; fails unless it is serving within 10 s.
start_agent() {
  XB=/run/xenstored/socket; [ -S $XB ] || XB=/dev/xen/xenbus
  mkdir -p /run/ins-xen-agent; agent_reader
  n0=$(grep -c "^XAGENT ready " /tmp/xagent.log; true)
  ins-xen-agent --pvm $P --template /etc/ins/inst.cfg --kernel /boot/vmlinuz-domU --ramdisk /boot/domU.cpio.gz \
    --memory ${INS_SPAWN_MEM:-192} --bridge xenbr0 --max-domains 3 --xenbus $XB "$@" >> /tmp/xagent.log 2>&1 &
  AGENT=$!
  i=0; until [ "$(grep -c "^XAGENT ready " /tmp/xagent.log)" -gt "$n0" ] || [ $i -gt 100 ]; do
    kill -0 $AGENT 2>/dev/null || break; usleep 100000; i=$((i+1))
  done
  kill -0 $AGENT 2>/dev/null && [ "$(grep -c "^XAGENT ready " /tmp/xagent.log)" -gt "$n0" ]
}
stop_agent() { [ -n "${AGENT:-}" ] && { kill $AGENT 2>/dev/null; wait $AGENT 2>/dev/null; }; AGENT=; }

ukspawn_tests() {
  KD=SPAWN_DIR=/run/insk
  stop_agent   # spawn_tests' agent, if it returned early

  # --- 28. an agent with no unikernel template refuses `create unikernel`
  # and ins-ctl up says why, at once (no waiting for the join timeout)
  if start_agent --ip-range 169.254.100.30-169.254.100.39; then
    t=$(up)
    run pvm "$KD sh /opt/ins/pvm-spawn.sh refused 120"; r=$(wait_cmd pvm $N 180)
    refused_s=$(since $t)
    grep "XSPAWN_REFUSED" /var/log/xen/console/guest-pvm.log | tail -n 4
    made=$(grep -c "^XAGENT created .*kind=unikernel" /tmp/xagent.log)
    grep "^XAGENT request channel=r" /tmp/xagent.log | head -n 1
    [ "$r" = 0 ] && [ "$made" = 0 ] \
      && result ukspawn-refused pass "an agent without --unikernel-template: ins-ctl up --xen --unikernel failed with its reason after $refused_s s (dom0's view); no domain made" \
      || result ukspawn-refused fail "refused exited $r, unikernel domains made: $made"
  else
    result ukspawn-refused fail "ins-xen-agent exited at start"
  fi
  stop_agent

  # --- 29. ins-ctl up --xen --unikernel --instances 2: the agent (now with
  # the unikernel's template) creates two unikernel domains, both join
  if ! start_agent --ip-range 169.254.100.30-169.254.100.39 \
       --unikernel-template /etc/ins/ukinst.cfg --unikernel-kernel /boot/ins-pv --unikernel-memory 16; then
    result ukspawn-up fail "ins-xen-agent exited at start"; tail -n 5 /tmp/xagent.log; return 0
  fi
  t=$(up)
  run pvm "$KD sh /opt/ins/pvm-spawn.sh up 2 300 --unikernel"; r=$(wait_cmd pvm $N 360)
  upk=$(since $t)
  D=$(skey domids); set -- $D; A=${1:-}; B=${2:-}
  IA=$(ip_of "$A"); IB=$(ip_of "$B")
  echo "ukspawn: up exited $r after $upk s; unikernel domains: dom$A ($IA) dom$B ($IB)"
  xl list
  kinds=$(grep -c -E "^XAGENT created .*kind=unikernel domid=($A|$B) " /tmp/xagent.log)
  for d in $A $B; do
    n=$(xl domname $d 2>/dev/null); grep -h "INS_PV_JOINED" /var/log/xen/console/guest-$n.log 2>/dev/null | tail -n 1
  done
  if [ "$r" = 0 ] && [ $# = 2 ] && [ -n "$IA" ] && [ -n "$IB" ] && [ "$kinds" = 2 ]; then
    echo "FIGURE ukspawn_up_s $upk s"
    echo "FIGURE ukspawn_domain_mem_mib $(xl list $A | awk 'NR==2{print $3}') MiB"
    result ukspawn-up pass "ins-ctl up --xen --unikernel --instances 2: unikernel domains dom$A ($IA) and dom$B ($IB), created by ins-xen-agent, joined in $upk s"
  else
    result ukspawn-up fail "up exited $r, live domains '$D', unikernel creations $kinds"
    grep -E "XAGENT|WARN|ERROR" /tmp/xagent.log | tail -n 5
    run pvm "$KD sh /opt/ins/pvm-spawn.sh log 30"; wait_cmd pvm $N 30 >/dev/null
    run pvm "$KD sh /opt/ins/pvm-spawn.sh down"; wait_cmd pvm $N 120 >/dev/null
    stop_agent; return 0
  fi

  # --- 30. nginx under the shim on that driver, byte-exact through both
  run pvm "$KD sh /opt/ins/pvm-spawn.sh web"; wait_cmd pvm $N 60 >/dev/null
  ok=1
  for ip in $IA $IB; do
    first_answer $ip 120 || { echo "ukspawn web: no answer through $ip"; ok=0; continue; }
    for f in small.html big.bin; do
      if fetch_ok $ip $f; then echo "ukspawn fetch $f through $ip: sha256 ok"; else echo "ukspawn fetch $f through $ip: wrong bytes"; ok=0; fi
    done
  done
  if [ $ok = 1 ]; then
    result ukspawn-web pass "small and 1 MiB byte-exact through unikernels dom$A ($IA) and dom$B ($IB)"
    rate $IA ukspawn
  else
    result ukspawn-web fail "see above"
    run pvm "$KD sh /opt/ins/pvm-spawn.sh down"; wait_cmd pvm $N 120 >/dev/null
    stop_agent; return 0
  fi

  # --- 31. xl destroy dom$A under a bounded curl loop through dom$B: no
  # failed request through the survivor; a replacement unikernel joins
  rm -f /tmp/load.stop
  load $IB survivor 2000 & LS=$!
  run pvm "$KD sh /opt/ins/pvm-spawn.sh watch $A"; nw=$N
  i=0; until [ "$(skey gone)" = 0 ] || [ $i -gt 300 ]; do usleep 100000; i=$((i+1)); done
  sleep 3
  TD=$(up); xl destroy $A; TX=$(up)
  i=0; until [ "$(skey gone)" = 1 ] || [ $i -gt 600 ]; do usleep 100000; i=$((i+1)); done
  TG=$(up); detect=$(awk "BEGIN{printf \"%.1f\", $TG-$TD}")
  i=0; until [ "$(skey joined)" != none ] && [ -n "$(skey joined)" ] || [ $i -gt 1800 ]; do usleep 100000; i=$((i+1)); done
  TJ=$(up); C=$(skey joined); IC=$(ip_of "$C")
  replace=$(awk "BEGIN{printf \"%.1f\", $TJ-$TD}")
  sleep 3
  touch /tmp/load.stop; wait $LS
  wait_cmd pvm $nw 30 >/dev/null
  s_ok=$(grep -c ' ok' /tmp/load.survivor); s_fail=$(grep -c ' fail' /tmp/load.survivor)
  s_after=$(awk -v t=$TG '$1 > t && $2 == "ok"' /tmp/load.survivor | wc -l)
  grep ' fail' /tmp/load.survivor | head -n 3
  ckind=$(grep -c -E "^XAGENT created .*kind=unikernel domid=$C " /tmp/xagent.log)
  echo "ukspawn load: survivor dom$B $s_ok ok, $s_fail failed ($s_after ok after the driver noticed)"
  echo "FIGURE ukspawn_detect_s $detect s"
  echo "FIGURE ukspawn_replace_s $replace s"
  if [ "$(skey gone)" = 1 ] && [ "$s_fail" = 0 ] && [ "$s_after" -gt 0 ] && [ -n "$IC" ] && [ "$ckind" = 1 ]; then
    result ukspawn-failover pass "xl destroy of unikernel dom$A under load: its instance left the list $detect s after; dom$B served $s_ok requests, none failed; replacement unikernel dom$C ($IC) joined $replace s after the destroy"
  else
    result ukspawn-failover fail "gone=$(skey gone) survivor ok=$s_ok failed=$s_fail after=$s_after replacement '$C' ($IC, unikernel: $ckind)"
  fi

  # --- 32. the replacement serves: the listener was replicated onto it
  if [ -n "$IC" ] && first_answer $IC 60 && fetch_ok $IC small.html && fetch_ok $IC big.bin; then
    result ukspawn-replacement pass "unikernel dom$C ($IC): small and 1 MiB byte-exact through it"
  else
    result ukspawn-replacement fail "joined '$C' ip '$IC'"
  fi

  # --- 37. ins-ctl scale 3, then 2: a third unikernel domain joins and
  # serves; scaling down drains one and the agent destroys its domain
  before="$B $C"; t=$(up)   # the survivors of test 31 (data/spawn/domids is older)
  run pvm "$KD sh /opt/ins/pvm-spawn.sh scale 3 --unikernel"; r3=$(wait_cmd pvm $N 420)
  up3=$(since $t); after3=$(skey domids); E=""
  for d in $after3; do case " $before " in *" $d "*) ;; *) E=$d ;; esac; done
  IE=$(ip_of "$E"); served3=0
  [ -n "$IE" ] && first_answer $IE 60 && fetch_ok $IE small.html && served3=1
  t=$(up)
  run pvm "$KD sh /opt/ins/pvm-spawn.sh scale 2 --unikernel"; r2=$(wait_cmd pvm $N 300)
  down2=$(since $t); after2=$(skey domids); gone2=""
  for d in $after3; do case " $after2 " in *" $d "*) ;; *) gone2=$d ;; esac; done
  i=0; while [ -n "$gone2" ] && xl list | awk '{print $2}' | grep -qx "$gone2" && [ $i -lt 300 ]; do usleep 100000; i=$((i+1)); done
  left=$(xl list | awk '{print $2}' | grep -cx "${gone2:-none}")
  served2=1; for d in $after2; do fetch_ok "$(ip_of $d)" small.html || served2=0; done
  echo "ukspawn scale: 3 ($r3) in $up3 s: live '$after3', new dom$E ($IE) served $served3; 2 ($r2) in $down2 s: live '$after2', dom$gone2 stopped (still in xl list: $left), the others served $served2"
  ekind=$(grep -c -E "^XAGENT created .*kind=unikernel domid=$E " /tmp/xagent.log)
  [ "$r3" = 0 ] && [ $(echo $after3 | wc -w) = 3 ] && [ "$ekind" = 1 ] && [ $served3 = 1 ] \
    && [ "$r2" = 0 ] && [ $(echo $after2 | wc -w) = 2 ] && [ -n "$gone2" ] && [ "$left" = 0 ] && [ $served2 = 1 ] \
    && result ukspawn-scale pass "scale 3: unikernel dom$E joined in $up3 s and served; scale 2: dom$gone2 drained, stopped and destroyed in $down2 s, the other two served" \
    || result ukspawn-scale fail "scale 3 exit $r3 live '$after3' new '$E' kind $ekind served $served3; scale 2 exit $r2 live '$after2' gone '$gone2' left $left served $served2"

  # --- 33. ins-ctl down: the unikernels close their channels and the
  # agent destroys what is left of them
  t=$(up)
  run pvm "$KD sh /opt/ins/pvm-spawn.sh down"; r=$(wait_cmd pvm $N 120)
  i=0; while xl list | grep -q "^ins$P-k" && [ $i -lt 600 ]; do usleep 100000; i=$((i+1)); done
  left=$(xl list | grep "^ins$P-k" | awk '{print $1}' | tr '\n' ' ')
  grep -E "XAGENT (destroyed|gone) channel=k" /tmp/xagent.log | tail -n 3
  [ "$r" = 0 ] && [ -z "$left" ] && result ukspawn-down pass "ins-ctl down: no unikernel domain left $(since $t) s after" \
    || result ukspawn-down fail "down exited $r, domains left: $left"

  # --- 38. rotation: a driver with the policy's rotation period
  # (--rotate-s 45) and one unikernel instance retires the oldest and
  # brings a new domain; the new one serves, the old one is destroyed
  KR=SPAWN_DIR=/run/insr
  t=$(up)
  run pvm "$KR SPAWN_ROTATE_S=45 sh /opt/ins/pvm-spawn.sh up 1 300 --unikernel"; r=$(wait_cmd pvm $N 360)
  R1=$(skey domids)
  run pvm "$KR sh /opt/ins/pvm-spawn.sh web"; wait_cmd pvm $N 60 >/dev/null
  # Test 31's watch left its keys: start from none, or its domain would
  # be taken for the new one.
  xenstore-write /local/domain/$P/data/spawn/joined none /local/domain/$P/data/spawn/gone 0
  run pvm "$KR sh /opt/ins/pvm-spawn.sh watch $R1"; nw=$N
  i=0; until [ "$(skey joined)" != none ] && [ -n "$(skey joined)" ] || [ $i -gt 1800 ]; do usleep 100000; i=$((i+1)); done
  R2=$(skey joined); rot=$(since $t)
  wait_cmd pvm $nw 30 >/dev/null
  IR2=$(ip_of "$R2")
  i=0; while [ -n "$R1" ] && xl list | awk '{print $2}' | grep -qx "$R1" && [ $i -lt 600 ]; do usleep 100000; i=$((i+1)); done
  old_left=$(xl list | awk '{print $2}' | grep -cx "${R1:-none}")
  served=0; [ -n "$IR2" ] && first_answer $IR2 60 && fetch_ok $IR2 small.html && fetch_ok $IR2 big.bin && served=1
  rkind=$(grep -c -E "^XAGENT created .*kind=unikernel domid=$R2 " /tmp/xagent.log)
  r2_live=$(xl list | awk '{print $2}' | grep -cx "${R2:-none}")
  echo "ukspawn rotate: up exited $r with dom$R1; dom$R2 ($IR2) joined $rot s after up, dom$R1 gone from xl list: $((1 - old_left)); new one served byte-exact: $served"
  run pvm "$KR sh /opt/ins/pvm-spawn.sh down"; wait_cmd pvm $N 120 >/dev/null
  [ "$r" = 0 ] && [ -n "$R2" ] && [ "$R2" != none ] && [ "$R2" != "$R1" ] && [ "$rkind" = 1 ] && [ "$old_left" = 0 ] && [ $served = 1 ] \
    && [ "$r2_live" = 1 ] \
    && result ukspawn-rotate pass "--rotate-s 45: unikernel dom$R1 retired and destroyed, dom$R2 made by the agent joined ($rot s after up) and serves small and 1 MiB byte-exact" \
    || result ukspawn-rotate fail "up exit $r, first dom$R1, rotated to '$R2' (kind $rkind, in xl list $r2_live), old left $old_left, served $served"
  stop_agent
}

case " $(cat /proc/cmdline) " in *" ins_tests=spawn "*)
  echo "LAB_TESTS spawn"
  T0=$(up)
  create pvm || result create-pvm fail ""
  console pvm; wait_up pvm 300
  P=$(domid pvm)
  spawn_tests
  ukspawn_tests
  run pvm poweroff; sleep 2
  echo "XENLAB_DONE failed=$FAILED elapsed=$(since $T0) s"
  sync; poweroff -f ;;
esac
