#!/usr/bin/env bash
# Member add under load (docs/membership.md): a fourth participant joins a cluster of three
# (--replicas 2) holding 10,000 and then 100,000 keys, while W1 puts run at 64 clients over
# those keys. Reports how long `tpc client member add` took, what it copied, and the throughput
# in the seconds the move overlaps as a share of the other seconds of the run (steady state).
# Part of make bench (run.sh sources it); alone: bash tests/bench/member.sh (make bench-member).
# Sets MEMBER_LINES (text) and MEMBER_JSON (JSON objects).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then source "$(dirname "$0")/lib.sh" standalone; fi

MEMBER_LINES=()
MEMBER_JSON=()
# share PER_SECOND FROM_S TO_S: mean of the buckets that overlap [FROM_S, TO_S) over the mean
# of the others (the first two, warming up, and the last, partial, left out), in percent.
move_share() {
  echo "$1" | tr ',' '\n' | awk -v a="$2" -v b="$3" '
    { v[NR - 1] = $1; n = NR }
    END {
      for (i = 0; i < n; ++i) {
        if (i + 1 > a && i < b) { d += v[i]; nd++ }
        else if (i >= 2 && i < n - 1) { o += v[i]; no++ }
      }
      if (nd == 0 || no == 0 || o == 0) { print "null"; exit }
      printf "%.0f", 100 * (d / nd) / (o / no)
    }'
}

for K in 10000 100000; do
  echo "member add: a fourth participant joins three (--replicas 2) holding $K keys, under W1 at 64 clients" >&2
  start_cluster 3 2 nometrics
  client bench --clients 64 --ops 1 --keys "$K" --value-size 100 --fill --json >/dev/null
  NEWPORT=$((BASE + 4))
  while port_busy "$NEWPORT"; do NEWPORT=$((NEWPORT + 1)); done
  "$TPC" participant --port "$NEWPORT" --id 4 --data-dir "$DATA/c/participant-4" --log-level warn \
    >"$DATA/p4.out" 2>&1 &
  P4=$!
  RUN_S=$((SECS + 10))
  T0=$(date +%s%N)
  client bench --clients 64 --ops 1 --duration "${RUN_S}s" --keys "$K" --value-size 100 --keep \
    --json >"$DATA/member.json" &
  BP=$!
  sleep 4
  T1=$(date +%s%N)
  SAID=$(client member add "127.0.0.1:$NEWPORT" 2>&1) || SAID="failed: $SAID"
  T2=$(date +%s%N)
  wait "$BP" || true
  kill -TERM "$P4" 2>/dev/null || true; wait "$P4" 2>/dev/null || true
  stop_cluster
  ADD_MS=$(( (T2 - T1) / 1000000 ))
  PER_S=$(sed -n 's/.*"per_second":\[\([^]]*\)\].*/\1/p' "$DATA/member.json")
  FROM=$(awk -v a="$T1" -v z="$T0" 'BEGIN { printf "%.3f", (a - z) / 1e9 }')
  TO=$(awk -v a="$T2" -v z="$T0" 'BEGIN { printf "%.3f", (a - z) / 1e9 }')
  SHARE=$(move_share "$PER_S" "$FROM" "$TO")
  MEMBER_LINES+=("member add to 3 participants (--replicas 2) holding $K keys, W1 at 64 clients: ${ADD_MS} ms; throughput while it ran ${SHARE}% of steady state (target >= 50%); it said: $SAID")
  MEMBER_JSON+=("{\"keys\":$K,\"add_ms\":$ADD_MS,\"throughput_percent\":$SHARE,\"per_second\":[$PER_S],\"move_from_s\":$FROM,\"move_to_s\":$TO}")
  echo "  ${ADD_MS} ms; throughput while it ran ${SHARE}% of steady state; per second: $PER_S" >&2
done

standalone_print MEMBER_LINES
