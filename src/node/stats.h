// What a node reports of itself: one typed snapshot, taken by its server, from which the
// STATS line (docs/protocol.md), the metrics (docs/monitoring.md) and `tpc client status`
// (its table and --json, from the decoded line) are all made. A field is named once, in the
// table of stats.cpp, with the roles that report it.
#pragma once
#include <cstdint>
#include <string>

#include "common/status.h"

namespace tpc::node {

struct Stats {
  std::string role;  // "leader" or "participant": which fields the line has
  // Both roles.
  std::string id, cluster, node;  // cluster empty: a participant not joined yet ("-")
  int64_t committed = 0, aborted = 0;
  int64_t heuristic = 0;  // leader: mismatches recorded; participant: resolve --force decisions
  int64_t epoch = 0;      // the membership epoch in effect (leader), last given (participant)
  int64_t log_bytes = 0, log_syncs = 0, uptime_ms = 0;
  // Leader.
  int64_t incarnation = 0, replicas = 0;
  int64_t active = 0;  // transactions collecting votes or finishing their commit
  int64_t peers_up = 0, peers = 0;
  int64_t in_sync = 0, catching_up = 0, out = 0;
  int64_t exclusions = 0, rejoins = 0;              // membership changes this leader made
  int64_t caught_up_keys = 0, caught_up_bytes = 0;  // by finished copies
  int64_t copying_keys = 0, copying_bytes = 0;      // by the copy under way
  int64_t catchup_ms = 0;                           // time spent by finished copies
  int64_t last_catchup_ms = -1;                     // the last finished copy's; -1: none yet
  std::string decisions;                            // "local" or "etcd"
  std::string store;  // with etcd: "up" (answers, lease held) or "down"; else empty
  // Participant.
  int64_t keys = 0;
  int64_t prepared = 0;            // transactions prepared here ("in_doubt" on the line, as ever)
  int64_t applying = 0;            // of those, commits being applied: their outcome is known
  int64_t oldest_in_doubt_ms = 0;  // age of the oldest in doubt; 0: none

  // Prepared here with the outcome not known yet.
  int64_t in_doubt() const { return prepared - applying; }
};

// "STATS id=... ..." with the fields of `s.role`.
std::string encode(const Stats& s);
// A STATS line of either role (the role told by its fields). Fields it lacks keep their
// defaults (an older node); PROTO when it is not a STATS line or a number is not one.
Result<Stats> decode_stats(std::string_view line);

}  // namespace tpc::node
