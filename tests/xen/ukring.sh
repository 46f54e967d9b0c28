# The PV unikernel as the real driver's instance over a Xen channel.
# Tests 16, 17, 20, 35, 36, 21, 22, 18 run in that order, then 19.
# Sourced by dom0-init.sh after test 10, while the PVM runs (it uses its
# create, console, domid, run, wait_cmd, result, up and since helpers and
# $P): boots /boot/ins-pv as domain "ukr" (32 MiB, one vif on xenbr0,
# 169.254.100.6, a 4 MiB foreign window: foreign_mib=4) told to join
# driver dom$P's channel "ukr"; in the PVM a third driver (/run/insu,
# the driver's default 1 MiB rings: 515 pages) offers that channel to it
# with `ins-ctl attach-xen` (pvm-xen.sh ukr-attach).
#   16 unikernel-joins-driver: attach-xen returns (the hello is done), the
#      unikernel prints INS_PV_JOINED with the 515 pages of the default
#      rings mapped, `ins-ctl list` shows dom<ukr>/ukr;
#   17 unikernel-serves-nginx: nginx under the shim on that driver listens
#      through the unikernel (ins-core's executor over smoltcp): dom0's
#      curl fetches the small page and the 1 MiB file from 169.254.100.6
#      byte-exact (sha256) and 50 requests on one keep-alive connection
#      (fetch_counted, flowcheck.sh);
#   20 unikernel-flow-records: that driver's `ins-ctl flows` holds a closed
#      record for each of those three connections with exactly the request
#      and response bytes curl counted (flows_match, as test 7);
#   35 unikernel-udp: UDP request/response through the unikernel: socat
#      under the shim on that driver (UDP4-RECVFROM:7007 and
#      UDP6-RECVFROM:7008 with ipv6only, fork, PIPE: each datagram is
#      echoed by a child process, as socat's users run it) answers dom0's
#      20 datagrams to 169.254.100.6:7007 and 20 to [fd00:64::6]:7008,
#      each echoed exactly (bash's /dev/udp: a connected socket);
#   36 unikernel-ipv6: the unikernel also has fd00:64::6/64 (ip6= on its
#      command line; dom0's bridge fd00:64::1): a second nginx under the
#      shim listening on [::]:8081 only; dom0's curl fetches the small
#      page and the 1 MiB file over IPv6 byte-exact, and the IPv4 address
#      is refused on that port (the listener is IPv6-only, as nginx asks);
#   21 unikernel-block: `ins-ctl block 169.254.100.1` (dom0's address):
#      dom0's curl is reset or refused (its exit code and message printed);
#      after `ins-ctl unblock` the page is served again;
#   22 unikernel-rate-limit: `ins-ctl limit 169.254.100.1 --conn-rate 1`
#      (burst 1): rounds of 3 parallel curls; attempts, accepted (HTTP 200)
#      and refused printed; accepted <= 1 + 1/s * elapsed, at least one of
#      each; after the limit is removed a round of 3 is all accepted;
#   18 unikernel-channel-teardown: `ins-ctl down` closes the channel: the
#      unikernel unmaps, closes its ports, removes its keys, prints
#      INS_PV_CHANNEL_CLOSED and powers off; neither directory is left;
#   19 unikernel-refuses-large-offer: domain "ukb" (same image, 169.254.100.7)
#      booted with foreign_mib=2 (the default) is offered a channel with the
#      driver's default 1 MiB rings (515 pages, more than its 2 MiB foreign
#      window): it refuses before
#      mapping anything (INS_PV_CHANNEL_FAILED naming the window) and
#      powers off; the driver's attach-xen fails (the domain went, or at
#      the latest after its 20 s rendezvous) and removes its keys.
#   env (dom0's): UKL_TIMEOUT (s, default 180) for the boot.
. /etc/ins/flowcheck.sh
UKR_IP=169.254.100.6
UKR_IP6=fd00:64::6
UKR_TIMEOUT=${UKL_TIMEOUT:-180}
UKR_SEED=$(head -c 8 /dev/urandom | od -An -tu8 | tr -d " ")
UKR_LOG=/var/log/xen/console/guest-ukr.log
cat > /etc/xen/ukr.cfg <<CFG
name = "ukr"
type = "pv"
kernel = "/boot/ins-pv"
memory = 32
maxmem = 32
vcpus = 1
on_crash = "preserve"
vif = [ 'bridge=xenbr0,mac=00:16:3e:00:64:06' ]
extra = "ip=$UKR_IP/24 gw=169.254.100.1 ip6=$UKR_IP6/64 seed=$UKR_SEED foreign_mib=4 driver=$P channel=ukr instance_id=21"
CFG
ukr_joined=0
if create ukr; then
  console ukr
  U=$(domid ukr); i=0
  until grep -q INS_PV_READY $UKR_LOG 2>/dev/null || [ $i -ge $((UKR_TIMEOUT * 10)) ]; do usleep 100000; i=$((i+1)); done
  t=$(up)
  run pvm "sh /opt/ins/pvm-xen.sh ukr-attach $U ukr"
  r=$(wait_cmd pvm $N 400)
  i=0; until grep -q -E "INS_PV_JOINED|INS_PV_CHANNEL_FAILED" $UKR_LOG || [ $i -gt 300 ]; do usleep 100000; i=$((i+1)); done
  grep -E "INS_PV_JOINED|INS_PV_CHANNEL_FAILED" $UKR_LOG
  grep "UKLIST" /var/log/xen/console/guest-pvm.log | tail -n 2
  grep "^instance: " $UKR_LOG
  if [ "$r" = 0 ] && grep -q "INS_PV_JOINED .* pages=515 " $UKR_LOG && grep -q "UKLIST .* dom$U/ukr" /var/log/xen/console/guest-pvm.log; then
    ukr_joined=1
    result unikernel-joins-driver pass "default 1 MiB rings (515 pages) in a 4 MiB foreign window: attach-xen to dom$U done $(since $t) s after the offer; INS_PV_JOINED; list shows dom$U/ukr"
  else
    result unikernel-joins-driver fail "attach-xen exited $r; see INS_PV_* and UKLIST above"
  fi
else
  result unikernel-joins-driver fail "xl create ukr failed"
fi

if [ $ukr_joined = 1 ]; then
  run pvm "sh /opt/ins/pvm-xen.sh ukr-web"; wait_cmd pvm $N 60 >/dev/null
  UURL=http://$UKR_IP:8080
  t=$(up); i=0
  until curl -s -m 5 -o /dev/null $UURL/small.html || [ $i -gt 120 ]; do sleep 1; i=$((i+1)); done
  echo "ukr web: first answer through the unikernel $(since $t) s after nginx started"
  ok=1; fetch_counted ukr $UURL /tmp/uwant || ok=0
  [ $ok = 1 ] && result unikernel-serves-nginx pass "byte-exact small and 1 MiB and 50 requests on one connection from nginx in the PVM through the unikernel (dom$U)" \
    || result unikernel-serves-nginx fail "see the ukr fetch and keep-alive lines"

  # --- 20. flow records with curl's exact byte counts (as test 7)
  flows_match UFLOW /tmp/uwant "sh /opt/ins/pvm-xen.sh flows /run/insu UFLOW"
  [ $FLOWS_MATCHED = $FLOWS_WANTED ] && [ $FLOWS_WANTED = 3 ] \
    && result unikernel-flow-records pass "$FLOWS_MATCHED closed flow records with curl's exact request/response byte counts (dom$U)" \
    || result unikernel-flow-records fail "flow records matched $FLOWS_MATCHED of $FLOWS_WANTED"

  # --- 35. UDP request/response, both families; 36. TCP over IPv6
  run pvm "sh /opt/ins/pvm-xen.sh ukr-more"; wait_cmd pvm $N 60 >/dev/null
  # udp_echo HOST PORT MSG: one datagram over a connected socket, the reply
  udp_echo() { bash -c 'exec 3<>/dev/udp/$1/$2 && printf %s "$3" >&3 && timeout 5 dd bs=2048 count=1 <&3 2>/dev/null' _ "$@"; }
  udp_ok=1
  for dst in "$UKR_IP 7007" "$UKR_IP6 7008"; do
    host=${dst% *}; port=${dst#* }; t=$(up); i=0
    until [ "$(udp_echo $host $port probe)" = probe ] || [ $i -gt 60 ]; do sleep 1; i=$((i+1)); done
    echo "ukr udp: first echo from [$host]:$port $(since $t) s after the servers started"
    good=0; t=$(up); longest=0
    for k in $(seq 20); do
      msg="ins-ukr-udp-$k-$UKR_SEED-$(head -c 600 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c $((k * 50)))"
      [ ${#msg} -gt $longest ] && longest=${#msg}
      [ "$(udp_echo $host $port "$msg")" = "$msg" ] && good=$((good+1))
    done
    echo "ukr udp: $good of 20 datagrams (up to $longest bytes) echoed exactly by [$host]:$port in $(since $t) s"
    [ $good = 20 ] || udp_ok=0
  done
  [ $udp_ok = 1 ] && result unikernel-udp pass "socat under the shim echoed 20 of 20 datagrams over IPv4 (:7007) and 20 of 20 over IPv6 (:7008) through the unikernel (dom$U)" \
    || result unikernel-udp fail "see the ukr udp lines"
  V6URL="http://[$UKR_IP6]:8081"
  t=$(up); i=0
  until curl -g -s -m 5 -o /dev/null $V6URL/small.html || [ $i -gt 60 ]; do sleep 1; i=$((i+1)); done
  echo "ukr ipv6: first answer from $V6URL $(since $t) s after nginx started"
  v6_ok=1
  for f in small.html big.bin; do
    got=$(curl -g -sS -m 120 $V6URL/$f | sha256sum | cut -d' ' -f1)
    if [ "$got" = "$(cut -d' ' -f1 /srv/www/$f.sha256)" ]; then echo "ukr ipv6 fetch $f: sha256 ok"; else echo "ukr ipv6 fetch $f: sha256 $got"; v6_ok=0; fi
  done
  curl -sS -m 10 -o /dev/null http://$UKR_IP:8081/small.html 2>/tmp/uv4.err; v4code=$?
  echo "ukr ipv6: the same port over IPv4: curl exit $v4code ($(head -c 80 /tmp/uv4.err | tr '\n' ' '))"
  [ $v6_ok = 1 ] && [ $v4code = 7 ] \
    && result unikernel-ipv6 pass "nginx on [::]:8081 through the unikernel: small and 1 MiB byte-exact over IPv6 from dom0; IPv4 refused on that port" \
    || result unikernel-ipv6 fail "byte-exact over IPv6: $v6_ok; curl exit over IPv4 $v4code (want 7)"

  # --- 21. a blocked source is reset or refused; unblocked, it is served
  UCTL="ins-ctl --run-dir /run/insu"
  run pvm "$UCTL block 169.254.100.1"; rb=$(wait_cmd pvm $N 60)
  t=$(up); i=0; code=0
  while [ $i -lt 10 ]; do
    curl -sS -m 20 -o /dev/null $UURL/small.html 2>/tmp/ublock.err; code=$?
    [ $code != 0 ] && break
    i=$((i+1)); sleep 1
  done
  echo "ukr block: ins-ctl block exited $rb; curl exit $code after $i served attempts, $(since $t) s: $(tr '\n' ' ' < /tmp/ublock.err)"
  run pvm "$UCTL unblock 169.254.100.1"; ru=$(wait_cmd pvm $N 60)
  after=000; i=0
  while [ $i -lt 10 ]; do
    after=$(curl -s -m 20 -o /dev/null -w '%{http_code}' $UURL/small.html); [ "$after" = 200 ] && break
    i=$((i+1)); sleep 1
  done
  echo "ukr block: after unblock (exit $ru) HTTP $after"
  # Refused (7), reset while reading (52, 56), or reset before curl's first
  # send (55, e.g. "getpeername() failed with errno 107": the reset came
  # right after the handshake, as it can on Linux too).
  case $code in 7|52|55|56) blocked=1 ;; *) blocked=0 ;; esac
  [ "$rb" = 0 ] && [ $blocked = 1 ] && [ "$after" = 200 ] \
    && result unikernel-block pass "blocked source: curl exit $code ($(head -c 80 /tmp/ublock.err | tr '\n' ' ')); after unblock HTTP 200" \
    || result unikernel-block fail "block exit $rb, curl exit $code, after unblock HTTP $after"

  # --- 22. a connection rate limit holds: 1 new connection/s, burst 1
  run pvm "$UCTL limit 169.254.100.1 --conn-rate 1"; rl=$(wait_cmd pvm $N 60)
  sleep 2   # the rule reaches the instance; its bucket holds at most 1 token
  : > /tmp/ulimit; t=$(up)
  for round in 1 2 3 4 5 6; do
    pids=""
    for k in 1 2 3; do curl -s -m 20 -o /dev/null -w '%{http_code}\n' $UURL/small.html >> /tmp/ulimit & pids="$pids $!"; done
    wait $pids   # only these: the console copies run in the background too
  done
  el=$(since $t)
  att=$(wc -l < /tmp/ulimit); acc=$(grep -c '^200$' /tmp/ulimit); ref=$((att - acc))
  bound=$(awk "BEGIN{printf \"%d\", 1 + $el}")
  run pvm "$UCTL limit 169.254.100.1"; rr=$(wait_cmd pvm $N 60)
  sleep 2; : > /tmp/ufree
  pids=""
  for k in 1 2 3; do curl -s -m 20 -o /dev/null -w '%{http_code}\n' $UURL/small.html >> /tmp/ufree & pids="$pids $!"; done
  wait $pids; free=$(grep -c '^200$' /tmp/ufree)
  echo "ukr limit: --conn-rate 1 (exit $rl): attempts $att, accepted $acc, refused $ref in $el s (bound 1 + 1/s x $el s = $bound); limit removed (exit $rr): $free of 3 accepted"
  [ "$rl" = 0 ] && [ $acc -ge 1 ] && [ $ref -ge 1 ] && [ $acc -le $bound ] && [ $free = 3 ] \
    && result unikernel-rate-limit pass "attempts $att, accepted $acc, refused $ref in $el s (at most $bound allowed); 3 of 3 once removed" \
    || result unikernel-rate-limit fail "attempts $att, accepted $acc, refused $ref in $el s (bound $bound), after removal $free of 3"

  t=$(up)
  run pvm "sh /opt/ins/pvm-xen.sh ukr-down"; wait_cmd pvm $N 120 >/dev/null
  i=0; while xl domid ukr >/dev/null 2>&1 && [ $i -lt 600 ]; do usleep 100000; i=$((i+1)); done
  grep -E "INS_PV_SERVING_ENDED|INS_PV_CHANNEL_CLOSE" $UKR_LOG
  grep "UKDOWN" /var/log/xen/console/guest-pvm.log | tail -n 4
  left=$(xenstore-ls /local/domain/$P/data/ins/ukr 2>/dev/null; xenstore-ls /local/domain/$U/data/ins 2>/dev/null)
  if grep -q "INS_PV_CHANNEL_CLOSED" $UKR_LOG && ! xl domid ukr >/dev/null 2>&1 && [ -z "$left" ]; then
    result unikernel-channel-teardown pass "the unikernel unmapped, closed its ports and powered off $(since $t) s after ins-ctl down; no keys left"
  else
    echo "$left"
    result unikernel-channel-teardown fail "closed: $(grep -c INS_PV_CHANNEL_CLOSED $UKR_LOG), domain left: $(xl domid ukr 2>/dev/null), keys left: $(echo $left | wc -w)"
  fi
else
  for n in serves-nginx flow-records udp ipv6 block rate-limit channel-teardown; do
    result unikernel-$n fail "the unikernel did not join"
  done
fi
xl destroy ukr 2>/dev/null

# --- 19. an offer larger than the unikernel's foreign window is refused
UKB_LOG=/var/log/xen/console/guest-ukb.log
sed 's/^name = .*/name = "ukb"/; s/foreign_mib=4/foreign_mib=2/; s/channel=ukr/channel=ukbig/; s/00:64:06/00:64:07/; s/ip=169.254.100.6/ip=169.254.100.7/' /etc/xen/ukr.cfg > /etc/xen/ukb.cfg
if create ukb; then
  console ukb
  B=$(domid ukb); i=0
  until grep -q INS_PV_READY $UKB_LOG 2>/dev/null || [ $i -ge $((UKR_TIMEOUT * 10)) ]; do usleep 100000; i=$((i+1)); done
  run pvm "sh /opt/ins/pvm-xen.sh ukr-big $B ukbig"; wait_cmd pvm $N 120 >/dev/null
  i=0; while xl domid ukb >/dev/null 2>&1 && [ $i -lt 300 ]; do usleep 100000; i=$((i+1)); done
  grep "INS_PV_CHANNEL_FAILED" $UKB_LOG
  grep "UKBIG" /var/log/xen/console/guest-pvm.log | tail -n 1
  left=$(xenstore-ls /local/domain/$P/data/ins/ukbig 2>/dev/null)
  if grep -q "INS_PV_CHANNEL_FAILED .*above our limit.*foreign window" $UKB_LOG && ! xl domid ukb >/dev/null 2>&1 \
     && grep -q "UKBIG attach exit [1-9]" /var/log/xen/console/guest-pvm.log && [ -z "$left" ]; then
    result unikernel-refuses-large-offer pass "1 MiB rings refused (window), dom$B powered off, attach-xen failed, no keys left"
  else
    result unikernel-refuses-large-offer fail "see INS_PV_CHANNEL_FAILED and UKBIG above; keys left: $(echo $left | wc -w)"
  fi
else
  result unikernel-refuses-large-offer fail "xl create ukb failed"
fi
xl destroy ukb 2>/dev/null
