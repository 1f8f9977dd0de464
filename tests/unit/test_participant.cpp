#include <doctest/doctest.h>

#include "participant/core.h"

using namespace tpc;
using participant::Core;
using protocol::Op;
using protocol::OpKind;

namespace {
std::vector<Op> put(const std::string& k, const std::string& v) { return {Op{OpKind::put, k, v}}; }
// A COMMIT as the server runs it: apply in a store batch, then (COMMITTED durable) finish.
Core::Finish commit(Core& c, store::Store& s, const std::string& txid) {
  REQUIRE(s.begin_batch());
  auto applied = c.apply_commit(txid);
  REQUIRE(s.end_batch());
  if (!applied.known) return applied;
  return c.finish_commit(txid);
}
}  // namespace

TEST_SUITE("participant") {
  TEST_CASE("prepare, force, vote, commit applies once") {
    store::MemStore s;
    Core c(s);
    auto r = c.prepare("L.1.1", "L", "127.0.0.1:1", put("k", "v"), 0);
    REQUIRE(r.kind == Core::PrepareResult::log_then_vote);
    // Repeated prepare while the force is under way waits for it.
    CHECK(c.prepare("L.1.1", "L", "x", put("k", "v"), 0).kind == Core::PrepareResult::wait_durable);
    CHECK(c.prepare_durable("L.1.1"));
    CHECK(c.prepare("L.1.1", "L", "x", put("k", "v"), 0).kind == Core::PrepareResult::vote_yes);
    CHECK(c.read("k").kind == Core::ReadResult::blocked);
    auto f = commit(c, s, "L.1.1");
    CHECK(f.known);
    CHECK(f.released == std::vector<std::string>{"k"});
    CHECK(s.m_data["k"] == "v");
    auto again = commit(c, s, "L.1.1");  // re-delivered COMMIT: acknowledged, not applied twice
    CHECK_FALSE(again.known);
    CHECK(s.m_apply_calls == 1);
    CHECK(c.read("k").value == "v");
    CHECK(c.check_invariants().empty());
  }

  TEST_CASE("a held lock is a NO vote at once") {
    store::MemStore s;
    Core c(s);
    c.prepare("L.1.1", "L", "a", put("k", "1"), 0);
    auto r = c.prepare("L.1.2", "L", "a", put("k", "2"), 0);
    CHECK(r.kind == Core::PrepareResult::vote_no);
    CHECK(r.code == "CONFLICT");
    c.abort("L.1.1");
    CHECK(c.prepare("L.1.2", "L", "a", put("k", "2"), 0).kind ==
          Core::PrepareResult::log_then_vote);
  }

  TEST_CASE("conditions are checked against committed data") {
    store::MemStore s;
    s.m_data["a"] = "100";
    Core c(s);
    auto no = c.prepare("L.1.1", "L", "a", {Op{OpKind::check, "a", "99"}}, 0);
    CHECK(no.kind == Core::PrepareResult::vote_no);
    CHECK(no.code == "CHECK");
    CHECK(no.detail.find("found 100") != std::string::npos);
    CHECK(c.prepare("L.1.2", "L", "a", {Op{OpKind::absent, "a", ""}}, 0).code == "CHECK");
    CHECK(
        c.prepare("L.1.3", "L", "a", {Op{OpKind::check, "a", "100"}, Op{OpKind::put, "a", "90"}}, 0)
            .kind == Core::PrepareResult::log_then_vote);
    CHECK(c.check_invariants().empty());
  }

  TEST_CASE("abort during the force answers NO when the force completes") {
    store::MemStore s;
    Core c(s);
    c.prepare("L.1.1", "L", "a", put("k", "v"), 0);
    c.abort("L.1.1");
    CHECK_FALSE(c.prepare_durable("L.1.1"));
    // A late duplicate PREPARE of an aborted txn is refused.
    CHECK(c.prepare("L.1.1", "L", "a", put("k", "v"), 0).kind == Core::PrepareResult::vote_no);
    CHECK(c.read("k").kind == Core::ReadResult::absent);
  }

  TEST_CASE("restart: in-doubt transactions re-take their locks, applied ones are done") {
    store::MemStore s;
    std::vector<txlog::Record> log;
    {
      Core c(s);
      for (auto txid : {"L.1.1", "L.1.2", "L.1.3"}) {
        auto r = c.prepare(txid, "L", "127.0.0.1:9", put(std::string("k") + txid, "v"), 0);
        log.push_back({participant::k_rec_prepared, r.record});
        c.prepare_durable(txid);
      }
      commit(c, s, "L.1.1");  // applied, COMMITTED record lost in the crash
      c.abort("L.1.3");
      log.push_back({participant::k_rec_aborted, txlog::Encoder().str("L.1.3").data()});
    }
    Core c(s);
    for (auto& r : log) c.recover(r);
    auto in_doubt = c.finish_recovery(0);
    CHECK(in_doubt == std::vector<std::string>{"L.1.2"});
    CHECK(c.read("kL.1.2").kind == Core::ReadResult::blocked);
    CHECK(c.find("L.1.2")->leader_addr == "127.0.0.1:9");
    CHECK(c.prepare("L.1.9", "L", "a", put("kL.1.2", "x"), 0).code == "CONFLICT");
    commit(c, s, "L.1.2");
    CHECK(s.m_data["kL.1.2"] == "v");
    CHECK(c.check_invariants().empty());
  }
}

TEST_SUITE("participant") {
  TEST_CASE("restart redoes commits the store lost, it never redoes one twice") {
    std::vector<txlog::Record> log;
    {
      store::MemStore lost;  // the store's last commits did not survive (power loss)
      Core c(lost);
      auto r = c.prepare("L.1.1", "L", "a", put("k", "v1"), 0);
      log.push_back({participant::k_rec_prepared, r.record});
      c.prepare_durable("L.1.1");
      commit(c, lost, "L.1.1");
      log.push_back({participant::k_rec_committed, txlog::Encoder().str("L.1.1").data()});
    }
    store::MemStore s;
    {
      Core c(s);
      for (auto& r : log) c.recover(r);
      CHECK(c.finish_recovery(0).empty());
      CHECK(c.redone() == 1);
      CHECK(s.m_data["k"] == "v1");
    }
    s.m_data["k"] = "newer";  // a later transaction overwrote it
    Core c(s);
    for (auto& r : log) c.recover(r);
    c.finish_recovery(0);
    CHECK(c.redone() == 0);  // the applied mark survived: no redo
    CHECK(s.m_data["k"] == "newer");
  }

  TEST_CASE("between apply and the durable COMMITTED record the keys stay locked") {
    store::MemStore s;
    Core c(s);
    c.prepare("L.1.1", "L", "a", put("k", "v"), 0);
    c.prepare_durable("L.1.1");
    CHECK(c.apply_commit("L.1.1").known);
    CHECK_FALSE(c.apply_commit("L.1.1").known);  // a duplicate COMMIT applies nothing
    CHECK(c.read("k").kind == Core::ReadResult::blocked);
    CHECK(c.prepare("L.1.2", "L", "a", put("k", "w"), 0).code == "CONFLICT");
    auto f = c.finish_commit("L.1.1");
    CHECK(f.released == std::vector<std::string>{"k"});
    CHECK(c.read("k").value == "v");
  }
}
