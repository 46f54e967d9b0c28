#!/bin/sh
# dom0 /init of the unikernel boot test (see run.sh): boots ins-pv as a
# 16 MiB PV domU twice (power-off and panic paths), checks the shutdown
# reason Xen records (xl list state s / c), prints the guest's console and
# boot figures, then boots the lab's Linux PV domU for comparison.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/lib/xen-4.17/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run; mkdir -p /var; ln -sfn /run /var/run
up() { cut -d' ' -f1 /proc/uptime; }
for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc; do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
mount -t xenfs xenfs /proc/xen
mkdir -p /run/xenstored /var/lib/xenstored /var/log/xen/console /var/lib/xen /run/xen
xenstored --pid-file /run/xenstored.pid
xen-init-dom0
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
echo "DOM0_READY uptime=$(up)"
ok=1
run() { # name extra expect_state
  n=$1
  cat > /etc/xen/$n.cfg <<CFG
name = "$n"
type = "pv"
kernel = "/boot/ins-pv"
memory = 16
maxmem = 16
vcpus = 1
on_poweroff = "preserve"
on_crash = "preserve"
extra = "$2"
CFG
  t=$(up); xl create /etc/xen/$n.cfg || ok=0; t1=$(up)
  i=0; until grep -q "INS_PV_READY" /var/log/xen/console/guest-$n.log 2>/dev/null || [ $i -ge 300 ]; do usleep 20000; i=$((i+1)); done
  t2=$(up)
  echo "UKL $n: xl create returned after $(awk "BEGIN{print $t1-$t}") s, READY seen $(awk "BEGIN{print $t2-$t}") s after xl create"
  sleep 1
  xl list
  st=$(xl list | awk -v n=$n '$1==n {print $5}')
  echo "UKL $n state=$st (want $3)"
  echo "$st" | grep -q "$3" || ok=0
  echo "----- console of $n"; cat /var/log/xen/console/guest-$n.log
  xl destroy $n
}
run ins1 "net=none then=poweroff" s
run ins2 "net=none then=panic" c
grep -q "PANIC: panicked at" /var/log/xen/console/guest-ins2.log || ok=0
# Linux PV domU for comparison (the lab's du1: 128 MiB, busybox initramfs writes data/up at the end of /init)
t=$(up); xl create /etc/xen/du1.cfg; t1=$(up); D1=$(xl domid du1)
i=0; until [ "$(xenstore-read /local/domain/$D1/data/up 2>/dev/null)" = 1 ] || [ $i -ge 3000 ]; do usleep 50000; i=$((i+1)); done
t2=$(up)
echo "LINUX du1: xl create returned after $(awk "BEGIN{print $t1-$t}") s, up $(awk "BEGIN{print $t2-$t}") s after xl create"
xl list
xl destroy du1
[ $ok = 1 ] && echo "XENLAB_ALL_OK" || echo "XENLAB_FAILED"
poweroff -f
