// The members change online (docs/membership.md): tpc client member remove under write load,
// with real processes and kill -9.
#include <doctest/doctest.h>

#include <fmt/format.h>

#include "common/util.h"
#include "harness.h"

using namespace tpc;
using namespace tpc::it;

namespace {
// `tpc client member ARGS...` as a process of its own (it waits for the change to end), its
// output in DIR/NAME.log.
std::unique_ptr<Process> member_command(Cluster& c, const std::vector<std::string>& args,
                                        const std::string& name) {
  std::vector<std::string> argv{TPC_BINARY, "client", "--leader", c.leader_addr(), "member"};
  argv.insert(argv.end(), args.begin(), args.end());
  return std::make_unique<Process>(argv, c.dir() + "/" + name + ".log");
}

// Every key the writer wrote reads (through the leader) as one of the values it may hold.
int check_reads(Cluster& c, Writer& w) {
  int wrong = 0;
  for (auto& [k, values] : w.may_hold) {
    auto r = c.client({"get", k});
    std::string v = r.out.empty() ? r.out : r.out.substr(0, r.out.size() - 1);
    if (r.code != 0 || !values.count(v)) {
      ++wrong;
      MESSAGE("key " << k << " reads as '" << v << "' (exit " << r.code << ")");
    }
  }
  return wrong;
}
}  // namespace

TEST_SUITE("membership") {
  TEST_CASE("member remove under writes, then kill -9 the removed node: reads and writes go on") {
    Cluster::Options o;
    o.participants = 3;
    o.replicas = 2;
    Cluster c(o);
    REQUIRE(c.wait_ready());
    Writer w(c, 300);
    for (int i = 0; i < 300; ++i) REQUIRE(w.put());
    long before[3];
    for (int i = 0; i < 3; ++i) before[i] = c.stat(i, "keys");
    CHECK(before[0] + before[1] + before[2] == 600);

    // Participant id 2 leaves while one writer keeps writing.
    auto cmd = member_command(c, {"remove", "2"}, "remove");
    int during = 0, during_ok = 0;
    int64_t start = now_ms();
    while (cmd->alive() && now_ms() - start < 60000 && during < 100000) {
      ++during;
      during_ok += w.put();
    }
    int code = cmd->wait_exit(5000);
    std::string said = read_file(c.dir() + "/remove.log");
    MESSAGE(
        fmt::format("member remove took {} ms: {} of {} writes committed meanwhile; it said: {}",
                    now_ms() - start, during_ok, during, said));
    for (auto& [why, n] : w.failures) MESSAGE(why << ": " << n);
    REQUIRE(code == 0);
    CHECK(contains(said, "removed: " + c.participant_addr(1)));
    auto list = c.client({"--json", "member", "list"});
    CHECK(
        contains(list.out, "\"address\":\"" + c.participant_addr(1) + "\",\"state\":\"removed\""));
    // Removing it again says it is removed; an unknown id is refused.
    auto again = c.client({"member", "remove", "2"});
    CHECK(again.code == 0);
    CHECK(c.client({"member", "remove", "9"}).code == 1);
    // Only its keys moved: each of the two left holds every key (two replicas).
    CHECK(c.stat(0, "keys") == 300);
    CHECK(c.stat(2, "keys") == 300);

    // kill -9 the removed node: every write and every read succeeds.
    c.participant(1)->kill9();
    int after = 0, after_ok = 0;
    for (int i = 0; i < 600; ++i, ++after) after_ok += w.put();
    MESSAGE(fmt::format("after the kill: {} of {} writes committed", after_ok, after));
    CHECK(after_ok == after);
    CHECK(check_reads(c, w) == 0);
    CHECK(c.stat(-1, "out") == 0);
  }

  TEST_CASE("a leader killed at each step of member remove recovers one membership") {
    // The removal's steps: leaving (a membership change), the copy of the keys each slot
    // gains (SYNC pages), the cutover (a membership change).
    const std::vector<std::pair<std::string, int>> steps = {{"leader/beforeMembershipFsync", 1},
                                                            {"leader/afterMembershipFsync", 1},
                                                            {"leader/sendSyncPage", 1},
                                                            {"leader/beforeMembershipFsync", 2},
                                                            {"leader/afterMembershipFsync", 2}};
    for (auto& [fp, nth] : steps) {
      CAPTURE(fp);
      CAPTURE(nth);
      Cluster::Options o;
      o.participants = 3;
      o.replicas = 2;
      o.leader_env = {{"TPC_FAILPOINTS",
                       fmt::format("{}={}1*crash", fp,
                                   nth > 1 ? fmt::format("{}*off->", nth - 1) : std::string())}};
      Cluster c(o);
      REQUIRE(c.wait_ready());
      Writer w(c, 60);
      for (int i = 0; i < 120; ++i) REQUIRE(w.put());
      auto cmd = member_command(c, {"remove", "3"}, "remove");
      bool crashed = false;
      int64_t start = now_ms();
      // Writes go on; the leader that crashed at its failpoint is restarted without it. The
      // command asks again and returns once the removal is done.
      for (int i = 0; i < 100000 && now_ms() - start < 40000 && cmd->alive(); ++i) {
        if (!c.leader()->alive()) {
          crashed = true;
          c.start_leader({{"TPC_FAILPOINTS", ""}});
        }
        w.put();
      }
      CHECK(crashed);
      REQUIRE(cmd->wait_exit(5000) == 0);
      auto list = c.client({"--json", "member", "list"});
      CHECK(list.code == 0);
      CHECK(contains(list.out,
                     "\"address\":\"" + c.participant_addr(2) + "\",\"state\":\"removed\""));
      CHECK_FALSE(contains(list.out, "leaving"));
      CHECK(c.stat(-1, "in_sync") == 2);
      // The removed node killed: every key reads as acknowledged, from the two left.
      c.participant(2)->kill9();
      CHECK(check_reads(c, w) == 0);
      for (int i = 0; i < 2; ++i) CHECK(c.stat(i, "keys") == 60);
    }
  }
}
