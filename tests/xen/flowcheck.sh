# Fetches with curl's byte counts, and the check that a driver's flow
# records carry exactly those counts: shared by test 7 (driver-over-xen:
# the Linux `ins` in ins1) and test 20 (unikernel-flow-records: the PV
# unikernel). Sourced by dom0-init.sh and ukring.sh; uses their run,
# wait_cmd helpers and $N.
#
# fetch_counted TAG URL WANT
#   small.html and big.bin from URL, byte-exact (sha256 against
#   /srv/www/*.sha256), then 50 requests on one keep-alive connection;
#   writes one "local_port request_bytes response_bytes" line per
#   connection to WANT (curl's counts: size_request; size_header +
#   size_download); prints "TAG fetch ..." and "TAG keep-alive: ..."
#   lines. Returns 1 if a file was not byte-exact or the 50 requests did
#   not share one connection.
# flows_match TAG WANT CMD
#   runs CMD in the PVM (it prints "TAG remote bytes_in bytes_out state
#   local" lines for its driver's flows: pvm-xen.sh flows) until every
#   connection of WANT has a closed record from 169.254.100.1:port with
#   exactly curl's request bytes in and response bytes out (20 tries, 3 s
#   apart); prints curl's counts and the record side by side. Sets
#   FLOWS_MATCHED (records matched) and FLOWS_WANTED (connections).
FLOWCHECK_LOG=/var/log/xen/console/guest-pvm.log
fetch_counted() {
  local tag=$1 url=$2 want=$3 rc=0 f w got sum args i ka
  : > "$want"
  for f in small.html big.bin; do
    w=$(curl -sS -m 180 -o /tmp/$tag.got.$f -w '%{local_port} %{size_request} %{size_header} %{size_download} %{speed_download}' $url/$f)
    echo "$w" | awk '{print $1, $2, $3 + $4}' >> "$want"
    got=$(sha256sum < /tmp/$tag.got.$f | cut -d' ' -f1); sum=$(cut -d' ' -f1 /srv/www/$f.sha256)
    if [ "$got" = "$sum" ]; then echo "$tag fetch $f: sha256 ok ($(wc -c < /tmp/$tag.got.$f) bytes, $(echo "$w" | awk '{printf "%.0f", $5 / 1024}') KiB/s)"
    else echo "$tag fetch $f: sha256 $got, want $sum ($(wc -c < /tmp/$tag.got.$f) bytes)"; rc=1; fi
  done
  args=""; for i in $(seq 50); do args="$args $url/small.html -o /dev/null"; done
  curl -sS -m 300 -w '%{local_port} %{size_request} %{size_header} %{size_download} %{num_connects} %{http_code}\n' $args > /tmp/$tag.ka
  ka=$(awk '$6 == 200 {c += $5; n++} END {print c" connections for "n" requests"}' /tmp/$tag.ka)
  echo "$tag keep-alive: $ka"
  [ "$ka" = "1 connections for 50 requests" ] || rc=1
  awk '{q[$1] += $2; r[$1] += $3 + $4} END {for (p in q) print p, q[p], r[p]}' /tmp/$tag.ka >> "$want"
  return $rc
}
flows_match() {
  local tag=$1 want=$2 cmd=$3 try port in out
  FLOWS_WANTED=$(wc -l < "$want"); FLOWS_MATCHED=0
  for try in $(seq 20); do
    run pvm "$cmd"; wait_cmd pvm $N 60 >/dev/null
    FLOWS_MATCHED=0
    while read -r port in out; do
      grep -q "$tag 169.254.100.1:$port $in $out closed" $FLOWCHECK_LOG && FLOWS_MATCHED=$((FLOWS_MATCHED + 1))
    done < "$want"
    [ $FLOWS_MATCHED = $FLOWS_WANTED ] && break
    sleep 3
  done
  while read -r port in out; do
    echo "curl: port $port sent $in B, received $out B"; grep "$tag 169.254.100.1:$port " $FLOWCHECK_LOG | tail -n 1
  done < "$want"
}
