#!/usr/bin/env bash
# Server CPU per committed transaction: W1 (2 participants, full replication, one-key puts) and
# W2 (3 participants, --replicas 1, two-key transactions), each at 64 clients, in plaintext and
# over TLS. The CPU is every tpc server process's user and system time (/proc/PID/stat, the
# leader and the participants; not the bench client), read before and after the run, divided by
# the transactions it committed; then the same per role (the leader, the participants together),
# with the bytes each role wrote per transaction (/proc/PID/io: wchar, what its write calls to
# files carried; write_bytes, what it dirtied for the disk: whole pages) and its file read and
# write calls (syscr + syscw; socket sends and receives are not counted there).
# docs/design.md's cost model is built on these rows.
# Part of make bench (run.sh sources it); alone: bash tests/bench/cost.sh (make bench-cost).
# Sets COST_LINES (text) and COST_JSON (JSON objects).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then source "$(dirname "$0")/lib.sh" standalone; fi

COST_LINES=()
COST_JSON=()
TICK=$(getconf CLK_TCK)
# role_counters ROLE: "USER SYS WCHAR DISK CALLS" of the running cluster's ROLE processes
# (leader or participant), summed: user and system clock ticks, then /proc/PID/io's counters.
role_counters() {
  local u=0 s=0 w=0 d=0 c=0 p f
  for p in $(server_pids "$1"); do
    # Fields 14 and 15 of /proc/PID/stat (after the command name, which may hold spaces).
    f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    u=$((u + $(echo "$f" | cut -d' ' -f12)))
    s=$((s + $(echo "$f" | cut -d' ' -f13)))
    while read -r k v; do
      case $k in
        wchar:) w=$((w + v)) ;;
        write_bytes:) d=$((d + v)) ;;
        syscr:|syscw:) c=$((c + v)) ;;
      esac
    done <"/proc/$p/io"
  done
  echo "$u $s $w $d $c"
}
ROLE_LINES=()

for mode in plain tls; do
  for w in W1 W2; do
    if [ $w = W1 ]; then n=2; r=0; ops=1; else n=3; r=1; ops=2; fi
    if [ $mode = tls ]; then start_cluster "$n" "$r" "tls nometrics"; else start_cluster "$n" "$r" nometrics; fi
    # A short warm-up (connections made, caches filled), then the measured run.
    bench 64 "$ops" 2 >/dev/null
    read -r lu0 ls0 lw0 ld0 lc0 <<<"$(role_counters leader)"
    read -r pu0 ps0 pw0 pd0 pc0 <<<"$(role_counters participant)"
    j=$(bench 64 "$ops" "$SECS")
    read -r lu1 ls1 lw1 ld1 lc1 <<<"$(role_counters leader)"
    read -r pu1 ps1 pw1 pd1 pc1 <<<"$(role_counters participant)"
    stop_cluster
    lt=$((lu1 - lu0 + ls1 - ls0)); pt=$((pu1 - pu0 + ps1 - ps0))  # each role's ticks
    u=$((lu1 - lu0 + pu1 - pu0)); s=$((ls1 - ls0 + ps1 - ps0))  # every server's
    txns=$(echo "$j" | jget committed)
    tps=$(echo "$j" | jget committed_per_s)
    read -r us_user us_sys us_all <<<"$(awk -v u="$u" -v s="$s" -v t="$TICK" -v n="$txns" \
      'BEGIN { if (n <= 0) { print "null null null"; exit }
               printf "%.1f %.1f %.1f", u * 1e6 / t / n, s * 1e6 / t / n, (u + s) * 1e6 / t / n }')"
    COST_LINES+=("$(printf 'server CPU per committed txn, %s at 64 clients, %-9s %7s us (user %s, system %s) at %s txn/s' \
      "$w" "$mode:" "$us_all" "$us_user" "$us_sys" "$tps")")
    COST_JSON+=("{\"workload\":\"$w\",\"mode\":\"$mode\",\"clients\":64,\"committed\":$txns,\"txn_per_s\":$tps,\"cpu_us_per_txn\":$us_all,\"user_us_per_txn\":$us_user,\"system_us_per_txn\":$us_sys}")
    echo "  $w $mode: $us_all us of server CPU per txn (user $us_user, system $us_sys), $tps txn/s" >&2
    roles=$(awk -v n="$txns" -v t="$TICK" \
      -v lt="$lt" -v lw=$((lw1 - lw0)) -v ld=$((ld1 - ld0)) -v lc=$((lc1 - lc0)) \
      -v pt="$pt" -v pw=$((pw1 - pw0)) -v pd=$((pd1 - pd0)) -v pc=$((pc1 - pc0)) \
      'BEGIN { if (n <= 0) exit
               printf "%.1f %.0f %.0f %.1f %.1f %.0f %.0f %.1f", lt * 1e6 / t / n, lw / n, ld / n, lc / n,
                      pt * 1e6 / t / n, pw / n, pd / n, pc / n }')
    read -r l_us l_w l_d l_c p_us p_w p_d p_c <<<"${roles:-null null null null null null null null}"
    ROLE_LINES+=("$(printf '  per role, %s %-6s leader %6s us, file writes %5s B, disk %5s B, %4s file calls; participants %6s us, file writes %5s B, disk %5s B, %4s file calls' \
      "$w" "$mode:" "$l_us" "$l_w" "$l_d" "$l_c" "$p_us" "$p_w" "$p_d" "$p_c")")
    COST_JSON[-1]="${COST_JSON[-1]%\}},\"leader\":{\"cpu_us\":$l_us,\"wchar_bytes\":$l_w,\"disk_bytes\":$l_d,\"file_calls\":$l_c},\"participants\":{\"cpu_us\":$p_us,\"wchar_bytes\":$p_w,\"disk_bytes\":$p_d,\"file_calls\":$p_c}}"
    echo "${ROLE_LINES[-1]}" >&2
  done
done

COST_LINES+=("per transaction, each role (CPU, bytes its file writes carried, bytes dirtied for the disk, file read and write calls):" "${ROLE_LINES[@]}")
standalone_print COST_LINES
