#!/bin/sh
# PV domU /init for the INS Xen lab. Brings up eth0 (address from the
# kernel command line, ins_ip=...), reports data/up=1, then runs the
# commands dom0 writes to data/cmdN in its xenstore home, one at a time,
# reporting each exit status in data/resultN. "poweroff" ends it.
# An instance domain made by ins-xen-agent (ins_driver=D ins_channel=C on
# its command line) also starts `ins --xen-driver D --xen-channel C`.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/opt/ins/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
for m in xen-evtchn xen-gntdev xen-gntalloc xen-netfront; do insmod /lib/modules/$m.ko 2>/dev/null; done
ip link set lo up
IP=$(sed -n 's/.*ins_ip=\([0-9.]*\).*/\1/p' /proc/cmdline)
if [ -n "$IP" ]; then
  i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
  ip addr add "$IP/24" dev eth0 && ip link set eth0 up
fi
DRV=$(sed -n 's/.*ins_driver=\([0-9]*\).*/\1/p' /proc/cmdline)
CHAN=$(sed -n 's/.*ins_channel=\([a-z0-9-]*\).*/\1/p' /proc/cmdline)
# ins_fault=S (the kernel-module lab's hostile instance): corrupt the
# ring S seconds after joining (--fault-inject-corrupt-ring-after-s).
FAULT=$(sed -n 's/.*ins_fault=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$DRV" ] && [ -n "$CHAN" ]; then
  ins --xen-driver "$DRV" --xen-channel "$CHAN" --heartbeat-ms 1000 --xen-rendezvous-s 300 \
    ${FAULT:+--fault-inject-corrupt-ring-after-s $FAULT} &
  echo "DOMU_INS ins --xen-driver $DRV --xen-channel $CHAN${FAULT:+ (ring corrupted after $FAULT s)} (pid $!)"
fi
ME=$(xenstore-read domid)
echo "DOMU_UP domid=$ME name=$(xenstore-read name) ip=${IP:-none} uptime=$(cut -d' ' -f1 /proc/uptime)"
xenstore-write data/up 1 || echo "DOMU: xenstore-write failed"
n=1
while :; do
  CMD=""
  while [ -z "$CMD" ]; do CMD=$(xenstore-read data/cmd$n 2>/dev/null) || { CMD=""; usleep 100000; }; done
  [ "$CMD" = poweroff ] && break
  sh -c "$CMD"; rc=$?
  xenstore-write data/result$n "$rc"
  n=$((n+1))
done
poweroff -f
