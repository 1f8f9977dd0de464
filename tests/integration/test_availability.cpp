// Writes go on when a participant dies, and it rejoins by itself (docs/membership.md). Real
// processes, kill -9.
#include <doctest/doctest.h>

#include <set>

#include <fmt/format.h>

#include "client/connection.h"
#include "common/util.h"
#include "harness.h"
#include "membership/membership.h"

using namespace tpc;
using namespace tpc::it;

namespace {
long leader_stat(Cluster& c, const std::string& field) { return c.stat(-1, field); }

void kill_write_rejoin(int replicas) {
  Cluster::Options o;
  o.participants = 3;
  o.replicas = replicas;
  Cluster c(o);
  REQUIRE(c.wait_ready());
  Writer w(c, 60);
  for (int i = 0; i < 120; ++i) REQUIRE(w.put());

  // kill -9 one participant under write load.
  c.participant(2)->kill9();
  int64_t killed = now_ms();
  int late = 0, late_ok = 0, early = 0, early_ok = 0;
  for (int i = 0; i < 20000 && now_ms() - killed < 14000; ++i) {
    bool after_10s = now_ms() - killed >= 10000;
    bool ok = w.put();
    (after_10s ? late : early) += 1;
    (after_10s ? late_ok : early_ok) += ok;
  }
  MESSAGE(
      fmt::format("replicas {}: in the 10 s after the kill {} of {} writes committed; "
                  "after them {} of {}",
                  replicas ? std::to_string(replicas) : "all", early_ok, early, late_ok, late));
  REQUIRE(late >= 20);
  CHECK(late_ok * 100 >= late * 99);
  CHECK(leader_stat(c, "out") == 1);
  auto list = c.client({"member", "list"});
  CHECK(list.code == 0);
  CHECK(contains(list.out, c.participant_addr(2) + "        out"));

  // Back with its data directory: in-sync again within 30 s, with no command.
  c.start_participant(2);
  int64_t back = now_ms();
  bool in_sync = false;
  for (int i = 0; i < 100000 && now_ms() - back < 30000 && !in_sync; ++i) {
    w.put();
    if (i % 20 == 0) in_sync = leader_stat(c, "in_sync") == 3 && leader_stat(c, "rejoins") >= 1;
  }
  MESSAGE(fmt::format("in-sync again {} ms after its restart", now_ms() - back));
  REQUIRE(in_sync);
  auto json = c.client({"--json", "member", "list"});
  CHECK(json.code == 0);
  CHECK(json.out.find("\"state\":\"out\"") == std::string::npos);
  CHECK(json.out.find("{\"id\":\"3\",\"address\":\"" + c.participant_addr(2) +
                      "\",\"state\":\"in-sync\",\"keys\":") != std::string::npos);
  for (int i = 0; i < 60; ++i) w.put();
  // Every participant works under the leader's epoch, and refuses an older one.
  long epoch = leader_stat(c, "epoch");
  CHECK(epoch >= 4);  // out, catching-up, in-sync
  for (int i = 0; i < 3; ++i) CHECK(c.stat(i, "epoch") == epoch);
  {
    auto conn = client::Connection::open(c.participant_addr(2), 1000);
    REQUIRE(conn);
    auto r = conn->call(fmt::format("READ av0 epoch={}", epoch - 1), 2000);
    REQUIRE(r);
    CHECK(r->rfind("ERR EPOCH", 0) == 0);
  }

  // It serves every key it owns with the last acknowledged value: another participant
  // killed, every key read (through the leader, and straight from it).
  c.participant(0)->kill9();
  for (auto& [k, values] : w.may_hold) {
    CAPTURE(k);
    auto r = c.client({"get", k});
    CHECK(r.code == 0);
    std::string v = r.out.empty() ? r.out : r.out.substr(0, r.out.size() - 1);
    CHECK(values.count(v));
    auto at2 = c.read_at(2, k);
    auto owners =
        membership::place({c.participant_addr(0), c.participant_addr(1), c.participant_addr(2)},
                          static_cast<size_t>(replicas), k);
    if (std::count(owners.begin(), owners.end(), 2)) {
      REQUIRE(at2);
      CHECK(values.count(*at2));
    }
  }
}
}  // namespace

TEST_SUITE("availability") {
  TEST_CASE(
      "3 participants and 2 replicas, kill -9 one under writes: writes go on and it rejoins") {
    kill_write_rejoin(2);
  }
  TEST_CASE(
      "3 participants and full replication, kill -9 one under writes: writes go on and it "
      "rejoins") {
    kill_write_rejoin(0);
  }
}

TEST_SUITE("availability") {
  TEST_CASE("a leader killed at each step of an exclusion or a rejoin recovers one membership") {
    // (failpoint, which hit): the three membership changes are out, catching-up, in-sync.
    const std::vector<std::pair<std::string, int>> steps = {
        {"leader/beforeMembershipFsync", 1}, {"leader/afterMembershipFsync", 1},
        {"leader/beforeMembershipFsync", 2}, {"leader/afterMembershipFsync", 2},
        {"leader/sendSyncPage", 1},          {"leader/beforeMembershipFsync", 3},
        {"leader/afterMembershipFsync", 3}};
    for (auto& [fp, nth] : steps) {
      CAPTURE(fp);
      CAPTURE(nth);
      Cluster::Options o;
      o.participants = 3;
      o.leader_args = {"--exclude-after", "1000"};
      o.leader_env = crash_at(fp, nth);
      Cluster c(o);
      REQUIRE(c.wait_ready());
      Writer w(c, 40);
      for (int i = 0; i < 80; ++i) REQUIRE(w.put());
      c.participant(2)->kill9();
      bool crashed = false, restarted_part = false;
      int64_t start = now_ms();
      // Writes go on; the participant comes back after 2 s; a leader that crashed at its
      // failpoint is restarted (without it). Until every participant is in-sync.
      for (int i = 0; i < 100000 && now_ms() - start < 40000; ++i) {
        if (!c.leader()->alive()) {
          crashed = true;
          c.start_leader({{"TPC_FAILPOINTS", ""}});
        }
        if (!restarted_part && now_ms() - start > 2000) {
          c.start_participant(2);
          restarted_part = true;
        }
        w.put();
        if (restarted_part && i % 10 == 0 && leader_stat(c, "in_sync") == 3) break;
      }
      CHECK(crashed);
      REQUIRE(leader_stat(c, "in_sync") == 3);
      // One membership: the leader's own, in-sync, and the rejoined participant holds every
      // key as acknowledged.
      auto list = c.client({"member", "list"});
      CHECK(list.code == 0);
      CHECK_FALSE(contains(list.out, "out"));
      CHECK_FALSE(contains(list.out, "catching-up"));
      for (auto& [k, values] : w.may_hold) {
        CAPTURE(k);
        auto v = c.read_at(2, k);
        REQUIRE(v);
        CHECK(values.count(*v));
      }
    }
  }
}
