#!/usr/bin/env bash
# make demo-attack: a short slowloris against nginx served through INS with
# ins-detect on (default configuration). A well-behaved client (source
# 127.0.0.5) fetches the page 5 times a second throughout; slowhttptest
# (source 127.0.0.1) attacks for 10 s. Prints ins-detect's decisions, the
# mitigation, `ins-ctl detect status` and the client's success rate, then
# stops everything. Loopback only; needs root for apt-get if slowhttptest
# or nginx is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
need() { command -v "$1" >/dev/null 2>&1 || PKGS="${PKGS:-} $2"; }
need slowhttptest slowhttptest
need nginx nginx-light
if [ -n "${PKGS:-}" ]; then
    echo "== apt-get install$PKGS"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PKGS >/dev/null
fi
echo "== build (release)"
$CARGO build --release -p ins-driver -p ins -p ins-shim -p ins-ctl -p ins-detect
BIN="$(pwd)/${CARGO_TARGET_DIR:-target}/release"
CTL="$BIN/ins-ctl"
HELPERS="$(pwd)/tools/ins-detect/tests/helpers"

RUN=$(mktemp -d /tmp/ins-demo-attack.XXXXXX)
NGX=$(mktemp -d /tmp/ins-demo-ngx.XXXXXX)
# nginx's workers run as www-data: they must reach the shim socket.
chmod 755 "$RUN" "$NGX"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    "$CTL" --run-dir "$RUN" down >/dev/null 2>&1 || true
    rm -rf "$NGX"
}
trap cleanup EXIT

echo "== ins-ctl up --instances 1"
"$CTL" --run-dir "$RUN" up --instances 1

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$NGX/html" "$NGX/logs" "$NGX/tmp"
head -c 12000 /dev/zero | tr '\0' 'x' > "$NGX/html/index.html"
chmod -R a+rX "$NGX"
# Debian's default nginx.conf, worker_connections 512, paths in $NGX.
sed -e "s|worker_connections .*|worker_connections 512;|" \
    -e "s|^pid .*|pid $NGX/nginx.pid;|" \
    -e "s|error_log .*|error_log $NGX/logs/error.log;|" \
    -e "s|access_log .*|access_log $NGX/logs/access.log;|" \
    -e "s|include /etc/nginx/sites-enabled/\*;|server { listen 127.0.0.1:$PORT; root $NGX/html; client_body_temp_path $NGX/tmp; }|" \
    -e "s|include /etc/nginx/conf.d/\*.conf;||" \
    -e "s|include /etc/nginx/modules-enabled/\*.conf;||" \
    /etc/nginx/nginx.conf > "$NGX/nginx.conf"
echo "== ins-ctl run -- nginx (Debian default config, worker_connections 512) on 127.0.0.1:$PORT"
"$CTL" --run-dir "$RUN" run -- nginx -c "$NGX/nginx.conf" -p "$NGX" -g 'daemon off;' \
    >"$RUN/nginx.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    curl -s -m 2 -o /dev/null "http://127.0.0.1:$PORT/" && break
    sleep 0.1
done

echo "== ins-detect --run-dir $RUN (default configuration)"
"$BIN/ins-detect" --run-dir "$RUN" --log "$RUN/decisions.jsonl" &
PIDS+=($!)
sleep 1

echo "== well-behaved client from 127.0.0.5: 5 requests/s for 22 s"
python3 "$HELPERS/clients.py" 127.0.0.1 "$PORT" /index.html 127.0.0.5 22 0.2 > "$RUN/good.jsonl" &
GOOD=$!
PIDS+=($GOOD)
sleep 5
echo "== slowhttptest -H -c 1000 -r 150 -l 10 from 127.0.0.1 (slowloris)"
START=$(date +%s.%N)
(ulimit -n "$(ulimit -Hn)"; slowhttptest -H -c 1000 -r 150 -i 5 -l 10 -p 3 -u "http://127.0.0.1:$PORT/" >"$RUN/slowhttptest.log" 2>&1) || true
sleep 2
echo
echo "== ins-detect decisions (seconds after the attack started)"
python3 - "$RUN/decisions.jsonl" "$START" <<'PY'
import json, sys
start = float(sys.argv[2])
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d.get("decision") in ("flag", "mitigate", "alert", "release"):
        ev = d.get("evidence", {})
        why = ", ".join("%s %s >= %s" % (m, ev["metrics"][m]["value"], ev["metrics"][m]["threshold"])
                        for m in ev.get("over", [])) if "over" in ev else ""
        print("  %+6.2f s  %-9s %-8s %-18s %s %s" % (d["ts"] - start, d["detector"], d["decision"],
              d["subject"], d.get("action", ""), why))
PY
echo
echo "== ins-ctl detect status"
"$CTL" --run-dir "$RUN" detect status
echo "== the mitigation as the driver applied it"
"$CTL" --run-dir "$RUN" status --json | python3 -c 'import json,sys; print("  mitigations in force:", json.load(sys.stdin)["mitigations"])'
wait "$GOOD" || true
python3 - "$RUN/good.jsonl" "$START" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
start = float(sys.argv[2])
during = [x for x in r if start <= x["t0"] <= start + 10]
ok = sum(x["ok"] for x in r)
print("== well-behaved client: %d/%d requests ok (%.1f %%); during the attack %d/%d"
      % (ok, len(r), 100.0 * ok / max(1, len(r)), sum(x["ok"] for x in during), len(during)))
PY
