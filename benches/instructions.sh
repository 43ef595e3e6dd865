#!/usr/bin/env bash
# Instructions per request (valgrind callgrind) for a failing check answered by seatgate and
# the same request answered by bare pingora (examples/bare.rs). Unlike req/s on this shared
# 2-core machine, the count repeats run to run, so it shows what seatgate adds to pingora.
# Usage: benches/instructions.sh [requests]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
N=${1:-20000}
need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need valgrind valgrind
need ab apache2-utils
need nginx nginx-light
cargo build --profile dist --locked --bin seatgate --example bare >/dev/null
T=$(mktemp -d)
PIDS=()
trap 'kill $(cat $T/nginx.pid 2>/dev/null) 2>/dev/null || true; kill -INT "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null; rm -rf $T' EXIT
start_app $T 18100
gateway_conf $T 18180 19190 18100 1
URL_PATH=/full/sdata/mobile/x
measure() {
  local name=$1 port=$2; shift 2
  local f=${name// /-}; f=${f//[()]/}
  RUST_LOG=warn THREADS=1 valgrind --tool=callgrind --callgrind-out-file=$T/$f.%p "$@" >$T/$f.log 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 300); do
    curl -s -o /dev/null -H 'Authorization: Basic dTpw' "http://127.0.0.1:$port$URL_PATH" && break
    sleep 0.2
  done
  ab -k -n 2000 -c 8 -H 'Authorization: Basic dTpw' "http://127.0.0.1:$port$URL_PATH" >/dev/null 2>&1
  callgrind_control -z "$pid" >/dev/null 2>&1
  ab -k -n "$N" -c 8 -H 'Authorization: Basic dTpw' "http://127.0.0.1:$port$URL_PATH" >$T/ab.out 2>&1
  grep -q "Failed requests:        0" $T/ab.out || { cat $T/ab.out; exit 1; }
  callgrind_control -d "$pid" >/dev/null 2>&1
  local total
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$(ls -t $T/$f.$pid.* | head -1)")
  printf '%-34s %8d instructions per request\n' "$name" $((total / N))
  kill -INT "$pid"
}
echo "callgrind, $N keep-alive requests (ab -k -c 8), one proxy thread, all threads counted"
measure "bare pingora own answer" 18190 target/dist/examples/bare 127.0.0.1:18190 127.0.0.1:18100
measure "seatgate check (fail)" 18180 target/dist/seatgate run --config $T/gw.yaml
