#!/usr/bin/env bash
# Load benchmark, loopback only, bounded runs: wrk against the app (nginx) directly, nginx as a
# plain reverse proxy (what ops run today), bare pingora (examples/bare.rs) and seatgate, on the
# same app and body. Per case: req/s, p50, p99, the proxy's CPU per request (utime+stime of its
# process over the run), and the ratios to bare pingora and to nginx measured in the same run
# (wall-clock figures on a shared machine swing ±15% between runs; ratios in one run don't).
#
# Usage: [ONLY=regex] [ROUNDS=n] [THREADS=n] [WORK_STEALING=1] [WRK_THREADS=n] [PROFILE=dist|debug]
#        benches/load.sh [seconds] [connections]
#        SMOKE=1 benches/load.sh   # CI: 2 s a case, debug build, asserts every case's status
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
SMOKE=${SMOKE:-0}
if ((SMOKE)); then
  DUR=2 CONN=4 ROUNDS=1 WRK_THREADS=1 PROFILE=${PROFILE:-debug}
else
  DUR=${1:-10} CONN=${2:-64} ROUNDS=${ROUNDS:-1} WRK_THREADS=${WRK_THREADS:-2} PROFILE=${PROFILE:-dist}
fi
# Defaults are the gateway's own (`threads`: one per core).
# THREADS=1 WRK_THREADS=1 gives each process one core of two instead.
THREADS=${THREADS:-$(nproc)}
need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx-light
need curl curl
if [[ $PROFILE == debug ]]; then
  cargo build --locked --bin seatgate --example bare >/dev/null
else
  cargo build --profile "$PROFILE" --locked --bin seatgate --example bare >/dev/null
fi
OUT=target/$PROFILE
T=$(mktemp -d)
GW=""; BARE=""
# SIGINT is pingora's fast shutdown: the next run can bind the same ports at once.
# A process still there after 5 s is killed: a leftover proxy would hold the ports (and a core)
# and answer the next run in place of the one it builds.
stop() {
  kill $(cat $T/nginx.pid $T/nginx-proxy.pid 2>/dev/null) 2>/dev/null || true
  kill -INT $GW $BARE 2>/dev/null || true
  for _ in $(seq 50); do kill -0 $GW $BARE 2>/dev/null || break; sleep 0.1; done
  kill -9 $GW $BARE 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf $T
}
trap stop EXIT

for port in 18000 18070 18080 18090 19090; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "port $port is taken: a leftover run?"; exit 1; fi
done
start_app $T 18000
start_nginx_proxy $T 18070 18000
WS=false; [[ ${WORK_STEALING:-0} == 1 ]] && WS=true
gateway_conf $T 18080 19090 18000 "$THREADS" $WS
RUST_LOG=warn $OUT/seatgate run --config $T/gw.yaml >$T/gw.log 2>&1 &
GW=$!
THREADS=$THREADS WORK_STEALING=${WORK_STEALING:-0} $OUT/examples/bare 127.0.0.1:18090 127.0.0.1:18000 >$T/bare.log 2>&1 &
BARE=$!
up=0
for _ in $(seq 300); do curl -sf http://127.0.0.1:19090/healthz >/dev/null && { up=1; break; }; sleep 0.1; done
((up)) || { echo "seatgate did not start:"; cat $T/gw.log; exit 1; }
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18090/ && break; sleep 0.1; done
# The held sessions: `expired: adopt` takes the seat on the first request the app accepts.
curl -s -o /dev/null -H 'Cookie: SID=bench-session' http://127.0.0.1:18080/
curl -s -o /dev/null -H 'Cookie: PSID=bench-session' http://127.0.0.1:18080/pres/page.html

# The process whose CPU a case measures: the proxy in front (nginx: its one worker).
worker_of() { pgrep -P "$(cat "$1")" | head -1; }
APP_PID=$(worker_of $T/nginx.pid)
NGX_PID=$(worker_of $T/nginx-proxy.pid)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

FAILED=0
declare -A RPS CPU REF
ORDER=()
# case NAME PID EXPECT_STATUS REF_BARE URL [wrk args...]
case_() {
  local name=$1 pid=$2 expect=$3 ref=$4; shift 4
  [[ -z "${ONLY:-}" || "$name" =~ $ONLY ]] || return 0
  local url=${*: -1} hdr=() a
  for a in "$@"; do [[ $a == "$url" ]] || hdr+=("$a"); done
  # The status a client sees, checked before the load: a broken case fails the run.
  local status
  status=$(curl -s -o $T/body -w '%{http_code}' "${hdr[@]}" "$url")
  if [[ $status != "$expect" ]]; then
    echo "FAIL $name: status $status, expected $expect"; FAILED=1; return 0
  fi
  if [[ $name == *presence* ]] && ! grep -q '.seatgate/heartbeat' $T/body; then
    echo "FAIL $name: no heartbeat script injected"; FAILED=1; return 0
  fi
  local t0 out t1
  t0=$(ticks "$pid")
  out=$(wrk -t$WRK_THREADS -c$CONN -d${DUR}s --latency "${hdr[@]}" "$url" 2>&1)
  t1=$(ticks "$pid")
  local rps p50 p99 n non2xx errors cpu
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses/ {print $5}' <<<"$out")
  errors=$(awk '/Socket errors/ {print}' <<<"$out")
  # Every answer of a case has its status: all 2xx, or (the denial) none.
  if { [[ $expect == 2* ]] && [[ -n $non2xx ]]; } || { [[ $expect != 2* ]] && [[ ${non2xx:-0} != "$n" ]]; } \
    || [[ -n $errors ]] || [[ -z $n || $n == 0 ]]; then
    echo "FAIL $name: $n requests, non-2xx ${non2xx:-0}, ${errors:-no socket errors}"; FAILED=1; return 0
  fi
  cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$n" 'BEGIN {printf "%.2f", d * 1e6 / hz / n}')
  printf '%-34s %9s req/s  p50 %-8s p99 %-8s %7s µs CPU/req\n' "$name" "$rps" "$p50" "$p99" "$cpu"
  RPS[$name]+="$rps "
  CPU[$name]+="$cpu "
  REF[$name]=$ref
  [[ " ${ORDER[*]} " == *" $name "* ]] || ORDER+=("$name")
}
G=http://127.0.0.1:18080 B=http://127.0.0.1:18090
# Rounds alternate the cases, so a slow spell of this shared machine hits every case alike.
cases() {
  case_ "nginx direct (the app)" "$APP_PID" 200 - http://127.0.0.1:18000/
  case_ "nginx proxy" "$NGX_PID" 200 - http://127.0.0.1:18070/
  case_ "bare pingora pass-through" "$BARE" 200 - $B/
  case_ "bare pingora own answer" "$BARE" 401 - -H 'Authorization: Basic dTpw' $B/full/sdata/mobile/x
  case_ "bare pingora html 16 KiB" "$BARE" 200 - $B/page.html
  case_ "seatgate pass-through" "$GW" 200 "bare pingora pass-through" $G/
  case_ "seatgate held session" "$GW" 200 "bare pingora pass-through" -H 'Cookie: SID=bench-session' $G/
  case_ "seatgate check (pass)" "$GW" 200 "bare pingora pass-through" -H 'Authorization: Basic dTpw' $G/sdata/mobile/x
  case_ "seatgate check (fail)" "$GW" 401 "bare pingora own answer" -H 'Authorization: Basic dTpw' $G/full/sdata/mobile/x
  case_ "seatgate held html 16 KiB" "$GW" 200 "bare pingora html 16 KiB" -H 'Cookie: SID=bench-session' $G/page.html
  case_ "seatgate presence html 16 KiB" "$GW" 200 "bare pingora html 16 KiB" -H 'Cookie: PSID=bench-session' $G/pres/page.html
}
echo "wrk -t$WRK_THREADS -c$CONN -d${DUR}s, $(nproc) cores, $PROFILE build, gateway and bare pingora threads: $THREADS, work stealing: $WS, nginx workers: 1"
for r in $(seq "$ROUNDS"); do
  ((ROUNDS > 1)) && echo "round $r"
  cases
done
((FAILED)) && { echo "load.sh: some case answered wrongly"; exit 1; }
((SMOKE)) && { echo "load.sh smoke: every case answered as expected"; exit 0; }

# The median of the figures in $1; empty when there are none (a case ONLY left out).
median() { { tr ' ' '\n' <<<"$1" | grep . || true; } | sort -g | awk 'NR {a[NR]=$1} END {if (NR) print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo
echo "medians over $ROUNDS round(s); ratios to the reference measured in the same run:"
printf '%-34s %10s %9s %14s %14s %14s\n' case req/s µs/req "rps ×bare" "CPU ×bare" "rps ×nginx"
NG_RPS=$(median "${RPS[nginx proxy]:-}")
for name in "${ORDER[@]}"; do
  rps=$(median "${RPS[$name]}")
  cpu=$(median "${CPU[$name]}")
  ref=${REF[$name]}
  if [[ $ref != - && -n ${RPS[$ref]:-} ]]; then
    rr=$(awk -v a="$rps" -v b="$(median "${RPS[$ref]}")" 'BEGIN {printf "%.2f", a / b}')
    cr=$(awk -v a="$cpu" -v b="$(median "${CPU[$ref]}")" 'BEGIN {printf "%.2f", a / b}')
  else
    rr=- cr=-
  fi
  nr=-
  [[ -n $NG_RPS && $name != nginx* ]] && nr=$(awk -v a="$rps" -v b="$NG_RPS" 'BEGIN {printf "%.2f", a / b}')
  printf '%-34s %10.0f %9s %14s %14s %14s\n' "$name" "$rps" "$cpu" "$rr" "$cr" "$nr"
done
if [[ -n ${CPU[seatgate presence html 16 KiB]:-} && -n ${CPU[seatgate held html 16 KiB]:-} ]]; then
  awk -v a="$(median "${CPU[seatgate presence html 16 KiB]}")" -v b="$(median "${CPU[seatgate held html 16 KiB]}")" \
    'BEGIN {printf "presence injection: %.2f µs CPU per request of a 16 KiB page, %.3f µs per KiB\n", a - b, (a - b) / 16}'
fi
