#!/bin/sh
# dom0 /init of the unikernel network test (see run.sh): boots ins-pv as a
# 16 MiB PV domU with one vif (netfront <-> xen-netback, point-to-point
# 10.1.1.0/24), then from dom0: ping, TCP echo (byte-exact, 200 kB), UDP
# echo, HTTP; prints the guest's console and xl list.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/lib/xen-4.17/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run; mkdir -p /var; ln -sfn /run /var/run
up() { cut -d' ' -f1 /proc/uptime; }
for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc xen-netback; do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
mount -t xenfs xenfs /proc/xen
mkdir -p /run/xenstored /var/lib/xenstored /var/log/xen/console /var/lib/xen /run/xen
xenstored --pid-file /run/xenstored.pid
xen-init-dom0
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
ip link set lo up
echo "DOM0_READY uptime=$(up)"
ok=1
cat > /etc/xen/ins1.cfg <<CFG
name = "ins1"
type = "pv"
kernel = "/boot/ins-pv"
memory = 16
maxmem = 16
vcpus = 1
on_crash = "preserve"
vif = [ 'ip=10.1.1.2,script=vif-ins,mac=00:16:3e:00:01:02' ]
extra = "ip=10.1.1.2/24 gw=10.1.1.1 seed=$(head -c 8 /dev/urandom | od -An -tu8 | tr -d ' ')"
CFG
t=$(up); xl create /etc/xen/ins1.cfg || ok=0; t1=$(up)
i=0; until grep -q "INS_PV_READY" /var/log/xen/console/guest-ins1.log 2>/dev/null || [ $i -ge 500 ]; do usleep 20000; i=$((i+1)); done
t2=$(up)
echo "UKL ins1: xl create returned after $(awk "BEGIN{print $t1-$t}") s, READY seen $(awk "BEGIN{print $t2-$t}") s after xl create"
xl list
ip addr show dev vif1.0 | grep inet
echo "=== ping"
ping -c 3 -W 5 10.1.1.2 && echo "UKL_PING_OK" || ok=0
echo "=== tcp echo"
head -c 200000 /dev/urandom > /tmp/in
t=$(up); nc -w 5 10.1.1.2 7 < /tmp/in > /tmp/out; t1=$(up)
ls -l /tmp/in /tmp/out
if cmp /tmp/in /tmp/out; then echo "UKL_TCP_ECHO_OK 200000 bytes in $(awk "BEGIN{print $t1-$t}") s"; else ok=0; echo "UKL_TCP_ECHO_FAILED"; fi
echo "=== udp echo"
r=$(udpq 10.1.1.2 7 udp-hello)
[ "$r" = "udp-hello" ] && echo "UKL_UDP_ECHO_OK" || { ok=0; echo "UKL_UDP_ECHO_FAILED got '$r'"; }
echo "=== http"
wget -q -O - http://10.1.1.2/ && echo "UKL_HTTP_OK" || ok=0
echo "----- console of ins1"; cat /var/log/xen/console/guest-ins1.log
xl destroy ins1
[ $ok = 1 ] && echo "XENLAB_ALL_OK" || echo "XENLAB_FAILED"
poweroff -f
