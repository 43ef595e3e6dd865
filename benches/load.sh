#!/usr/bin/env bash
# Load benchmark: wrk against nginx directly (baseline) and through seatgate (pass-through,
# held session = touch per request, pass/fail checks). Loopback only; bounded runs.
# Usage: [ONLY=regex] [ROUNDS=n] [THREADS=n] [WRK_THREADS=n] benches/load.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
DUR=${1:-10}
CONN=${2:-64}
# Defaults are the gateway's own (`threads`: one per core) and wrk's (2 threads).
# THREADS=1 WRK_THREADS=1 gives each process one core of two instead.
THREADS=${THREADS:-$(nproc)}
WRK_THREADS=${WRK_THREADS:-2}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
cargo build --profile dist --locked --bin seatgate --example bare >/dev/null
BIN=target/dist/seatgate
T=$(mktemp -d)
GW=""; BARE=""
# SIGINT is pingora's fast shutdown: the next run can bind the same ports at once.
trap 'kill $(cat $T/nginx.pid 2>/dev/null) 2>/dev/null || true; kill -INT $GW $BARE 2>/dev/null || true; wait 2>/dev/null; rm -rf $T' EXIT

start_app $T 18000
gateway_conf $T 18080 19090 18000 "$THREADS"
RUST_LOG=warn $BIN run --config $T/gw.yaml >$T/gw.log 2>&1 &
GW=$!
THREADS=$THREADS target/dist/examples/bare 127.0.0.1:18090 127.0.0.1:18000 >$T/bare.log 2>&1 &
BARE=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:19090/healthz >/dev/null && break; sleep 0.1; done
curl -s -o /dev/null -H 'Cookie: SID=bench-session' http://127.0.0.1:18080/

run() {
  local name=$1; shift
  [[ -z "${ONLY:-}" || "$name" =~ $ONLY ]] || return 0
  local out
  out=$(wrk -t$WRK_THREADS -c$CONN -d${DUR}s --latency "$@" 2>&1)
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '%-28s %10s req/s   p50 %-8s p99 %s\n' "$name" "$rps" "$p50" "$p99"
  RESULTS[$name]+="$rps "
  [[ " ${ORDER[*]} " == *" $name "* ]] || ORDER+=("$name")
}
declare -A RESULTS
ORDER=()
# Several rounds alternate the cases, so a slow spell of this shared machine hits every case
# alike; the summary gives each case's median and best.
cases() {
  run "nginx direct" http://127.0.0.1:18000/
  run "bare pingora pass-through" http://127.0.0.1:18090/
  run "bare pingora own answer" -H 'Authorization: Basic dTpw' http://127.0.0.1:18090/full/sdata/mobile/x
  run "seatgate pass-through" http://127.0.0.1:18080/
  run "seatgate held session" -H 'Cookie: SID=bench-session' http://127.0.0.1:18080/
  run "seatgate check (pass)" -H 'Authorization: Basic dTpw' http://127.0.0.1:18080/sdata/mobile/x
  run "seatgate check (fail)" -H 'Authorization: Basic dTpw' http://127.0.0.1:18080/full/sdata/mobile/x
}
echo "wrk -t$WRK_THREADS -c$CONN -d${DUR}s, $(nproc) cores, gateway threads: $THREADS, nginx workers: 1"
ROUNDS=${ROUNDS:-1}
for r in $(seq "$ROUNDS"); do
  ((ROUNDS > 1)) && echo "round $r"
  cases
done
if ((ROUNDS > 1)); then
  echo "summary over $ROUNDS rounds (req/s):"
  for name in "${ORDER[@]}"; do
    read -r -a v <<<"${RESULTS[$name]}"
    sorted=$(printf '%s\n' "${v[@]}" | sort -n)
    median=$(awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}' <<<"$sorted")
    best=$(tail -1 <<<"$sorted")
    printf '%-28s median %10.0f   best %10.0f\n' "$name" "$median" "$best"
  done
fi
