#!/usr/bin/env bash
# Throughput and latency against value size: W1 (2 participants, full replication, one-key
# puts) with 100-byte and 10 KiB values at 64 clients, and 1 MiB values at 8 clients, every
# node with its default settings (a value travels as a data block: 1 MiB fits the default
# --max-message, docs/protocol.md).
# Part of make bench (run.sh sources it); alone: bash tests/bench/values.sh.
# Sets VALUE_LINES (text) and VALUE_JSON (JSON objects).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then source "$(dirname "$0")/lib.sh" standalone; fi

VALUE_LINES=()
VALUE_JSON=()
for case in "100 64" "10240 64" "1048576 8"; do
  read -r size clients <<<"$case"
  start_cluster 2 0 nometrics
  j=$(client bench --clients "$clients" --ops 1 --duration "${SECS}s" --keys 1000 \
    --value-size "$size" --json)
  stop_cluster
  tps=$(echo "$j" | jget committed_per_s)
  p50=$(echo "$j" | jget p50_ms)
  p99=$(echo "$j" | jget p99_ms)
  mbs=$(awk -v t="$tps" -v s="$size" 'BEGIN { printf "%.1f", t * s / 1048576 }')
  VALUE_LINES+=("$(printf 'W1 with %7s-byte values, %2s clients: %9s txn/s (%s MiB/s of values), p50 %s ms, p99 %s ms' \
    "$size" "$clients" "$tps" "$mbs" "$p50" "$p99")")
  VALUE_JSON+=("{\"value_size\":$size,\"clients\":$clients,\"mib_per_s\":$mbs,\"result\":$j}")
  echo "  $size-byte values, $clients clients: $tps txn/s ($mbs MiB/s), p50 $p50 ms, p99 $p99 ms" >&2
done

standalone_print VALUE_LINES
