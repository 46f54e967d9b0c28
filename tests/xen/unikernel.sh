# The INS PV unikernel in the Xen lab. Sourced by dom0-init.sh after the
# other tests (it uses its up, since, result and console helpers): boots
# /boot/ins-pv (`make unikernel`) as a 16 MiB PV domU with one vif on
# xenbr0 (169.254.100.4) and checks from dom0, over the bridge: ping, a
# 256 KiB TCP echo compared byte for byte, a UDP echo, an HTTP request
# (the demo service of ins-unikernel/ins-pv/src/demo.rs). Then a Linux PV
# domU (the lab's kernel and initramfs, 192 MiB, one vif) is booted alone
# in the same conditions, for the boot figure: `xl create` -> ready, as
# seen by dom0 (unikernel: INS_PV_READY on its console, printed after
# netfront connected and the stack is up; Linux: data/up, written by its
# /init once eth0 has its address). Both are destroyed afterwards.
#   env (dom0's): UKL_TIMEOUT (s, default 180) for each boot.
UKL_IP=169.254.100.4
UKL_TIMEOUT=${UKL_TIMEOUT:-180}
# The toolstack's secret for the guest's hash keys, ISNs and ports.
UKL_SEED=$(head -c 8 /dev/urandom | od -An -tu8 | tr -d " ")
cat > /etc/xen/ukl.cfg <<CFG
name = "ukl"
type = "pv"
kernel = "/boot/ins-pv"
memory = 16
maxmem = 16
vcpus = 1
on_crash = "preserve"
vif = [ 'bridge=xenbr0,mac=00:16:3e:00:64:04' ]
extra = "ip=$UKL_IP/24 gw=169.254.100.1 seed=$UKL_SEED"
CFG
sed 's/^name = .*/name = "lnx"/; s/00:64:03/00:64:05/; s/ins_ip=[0-9.]*/ins_ip=169.254.100.5/' /etc/xen/ins1.cfg > /etc/xen/lnx.cfg

# xl_create NAME: xl create, once more if the first attempt fails (its
# log is shown): under a starved dom0, libxl kills a vif hotplug script
# that ran longer than its fixed timeout (seen in CI-like load: RCU stalls
# in dom0, "killing execution of vif-bridge online because of timeout").
# Leaves in $t the uptime at the start of the attempt that is used.
xl_create() {
  t=$(up); xl create /etc/xen/$1.cfg > /tmp/xl-$1.log 2>&1 && return 0
  echo "XL_CREATE_RETRY $1: the first xl create failed:"; cat /tmp/xl-$1.log
  xl destroy $1 2>/dev/null
  t=$(up); xl create /etc/xen/$1.cfg > /tmp/xl-$1.log 2>&1
}

# The other domains were just told to power off: wait until Xen has
# destroyed them (freeing and scrubbing their memory takes tens of seconds
# under TCG), so that neither boot below is timed against that teardown.
t=$(up); i=0
while xl list | grep -qvE '^(Name|Domain-0) ' && [ $i -lt $((UKL_TIMEOUT * 10)) ]; do usleep 100000; i=$((i+1)); done
echo "UKL: $(xl list | grep -cvE '^(Name|Domain-0) ') other domains left after waiting $(since $t) s"

# --- 9. the unikernel boots and comes up on the bridge
ukl_ok=0
if xl_create ukl; then
  t1=$(up); console ukl
  i=0; until grep -q INS_PV_READY /var/log/xen/console/guest-ukl.log 2>/dev/null || [ $i -ge $((UKL_TIMEOUT * 20)) ]; do usleep 50000; i=$((i+1)); done
  t2=$(up)
  if grep -q INS_PV_READY /var/log/xen/console/guest-ukl.log; then
    ukl_ok=1
    echo "FIGURE ukl_boot_s $(awk "BEGIN{printf \"%.2f\", $t2-$t}") s"
    echo "FIGURE ukl_after_xl_create_s $(awk "BEGIN{printf \"%.2f\", $t2-$t1}") s"
    us=$(sed -n 's/.*INS_PV_READY.* first_run_to_ready_us=\([0-9]*\).*/\1/p' /var/log/xen/console/guest-ukl.log | head -1)
    [ -n "$us" ] && echo "FIGURE ukl_first_run_to_ready_ms $(awk "BEGIN{printf \"%.1f\", $us/1000}") ms"
    result unikernel-boot pass "16 MiB, INS_PV_READY $(awk "BEGIN{printf \"%.1f\", $t2-$t}") s after xl create"
  else
    result unikernel-boot fail "no INS_PV_READY after $UKL_TIMEOUT s"
  fi
else
  cat /tmp/xl-ukl.log; result unikernel-boot fail "xl create failed"
fi
xl list

if [ $ukl_ok = 1 ]; then
  # --- 10. ping over the bridge (netfront <-> netback <-> xenbr0)
  ping -c 3 -W 10 $UKL_IP && result unikernel-ping pass "" || result unikernel-ping fail "no echo reply"
  # --- 11. TCP echo on port 7: 256 KiB of random bytes back byte for byte
  head -c 262144 /dev/urandom > /tmp/ukl-in
  t=$(up); timeout 120 nc -w 10 $UKL_IP 7 < /tmp/ukl-in > /tmp/ukl-out; t1=$(up)
  got=$(wc -c < /tmp/ukl-out)
  if cmp -s /tmp/ukl-in /tmp/ukl-out; then
    result unikernel-tcp-echo pass "262144 bytes echoed byte-exact in $(awk "BEGIN{printf \"%.2f\", $t1-$t}") s"
  else
    result unikernel-tcp-echo fail "got $got of 262144 bytes back, or different bytes"
  fi
  # --- 12. UDP echo on port 7 (bash's /dev/udp: a connected socket; dd
  # reads the whole datagram in one read)
  msg="ins-ukl-udp-$UKL_SEED"
  r=$(bash -c 'exec 3<>/dev/udp/$1/7 && printf %s "$2" >&3 && timeout 10 dd bs=2048 count=1 <&3 2>/dev/null' _ $UKL_IP "$msg")
  [ "$r" = "$msg" ] && result unikernel-udp-echo pass "" || result unikernel-udp-echo fail "sent '$msg', got '$r'"
  # --- 13. HTTP: the demo's status page (its counters)
  body=$(curl -sS -m 30 http://$UKL_IP/)
  echo "$body" | sed 's/^/  http: /'
  case "$body" in "ins-pv unikernel"*"accepted "*) result unikernel-http pass "" ;; *) result unikernel-http fail "unexpected response" ;; esac
else
  for n in ping tcp-echo udp-echo http; do result unikernel-$n fail "the unikernel did not boot"; done
fi
xl destroy ukl 2>/dev/null

# --- the Linux PV domU in the same conditions, for the boot figure
if xl_create lnx; then
  t1=$(up); d=$(xl domid lnx); i=0
  until [ "$(xenstore-read /local/domain/$d/data/up 2>/dev/null)" = 1 ] || [ $i -ge $((UKL_TIMEOUT * 20)) ]; do usleep 50000; i=$((i+1)); done
  t2=$(up)
  if [ "$(xenstore-read /local/domain/$d/data/up 2>/dev/null)" = 1 ]; then
    echo "FIGURE linux_boot_s $(awk "BEGIN{printf \"%.2f\", $t2-$t}") s"
    echo "FIGURE linux_after_xl_create_s $(awk "BEGIN{printf \"%.2f\", $t2-$t1}") s"
  else
    result linux-domU-boot fail "no data/up after $UKL_TIMEOUT s"
  fi
  xl destroy lnx
else
  cat /tmp/xl-lnx.log; result linux-domU-boot fail "xl create failed"
fi
