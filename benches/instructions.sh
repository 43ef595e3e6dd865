#!/usr/bin/env bash
# Instructions per request (valgrind callgrind), seatgate against bare pingora
# (examples/bare.rs) on the same request: a failing check (both write the answer themselves)
# and a held session's request forwarded to the app (nginx). Unlike req/s on this shared
# 2-core machine, the count repeats run to run, so it shows what seatgate adds to pingora.
# Usage: [KEEP=dir] benches/instructions.sh [requests] [cases: check,held,pass,checkpass,queue,bare]
# `bare`: bare pingora alone on the held session's request, with each of examples/bare.rs's
# switches (which of pingora's own per-request costs a proxy avoids from the outside), and
# nginx as the plain reverse proxy on the same request, its worker under callgrind.
# `queue`: in one gateway with 1,000 tickets in a line, a failing check, a poll (each ticket in
# turn) and a join, each per request: what the waiting line costs next to a check.
# KEEP=dir copies the callgrind files there (callgrind_annotate them to see where it goes).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
N=${1:-20000}
CASES=${2:-check,held}
need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need valgrind valgrind
need ab apache2-utils
need nginx nginx-light
need wrk wrk
need cmake cmake
cargo build --profile dist --locked --bin seatgate --example bare >/dev/null
T=$(mktemp -d)
PIDS=()
trap 'kill $(cat $T/nginx.pid 2>/dev/null) 2>/dev/null || true; kill -INT "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null; rm -rf $T' EXIT
start_app $T 18100
gateway_conf $T 18180 19190 18100 1
measure() {
  local name=$1 port=$2 URL_PATH=$3 HDR=$4; shift 4
  local f=${name// /-}; f=${f//[()]/}
  RUST_LOG=warn THREADS=1 valgrind --tool=callgrind --callgrind-out-file=$T/$f.%p "$@" >$T/$f.log 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 300); do
    curl -s -o /dev/null -H "$HDR" "http://127.0.0.1:$port$URL_PATH" && break
    sleep 0.2
  done
  ab -k -n 2000 -c 8 -H "$HDR" "http://127.0.0.1:$port$URL_PATH" >/dev/null 2>&1
  callgrind_control -z "$pid" >/dev/null 2>&1
  ab -k -n "$N" -c 8 -H "$HDR" "http://127.0.0.1:$port$URL_PATH" >$T/ab.out 2>&1
  grep -q "Failed requests:        0" $T/ab.out || { cat $T/ab.out; exit 1; }
  callgrind_control -d "$pid" >/dev/null 2>&1
  local total
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$(ls -t $T/$f.$pid.* | head -1)")
  printf '%-34s %8d instructions per request\n' "$name" $((total / N))
  [[ -n ${KEEP:-} ]] && mkdir -p "$KEEP" && cp "$(ls -t $T/$f.$pid.* | head -1)" "$KEEP/$f.callgrind"
  # Gone before the next case binds the same port.
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
}
echo "callgrind, $N keep-alive requests (ab -k -c 8), one proxy thread, all threads counted"
if [[ ,$CASES, == *,check,* ]]; then
  measure "bare pingora own answer" 18190 /full/sdata/mobile/x 'Authorization: Basic dTpw' \
    target/dist/examples/bare 127.0.0.1:18190 127.0.0.1:18100
  measure "seatgate check (fail)" 18180 /full/sdata/mobile/x 'Authorization: Basic dTpw' \
    target/dist/seatgate run --config $T/gw.yaml
fi
if [[ ,$CASES, == *,checkpass,* ]]; then
  # A check that passes is forwarded to the app (nginx answers it); bare pingora proxies the same.
  measure "bare pingora proxied (check path)" 18190 /sdata/mobile/x 'Authorization: Basic dTpw' \
    target/dist/examples/bare 127.0.0.1:18190 127.0.0.1:18100
  measure "seatgate check (pass) forwarded" 18180 /sdata/mobile/x 'Authorization: Basic dTpw' \
    target/dist/seatgate run --config $T/gw.yaml
fi
if [[ ,$CASES, == *,pass,* ]]; then
  # No cookie, no credentials: nothing to enforce, forwarded as is.
  measure "bare pingora proxied (no cookie)" 18190 /home 'Accept: */*' \
    target/dist/examples/bare 127.0.0.1:18190 127.0.0.1:18100
  measure "seatgate pass-through" 18180 /home 'Accept: */*' \
    target/dist/seatgate run --config $T/gw.yaml
fi
if [[ ,$CASES, == *,held,* ]]; then
  # The product `bench` adopts a cookie the app accepts (nginx accepts everything): the first
  # request takes the seat, the rest are a held session's requests (touch + forward).
  measure "bare pingora proxied" 18190 /home 'Cookie: SID=bench-held-1' \
    target/dist/examples/bare 127.0.0.1:18190 127.0.0.1:18100
  measure "seatgate held session forwarded" 18180 /home 'Cookie: SID=bench-held-1' \
    target/dist/seatgate run --config $T/gw.yaml
fi
if [[ ,$CASES, == *,bare,* ]]; then
  cargo build --profile dist --locked --example bare --features bench-quiet-log \
    --target-dir target/quietlog >/dev/null
  H='Cookie: SID=bench-held-1'
  B=(127.0.0.1:18190 127.0.0.1:18100)
  measure "bare pingora proxied" 18190 /home "$H" target/dist/examples/bare "${B[@]}"
  BARE_NO_MODULES=1 measure "  no downstream modules" 18190 /home "$H" \
    target/dist/examples/bare "${B[@]}"
  BARE_PEER_ONCE=1 measure "  the peer built once" 18190 /home "$H" \
    target/dist/examples/bare "${B[@]}"
  measure "  debug and trace lines compiled out" 18190 /home "$H" \
    target/quietlog/dist/examples/bare "${B[@]}"
  BARE_NO_MODULES=1 BARE_PEER_ONCE=1 measure "  all three" 18190 /home "$H" \
    target/quietlog/dist/examples/bare "${B[@]}"
  BARE_TIMEOUTS=1 measure "  + pingora's read and keep-alive timeouts" 18190 /home "$H" \
    target/dist/examples/bare "${B[@]}"
  BARE_FORWARDED=1 measure "  + the forwarding headers" 18190 /home "$H" \
    target/dist/examples/bare "${B[@]}"
  BARE_TIMEOUTS=1 BARE_FORWARDED=1 measure "  + both (seatgate's duties)" 18190 /home "$H" \
    target/dist/examples/bare "${B[@]}"
  # nginx as the reverse proxy: one worker, no master, in the foreground under callgrind.
  start_nginx_proxy $T 18195 18100
  kill "$(cat $T/nginx-proxy.pid)"
  while [[ -e $T/nginx-proxy.pid ]]; do sleep 0.1; done
  sed -i 's/^worker_processes 1;/worker_processes 1; master_process off; daemon off;/' \
    $T/nginx-proxy.conf
  measure "nginx reverse proxy" 18195 /home "$H" nginx -c $T/nginx-proxy.conf
fi
if [[ ,$CASES, == *,queue,* ]]; then
  RUST_LOG=warn THREADS=1 valgrind --tool=callgrind --callgrind-out-file=$T/queue.%p \
    target/dist/seatgate run --config $T/gw.yaml >$T/queue.log 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 300); do curl -s -o /dev/null http://127.0.0.1:18180/ && break; sleep 0.2; done
  fill_line 18180 1000 $T/tickets
  # count NAME REQUESTS: instructions since the last zeroing, per request.
  count() {
    callgrind_control -d "$pid" >/dev/null 2>&1
    local total
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$(ls -t $T/queue.$pid.* | head -1)")
    printf '%-34s %8d instructions per request\n' "$1" $((total / $2))
    callgrind_control -z "$pid" >/dev/null 2>&1
  }
  H='Authorization: Basic dTpw'
  ab -k -n 2000 -c 8 -H "$H" http://127.0.0.1:18180/full/sdata/mobile/x >/dev/null 2>&1
  callgrind_control -z "$pid" >/dev/null 2>&1
  ab -k -n "$N" -c 8 -H "$H" http://127.0.0.1:18180/full/sdata/mobile/x >$T/ab.out 2>&1
  grep -q "Failed requests:        0" $T/ab.out || { cat $T/ab.out; exit 1; }
  count "seatgate check (fail), line of 1000" "$N"
  out=$(wrk -t1 -c1 -d20s -s benches/poll.lua http://127.0.0.1:18180/line/.seatgate/queue -- $T/tickets)
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  grep -q "Non-2xx" <<<"$out" && { echo "polls answered other than 200:"; echo "$out"; exit 1; }
  count "seatgate queue poll, line of 1000" "$n"
  echo "username=joiner&password=x" >$T/join.body
  ab -k -n 1000 -c 8 -p $T/join.body -T application/x-www-form-urlencoded \
    http://127.0.0.1:18180/line/login >$T/ab.out 2>&1
  grep -q "Non-2xx" $T/ab.out && { cat $T/ab.out; exit 1; }
  count "seatgate queue join, line of 1000+" 1000
  [[ -n ${KEEP:-} ]] && mkdir -p "$KEEP" && cp $T/queue.$pid.* "$KEEP/"
  kill -INT "$pid"
fi
