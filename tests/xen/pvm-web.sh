#!/bin/sh
# In the PVM domU: start the INS driver with one local instance and nginx
# under libshim.so (ins-ctl run); wait until the instance listens.
set -e
export PATH=/opt/ins/bin:$PATH
mkdir -p /tmp/nginx-body /run/ins
# Generous timeouts: under software emulation everything is slow.
ins-ctl --run-dir /run/ins up --instances 1 -- --heartbeat-timeout-ms 60000 --handshake-timeout-ms 60000
ins-ctl --run-dir /run/ins run -- nginx -c /etc/ins/nginx.conf > /tmp/nginx.log 2>&1 &
i=0
until netstat -ltn 2>/dev/null | grep -q ':8080 '; do
  i=$((i+1)); [ $i -gt 300 ] && { echo "PVM: nothing listens on 8080"; cat /tmp/nginx.log; exit 1; }
  usleep 100000
done
echo "PVM_WEB_READY (nginx under the shim; the listener lives in an INS instance)"
ins-ctl --run-dir /run/ins list
