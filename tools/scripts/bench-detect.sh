#!/usr/bin/env bash
# make bench-detect: nginx (Debian's default configuration) through INS,
# wrk against it with ins-detect off and on, alternating, side by side.
# Two workloads: keep-alive (50 connections) and a new connection per
# request (Connection: close). ins-detect runs with dry_run = true: it
# decides and logs (a single source opening thousands of connections a
# second is flagged) but sends nothing, so the benchmark is not blocked. Prints req/s and the on/off ratio per run
# and the medians. Loopback only; bounded (DURATION s per run, default 10).
set -euo pipefail
cd "$(dirname "$0")/../.."
CARGO=${CARGO:-cargo}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)"; exit 1; }
command -v nginx >/dev/null || { echo "nginx is missing (apt-get install nginx-light)"; exit 1; }
$CARGO build --release -p ins-driver -p ins -p ins-shim -p ins-ctl -p ins-detect >/dev/null
BIN="$(pwd)/${CARGO_TARGET_DIR:-target}/release"
CTL="$BIN/ins-ctl"
RUN=$(mktemp -d /tmp/ins-bench-detect.XXXXXX)
NGX=$(mktemp -d /tmp/ins-bench-ngx.XXXXXX)
chmod 755 "$RUN" "$NGX"
PIDS=()
DET=
cleanup() {
    [ -n "$DET" ] && kill "$DET" 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    "$CTL" --run-dir "$RUN" down >/dev/null 2>&1 || true
    rm -rf "$NGX"
}
trap cleanup EXIT
"$CTL" --run-dir "$RUN" up --instances 1 >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$NGX/html" "$NGX/logs" "$NGX/tmp"
head -c 1024 /dev/zero | tr '\0' 'x' > "$NGX/html/index.html"
chmod -R a+rX "$NGX"
sed -e "s|^pid .*|pid $NGX/nginx.pid;|" \
    -e "s|error_log .*|error_log $NGX/logs/error.log;|" \
    -e "s|access_log .*|access_log off;|" \
    -e "s|include /etc/nginx/sites-enabled/\*;|server { listen 127.0.0.1:$PORT; root $NGX/html; client_body_temp_path $NGX/tmp; }|" \
    -e "s|include /etc/nginx/conf.d/\*.conf;||" \
    -e "s|include /etc/nginx/modules-enabled/\*.conf;||" \
    /etc/nginx/nginx.conf > "$NGX/nginx.conf"
"$CTL" --run-dir "$RUN" run -- nginx -c "$NGX/nginx.conf" -p "$NGX" -g 'daemon off;' >"$RUN/nginx.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do curl -s -m 2 -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done

rps() { # $@: extra wrk args
    wrk -t2 -c50 -d"${DURATION}s" "$@" "http://127.0.0.1:$PORT/index.html" 2>/dev/null |
        awk '/Requests\/sec/ {print $2}'
}
# Dry run: every decision is made and logged, nothing is sent (a real
# block of the benchmark's own source would end the measurement).
echo "dry_run = true" > "$RUN/detect.toml"
det_on() {
    "$BIN/ins-detect" --run-dir "$RUN" --config "$RUN/detect.toml" --log "$RUN/decisions.jsonl" &
    DET=$!
    for _ in $(seq 50); do grep -q subscribed "$RUN/decisions.jsonl" 2>/dev/null && break; sleep 0.1; done
}
det_off() { kill "$DET"; wait "$DET" 2>/dev/null || true; DET=; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo "nginx through INS, wrk -t2 -c50 -d${DURATION}s, $ROUNDS rounds (ins-detect off, then on)"
rps >/dev/null # warm-up
for mode in keepalive close; do
    extra=()
    [ "$mode" = close ] && extra=(-H "Connection: close")
    offs=(); ons=()
    for r in $(seq "$ROUNDS"); do
        off=$(rps "${extra[@]}")
        det_on
        on=$(rps "${extra[@]}")
        det_off
        offs+=("$off"); ons+=("$on")
        printf "%-9s round %d: off %10.1f req/s   on %10.1f req/s   on/off %.3f\n" "$mode" "$r" "$off" "$on" "$(div "$on" "$off")"
    done
    mo=$(printf '%s\n' "${offs[@]}" | median); mn=$(printf '%s\n' "${ons[@]}" | median)
    r=$(div "$mn" "$mo")
    printf "%-9s median : off %10.1f req/s   on %10.1f req/s   on/off %s (loss %.1f %%)\n" "$mode" "$mo" "$mn" "$r" "$(awk -v r="$r" 'BEGIN { print (1 - r) * 100 }')"
done
echo "ins-detect decisions during the benchmark (dry run, not sent): $(grep -c '"decision"' "$RUN/decisions.jsonl" || true)"
