// tpc_sim: runs seeds of the cluster simulator (docs/simulation.md).
//   tpc_sim [--seeds N] [--start S]     seeds S .. S+N-1 (default 20000 from 1), summary line
//   tpc_sim --seed N [--trace]          one seed; --trace prints its event trace
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "sim.h"

int main(int argc, char** argv) {
  uint64_t start = 1, count = 20000;
  bool one = false, trace = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto num = [&]() -> uint64_t {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "tpc_sim: %s needs a number\n", a.c_str());
        std::exit(2);
      }
      char* end = nullptr;
      uint64_t v = std::strtoull(argv[++i], &end, 10);
      if (*end) {
        std::fprintf(stderr, "tpc_sim: bad number '%s'\n", argv[i]);
        std::exit(2);
      }
      return v;
    };
    if (a == "--seeds")
      count = num();
    else if (a == "--start")
      start = num();
    else if (a == "--seed")
      start = num(), count = 1, one = true;
    else if (a == "--trace")
      trace = true;
    else {
      std::fprintf(stderr, "usage: tpc_sim [--seeds N] [--start S] | --seed N [--trace]\n");
      return 2;
    }
  }
  uint64_t events = 0, crashes = 0, faults = 0, txns = 0, violations = 0, heuristics = 0,
           mismatches = 0;
  uint64_t runs_with[tpc::sim::k_feature_count] = {};
  for (uint64_t seed = start; seed < start + count; ++seed) {
    tpc::sim::Options o;
    o.seed = seed;
    o.trace = trace;
    auto r = tpc::sim::run(o);
    if (trace) std::fputs(r.trace.c_str(), stdout);
    if (one) std::printf("seed %llu: %s\n", (unsigned long long)seed, r.shape.c_str());
    events += r.events;
    crashes += r.crashes;
    faults += r.faults;
    txns += r.txns;
    heuristics += r.heuristics;
    mismatches += r.mismatches;
    for (int f = 0; f < tpc::sim::k_feature_count; ++f) runs_with[f] += r.features[f];
    if (!r.violations.empty()) {
      ++violations;
      std::printf("sim: seed %llu: %zu violation(s) (%s)\n", (unsigned long long)seed,
                  r.violations.size(), r.shape.c_str());
      for (auto& v : r.violations) std::printf("  %s\n", v.c_str());
      std::printf("  replay: build/tpc_sim --seed %llu --trace\n", (unsigned long long)seed);
    }
  }
  // One line, the violations last: the runs that exercised each feature, then the totals.
  std::string with;
  for (int f = 0; f < tpc::sim::k_feature_count; ++f)
    with += std::string(f ? ", " : "") + std::to_string(runs_with[f]) + " " +
            tpc::sim::k_feature_names[f];
  std::printf(
      "sim: %llu seeds, %llu events, %llu crashes, %llu faults, %llu txns, %llu forced outcomes "
      "(%llu against the decision); runs with: %s; %llu violations\n",
      (unsigned long long)count, (unsigned long long)events, (unsigned long long)crashes,
      (unsigned long long)faults, (unsigned long long)txns, (unsigned long long)heuristics,
      (unsigned long long)mismatches, with.c_str(), (unsigned long long)violations);
  return violations ? 1 : 0;
}
