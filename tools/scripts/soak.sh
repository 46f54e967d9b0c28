#!/usr/bin/env bash
# make soak: at least REQUESTS (default 1,000,000) HTTP requests through
# nginx (Debian's default configuration, its site replaced by a loopback
# server) running under INS, with wrk (keep-alive, CONNS connections) in
# rounds of ROUND_S seconds, while the balancer's policy rotates the
# instances every ROTATE_S seconds (rotate_s in the policy TOML). Prints
# the errors (wrk's socket errors and non-2xx answers: must be 0), the
# rotations seen, and the driver's and the instances' RSS and open fd
# counts at the start (after a warm-up) and at the end, both taken idle
# 2 s after load; each must stay flat within 10 % either way (growth
# would be a leak; a large fall means the end state is not comparable,
# e.g. instances that were lost and not replaced). Bounded: at most
# MAX_S seconds of load. Exit status 0 only when every check passes.
#
# nginx closes a keep-alive connection after KEEPALIVE_REQUESTS requests
# (wrk reconnects), so the connections of a draining instance end within
# its drain timeout and rotation never cuts a request in flight.
set -euo pipefail
cd "$(dirname "$0")/../.."
CARGO=${CARGO:-cargo}
REQUESTS=${REQUESTS:-1000000}
MAX_S=${MAX_S:-600}
ROUND_S=${ROUND_S:-15}
CONNS=${CONNS:-50}
ROTATE_S=${ROTATE_S:-10}
INSTANCES=${INSTANCES:-2}
KEEPALIVE_REQUESTS=${KEEPALIVE_REQUESTS:-1000}
DRAIN_TIMEOUT_MS=${DRAIN_TIMEOUT_MS:-5000}
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)"; exit 1; }
command -v nginx >/dev/null || { echo "nginx is missing (apt-get install nginx-light)"; exit 1; }
command -v curl >/dev/null || { echo "curl is missing (apt-get install curl)"; exit 1; }
$CARGO build --release -q -p ins-driver -p ins -p ins-shim -p ins-ctl >/dev/null
BIN="$(pwd)/${CARGO_TARGET_DIR:-target}/release"
CTL="$BIN/ins-ctl"
RUN=$(mktemp -d /tmp/ins-soak.XXXXXX)
NGX=$(mktemp -d /tmp/ins-soak-ngx.XXXXXX)
chmod 755 "$RUN" "$NGX"
NGINX_PID=
cleanup() {
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
    "$CTL" --run-dir "$RUN" down >/dev/null 2>&1 || true
    rm -rf "$NGX"
}
trap cleanup EXIT
cat >"$RUN/policy.toml" <<EOF
min_instances = $INSTANCES
max_instances = $((INSTANCES + 2))
autoscale = false
rotate_s = $ROTATE_S
drain_timeout_ms = $DRAIN_TIMEOUT_MS
EOF
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MPORT=$(free_port)
"$CTL" --run-dir "$RUN" up --instances "$INSTANCES" --policy "$RUN/policy.toml" --metrics "127.0.0.1:$MPORT" >/dev/null
PORT=$(free_port)
mkdir -p "$NGX/html" "$NGX/logs" "$NGX/tmp"
head -c 1024 /dev/zero | tr '\0' 'x' >"$NGX/html/index.html"
chmod -R a+rX "$NGX"
sed -e "s|^pid .*|pid $NGX/nginx.pid;|" \
    -e "s|error_log .*|error_log $NGX/logs/error.log;|" \
    -e "s|access_log .*|access_log off;|" \
    -e "s|include /etc/nginx/sites-enabled/\*;|server { listen 127.0.0.1:$PORT; root $NGX/html; client_body_temp_path $NGX/tmp; keepalive_requests $KEEPALIVE_REQUESTS; }|" \
    -e "s|include /etc/nginx/conf.d/\*.conf;||" \
    -e "s|include /etc/nginx/modules-enabled/\*.conf;||" \
    /etc/nginx/nginx.conf >"$NGX/nginx.conf"
"$CTL" --run-dir "$RUN" run -- nginx -c "$NGX/nginx.conf" -p "$NGX" -g 'daemon off;' >"$RUN/nginx.log" 2>&1 &
NGINX_PID=$!
for _ in $(seq 100); do curl -s -m 2 -o /dev/null "http://127.0.0.1:$PORT/index.html" && break; sleep 0.1; done
curl -sf -m 5 -o /dev/null "http://127.0.0.1:$PORT/index.html" || { echo "nginx under INS does not answer"; cat "$RUN/nginx.log"; exit 1; }

DRIVER=$(cat "$RUN/driver.pid")
inst_pids() { "$CTL" --run-dir "$RUN" list --json | python3 -c '
import json, sys
v = json.load(sys.stdin)
v = v.get("instances", v) if isinstance(v, dict) else v
print(" ".join(str(i["pid"]) for i in v if i.get("state") == "live"))'; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
# "RSS_KiB FDS" of the driver, and summed over the live instances.
snapshot() {
    local ir=0 if=0 n=0
    for p in $(inst_pids); do
        ir=$((ir + $(rss "$p"))); if=$((if + $(fds "$p"))); n=$((n + 1))
    done
    echo "$(rss "$DRIVER") $(fds "$DRIVER") $ir $if $n"
}
rotations() { grep -c "rotation: replacing the oldest instance" "$RUN/driver.log" || true; }

# Warm-up (not counted): the first connections, lazily allocated buffers.
wrk -t2 -c"$CONNS" -d3s "http://127.0.0.1:$PORT/index.html" >/dev/null 2>&1
sleep 2 # both snapshots are taken idle, 2 s after load
read -r D_RSS0 D_FD0 I_RSS0 I_FD0 N0 < <(snapshot)
ROT0=$(rotations)
echo "soak: >= $REQUESTS requests, nginx under INS ($INSTANCES instances, rotate_s = $ROTATE_S), wrk -t2 -c$CONNS keep-alive, rounds of ${ROUND_S}s, at most ${MAX_S}s"
total=0; errors=0; non2xx=0; start=$(date +%s); round=0
while [ "$total" -lt "$REQUESTS" ] && [ $(( $(date +%s) - start )) -lt "$MAX_S" ]; do
    round=$((round + 1))
    out=$(wrk -t2 -c"$CONNS" -d"${ROUND_S}s" "http://127.0.0.1:$PORT/index.html" 2>&1)
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    e=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
    x=$(awk '/Non-2xx or 3xx/ {print $NF}' <<<"$out")
    total=$((total + ${n:-0})); errors=$((errors + ${e:-0})); non2xx=$((non2xx + ${x:-0}))
    # The driver's /metrics, scraped under load.
    m=$(curl -sf -m 5 "http://127.0.0.1:$MPORT/metrics") || { echo "FAIL: /metrics scrape failed"; exit 1; }
    live=$(awk '/^ins_instances\{state="live"\}/ {print $2}' <<<"$m")
    printf "round %2d: %8d requests (total %9d), socket errors %d, non-2xx %d, rotations so far %d, live %s\n" \
        "$round" "${n:-0}" "$total" "${e:-0}" "${x:-0}" $(( $(rotations) - ROT0 )) "$live"
    [ -n "$n" ] || { echo "wrk output not understood:"; echo "$out"; exit 1; }
done
elapsed=$(( $(date +%s) - start ))
sleep 2 # let a rotation in progress settle
read -r D_RSS1 D_FD1 I_RSS1 I_FD1 N1 < <(snapshot)
rot=$(( $(rotations) - ROT0 ))
echo "driver /metrics at the end:"
curl -sf -m 5 "http://127.0.0.1:$MPORT/metrics" | grep -E '^ins_(instances|sockets|connections|app_datagrams_dropped_total|flow_records_total|monitor_subscribers_dropped_total) ' | sed 's/^/  /' || true
curl -sf -m 5 "http://127.0.0.1:$MPORT/metrics" | grep -E '^ins_instances\{' | sed 's/^/  /' || true
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == 0) print "n/a"; else printf "%+.1f", (b - a) * 100 / a }'; }
echo "requests: $total in ${elapsed}s; errors: socket $errors, non-2xx $non2xx; instance rotations: $rot"
printf "driver    RSS %8d KiB -> %8d KiB (%s %%)   fds %5d -> %5d (%s %%)\n" \
    "$D_RSS0" "$D_RSS1" "$(pct "$D_RSS0" "$D_RSS1")" "$D_FD0" "$D_FD1" "$(pct "$D_FD0" "$D_FD1")"
printf "instances RSS %8d KiB -> %8d KiB (%s %%)   fds %5d -> %5d (%s %%)   (%d -> %d live, summed)\n" \
    "$I_RSS0" "$I_RSS1" "$(pct "$I_RSS0" "$I_RSS1")" "$I_FD0" "$I_FD1" "$(pct "$I_FD0" "$I_FD1")" "$N0" "$N1"
flat() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(b <= a * 1.10 && b >= a * 0.90) }'; }
fail=0
[ "$total" -ge "$REQUESTS" ] || { echo "FAIL: only $total requests within ${MAX_S}s"; fail=1; }
[ "$errors" -eq 0 ] && [ "$non2xx" -eq 0 ] || { echo "FAIL: errors"; fail=1; }
[ "$rot" -ge 1 ] || { echo "FAIL: no instance rotation happened"; fail=1; }
for pair in "driver RSS:$D_RSS0:$D_RSS1" "driver fds:$D_FD0:$D_FD1" "instance RSS:$I_RSS0:$I_RSS1" "instance fds:$I_FD0:$I_FD1"; do
    IFS=: read -r what a b <<<"$pair"
    flat "$a" "$b" || { echo "FAIL: $what changed by more than 10 % ($a -> $b)"; fail=1; }
done
[ "$fail" -eq 0 ] && echo "soak: PASS" || { echo "soak: FAIL (run dir $RUN kept)"; trap - EXIT; cleanup; exit 1; }
