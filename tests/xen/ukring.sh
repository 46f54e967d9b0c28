# The PV unikernel as the real driver's instance over a Xen channel.
# Sourced by dom0-init.sh after test 10, while the PVM runs (it uses its
# create, console, domid, run, wait_cmd, result, up and since helpers and
# $P): boots /boot/ins-pv as domain "ukr" (32 MiB, one vif on xenbr0,
# 169.254.100.6) told to join driver dom$P's channel "ukr"; in the PVM a
# third driver (/run/insu, 256 KiB rings) offers that channel to it with
# `ins-ctl attach-xen` (pvm-xen.sh ukr-attach).
#   16 unikernel-joins-driver: attach-xen returns (the hello is done), the
#      unikernel prints INS_PV_JOINED, `ins-ctl list` shows dom<ukr>/ukr;
#   17 unikernel-serves-nginx: nginx under the shim on that driver listens
#      through the unikernel (ins-core's executor over smoltcp): dom0's
#      curl fetches the small page and the 1 MiB file from 169.254.100.6
#      byte-exact (sha256);
#   18 unikernel-channel-teardown: `ins-ctl down` closes the channel: the
#      unikernel unmaps, closes its ports, removes its keys, prints
#      INS_PV_CHANNEL_CLOSED and powers off; neither directory is left;
#   19 unikernel-refuses-large-offer: domain "ukb" (same image, 169.254.100.7)
#      is offered a channel with the driver's default 1 MiB rings (515
#      pages, more than its 2 MiB foreign window): it refuses before
#      mapping anything (INS_PV_CHANNEL_FAILED naming the window) and
#      powers off; the driver's attach-xen fails (the domain went, or at
#      the latest after its 20 s rendezvous) and removes its keys.
#   env (dom0's): UKL_TIMEOUT (s, default 180) for the boot.
UKR_IP=169.254.100.6
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
extra = "ip=$UKR_IP/24 gw=169.254.100.1 seed=$UKR_SEED driver=$P channel=ukr instance_id=21"
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
  if [ "$r" = 0 ] && grep -q INS_PV_JOINED $UKR_LOG && grep -q "UKLIST .* dom$U/ukr" /var/log/xen/console/guest-pvm.log; then
    ukr_joined=1
    result unikernel-joins-driver pass "attach-xen to dom$U done $(since $t) s after the offer; INS_PV_JOINED; list shows dom$U/ukr"
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
  ok=1
  for f in small.html big.bin; do
    w=$(curl -sS -m 180 -o /tmp/ugot.$f -w '%{speed_download}' $UURL/$f)
    got=$(sha256sum < /tmp/ugot.$f | cut -d' ' -f1); want=$(cut -d' ' -f1 /srv/www/$f.sha256)
    if [ "$got" = "$want" ]; then echo "ukr fetch $f: sha256 ok ($(wc -c < /tmp/ugot.$f) bytes, $(echo "$w" | awk '{printf "%.0f", $1 / 1024}') KiB/s)"
    else echo "ukr fetch $f: sha256 $got, want $want ($(wc -c < /tmp/ugot.$f) bytes)"; ok=0; fi
  done
  [ $ok = 1 ] && result unikernel-serves-nginx pass "byte-exact small and 1 MiB from nginx in the PVM through the unikernel (dom$U)" \
    || result unikernel-serves-nginx fail "see the ukr fetch lines"

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
  result unikernel-serves-nginx fail "the unikernel did not join"
  result unikernel-channel-teardown fail "the unikernel did not join"
fi
xl destroy ukr 2>/dev/null

# --- 19. an offer larger than the unikernel's foreign window is refused
UKB_LOG=/var/log/xen/console/guest-ukb.log
sed 's/^name = .*/name = "ukb"/; s/channel=ukr/channel=ukbig/; s/00:64:06/00:64:07/; s/ip=169.254.100.6/ip=169.254.100.7/' /etc/xen/ukr.cfg > /etc/xen/ukb.cfg
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
