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
#include <cstdint>
#include <string>
#include <vector>

namespace tpc::sim {

struct Options {
  uint64_t seed = 1;
  bool trace = false;      // keep a readable event trace in Report::trace
  int ops_per_client = 0;  // 0: chosen by the seed
};

struct Report {
  uint64_t events = 0, crashes = 0, faults = 0, txns = 0;
  uint64_t damaged = 0;  // logs damaged in the middle at a crash (and refused at the restart)
  // Operators' forced outcomes (in one seed of seven), and those that contradicted the leader.
  uint64_t heuristics = 0, mismatches = 0;
  std::vector<std::string> violations;
  std::string trace;
  std::string shape;  // the cluster the seed chose, one line
};

Report run(const Options& opt);

}  // namespace tpc::sim
