# The kernel module in a Xen PVM (tests 39-46). Sourced by dom0-init.sh
# (uses its helpers and spawn.sh's fetch_ok, rate and load): boots kpvm,
# a PV domU whose kernel is the Rust-enabled Linux 6.12 of tests/kmod
# (/boot/vmlinuz-kmod), with ins.ko (built against that kernel) in its
# initramfs, then checks from dom0 over the bridge that nginx under the
# shim in kpvm serves through the module (no user-space driver) with its
# instances as `ins --kmod` processes in kpvm, survives an instance's
# death, that an instance *domain* (kins) joins it over the module's Xen
# transport and its destruction is survived, and that the module unloads
# cleanly afterwards.
#   env (dom0's): KPVM_TIMEOUT (s, default 300) for the boot.
KPVM_IP=169.254.100.9
web_ok() { # ip tag: small and 1 MiB byte-exact through ip, then both on
  # one keep-alive connection (curl reports one connect in all)
  local f conns got want r=0
  want=$(cut -d' ' -f1 /srv/www/big.bin.sha256)
  for f in small.html big.bin; do
    if fetch_ok $1 $f; then echo "$2 fetch $f: sha256 ok"; else echo "$2 fetch $f: wrong bytes"; r=1; fi
  done
  conns=$(curl -sS -m 120 -o /dev/null -o /tmp/web-ka.bin -w '%{num_connects}\n' \
    http://$1:8080/small.html http://$1:8080/big.bin | awk '{ s += $1 } END { print s }')
  got=$(sha256sum < /tmp/web-ka.bin | cut -d' ' -f1)
  echo "$2 keep-alive: $conns connection(s) for two requests, big.bin $( [ "$got" = "$want" ] && echo ok || echo wrong)"
  [ "$conns" = 1 ] && [ "$got" = "$want" ] || r=1
  return $r
}
kmod_tests() {
  # --- 39. the Rust-enabled kernel boots as a PV domU and loads ins.ko
  t=$(up)
  if ! create kpvm; then result kmod-pvm-boot fail "xl create kpvm failed"; return 0; fi
  console kpvm
  wait_up kpvm ${KPVM_TIMEOUT:-300} || return 0
  K=$(domid kpvm)
  run kpvm "sh /opt/ins/pvm-kmod.sh up"; r=$(wait_cmd kpvm $N 300)
  kv=$(sed -n 's/.*KPVM kernel \([^ ]*\).*/\1/p' /var/log/xen/console/guest-kpvm.log | head -n 1)
  case "$kv" in *kmodrust*) ;; *) r="kernel '$kv'" ;; esac
  if [ "$r" != 0 ]; then
    result kmod-pvm-boot fail "pvm-kmod.sh up: $r"
    return 0
  fi
  echo "FIGURE kpvm_up_s $(since $t) s"
  result kmod-pvm-boot pass "kpvm (dom$K) booted Linux $kv as a Xen PV domU, ins.ko loaded, two ins --kmod instances joined (sandboxed), nginx under the shim listens through the module, in $(since $t) s"

  # --- 40. dom0's curl: byte-exact through the module, keep-alive
  ok=1
  first_answer $KPVM_IP 120 || ok=0
  web_ok $KPVM_IP kmod || ok=0
  [ $ok = 1 ] && result kmod-pvm-web pass "dom0 fetched small and 1 MiB byte-exact from nginx in kpvm through ins.ko, and two on one keep-alive connection" \
    || { result kmod-pvm-web fail "see above"; }

  # Figures (not checked): requests/s through the module vs the same
  # nginx natively in the same domain.
  run kpvm "sh /opt/ins/pvm-kmod.sh native"
  if [ "$(wait_cmd kpvm $N 60)" = 0 ]; then
    rate $KPVM_IP kpvm_module 8080
    rate $KPVM_IP kpvm_native 8081
  fi

  # --- 41. an instance killed under load: the module marks it dead, the
  # other instance's listener takes the new connections
  rm -f /tmp/load.stop
  load $KPVM_IP kmod 3000 & LK=$!
  sleep 5
  TK=$(up)
  run kpvm "sh /opt/ins/pvm-kmod.sh kill1"; r=$(wait_cmd kpvm $N 120); TD=$(up)
  sleep 5
  touch /tmp/load.stop; wait $LK
  before=$(awk -v t=$TK '$1 < t && $2 == "ok"' /tmp/load.kmod | wc -l)
  after=$(awk -v t=$TD '$1 > t && $2 == "ok"' /tmp/load.kmod | wc -l)
  bad=$(grep -c ' fail' /tmp/load.kmod)
  # A request counts against the survivor unless it may have been in
  # flight at the kill: started at most 11 s (curl's -m 10, and the kill
  # reaches kpvm after TK) before TK, or before the module's notice.
  bad_out=$(awk -v a=$TK -v b=$TD '$2 == "fail" && ($1 < a - 11 || $1 > b)' /tmp/load.kmod | wc -l)
  echo "kmod failover: $before ok before the kill, $after ok after the module listed the instance dead ($(awk "BEGIN{printf \"%.1f\", $TD-$TK}") s later); $bad failed, $bad_out of them outside that window"
  grep ' fail' /tmp/load.kmod | head -n 3
  if [ "$r" = 0 ] && [ "$before" -gt 0 ] && [ "$after" -gt 0 ] && [ "$bad_out" = 0 ] && [ "$bad" -le 1 ] && fetch_ok $KPVM_IP big.bin; then
    result kmod-pvm-failover pass "an instance SIGKILLed under load: the module listed it dead, $after requests after it through the other instance, $bad in flight failed, 1 MiB byte-exact after"
  else
    result kmod-pvm-failover fail "kill1 $r, before=$before after=$after failed=$bad outside=$bad_out"
  fi

  # --- 44. an instance *domain* joins ins.ko over the module's Xen
  # transport: kins (the lab's ordinary domU kernel) starts `ins
  # --xen-driver <kpvm> --xen-channel kx` at boot; in kpvm, `ins-ctl
  # attach-xen --kmod` has the module grant the channel's pages and ports
  # and publishes them in xenstore; driver-core replicates nginx's listener
  # onto the new instance, so dom0's requests to kins's address cross
  # kins's stack, the granted rings and ins.ko to nginx in kpvm.
  KINS_IP=169.254.100.10
  sed -i "s/@KDOM@/$K/" /etc/xen/kins.cfg
  t=$(up); ok=0
  if create kins; then
    console kins
    if wait_up kins 300; then
      KI=$(domid kins)
      run kpvm "sh /opt/ins/pvm-kmod.sh xen-attach $KI"; r=$(wait_cmd kpvm $N 300)
      echo "FIGURE kmod_xen_join_s $(since $t) s"
      if [ "$r" = 0 ] && first_answer $KINS_IP 120; then
        ok=1
        web_ok $KINS_IP "kmod xen" || ok=0
      else
        echo "kmod xen: xen-attach $r"
      fi
    fi
  fi
  [ $ok = 1 ] && result kmod-xen-instance pass "instance domain kins (dom$KI) joined ins.ko in kpvm over granted pages and event channels (ins-ctl attach-xen --kmod); dom0 fetched small and 1 MiB byte-exact through kins's address, and two on one keep-alive connection" \
    || result kmod-xen-instance fail "see above"
  # Figures (not checked): requests/s through the instance domain, to
  # compare with kpvm_module (the local `ins --kmod` instance).
  [ $ok = 1 ] && rate $KINS_IP kpvm_xen_instance

  # --- 45. xl destroy of the instance domain under load (through kpvm's
  # own address, served by the local instance): ins.ko lists it dead,
  # attach-xen removes the channel's keys and exits, the grants end, and
  # no request fails
  if [ $ok = 1 ]; then
    rm -f /tmp/load.stop
    load $KPVM_IP kxd 3000 & LK=$!
    sleep 3
    TK=$(up); xl destroy kins
    run kpvm "sh /opt/ins/pvm-kmod.sh xen-gone"; r=$(wait_cmd kpvm $N 120); TD=$(up)
    sleep 3
    touch /tmp/load.stop; wait $LK
    n_ok=$(grep -c ' ok' /tmp/load.kxd); bad=$(grep -c ' fail' /tmp/load.kxd)
    keys=$(xenstore-list /local/domain/$K/data/ins 2>/dev/null | grep -c '^kx$')
    echo "kmod xen destroy: kpvm reported the instance dead and the channel torn down $(awk "BEGIN{printf \"%.1f\", $TD-$TK}") s after xl destroy; $n_ok requests ok through kpvm meanwhile, $bad failed; channel keys left: $keys"
    grep ' fail' /tmp/load.kxd | head -n 3
    if [ "$r" = 0 ] && [ "$bad" = 0 ] && [ "$n_ok" -gt 0 ] && [ "$keys" = 0 ] && fetch_ok $KPVM_IP big.bin; then
      result kmod-xen-destroy pass "xl destroy kins: ins.ko listed the instance dead, attach-xen removed the keys and exited 0, grants ended (kpvm's log), $n_ok requests through the local instance meanwhile, 0 failed, 1 MiB byte-exact after"
    else
      result kmod-xen-destroy fail "xen-gone $r, ok=$n_ok failed=$bad keys=$keys"
    fi
  else
    result kmod-xen-destroy fail "no instance domain (test 44 failed)"
    xl destroy kins 2>/dev/null
  fi

  # --- 46. a hostile instance domain: kinsh's `ins` corrupts the ring it
  # produces (garbage, a producer index past capacity) 12 s after joining;
  # the module marks only that instance dead ("corrupt ring"), attach-xen
  # sees the channel file hang up, asks kinsh to close (Closing), kinsh
  # unmaps and closes, the keys go; nginx in kpvm serves on through the
  # local instance.
  sed 's/^name = "kins"/name = "kinsh"/; s/ins_channel=kx/ins_channel=kh ins_fault=12/' /etc/xen/kins.cfg > /etc/xen/kinsh.cfg
  ok=0
  if create kinsh; then
    console kinsh
    if wait_up kinsh 300; then
      KH=$(domid kinsh)
      run kpvm "sh /opt/ins/pvm-kmod.sh xen-attach $KH kh"; r=$(wait_cmd kpvm $N 300); th=$(up)
      served=0; [ "$r" = 0 ] && first_answer $KINS_IP 60 && fetch_ok $KINS_IP small.html && served=1
      echo "kmod xen hostile: kinsh (dom$KH) joined ($r) and served through its address: $served"
      run kpvm "sh /opt/ins/pvm-kmod.sh xen-hostile"; r=$(wait_cmd kpvm $N 240)
      echo "kmod xen hostile: verdict $(since $th) s after the join (corruption at 12 s)"
      if [ "$served" = 1 ] && [ "$r" = 0 ] && fetch_ok $KPVM_IP big.bin; then ok=1; fi
    fi
    xl destroy kinsh 2>/dev/null
  fi
  [ $ok = 1 ] && result kmod-xen-hostile pass "instance domain kinsh corrupted its ring: ins.ko marked only it dead (corrupt ring), attach-xen asked it to close and removed the keys, nginx served 1 MiB byte-exact through the local instance after" \
    || result kmod-xen-hostile fail "see above"

  # --- 42. the module unloads with no oops once nginx and the instances
  # are gone
  run kpvm "sh /opt/ins/pvm-kmod.sh down"; r=$(wait_cmd kpvm $N 120)
  # kpvm boots with kmemleak=on (build.sh): `down` must have scanned
  # (its console line may reach dom0's log a moment after the result).
  clean='KPVM kmemleak after unload: 0 unreferenced objects'
  i=0; until grep -q "$clean" /var/log/xen/console/guest-kpvm.log || [ $i -gt 50 ]; do usleep 100000; i=$((i + 1)); done
  grep -q "$clean" /var/log/xen/console/guest-kpvm.log || r="$r, no clean kmemleak scan"
  [ "$r" = 0 ] && result kmod-pvm-unload pass "nginx and the instances stopped (a local instance killed, two instance domains gone: destroyed, hostile), rmmod ins, /dev/ins gone, no oops in the log, kmemleak finds no unreferenced object" \
    || result kmod-pvm-unload fail "pvm-kmod.sh down: $r"

  # --- 43. the Xen primitives of the module's coming Xen transport, from
  # a module (ins_xenprobe.ko: kxen.rs) against dom0 as the peer: pages
  # granted, a port allocated and bound, xenstore written; dom0 maps the
  # pages, checks them and runs request/answer rounds over the port; the
  # unload ends the grants at once. Then again with dom0 still mapping
  # them at unload: the grants end deferred (Linux frees each page once
  # dom0 lets go), no oops.
  kprobe_round() { # hold_s: runs the peer (in the background when holding)
    run kpvm "sh /opt/ins/pvm-kmod.sh probe 0"; [ "$(wait_cmd kpvm $N 60)" = 0 ] || return 1
    G=$(xenstore-read /local/domain/$K/data/kprobe/grefs); PORT=$(xenstore-read /local/domain/$K/data/kprobe/port)
    echo "kmod probe: dom$K offers grants '$G' and port $PORT"
    xenchan kprobe-peer --peer $K --grefs "$G" --port "$PORT" --rtt 1000 --seconds $1 > /tmp/kprobe.$1 2>&1 &
    KP=$!
  }
  ok=0
  if kprobe_round 0; then
    wait $KP; pr=$?; cat /tmp/kprobe.0
    run kpvm "sh /opt/ins/pvm-kmod.sh unprobe"; r=$(wait_cmd kpvm $N 60)
    sleep 1
    line=$(grep 'KPVM ins_xenprobe: unloaded' /var/log/xen/console/guest-kpvm.log | tail -n 1)
    echo "kmod probe: $line"
    case "$line" in *"1000 events from dom0 handled (last request 1000); grants ended: 4 at once, 0 deferred"*) [ "$pr" = 0 ] && [ "$r" = 0 ] && ok=1 ;; esac
  fi
  if [ $ok = 1 ] && kprobe_round 30; then
    i=0; until grep -q 'KPROBE holding' /tmp/kprobe.30 || [ $i -gt 600 ]; do usleep 100000; i=$((i+1)); done
    run kpvm "sh /opt/ins/pvm-kmod.sh unprobe"; r=$(wait_cmd kpvm $N 60)
    wait $KP; pr=$?; cat /tmp/kprobe.30
    # dom0 has unmapped: Linux's deferred list (a 1 s timer) ends the
    # grants and frees the pages now; its log must stay clean.
    sleep 3
    run kpvm "sh /opt/ins/pvm-kmod.sh clean"; rc_clean=$(wait_cmd kpvm $N 60)
    line=$(grep 'KPVM ins_xenprobe: unloaded' /var/log/xen/console/guest-kpvm.log | tail -n 1)
    echo "kmod probe (held): $line"
    case "$line" in *"grants ended: 0 at once, 4 deferred"*) [ "$pr" = 0 ] && [ "$r" = 0 ] && [ "$rc_clean" = 0 ] && grep -q KPROBE_DONE /tmp/kprobe.30 && ok=2 ;; esac
  fi
  rtt=$(sed -n 's/^FIGURE kprobe_rtt_us \([0-9]*\).*/\1/p' /tmp/kprobe.0 2>/dev/null)
  [ $ok = 2 ] && result kmod-xen-primitives pass "ins_xenprobe in kpvm granted 4 pages and a port to dom0 through xenstore; dom0 mapped them, checked the pattern, 1000 rounds answered by the module's event handler (p50 ${rtt:-?} us); unload ended the grants at once, and deferred while dom0 still mapped them (freed once it unmapped: no oops, nothing pending)" \
    || result kmod-xen-primitives fail "ok=$ok (see the kprobe lines above)"
  run kpvm poweroff
}
