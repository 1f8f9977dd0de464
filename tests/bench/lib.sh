# Helpers shared by make bench (run.sh) and its parts that also run alone (member.sh):
# starting and stopping a cluster on free ports, the client, and the bench command.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TPC=$ROOT/build/tpc
FLOOR=$ROOT/build/floor_bench
ETCD_BENCH=$ROOT/build/etcd_bench
SECS=${BENCH_SECONDS:-10}
MEM_SECS=${BENCH_MEMORY_SECONDS:-60}
OUT=${BENCH_OUT:-$ROOT/build/bench-results.json}
DATA=$ROOT/build/bench-data
CLUSTER_PID=""
CERTS=""  # the running cluster's certificates directory; empty: plaintext

cleanup() {
  if [ -n "$CLUSTER_PID" ]; then kill -TERM "$CLUSTER_PID" 2>/dev/null || true; wait "$CLUSTER_PID" 2>/dev/null || true; fi
  rm -rf "$DATA"
}
trap cleanup EXIT

jget() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" | head -1; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_cluster() {  # participants replicas [tls|etcd|nometrics|"tls nometrics"]
  stop_cluster
  # Ports: the leader, the participants, then every node's metrics.
  local n=$1 r=$2 attempt mode=--insecure extra=() span=$((2 * $1 + 1)) how=" ${3:-} "
  CERTS=""
  if [[ $how == *" tls "* ]]; then mode=""; CERTS=$DATA/c/certs; fi
  if [[ $how == *" nometrics "* ]]; then extra=(--no-metrics); span=$1; fi
  # Two leaders over a three-member etcd: one more leader port, etcd's client and peer ports,
  # then the metrics.
  if [[ $how == *" etcd "* ]]; then extra=(--leaders 2 --decision-store etcd --etcd-members 3); span=$((2 * n + 9)); fi
  for attempt in 1 2 3 4 5 6 7 8; do
    rm -rf "$DATA/c"; mkdir -p "$DATA"
    BASE=$((20000 + RANDOM % 12000))  # below the kernel's ephemeral ports
    local busy=0
    for i in $(seq 0 "$span"); do
      if port_busy $((BASE + i)) || ss -Htan 2>/dev/null | grep -q ":$((BASE + i)) "; then busy=1; fi
    done
    [ $busy = 1 ] && continue
    "$TPC" cluster --participants "$n" --replicas "$r" --port "$BASE" --data-dir "$DATA/c" \
      --log-level warn $mode "${extra[@]}" >"$DATA/cluster.out" 2>"$DATA/cluster.err" &
    CLUSTER_PID=$!
    for _ in $(seq 1 300); do
      grep -q "tpc cluster is up" "$DATA/cluster.out" 2>/dev/null && return 0
      kill -0 "$CLUSTER_PID" 2>/dev/null || break   # a port was taken meanwhile: try others
      sleep 0.05
    done
    stop_cluster
  done
  echo "cluster did not start:" >&2; cat "$DATA/cluster.err" >&2; exit 1
}
stop_cluster() {
  if [ -n "$CLUSTER_PID" ]; then kill -TERM "$CLUSTER_PID" 2>/dev/null || true; wait "$CLUSTER_PID" 2>/dev/null || true; fi
  CLUSTER_PID=""
}
# server_pids [ROLE]: the running cluster's leader and participant processes (not tpc cluster,
# not the client), or those of ROLE (leader, participant) only.
server_pids() { pgrep -f -- "--data-dir $DATA/c/${1:-(leader|participant)}-" || true; }
# rss_kib PID: its resident memory in KiB (0 once it is gone).
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
LEADERS=""  # empty: the one leader at BASE
client() { "$TPC" client --leader "${LEADERS:-127.0.0.1:$BASE}" ${CERTS:+--certs-dir "$CERTS"} "$@"; }
bench() {  # clients ops seconds [extra...]
  local c=$1 o=$2 s=$3; shift 3
  client bench --clients "$c" --ops "$o" --duration "${s}s" --keys 100000 --value-size 100 --keep \
    --json "$@"
}


# A part of make bench run alone (bash tests/bench/member.sh): `source lib.sh standalone` builds
# and makes the data directory; standalone_print NAME prints the lines of array NAME then.
STANDALONE=""
if [ "${1:-}" = standalone ]; then
  make -s -C "$ROOT" build >/dev/null
  mkdir -p "$DATA"
  STANDALONE=1
fi
standalone_print() {
  local -n lines=$1
  if [ -n "$STANDALONE" ]; then for l in "${lines[@]}"; do echo "$l"; done; fi
}
