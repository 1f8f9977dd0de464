#include <doctest/doctest.h>

#include "leader/core.h"

using namespace tpc;
using leader::Core;
using leader::Outcome;
using protocol::Op;
using protocol::OpKind;

namespace {
std::vector<Op> put(const std::string& k) { return {Op{OpKind::put, k, "v"}}; }
std::vector<std::string> peers3 = {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"};
}  // namespace

TEST_SUITE("leader") {
  TEST_CASE("all YES: force decision, then commit to every participant, then END") {
    Core c("L", 1, peers3, 0);
    auto b = c.begin("r1", put("k"), 0, 1000);
    CHECK(b.txid == "L.1.1");
    CHECK(b.targets.size() == 3);
    CHECK(c.on_vote(b.txid, 0, true, "", "").kind == Core::Step::none);
    CHECK(c.on_vote(b.txid, 1, true, "", "").kind == Core::Step::none);
    CHECK(c.outcome(b.txid) == Outcome::pending);
    auto s = c.on_vote(b.txid, 2, true, "", "");
    REQUIRE(s.kind == Core::Step::log_commit);
    CHECK(c.outcome(b.txid) == Outcome::pending);  // not committed before it is durable
    CHECK(c.on_decision_durable(b.txid).size() == 3);
    CHECK(c.outcome(b.txid) == Outcome::committed);
    CHECK_FALSE(c.on_ack(b.txid, 0));
    CHECK_FALSE(c.on_ack(b.txid, 0));  // duplicate ack
    CHECK_FALSE(c.on_ack(b.txid, 1));
    CHECK(c.on_ack(b.txid, 2));
    c.on_end(b.txid);
    std::string txid;
    CHECK(c.result("r1", &txid) == Outcome::committed);
    CHECK(txid == "L.1.1");
  }

  TEST_CASE("one NO aborts and tells those that may hold a prepare") {
    Core c("L", 1, peers3, 0);
    auto b = c.begin("", put("k"), 0, 1000);
    c.on_vote(b.txid, 0, true, "", "");
    auto s = c.on_vote(b.txid, 1, false, "CONFLICT", "locked");
    REQUIRE(s.kind == Core::Step::abort);
    CHECK(s.code == "CONFLICT");
    CHECK(s.send_abort == std::vector<size_t>{0, 2});
    CHECK(c.outcome(b.txid) == Outcome::aborted);
    CHECK(c.on_vote(b.txid, 2, true, "", "").kind == Core::Step::none);  // late vote ignored
  }

  TEST_CASE("timeout aborts, a timeout after the decision changes nothing") {
    Core c("L", 1, peers3, 0);
    auto b = c.begin("", put("k"), 0, 1000);
    auto s = c.on_timeout(b.txid);
    CHECK(s.kind == Core::Step::abort);
    CHECK(s.detail.find("127.0.0.1:1") != std::string::npos);
    auto b2 = c.begin("", put("k"), 0, 1000);
    for (size_t p = 0; p < 3; ++p) c.on_vote(b2.txid, p, true, "", "");
    CHECK(c.on_timeout(b2.txid).kind == Core::Step::none);
  }

  TEST_CASE("crash after the decision is durable: restart re-sends COMMIT") {
    std::vector<txlog::Record> log;
    {
      Core c("L", 1, peers3, 0);
      auto b = c.begin("r9", put("k"), 0, 1000);
      Core::Step s;
      for (size_t p = 0; p < 3; ++p) s = c.on_vote(b.txid, p, true, "", "");
      log.push_back({leader::k_rec_commit, s.record});
      c.on_decision_durable(b.txid);
      c.on_ack(b.txid, 0);  // one participant acknowledged, then the leader crashed
    }
    Core c("L", 2, peers3, 0);
    for (auto& r : log) c.recover(r);
    CHECK(c.finish_recovery() == std::vector<std::string>{"L.1.1"});
    CHECK(c.unacked().size() == 3);  // acks are not logged: re-send to all (idempotent)
    CHECK(c.outcome("L.1.1") == Outcome::committed);
    std::string txid;
    CHECK(c.result("r9", &txid) == Outcome::committed);
    // New ids never repeat an old incarnation's.
    CHECK(c.begin("", put("x"), 0, 10).txid == "L.2.1");
  }

  TEST_CASE("a log rewrite keeps recent committed request ids for RESULT") {
    Core c("L", 1, peers3, 0);
    auto b = c.begin("rid-7", put("k"), 0, 1000);
    for (size_t p = 0; p < 3; ++p) c.on_vote(b.txid, p, true, "", "");
    c.on_decision_durable(b.txid);
    for (size_t p = 0; p < 3; ++p) c.on_ack(b.txid, p);
    c.on_end(b.txid);
    c.begin("rid-8", put("x"), 0, 1000);  // still pending: not a committed outcome
    auto recent = c.recent_commits();
    REQUIRE(recent.size() == 1);
    CHECK(recent[0] == std::make_pair(std::string("rid-7"), b.txid));
    // After a restart from the rewritten log (which holds only these), RESULT still knows.
    Core again("L", 2, peers3, 0);
    again.recover({leader::k_rec_rid, txlog::Encoder().str("rid-7").str(b.txid).data()});
    again.finish_recovery();
    std::string txid;
    CHECK(again.result("rid-7", &txid) == Outcome::committed);
    CHECK(txid == b.txid);
    CHECK(again.outcome(b.txid) == Outcome::aborted);  // no participant can still ask
  }

  TEST_CASE("crash before the decision is durable: presumed abort") {
    Core c("L", 2, peers3, 0);
    c.finish_recovery();
    CHECK(c.outcome("L.1.5") == Outcome::aborted);
    std::string txid;
    CHECK(c.result("lost-rid", &txid) == Outcome::aborted);
    // A request with that rid arriving later is never run.
    auto b = c.begin("lost-rid", put("k"), 0, 1000);
    CHECK(b.kind == Core::Begin::known);
    CHECK(b.outcome == Outcome::aborted);
  }

  TEST_CASE("placement: replicas owners per key, deterministic and spread") {
    Core c("L", 1, peers3, 1);
    std::vector<int> load(3);
    for (int i = 0; i < 3000; ++i) {
      auto o = c.owners("key" + std::to_string(i));
      REQUIRE(o.size() == 1);
      CHECK(o == c.owners("key" + std::to_string(i)));
      ++load[o[0]];
    }
    for (int l : load) CHECK(l > 700);
    Core all("L", 1, peers3, 0);
    CHECK(all.owners("x").size() == 3);
    // A participant is sent only the ops on keys it owns.
    std::vector<Op> ops;
    for (int i = 0; i < 12; ++i) ops.push_back(Op{OpKind::put, "k" + std::to_string(i), "v"});
    auto b = c.begin("", ops, 0, 1000);
    size_t total = 0;
    for (auto& [p, mine] : b.targets) {
      for (auto& op : mine) CHECK(c.owners(op.key) == std::vector<size_t>{p});
      total += mine.size();
    }
    CHECK(total == ops.size());
    CHECK(c.find(b.txid)->parts.size() == b.targets.size());
    auto b_all = all.begin("", ops, 0, 1000);
    REQUIRE(b_all.targets.size() == 3);
    for (auto& [p, mine] : b_all.targets) CHECK(mine.size() == ops.size());
  }
}
