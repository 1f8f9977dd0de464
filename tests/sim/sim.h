// A deterministic simulator of whole tpc clusters (docs/simulation.md).
//
// Leaders, participants and clients run in one thread from the real cores (leader::Core,
// participant::Core), over a simulated network (delay, drop as a connection reset,
// duplicate, reorder, partition), simulated logs that lose every unforced byte when their
// node crashes (and may keep a torn prefix of them), a simulated store that loses what was
// not yet durable, and a simulated clock. One seeded PRNG drives every choice: the same seed
// gives the same run, event for event. After every event, and at the end of a run after
// healing, the checker looks for violations of the invariants of docs/recovery.md.
#pragma once
#include <bitset>
#include <cstdint>
#include <string>
#include <vector>

namespace tpc::sim {

struct Options {
  uint64_t seed = 1;
  bool trace = false;      // keep a readable event trace in Report::trace
  int ops_per_client = 0;  // 0: chosen by the seed
};

// What a run exercised; tpc_sim's summary counts the runs of each, so that coverage shows.
enum Feature {
  f_two_leaders,    // two leaders over the same participants
  f_crashes,        // a node crashed
  f_partitions,     // a leader and a participant were partitioned
  f_duplicates,     // a peer message was delivered twice
  f_damaged_log,    // a log damaged in the middle, refused at the restart
  f_rewrites,       // a log rewritten by compaction
  f_pressure,       // ... under pressure (past 1 KiB)
  f_rewrite_crash,  // a crash right after a rewrite
  f_operators,      // an operator forced an outcome
  f_pauses,         // a backup's pause
  f_long_outages,   // a leader down past 30 s
  f_check_other,    // a commit that checked a key it did not write
  f_shared_store,   // leaders over a shared decision store
  f_store_faults,   // the decision store lost its quorum, or a leader was cut off from it
  f_settles,        // a leader settled another's transaction as aborted (takeover)
  f_io_crashes,     // a node crashed at a failpoint of its executor (at an I/O)
  f_exclusions,     // a participant marked out (unreachable past --exclude-after)
  f_rejoins,        // a participant back in-sync after catching up
  f_adopted,        // a leader took a membership change another made (shared store)
  f_redecided,      // a decision refused as of an old membership, taken again under the new
  f_epoch_refused,  // a participant refused a request of an older membership epoch
  f_claim_race,     // leaders claimed the creation of the cluster at once, from an empty store
  f_removals,       // a participant removed (member remove) under load
  f_adds,           // a participant added (member add) under load
  f_replaces,       // a participant's node replaced by a new one (member replace) under load
  f_removed_out,    // a participant removed while out or unreachable (leaving-out)
  k_feature_count
};
inline constexpr const char* k_feature_names[k_feature_count] = {"two leaders",
                                                                 "crashes",
                                                                 "partitions",
                                                                 "duplicates",
                                                                 "damaged logs",
                                                                 "rewrites",
                                                                 "rewrites under pressure",
                                                                 "crashes after a rewrite",
                                                                 "forced outcomes",
                                                                 "pauses",
                                                                 "long outages",
                                                                 "checks of keys not written",
                                                                 "shared decision store",
                                                                 "decision-store faults",
                                                                 "takeovers",
                                                                 "crashes at an I/O",
                                                                 "exclusions",
                                                                 "rejoins",
                                                                 "changes adopted",
                                                                 "decisions taken again",
                                                                 "older epochs refused",
                                                                 "creations raced",
                                                                 "members removed",
                                                                 "members added",
                                                                 "members replaced",
                                                                 "members removed while out"};

struct Report {
  std::bitset<k_feature_count> features;
  uint64_t events = 0, crashes = 0, faults = 0, txns = 0;
  uint64_t damaged = 0;
  uint64_t unknown = 0;  // requests whose client gave up asking RESULT (shared store only)  // logs
                         // damaged in the middle at a crash (and refused at the restart)
  // Operators' forced outcomes (in one seed of seven), and those that contradicted the leader.
  uint64_t heuristics = 0, mismatches = 0;
  std::vector<std::string> violations;
  std::string trace;
  std::string shape;  // the cluster the seed chose, one line
};

Report run(const Options& opt);

}  // namespace tpc::sim
