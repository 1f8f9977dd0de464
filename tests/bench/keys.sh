#!/usr/bin/env bash
# Throughput against keys stored: W2 (3 participants, --replicas 1, two-key transactions, 64
# clients, 100-byte values) over 1,000,000 and 10,000,000 keys, each filled first (16 clients,
# 64 keys per transaction). For each: the fill's rate, the run's throughput and p99, the largest
# resident memory of each process during the run (the leader and every participant, sampled each
# second), and the size of each node's log and store afterwards.
# Part of make bench (run.sh sources it); alone: bash tests/bench/keys.sh (make bench-keys).
# BENCH_KEYS overrides the sizes ("1000000 10000000"). Sets KEYS_LINES (text) and KEYS_JSON.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then source "$(dirname "$0")/lib.sh" standalone; fi

KEYS_LINES=()
KEYS_JSON=()
for nkeys in ${BENCH_KEYS:-1000000 10000000}; do
  start_cluster 3 1 nometrics
  t0=$(date +%s%N)
  fill=$(client bench --clients 16 --ops 64 --keys "$nkeys" --fill --json)
  fill_s=$(awk -v t=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.1f", t / 1e9 }')
  fill_rate=$(awk -v n="$nkeys" -v s="$fill_s" 'BEGIN { printf "%.0f", n / s }')
  [ "$(echo "$fill" | jget errors)" = 0 ] || echo "  the fill had errors: $fill" >&2
  # Every server process: the leader and the participants (not tpc cluster, not the client).
  declare -A RSS=()
  NAMES=()
  for p in $(server_pids); do
    name=$(tr '\0' ' ' <"/proc/$p/cmdline" | grep -o -- "--data-dir [^ ]*" | sed 's|.*/||')
    NAMES+=("$p:$name"); RSS[$p]=0
  done
  client bench --clients 64 --ops 2 --duration "${SECS}s" --keys "$nkeys" --value-size 100 \
    --keep --json >"$DATA/keys.json" &
  BP=$!
  while kill -0 "$BP" 2>/dev/null; do
    for p in "${!RSS[@]}"; do
      kb=$(rss_kib "$p")
      [ "${kb:-0}" -gt "${RSS[$p]}" ] && RSS[$p]=$kb
    done
    sleep 1
  done
  wait "$BP"
  j=$(cat "$DATA/keys.json")
  stop_cluster
  tps=$(echo "$j" | jget committed_per_s); p99=$(echo "$j" | jget p99_ms)
  procs=(); pjson=()
  for e in $(printf '%s\n' "${NAMES[@]}" | sort -t: -k2); do
    p=${e%%:*}; name=${e#*:}; dir="$DATA/c/$name"
    log=$(stat -c %s "$dir/txlog" 2>/dev/null || echo 0)
    store=0
    for f in "$dir"/*.db "$dir"/*.db-wal; do [ -f "$f" ] && store=$((store + $(stat -c %s "$f"))); done
    procs+=("$name $((RSS[$p] / 1024)) MiB, log $((log / 1048576)) MiB, store $((store / 1048576)) MiB")
    pjson+=("{\"node\":\"$name\",\"max_rss_kib\":${RSS[$p]},\"log_bytes\":$log,\"store_bytes\":$store}")
  done
  unset RSS
  KEYS_LINES+=("$(printf 'W2 over %8s keys: %7s txn/s, p99 %s ms (filled in %s s, %s keys/s); %s' \
    "$nkeys" "$tps" "$p99" "$fill_s" "$fill_rate" "$(IFS=';'; echo "${procs[*]}" | sed 's/;/; /g')")")
  KEYS_JSON+=("{\"keys\":$nkeys,\"fill_seconds\":$fill_s,\"fill_keys_per_s\":$fill_rate,\"fill\":$fill,\"result\":$j,\"nodes\":[$(IFS=,; echo "${pjson[*]}")]}")
  echo "  ${KEYS_LINES[-1]}" >&2
done

standalone_print KEYS_LINES
