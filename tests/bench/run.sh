#!/usr/bin/env bash
# make bench: measures tpc against the physical floor of this machine.
#   W1 (the original): leader + 2 participants, full replication, single-key put, 100-byte values
#   W2 (cross-shard):  leader + 3 participants, --replicas 1, two-key transactions over 100,000 keys
# each at 1 and 64 clients; W1 on 3 participants with --replicas 2 while one is killed, and the
# catch-up of one out for 10 s; then throughput with 1, 2, 4 and 8 participants, and with
# 1,000,000 and 10,000,000 keys stored (keys.sh), all in plaintext (tpc cluster --insecure); then W2 at 64 clients over
# TLS and in plaintext, alternated, printed side by side; then W2 at 64 clients with the etcd
# decision store and two leaders over a three-member etcd, beside the local log and beside
# etcd's own two-key transaction rate on the same etcd (etcd_bench); then a member add under
# load at 10,000 and 100,000 keys (member.sh); W1 with 100-byte, 10 KiB and 1 MiB values
# (values.sh); then the server CPU per committed transaction,
# W1 and W2 in plaintext and over TLS (cost.sh). Prints one table and writes it as JSON
# (BENCH_OUT).
# Env: BENCH_SECONDS (10) per run, BENCH_MEMORY_SECONDS (60) for the W2 64-client run, which
# also samples resident memory and log size.
source "$(dirname "$0")/lib.sh"

echo "building..." >&2
make -s -C "$ROOT" build >/dev/null
mkdir -p "$DATA"
FLOORJ=$("$FLOOR" "$DATA")
FSYNC=$(echo "$FLOORJ" | jget fdatasync_p50_us)
RTT=$(echo "$FLOORJ" | jget rtt_p50_us)
FLOOR_US=$(echo "$FLOORJ" | jget floor_us)
echo "floor: fdatasync p50 ${FSYNC} us, loopback round trip p50 ${RTT} us -> one commit >= ${FLOOR_US} us" >&2

# record NAME VALUE: appends VALUE to NAME_RUNS and keeps the larger in NAME_BEST.
record() {
  local runs="${1}_RUNS" best="${1}_BEST"
  printf -v "$runs" '%s' "${!runs:+${!runs}, }$2"
  awk -v a="$2" -v b="${!best:-0}" 'BEGIN { exit !(a > b) }' && printf -v "$best" '%s' "$2"
  return 0
}

ROWS=()
row() {  # name participants replicas clients json
  local name=$1 n=$2 r=$3 c=$4 j=$5
  local tps p50 p90 p99 p999 max ratio
  tps=$(echo "$j" | jget committed_per_s); p50=$(echo "$j" | jget p50_ms); p90=$(echo "$j" | jget p90_ms)
  p99=$(echo "$j" | jget p99_ms); p999=$(echo "$j" | jget p999_ms); max=$(echo "$j" | jget max_ms)
  ratio=$(awk -v a="$p50" -v f="$FLOOR_US" 'BEGIN { printf "%.2f", a * 1000 / f }')
  ROWS+=("$(printf '%-26s %3s %3s %5s %10s %8s %8s %8s %8s %8s %8s' "$name" "$n" "${r:-all}" "$c" "$tps" "$p50" "$p90" "$p99" "$p999" "$max" "$ratio")")
  JSON_ROWS+=("{\"workload\":\"$name\",\"participants\":$n,\"replicas\":\"${r:-all}\",\"clients\":$c,\"result\":$j,\"p50_over_floor\":$ratio}")
  echo "  $name clients=$c: $tps txn/s, p50 $p50 ms ($ratio x floor), p99 $p99 ms" >&2
}
JSON_ROWS=()

echo "W1: 2 participants, full replication, single-key put" >&2
start_cluster 2 0
row "W1 put, full replication" 2 "" 1 "$(bench 1 1 "$SECS")"
row "W1 put, full replication" 2 "" 64 "$(bench 64 1 "$SECS")"

echo "W2: 3 participants, --replicas 1, two-key transactions" >&2
start_cluster 3 1
row "W2 2-key txn, replicas 1" 3 1 1 "$(bench 1 2 "$SECS")"
# The long run also samples resident memory and log size.
PIDS=$(server_pids | tr '\n' ' ')
bench 64 2 "$MEM_SECS" >"$DATA/w2.json" &
BP=$!
RSS_MAX=0; RSS_HALF=""; RSS_END=""; LOG_MAX=0
half=$((MEM_SECS / 2)); t=0
while kill -0 "$BP" 2>/dev/null; do
  sleep 1; t=$((t + 1))
  tot=0; mx=0
  for p in $PIDS; do
    kb=$(rss_kib "$p")
    [ "${kb:-0}" -gt "$mx" ] && mx=$kb
  done
  [ "$mx" -gt "$RSS_MAX" ] && RSS_MAX=$mx
  [ "$t" = "$half" ] && RSS_HALF=$mx
  RSS_END=$mx
  lb=$(client status --json 2>/dev/null | grep -o '"log_bytes":[0-9]*' | cut -d: -f2 | sort -n | tail -1 || echo 0)
  [ "${lb:-0}" -gt "$LOG_MAX" ] && LOG_MAX=$lb
done
wait "$BP"
W2J=$(cat "$DATA/w2.json")
row "W2 2-key txn, replicas 1" 3 1 64 "$W2J"
W2_TXNS=$(echo "$W2J" | jget committed)

echo "scaling: participants 1, 2, 4, 8 (replicas 1, two-key txn, 64 clients)" >&2
SCALE=()
for n in 1 2 4 8; do
  start_cluster "$n" 1
  j=$(bench 64 2 "$SECS")
  SCALE+=("$n participants: $(echo "$j" | jget committed_per_s) txn/s, p99 $(echo "$j" | jget p99_ms) ms")
  JSON_ROWS+=("{\"workload\":\"scaling\",\"participants\":$n,\"replicas\":\"1\",\"clients\":64,\"result\":$j}")
done

# Keys stored: keys.sh (also run alone by make bench-keys): 1,000,000 and 10,000,000 keys, with
# each process's memory and each log's and store's size.
echo "keys stored: W2 at 64 clients over 1,000,000 and 10,000,000 keys" >&2
source "$ROOT/tests/bench/keys.sh"

# TLS against plaintext: W2 at 64 clients, alternated twice on fresh clusters so that both
# see the same machine; the better run of each is compared.
echo "TLS: W2 at 64 clients, TLS and plaintext alternated" >&2
TLS_BEST=0; PLAIN_BEST=0; TLS_RUNS=""; PLAIN_RUNS=""
for round in 1 2; do
  for mode in plain tls; do
    if [ $mode = tls ]; then start_cluster 3 1 tls; else start_cluster 3 1; fi
    j=$(bench 64 2 "$SECS")
    tps=$(echo "$j" | jget committed_per_s)
    JSON_ROWS+=("{\"workload\":\"W2 $mode\",\"participants\":3,\"replicas\":\"1\",\"clients\":64,\"round\":$round,\"result\":$j}")
    echo "  round $round $mode: $tps txn/s, p99 $(echo "$j" | jget p99_ms) ms" >&2
    if [ $mode = tls ]; then record TLS "$tps"; else record PLAIN "$tps"; fi
  done
done
TLS_PCT=$(awk -v t="$TLS_BEST" -v p="$PLAIN_BEST" 'BEGIN { printf "%.0f", (p > 0 ? 100 * t / p : 0) }')

# Metrics: W2 at 64 clients with every node serving /metrics, scraped once a second, against
# no metrics at all (nothing counted), alternated twice on fresh clusters.
echo "metrics: W2 at 64 clients, metrics on (scraped every second) and off, alternated" >&2
scrape() {  # every node's /metrics, once a second, until killed
  while true; do
    for p in $(seq $((BASE + 4)) $((BASE + 7))); do
      (exec 3<>"/dev/tcp/127.0.0.1/$p" && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3 >/dev/null) 2>/dev/null || true
    done
    sleep 1
  done
}
MET_ON_BEST=0; MET_OFF_BEST=0; MET_ON_RUNS=""; MET_OFF_RUNS=""
for round in 1 2; do
  for mode in off on; do
    if [ $mode = on ]; then start_cluster 3 1; scrape & SCRAPER=$!; else start_cluster 3 1 nometrics; fi
    j=$(bench 64 2 "$SECS")
    if [ $mode = on ]; then kill "$SCRAPER" 2>/dev/null; wait "$SCRAPER" 2>/dev/null || true; fi
    tps=$(echo "$j" | jget committed_per_s)
    JSON_ROWS+=("{\"workload\":\"W2 metrics $mode\",\"participants\":3,\"replicas\":\"1\",\"clients\":64,\"round\":$round,\"result\":$j}")
    echo "  round $round metrics $mode: $tps txn/s, p99 $(echo "$j" | jget p99_ms) ms" >&2
    if [ $mode = on ]; then record MET_ON "$tps"; else record MET_OFF "$tps"; fi
  done
done
MET_PCT=$(awk -v a="$MET_ON_BEST" -v b="$MET_OFF_BEST" 'BEGIN { printf "%.0f", (b > 0 ? 100 * a / b : 0) }')

# The etcd decision store: W2 at 64 clients spread over two leaders, a three-member etcd (the
# decision store's smallest fault-tolerant size), alternated twice with the local log on fresh
# clusters; after each etcd run, etcd's own rate for two-key transactions at 64 clients on the
# same etcd, tpc idle. The better run of each is compared.
echo "etcd decision store: W2 at 64 clients, two leaders, three etcd members; local log alternated" >&2
ETCD_BEST=0; LOCAL_BEST=0; ETCD_OWN_BEST=0; ETCD_RUNS=""; LOCAL_RUNS=""; ETCD_OWN_RUNS=""
for round in 1 2; do
  for mode in local etcd; do
    if [ $mode = etcd ]; then
      start_cluster 3 1 etcd
      LEADERS="127.0.0.1:$BASE,127.0.0.1:$((BASE + 4))"
    else
      start_cluster 3 1
    fi
    j=$(bench 64 2 "$SECS")
    tps=$(echo "$j" | jget committed_per_s)
    JSON_ROWS+=("{\"workload\":\"W2 decisions $mode\",\"participants\":3,\"replicas\":\"1\",\"clients\":64,\"round\":$round,\"result\":$j}")
    echo "  round $round $mode: $tps txn/s, p99 $(echo "$j" | jget p99_ms) ms" >&2
    if [ $mode = etcd ]; then
      record ETCD "$tps"
      eps=$(sed -n 's/.*decisions *in etcd at \([^ ]*\).*/\1/p' "$DATA/cluster.out")
      ej=$("$ETCD_BENCH" "$eps" 64 "$SECS")
      own=$(echo "$ej" | jget txn_per_s)
      JSON_ROWS+=("{\"workload\":\"etcd own 2-key txn\",\"members\":3,\"clients\":64,\"round\":$round,\"result\":$ej}")
      echo "  round $round etcd's own 2-key txn: $own txn/s, p99 $(echo "$ej" | jget p99_ms) ms" >&2
      record ETCD_OWN "$own"
      LEADERS=""
    else
      record LOCAL "$tps"
    fi
  done
done
ETCD_PCT=$(awk -v e="$ETCD_BEST" -v l="$LOCAL_BEST" 'BEGIN { printf "%.0f", (l > 0 ? 100 * e / l : 0) }')

# Availability (docs/membership.md): W1 puts at 64 clients on 3 participants with --replicas 2.
# One participant is killed (kill -9) and the next 30 s are measured: the share of writes that
# committed, and their p50 and p99. Then, on a fresh cluster under the same load, a participant
# is out for 10 s and restarted with its data directory: how long until it is in-sync again,
# and the keys and bytes its copy brought.
echo "availability: a participant killed under W1 at 64 clients (3 participants, --replicas 2)" >&2
part_pid() { pgrep -f -- "--data-dir $DATA/c/participant-$1( |\$)" | head -1; }
leader_stat() {  # a field of the leader's STATS line
  (exec 3<>"/dev/tcp/127.0.0.1/$BASE" && printf 'STATS\n' >&3 && head -1 <&3) 2>/dev/null |
    tr -d '\r' | tr ' ' '\n' | sed -n "s/^$1=//p"
}
start_cluster 3 2 nometrics
kill -9 "$(part_pid 3)"
AJ=$(bench 64 1 30)
A_OK=$(echo "$AJ" | jget committed)
A_ERR=$(echo "$AJ" | jget errors)
A_ABORTS=$(echo "$AJ" | sed -n 's/.*"aborts":{\([^}]*\)}.*/\1/p' | tr ',' '\n' | cut -d: -f2 | awk '{ s += $1 } END { print s + 0 }')
A_RATE=$(awk -v ok="$A_OK" -v bad="$((A_ERR + A_ABORTS))" 'BEGIN { printf "%.2f", (ok + bad > 0 ? 100 * ok / (ok + bad) : 0) }')
A_P50=$(echo "$AJ" | jget p50_ms); A_P99=$(echo "$AJ" | jget p99_ms)
JSON_ROWS+=("{\"workload\":\"30 s after a participant is killed\",\"participants\":3,\"replicas\":\"2\",\"clients\":64,\"result\":$AJ}")
echo "  30 s after the kill: $A_OK committed, $A_ABORTS aborted, $A_ERR errors ($A_RATE% committed), p50 $A_P50 ms, p99 $A_P99 ms" >&2

echo "catch-up: a participant out for 10 s under W1 at 64 clients, then restarted" >&2
start_cluster 3 2 nometrics
bench 64 1 $((SECS + 30)) >"$DATA/catchup.json" &
BP=$!
sleep 2
kill -9 "$(part_pid 3)"
sleep 10
"$TPC" participant --port $((BASE + 3)) --id 3 --data-dir "$DATA/c/participant-3" --log-level warn \
  >"$DATA/p3.out" 2>&1 &
P3=$!
T0=$(date +%s%N)
C_MS=""; for _ in $(seq 1 600); do
  if [ "$(leader_stat rejoins)" = 1 ]; then C_MS=$(( ($(date +%s%N) - T0) / 1000000 )); break; fi
  sleep 0.1
done
C_KEYS=$(leader_stat caught_up_keys); C_BYTES=$(leader_stat caught_up_bytes); C_CORE_MS=$(leader_stat last_catchup_ms)
wait "$BP" || true
kill -TERM "$P3" 2>/dev/null || true; wait "$P3" 2>/dev/null || true
echo "  in-sync again ${C_MS:-never} ms after its restart (the copy itself ${C_CORE_MS} ms): $C_KEYS keys, $C_BYTES bytes copied" >&2
# Member add under load: member.sh (also run alone by make bench-member).
source "$ROOT/tests/bench/member.sh"
# Value size: values.sh (also run alone).
echo "values: W1 with 100-byte, 10 KiB and 1 MiB values" >&2
source "$ROOT/tests/bench/values.sh"
# Server CPU per committed transaction: cost.sh (also run alone by make bench-cost).
echo "cost: server CPU per committed transaction, W1 and W2 at 64 clients, plaintext and TLS" >&2
source "$ROOT/tests/bench/cost.sh"

ETCD_X=$(awk -v e="$ETCD_BEST" -v o="$ETCD_OWN_BEST" 'BEGIN { printf "%.1f", (o > 0 ? e / o : 0) }')
# The issue's yardstick: W2 at 64 clients over TLS (the default of make run) against etcd's own
# two-key transaction, both from this run.
TLS_X=$(awk -v t="$TLS_BEST" -v o="$ETCD_OWN_BEST" 'BEGIN { printf "%.1f", (o > 0 ? t / o : 0) }')
PLAIN_X=$(awk -v t="$PLAIN_BEST" -v o="$ETCD_OWN_BEST" 'BEGIN { printf "%.1f", (o > 0 ? t / o : 0) }')
stop_cluster

{
  echo
  echo "tpc benchmark on $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
  echo "floor: fdatasync p50 ${FSYNC} us, loopback RTT p50 ${RTT} us; one commit >= 2 RTT + 2 fdatasync = ${FLOOR_US} us"
  printf '%-26s %3s %3s %5s %10s %8s %8s %8s %8s %8s %8s\n' workload P R cli "txn/s" "p50 ms" "p90 ms" "p99 ms" "p99.9" "max ms" "p50/flr"
  for r in "${ROWS[@]}"; do echo "$r"; done
  for s in "${SCALE[@]}"; do echo "scaling: $s"; done
  printf 'W2, 64 clients:  plaintext %10s txn/s   TLS 1.3 %10s txn/s   TLS/plaintext %s%% (runs: plaintext %s; TLS %s)\n' \
    "$PLAIN_BEST" "$TLS_BEST" "$TLS_PCT" "$PLAIN_RUNS" "$TLS_RUNS"
  printf 'W2, 64 clients:  metrics off %10s txn/s   metrics on, scraped every second %10s txn/s (%s%% of off; runs: off %s; on %s)\n' \
    "$MET_OFF_BEST" "$MET_ON_BEST" "$MET_PCT" "$MET_OFF_RUNS" "$MET_ON_RUNS"
  printf 'W2, 64 clients:  local log %10s txn/s   etcd decisions, 2 leaders %10s txn/s (%s%% of local)   etcd own 2-key txn %10s txn/s (tpc = %sx)\n' \
    "$LOCAL_BEST" "$ETCD_BEST" "$ETCD_PCT" "$ETCD_OWN_BEST" "$ETCD_X"
  echo "  runs: local $LOCAL_RUNS; etcd decisions $ETCD_RUNS; etcd own $ETCD_OWN_RUNS (three etcd members on this machine)"
  printf 'W2, 64 clients, against etcd own 2-key txn (%s txn/s):  TLS %s txn/s = %sx   plaintext %s txn/s = %sx\n' \
    "$ETCD_OWN_BEST" "$TLS_BEST" "$TLS_X" "$PLAIN_BEST" "$PLAIN_X"
  echo "availability (W1, 64 clients, 3 participants, --replicas 2): in the 30 s after a participant is killed, $A_RATE% of writes committed ($A_OK committed, $A_ABORTS aborted, $A_ERR errors), p50 $A_P50 ms, p99 $A_P99 ms"
  echo "catch-up after 10 s out under that load: in-sync ${C_MS:-never} ms after the restart (copy ${C_CORE_MS} ms), $C_KEYS keys, $C_BYTES bytes"
  for l in "${MEMBER_LINES[@]}"; do echo "$l"; done
  for l in "${KEYS_LINES[@]}"; do echo "$l"; done
  for l in "${VALUE_LINES[@]}"; do echo "$l"; done
  for l in "${COST_LINES[@]}"; do echo "$l"; done
  echo "memory (W2, 64 clients, ${MEM_SECS}s, $W2_TXNS txns): max RSS of any node $((RSS_MAX / 1024)) MiB; at half time $((${RSS_HALF:-0} / 1024)) MiB, at the end $((${RSS_END:-0} / 1024)) MiB; largest log $((LOG_MAX / 1024)) KiB"
}
{
  echo "{\"machine\":{\"cores\":$(nproc),\"kernel\":\"$(uname -r)\"},\"floor\":$FLOORJ,"
  echo "\"tls\":{\"plaintext_txn_per_s\":$PLAIN_BEST,\"tls_txn_per_s\":$TLS_BEST,\"percent\":$TLS_PCT},"
  echo "\"metrics\":{\"off_txn_per_s\":$MET_OFF_BEST,\"on_txn_per_s\":$MET_ON_BEST,\"percent\":$MET_PCT},"
  echo "\"etcd\":{\"local_txn_per_s\":$LOCAL_BEST,\"etcd_txn_per_s\":$ETCD_BEST,\"percent_of_local\":$ETCD_PCT,\"etcd_own_txn_per_s\":$ETCD_OWN_BEST,\"times_etcd_own\":$ETCD_X,\"tls_times_etcd_own\":$TLS_X,\"plaintext_times_etcd_own\":$PLAIN_X},"
  echo "\"availability\":{\"committed_percent\":$A_RATE,\"committed\":$A_OK,\"aborted\":$A_ABORTS,\"errors\":$A_ERR,\"p50_ms\":$A_P50,\"p99_ms\":$A_P99,\"catchup_ms\":${C_MS:-null},\"copy_ms\":${C_CORE_MS:-null},\"catchup_keys\":${C_KEYS:-0},\"catchup_bytes\":${C_BYTES:-0}},"
  ( IFS=,; echo "\"member_add\":[${MEMBER_JSON[*]}]," )
  ( IFS=,; echo "\"cpu_per_txn\":[${COST_JSON[*]}]," )
  ( IFS=,; echo "\"value_size\":[${VALUE_JSON[*]}]," )
  ( IFS=,; echo "\"keys_stored\":[${KEYS_JSON[*]}]," )
  echo "\"memory\":{\"seconds\":$MEM_SECS,\"max_rss_kib\":$RSS_MAX,\"half_rss_kib\":${RSS_HALF:-0},\"end_rss_kib\":${RSS_END:-0},\"max_log_bytes\":$LOG_MAX},"
  echo "\"runs\":["
  ( IFS=,; echo "${JSON_ROWS[*]}" )
  echo "]}"
} >"$OUT"
echo "results written to $OUT" >&2
