#!/usr/bin/env bash
# make demo: build, start the driver with two instances, serve a page with
# python3's http.server under the shim, fetch it with the native curl
# through INS, show `ins-ctl list` and the flow of that fetch, stop.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
echo "== build (release)"
$CARGO build --release -p ins-driver -p ins -p ins-shim -p ins-ctl
BIN="${CARGO_TARGET_DIR:-target}/release"
CTL="$BIN/ins-ctl"

RUN=$(mktemp -d /tmp/ins-demo.XXXXXX)
WWW=$(mktemp -d /tmp/ins-demo-www.XXXXXX)
SERVER=
cleanup() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
    "$CTL" --run-dir "$RUN" down >/dev/null 2>&1 || true
    rm -rf "$WWW"
}
trap cleanup EXIT

echo "== ins-ctl up --instances 2"
"$CTL" --run-dir "$RUN" up --instances 2

cat > "$WWW/index.html" <<HTML
<html><body><h1>Hello from INS</h1>
<p>This page was served by python3 -m http.server running under libshim.so;
its listening socket lives in an INS instance.</p></body></html>
HTML

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "== ins-ctl run -- python3 -m http.server $PORT (under the shim)"
"$CTL" --run-dir "$RUN" run -- python3 -m http.server "$PORT" --bind 127.0.0.1 \
    --directory "$WWW" >"$RUN/http.log" 2>&1 &
SERVER=$!

echo "== curl http://127.0.0.1:$PORT/ (native curl, served through INS)"
OUT="$RUN/page.html"
for _ in $(seq 50); do
    if LPORT=$(curl -sS -m 5 -o "$OUT" -w '%{local_port}' "http://127.0.0.1:$PORT/index.html" 2>/dev/null); then
        break
    fi
    LPORT=
    sleep 0.1
done
if [ -z "$LPORT" ]; then
    echo "demo: the fetch failed; server log:" >&2
    cat "$RUN/http.log" >&2
    exit 1
fi
cat "$OUT"

FLOW=
for _ in $(seq 50); do
    FLOW=$("$CTL" --run-dir "$RUN" flows | grep -E "127\.0\.0\.1:$LPORT( |$)" || true)
    [ -n "$FLOW" ] && break
    sleep 0.1
done
if [ -z "$FLOW" ]; then
    echo "demo: no flow record for the fetch" >&2
    "$CTL" --run-dir "$RUN" flows >&2
    exit 1
fi
# Instances report their counters with each heartbeat (once a second).
sleep 1.2

echo "== ins-ctl list"
"$CTL" --run-dir "$RUN" list

echo "== the flow of that fetch (ins-ctl flows, remote port $LPORT)"
"$CTL" --run-dir "$RUN" flows | head -1
echo "$FLOW"

echo "== ins-ctl down"
kill "$SERVER" 2>/dev/null || true
wait "$SERVER" 2>/dev/null || true
SERVER=
"$CTL" --run-dir "$RUN" down
rm -rf "$RUN"
echo "demo: OK"
