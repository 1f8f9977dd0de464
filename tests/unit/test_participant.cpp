// Scripted scenarios of the participant core: events in, actions out, no I/O and no clock.
#include <doctest/doctest.h>

#include "fatal.h"

#include "participant/core.h"

using namespace tpc;
using namespace tpc::participant;
using protocol::Decision;
using protocol::Op;
using protocol::OpKind;

namespace {
std::vector<Op> put(const std::string& k, const std::string& v) { return {Op{OpKind::put, k, v}}; }

// A core over a MemStore. step() runs an event and executes Apply and Flush at once (as the
// server does); appended records go to `log`, replies to `replies`.
struct Driver {
  store::MemStore& store;
  Core core;
  int64_t now = 0;
  std::vector<txlog::Record> log;
  std::vector<act::Reply> replies;
  std::vector<act::Ask> asks;
  std::vector<std::string> pending_durable;  // txids of lazy/forced records not yet reported
  explicit Driver(store::MemStore& s) : store(s), core(CoreConfig{}, s) {}
  void execute(Actions a) {
    for (auto& x : a.list) {
      if (auto* ap = std::get_if<act::Append>(&x)) {
        log.push_back({ap->type, ap->payload});
      } else if (auto* ap = std::get_if<act::Apply>(&x)) {
        REQUIRE(store.begin_batch());
        for (auto& [txid, ops] : ap->batch) REQUIRE(store.apply(txid, *ops));
        REQUIRE(store.end_batch());
        step(ev::Applied{});
      } else if (auto* r = std::get_if<act::Reply>(&x)) {
        replies.push_back(*r);
      } else if (auto* q = std::get_if<act::Ask>(&x)) {
        asks.push_back(*q);
      }
    }
    if (a.flush) step(ev::Flush{});
  }
  void step(Event e) { execute(core.step(now, now, std::move(e))); }
  static std::vector<act::Rewrite> all_rewrites(const Actions& a) {
    std::vector<act::Rewrite> out;
    for (auto& x : a.list)
      if (auto* r = std::get_if<act::Rewrite>(&x)) out.push_back(*r);
    return out;
  }
  // The reply given to client c (the last one), as its wire line.
  std::string reply(ClientId c) {
    for (auto it = replies.rbegin(); it != replies.rend(); ++it)
      if (it->client == c) return encode(it->msg);
    return "";
  }
  void prepare(ClientId c, const std::string& txid, std::vector<Op> ops) {
    step(ev::Prepare{c, protocol::Prepare{txid, "L", "127.0.0.1:9", std::move(ops), ""}, "L-node"});
  }
  void durable(uint8_t type, const std::string& txid) { step(ev::Durable{type, txid, 7}); }
  void commit(ClientId c, const std::string& txid) {
    step(ev::Commit{c, txid, "L-node"});
    if (core.find(txid) && core.find(txid)->applied) durable(k_rec_committed, txid);
  }
};
}  // namespace

TEST_SUITE("participant") {
  TEST_CASE("prepare, force, vote, commit applies once") {
    store::MemStore s;
    Driver d(s);
    d.prepare(1, "L.1.1", put("k", "v"));
    REQUIRE(d.log.size() == 1);
    CHECK(d.log[0].type == k_rec_prepared);
    CHECK(d.reply(1).empty());             // no vote before the record is durable
    d.prepare(2, "L.1.1", put("k", "v"));  // repeated while the force is under way: waits
    CHECK(d.reply(2).empty());
    d.durable(k_rec_prepared, "L.1.1");
    CHECK(d.reply(1) == "YES 7");
    CHECK(d.reply(2) == "YES 7");
    d.prepare(3, "L.1.1", put("k", "v"));
    CHECK(d.reply(3).rfind("YES", 0) == 0);
    d.step(ev::Read{4, "k"});
    CHECK(d.reply(4).empty());  // waits for the prepared write
    d.step(ev::Commit{5, "L.1.1", "L-node"});
    CHECK(s.m_data["k"] == "v");
    CHECK(d.reply(5).empty());  // acknowledged only once COMMITTED is durable
    CHECK(d.reply(4).empty());  // the keys stay locked until then
    d.durable(k_rec_committed, "L.1.1");
    CHECK(d.reply(5) == "ACK");
    CHECK(d.reply(4) == "VALUE #1\nv");
    d.commit(6, "L.1.1");  // re-delivered COMMIT: acknowledged, not applied twice
    CHECK(d.reply(6) == "ACK");
    CHECK(s.m_apply_calls == 1);
    CHECK(d.core.check_invariants().empty());
  }

  TEST_CASE("commits of one turn share one store batch") {
    store::MemStore s;
    Driver d(s);
    for (auto t : {"L.1.1", "L.1.2", "L.1.3"}) {
      d.prepare(0, t, put(std::string("k") + t, "v"));
      d.durable(k_rec_prepared, t);
    }
    Actions a;
    for (auto t : {"L.1.1", "L.1.2", "L.1.3"}) d.core.step(0, 0, ev::Commit{0, t, "L-node"}, a);
    CHECK(a.flush);
    auto f = d.core.step(0, 0, ev::Flush{});
    REQUIRE(f.list.size() == 1);
    CHECK(std::get<act::Apply>(f.list[0]).batch.size() == 3);
  }

  TEST_CASE("a held lock is a NO vote at once") {
    store::MemStore s;
    Driver d(s);
    d.prepare(1, "L.1.1", put("k", "1"));
    d.prepare(2, "L.1.2", put("k", "2"));
    CHECK(d.reply(2).rfind("NO CONFLICT", 0) == 0);
    d.step(ev::Abort{3, "L.1.1", "L-node"});
    CHECK(d.reply(3) == "ACK");
    // A NO is final: a late copy of that PREPARE is refused again, not prepared (a learner's
    // transaction may commit without it).
    d.prepare(4, "L.1.2", put("k", "2"));
    CHECK(d.reply(4).rfind("NO ABORTED", 0) == 0);
    d.prepare(5, "L.1.3", put("k", "3"));
    CHECK(d.log.back().type == k_rec_prepared);
  }

  TEST_CASE("conditions are checked against committed data") {
    store::MemStore s;
    s.m_data["a"] = "100";
    Driver d(s);
    d.prepare(1, "L.1.1", {Op{OpKind::check, "a", "99"}});
    CHECK(d.reply(1).rfind("NO CHECK", 0) == 0);
    CHECK(d.reply(1).find("found 100") != std::string::npos);
    d.prepare(2, "L.1.2", {Op{OpKind::absent, "a", ""}});
    CHECK(d.reply(2).rfind("NO CHECK", 0) == 0);
    d.prepare(3, "L.1.3", {Op{OpKind::check, "a", "100"}, Op{OpKind::put, "a", "90"}});
    d.durable(k_rec_prepared, "L.1.3");
    CHECK(d.reply(3).rfind("YES", 0) == 0);
    CHECK(d.core.check_invariants().empty());
  }

  TEST_CASE("a transaction the log cannot hold gets NO, never YES") {
    store::MemStore s;
    Driver d(s);
    d.prepare(1, "L.1.1", put("k", std::string(txlog::k_max_payload + 1, 'x')));
    CHECK(d.reply(1).rfind("NO TOOLARGE", 0) == 0);
    CHECK(d.log.empty());
    CHECK(d.core.prepared().empty());
  }

  TEST_CASE("abort during the force answers NO when the force completes") {
    store::MemStore s;
    Driver d(s);
    d.prepare(1, "L.1.1", put("k", "v"));
    d.step(ev::Abort{0, "L.1.1", "L-node"});
    d.durable(k_rec_prepared, "L.1.1");
    CHECK(d.reply(1).rfind("NO ABORTED", 0) == 0);
    // A late duplicate PREPARE of an aborted txn is refused.
    d.prepare(2, "L.1.1", put("k", "v"));
    CHECK(d.reply(2).rfind("NO ABORTED", 0) == 0);
    d.step(ev::Read{3, "k"});
    CHECK(d.reply(3) == "NOTFOUND");
  }

  TEST_CASE("an ABORT after the COMMIT was decided is refused") {
    store::MemStore s;
    Driver d(s);
    d.prepare(1, "L.1.1", put("k", "v"));
    d.durable(k_rec_prepared, "L.1.1");
    d.step(ev::Commit{2, "L.1.1", "L-node"});
    d.step(ev::Abort{3, "L.1.1", "L-node"});
    CHECK(d.reply(3).rfind("ERR STATE", 0) == 0);
    d.durable(k_rec_committed, "L.1.1");
    CHECK(s.m_data["k"] == "v");
  }

  TEST_CASE("a read of a prepared key waits, then answers INDOUBT at its deadline") {
    store::MemStore s;
    s.m_data["k"] = "old";
    Driver d(s);
    d.prepare(1, "L.1.1", put("k", "new"));
    d.durable(k_rec_prepared, "L.1.1");
    d.step(ev::Read{2, "k"});
    auto a = d.core.step(0, 0, ev::Tick{});
    CHECK(a.wake_at == 100);  // in-doubt scan; the read's deadline is at 2000
    d.now = 1999;
    d.step(ev::Tick{});
    CHECK(d.reply(2).empty());
    d.now = 2000;
    d.step(ev::Tick{});
    CHECK(d.reply(2).rfind("ERR INDOUBT", 0) == 0);
  }

  TEST_CASE("in doubt: ask the leader with backoff, never decide alone") {
    store::MemStore s;
    Driver d(s);
    d.prepare(1, "L.1.1", put("k", "v"));
    d.durable(k_rec_prepared, "L.1.1");
    d.now = 999;
    d.step(ev::Tick{});
    CHECK(d.asks.empty());  // young: the decision is probably on its way
    d.now = 1100;           // the next scan
    d.step(ev::Tick{});
    REQUIRE(d.asks.size() == 1);
    CHECK(d.asks[0].leader_addr == "127.0.0.1:9");
    d.step(ev::Outcome{"L.1.1", Status::error("UNAVAILABLE", "down")});
    d.step(ev::Outcome{"L.1.1", Decision::pending});
    for (d.now = 1000; d.now <= 60000; d.now += 100) d.step(ev::Tick{});
    CHECK(d.asks.size() < 30);    // backoff: 100, 200, ... capped at 5 s
    CHECK(d.asks.size() > 10);    // but it never gives up
    CHECK(d.core.find("L.1.1"));  // still prepared, locks held
    d.step(ev::Outcome{"L.1.1", Decision::committed});
    d.durable(k_rec_committed, "L.1.1");
    CHECK(s.m_data["k"] == "v");
    CHECK_FALSE(d.core.find("L.1.1"));
  }

  TEST_CASE("restart: in-doubt transactions re-take their locks, applied ones are done") {
    store::MemStore s;
    std::vector<txlog::Record> log;
    {
      Driver d(s);
      for (auto txid : {"L.1.1", "L.1.2", "L.1.3"}) {
        d.prepare(0, txid, put(std::string("k") + txid, "v"));
        d.durable(k_rec_prepared, txid);
      }
      d.step(ev::Commit{0, "L.1.1", "L-node"});  // applied; its COMMITTED record lost in the crash
      d.step(ev::Abort{0, "L.1.3", "L-node"});
      for (auto& r : d.log)
        if (r.type != k_rec_committed) log.push_back(r);
    }
    Driver d(s);
    for (auto& r : log) d.core.recover(r);
    d.execute(d.core.start(0, 0, s.applied_txids()));
    CHECK(d.core.prepared().size() == 1);
    CHECK(d.core.find("L.1.2"));
    d.step(ev::Tick{});
    REQUIRE(d.asks.size() == 1);  // a recovered in-doubt transaction asks at once
    CHECK(d.asks[0].txid == "L.1.2");
    d.prepare(9, "L.1.9", put("kL.1.2", "x"));
    CHECK(d.reply(9).rfind("NO CONFLICT", 0) == 0);
    d.commit(0, "L.1.2");
    CHECK(s.m_data["kL.1.2"] == "v");
    CHECK(d.core.check_invariants().empty());
  }

  TEST_CASE("restart redoes commits the store lost, it never redoes one twice") {
    std::vector<txlog::Record> log;
    {
      store::MemStore lost;  // the store's last commits did not survive (power loss)
      Driver d(lost);
      d.prepare(0, "L.1.1", put("k", "v1"));
      d.durable(k_rec_prepared, "L.1.1");
      d.commit(0, "L.1.1");
      log = d.log;
      REQUIRE(log.back().type == k_rec_committed);
    }
    store::MemStore s;
    {
      Driver d(s);
      for (auto& r : log) d.core.recover(r);
      d.execute(d.core.start(0, 0, s.applied_txids()));
      CHECK(d.core.redone() == 1);
      CHECK(d.core.prepared().empty());
      CHECK(s.m_data["k"] == "v1");
    }
    s.m_data["k"] = "newer";  // a later transaction overwrote it
    Driver d(s);
    for (auto& r : log) d.core.recover(r);
    d.execute(d.core.start(0, 0, s.applied_txids()));
    CHECK(d.core.redone() == 0);  // the applied mark survived: no redo
    CHECK(s.m_data["k"] == "newer");
  }

  TEST_CASE("a log rewrite keeps what is in doubt, not what the store holds") {
    store::MemStore s;
    Driver d(s);
    d.prepare(0, "L.1.1", put("a", "1"));
    d.durable(k_rec_prepared, "L.1.1");
    d.prepare(0, "L.1.2", put("b", "2"));
    d.durable(k_rec_prepared, "L.1.2");
    d.step(ev::Commit{0, "L.1.2", "L-node"});  // applied, COMMITTED not yet durable
    d.step(ev::Resolve{5, "L.1.1", false});
    d.durable(k_rec_heuristic, "L.1.1");
    CHECK(d.reply(5) == "ACK");
    d.prepare(0, "L.1.3", put("c", "3"));  // force still queued
    auto a = d.core.step(0, 0, ev::LogFull{});
    auto& rw = std::get<act::Rewrite>(a.list.at(0));
    REQUIRE(rw.live.size() == 2);
    auto p = decode_prepared(rw.live[0].payload);
    REQUIRE(p.is_ok());
    CHECK(p->txid == "L.1.3");
    CHECK(rw.live[1].type == k_rec_heuristic);
  }
}

// Checksum fix-ups, as LevelDB's log_test does: records whose frame is valid but whose
// payload is not. Recovery must stop loudly, never guess.
TEST_SUITE("participant") {
  TEST_CASE("only the leader that prepared a transaction may commit or abort it") {
    store::MemStore s;
    Driver d(s);
    d.prepare(1, "L.1.1", put("a", "1"));
    d.durable(k_rec_prepared, "L.1.1");
    CHECK(d.reply(1).rfind("YES", 0) == 0);
    // A stranger's COMMIT and ABORT change nothing.
    d.step(ev::Commit{2, "L.1.1", "stranger"});
    CHECK(d.reply(2).rfind("ERR DENIED", 0) == 0);
    d.step(ev::Abort{3, "L.1.1", ""});
    CHECK(d.reply(3).rfind("ERR DENIED", 0) == 0);
    REQUIRE(d.core.find("L.1.1"));
    CHECK(s.m_data.empty());
    // After a restart the rule holds too: the leader's node is in the PREPARED record.
    Core again(CoreConfig{}, s);
    again.recover({k_rec_prepared, encode_prepared(*d.core.find("L.1.1"))});
    again.start(0, 0, {});
    Actions a;
    again.step(0, 0, ev::Abort{4, "L.1.1", "stranger"}, a);
    REQUIRE(again.find("L.1.1"));
    // The preparing leader's COMMIT is applied.
    d.step(ev::Commit{5, "L.1.1", "L-node"});
    CHECK(s.m_data.at("a") == "1");
  }

  TEST_CASE("recovery refuses records that pass the checksum but are malformed") {
    store::MemStore s;
    Prepared p;
    p.txid = "L.1.1";
    p.leader = "L";
    p.leader_addr = "a:1";
    p.ops = put("k", "v");
    std::string good = encode_prepared(p);
    auto refuses = [&](txlog::Record r) {
      Core c(CoreConfig{}, s);
      return tpc::test::fatal_of([&] { c.recover(r); });
    };
    CHECK(refuses({k_rec_prepared, good}).empty());
    CHECK(refuses({k_rec_prepared, good.substr(0, good.size() - 3)}).find("undecodable") !=
          std::string::npos);
    CHECK(refuses({k_rec_prepared, good + "x"}).find("undecodable") != std::string::npos);
    std::string bad_kind = good;
    bad_kind[bad_kind.size() - 4 - 4 - 1 - 4 - 1 - 4 - 1] = 9;  // the op kind byte
    CHECK_FALSE(refuses({k_rec_prepared, bad_kind}).empty());
    // The request id and the leader's node ride along; records of older versions, without
    // them, still decode.
    p.rid = "0123abcd";
    p.leader_node = "node-7";
    auto back = decode_prepared(encode_prepared(p));
    REQUIRE(back.is_ok());
    CHECK(back->rid == "0123abcd");
    CHECK(back->leader_node == "node-7");
    for (size_t cut : {4, 8}) {
      back = decode_prepared(good.substr(0, good.size() - cut));
      REQUIRE(back.is_ok());
      CHECK(back->rid.empty());
      CHECK(back->ops == p.ops);
    }
    CHECK(refuses({k_rec_committed, ""}).find("undecodable") != std::string::npos);
    CHECK(refuses({k_rec_heuristic, txlog::Encoder().str("L.1.1").data()}).find("undecodable") !=
          std::string::npos);
    CHECK(refuses({42, good}).find("unknown record type") != std::string::npos);
  }
}

TEST_SUITE("participant scan") {
  protocol::Scan scan(std::string prefix, std::string after, uint64_t limit,
                      uint64_t max_bytes = 1 << 20, std::string watch = "") {
    return protocol::Scan{std::move(prefix), std::move(after), limit, max_bytes, std::move(watch)};
  }

  TEST_CASE("keys under a prefix in key order, after a cursor, by count and by bytes") {
    store::MemStore s;
    s.m_data = {{"a", "0"}, {"b", "1"}, {"b/x", "2"}, {"b/y", "3"}, {"b/z", "4"}, {"c", "5"}};
    Driver d(s);
    d.step(ev::Scan{1, scan("b", "", 10), "L-node"});
    CHECK(d.reply(1) ==
          "KEYS END 4 b #1 b/x #1 b/y #1 b/z #1\n1\n2\n3\n4");  // the prefix itself is under it
    d.step(ev::Scan{2, scan("b/", "", 2), "L-node"});
    CHECK(d.reply(2) == "KEYS MORE 2 b/x #1 b/y #1\n2\n3");
    d.step(ev::Scan{3, scan("b/", "b/y", 2), "L-node"});
    CHECK(d.reply(3) == "KEYS END 1 b/z #1\n4");
    d.step(ev::Scan{4, scan("b/", "", 100, 6), "L-node"});  // "b/x"+"2" = 4 bytes, two are 8
    CHECK(d.reply(4) == "KEYS MORE 1 b/x #1\n2");
    d.step(ev::Scan{5, scan("b/", "", 100, 1), "L-node"});  // at least one key, however large
    CHECK(d.reply(5) == "KEYS MORE 1 b/x #1\n2");
    d.step(ev::Scan{6, scan("", "", 100), "L-node"});
    CHECK(d.reply(6) == "KEYS END 6 a #1 b #1 b/x #1 b/y #1 b/z #1 c #1\n0\n1\n2\n3\n4\n5");
    d.step(ev::Scan{7, scan("d", "", 100), "L-node"});
    CHECK(d.reply(7) == "KEYS END 0");
    d.step(ev::Scan{8, scan("b/", "b/z", 5), "L-node"});  // exactly at the end
    CHECK(d.reply(8) == "KEYS END 0");
  }

  TEST_CASE("a scan waits for a prepared write in its range, not for one outside it") {
    store::MemStore s;
    s.m_data = {{"p/1", "a"}, {"p/2", "b"}, {"p/3", "c"}};
    Driver d(s);
    d.prepare(1, "L.1.1", put("p/9", "new"));  // a new key at the end of the prefix
    d.durable(k_rec_prepared, "L.1.1");
    d.prepare(2, "L.1.2", put("q", "x"));  // outside the prefix
    d.durable(k_rec_prepared, "L.1.2");
    d.step(ev::Scan{3, scan("p/", "", 2), "L-node"});
    CHECK(d.reply(3) == "KEYS MORE 2 p/1 #1 p/2 #1\na\nb");  // its range ends at p/2: no wait
    d.step(ev::Scan{4, scan("p/", "", 10), "L-node"});
    CHECK(d.reply(4).empty());  // p/9 may commit: waits
    // Meanwhile a new write into its range waits for it: refused, so the scan cannot starve.
    d.prepare(40, "L.1.9", put("p/5", "late"));
    CHECK(d.reply(40) == "NO CONFLICT key p/5 is in a range being scanned");
    d.commit(5, "L.1.1");
    CHECK(d.reply(4) == "KEYS END 4 p/1 #1 p/2 #1 p/3 #1 p/9 #3\na\nb\nc\nnew");
    // A wait has a deadline, as a read's: then ERR INDOUBT.
    d.prepare(6, "L.1.3", put("p/2", "changed"));
    d.durable(k_rec_prepared, "L.1.3");
    d.step(ev::Scan{7, scan("p/", "", 10), "L-node"});
    CHECK(d.reply(7).empty());
    d.now += CoreConfig{}.read_timeout_ms;
    d.step(ev::Tick{});
    CHECK(d.reply(7).rfind("ERR INDOUBT key p/2 has a prepared write of L.1.3", 0) == 0);
    // A lock of a check (no write) does not hold a scan.
    d.step(ev::Abort{8, "L.1.3", "L-node"});
    d.prepare(9, "L.1.4", {Op{OpKind::check, "p/1", "a"}});
    d.durable(k_rec_prepared, "L.1.4");
    d.step(ev::Scan{10, scan("p/", "", 10), "L-node"});
    CHECK(d.reply(10) == "KEYS END 4 p/1 #1 p/2 #1 p/3 #1 p/9 #3\na\nb\nc\nnew");
  }

  TEST_CASE("a watch holds its range: writes there are refused until SCANCHECK says CLEAN") {
    store::MemStore s;
    s.m_data = {{"p/1", "a"}, {"p/2", "b"}, {"p/3", "c"}};
    Driver d(s);
    d.step(ev::Scan{1, scan("p/", "", 2, 1 << 20, "w1"), "L-node"});
    CHECK(d.reply(1) == "KEYS MORE 2 p/1 #1 p/2 #1\na\nb");  // its range: up to p/2
    d.prepare(2, "L.1.1", put("p/25", "x"));         // after w1's range: prepared
    CHECK(d.log.size() == 1);
    d.step(ev::Abort{3, "L.1.1", "L-node"});
    d.step(ev::Scan{4, scan("p/", "", 10, 1 << 20, "w2"), "L-node"});
    CHECK(d.reply(4) == "KEYS END 3 p/1 #1 p/2 #1 p/3 #1\na\nb\nc");  // its range: all of p/
    d.prepare(5, "L.1.2", put("p/25", "x"));
    CHECK(d.reply(5) == "NO CONFLICT key p/25 is in a range being scanned");
    d.prepare(6, "L.1.3", put("q", "x"));  // outside every range
    CHECK(d.core.find("L.1.3") != nullptr);
    d.step(ev::ScanCheck{7, "w1", "L-node"});
    CHECK(d.reply(7) == "CLEAN");
    d.step(ev::ScanCheck{8, "w1", "L-node"});  // asked once: then forgotten
    CHECK(d.reply(8) == "CHANGED");
    d.step(ev::ScanCheck{9, "w2", "other-node"});  // watch ids are per node
    CHECK(d.reply(9) == "CHANGED");
    d.step(ev::ScanCheck{10, "w2", "L-node"});
    CHECK(d.reply(10) == "CLEAN");
    d.prepare(11, "L.1.4", put("p/25", "x"));  // released by the check
    CHECK(d.core.find("L.1.4") != nullptr);
    d.step(ev::Abort{12, "L.1.4", "L-node"});
    // A watch its leader never asks about ends after k_watch_ms: writes go through again, and
    // a late check cannot vouch for the range.
    d.step(ev::Scan{13, scan("p/", "", 10, 1 << 20, "w3"), "L-node"});
    d.now += k_watch_ms;
    d.prepare(14, "L.1.5", put("p/25", "x"));
    CHECK(d.core.find("L.1.5") != nullptr);
    d.step(ev::ScanCheck{15, "w3", "L-node"});
    CHECK(d.reply(15) == "CHANGED");
    d.step(ev::ScanCheck{16, "nope", "L-node"});
    CHECK(d.reply(16) == "CHANGED");
  }
}

// An operator's outcome (RESOLVE) against the leader's decision: never a silent ACK.
TEST_SUITE("participant heuristics") {
  TEST_CASE("an operator's abort answers the leader's later COMMIT with HEURISTIC ABORTED") {
    store::MemStore s;
    Driver d(s);
    d.prepare(1, "L.1.1", put("bank", "100"));
    d.durable(k_rec_prepared, "L.1.1");
    d.step(ev::Resolve{2, "L.1.1", false, false});
    d.durable(k_rec_heuristic, "L.1.1");
    CHECK(d.reply(2) == "ACK");
    CHECK(d.core.forced_heuristics() == 1);
    d.step(ev::Commit{3, "L.1.1", "L-node"});
    CHECK(d.reply(3) == "HEURISTIC ABORTED");
    CHECK(!s.m_data.count("bank"));  // nothing applied behind the operator's back
    // Answered so again after a restart: the HEURISTIC record is in the log.
    store::MemStore s2;
    Driver r(s2);
    for (auto& rec : d.log) r.core.recover(rec);
    r.execute(r.core.start(0, 0, {}));
    r.step(ev::Commit{4, "L.1.1", "L-node"});
    CHECK(r.reply(4) == "HEURISTIC ABORTED");
    // An ABORT agrees with it: a plain ACK.
    r.step(ev::Abort{5, "L.1.1", "L-node"});
    CHECK(r.reply(5) == "ACK");
  }

  TEST_CASE("an operator's commit answers the leader's ABORT with HEURISTIC COMMITTED") {
    store::MemStore s;
    Driver d(s);
    d.prepare(1, "L.1.1", put("k", "v"));
    d.durable(k_rec_prepared, "L.1.1");
    d.step(ev::Resolve{2, "L.1.1", true, false});
    d.durable(k_rec_heuristic, "L.1.1");
    d.durable(k_rec_committed, "L.1.1");
    CHECK(d.reply(2) == "ACK");
    CHECK(s.m_data["k"] == "v");
    d.step(ev::Abort{3, "L.1.1", "L-node"});
    CHECK(d.reply(3) == "HEURISTIC COMMITTED");
    d.step(ev::Commit{4, "L.1.1", "L-node"});
    CHECK(d.reply(4) == "ACK");
  }

  TEST_CASE("every operator's outcome is reported to the leader until it answers") {
    store::MemStore s;
    Driver d(s);
    d.step(ev::Prepare{1, protocol::Prepare{"L.1.1", "L", "127.0.0.1:9", put("k", "v"), "rid7"},
                       "L-node"});
    d.durable(k_rec_prepared, "L.1.1");
    d.step(ev::Resolve{2, "L.1.1", true, false});
    d.durable(k_rec_heuristic, "L.1.1");
    d.durable(k_rec_committed, "L.1.1");
    d.asks.clear();
    d.now += 1000;
    d.step(ev::Tick{});
    REQUIRE(d.asks.size() == 1);
    CHECK(d.asks[0].leader_addr == "127.0.0.1:9");
    CHECK(protocol::encode(protocol::OutcomeQuery{d.asks[0].txid, d.asks[0].held_ms,
                                                  d.asks[0].heuristic, d.asks[0].rid}) ==
          "OUTCOME L.1.1 heuristic=commit rid=rid7");
    // No answer, or PENDING: asked again after the backoff. The answer to a query sent
    // before the operator decided is no answer to the report.
    d.step(ev::Outcome{"L.1.1", Status::error("UNAVAILABLE", "down"), true});
    d.step(ev::Outcome{"L.1.1", Decision::pending, true});
    size_t logged = d.log.size();
    d.step(ev::Outcome{"L.1.1", Decision::aborted, false});
    CHECK(d.log.size() == logged);
    d.asks.clear();
    d.now += 10000;
    d.step(ev::Tick{});
    CHECK(d.asks.size() == 1);
    // The leader decided abort (presumed): it recorded the mismatch; nothing more to report.
    size_t before = d.log.size();
    d.step(ev::Outcome{"L.1.1", Decision::aborted, true});
    REQUIRE(d.log.size() == before + 1);
    CHECK(d.log.back().type == k_rec_reported);
    d.asks.clear();
    d.now += 10000;
    d.step(ev::Tick{});
    CHECK(d.asks.empty());
    // Still answered with its outcome, and reported state survives a restart and a rewrite.
    store::MemStore s2;
    Driver r(s2);
    for (auto& rec : d.log) r.core.recover(rec);
    r.execute(r.core.start(0, 0, {}));
    r.now += 10000;
    r.step(ev::Tick{});
    CHECK(r.asks.empty());
    auto a = r.core.step(0, 0, ev::LogFull{});
    auto& rw = std::get<act::Rewrite>(a.list.at(0));
    REQUIRE(rw.live.size() == 1);
    auto h = decode_heuristic(rw.live[0].payload);
    REQUIRE(h.is_ok());
    CHECK(h->second.commit);
    CHECK(h->second.reported);
    CHECK(h->second.rid == "rid7");
  }

  // Found by the simulator under compaction pressure: the rewrite replaced the log after the
  // HEURISTIC record's append, so the operator's decision was lost at the next restart.
  TEST_CASE("a log rewrite keeps an operator's decision whose force is still queued") {
    store::MemStore s;
    Driver d(s);
    d.prepare(1, "L.1.1", put("k", "v"));
    d.durable(k_rec_prepared, "L.1.1");
    d.step(ev::Resolve{2, "L.1.1", true, false});
    auto a = d.core.step(0, 0, ev::LogFull{});
    auto& rw = std::get<act::Rewrite>(a.list.at(0));
    REQUIRE(rw.live.size() == 2);
    CHECK(rw.live[0].type == k_rec_prepared);
    CHECK(rw.live[1].type == k_rec_heuristic);
    auto h = decode_heuristic(rw.live[1].payload);
    REQUIRE(h.is_ok());
    CHECK(h->first == "L.1.1");
    CHECK(h->second.commit);
    CHECK_FALSE(h->second.reported);
  }

  TEST_CASE("the leader's own COMMIT answers the report of an agreeing relayed commit") {
    store::MemStore s;
    Driver d(s);
    d.prepare(1, "L.1.1", put("k", "v"));
    d.durable(k_rec_prepared, "L.1.1");
    d.step(ev::Resolve{2, "L.1.1", true, true});
    d.durable(k_rec_heuristic, "L.1.1");
    d.durable(k_rec_committed, "L.1.1");
    CHECK(d.core.forced_heuristics() == 0);  // relayed: not counted as the operator's own
    d.step(ev::Commit{3, "L.1.1", "L-node"});
    CHECK(d.reply(3) == "ACK");
    CHECK(d.log.back().type == k_rec_reported);
    d.asks.clear();
    d.now += 10000;
    d.step(ev::Tick{});
    CHECK(d.asks.empty());
  }

  TEST_CASE("an older HEURISTIC record (txid and decision only) is read as already reported") {
    auto h = decode_heuristic(txlog::Encoder().str("L.1.1").u8(0).data());
    REQUIRE(h.is_ok());
    CHECK(!h->second.commit);
    CHECK(h->second.reported);
    CHECK(!decode_heuristic(txlog::Encoder().str("L.1.1").u8(2).data()).is_ok());
    CHECK(!decode_heuristic(txlog::Encoder().str("L.1.1").u8(1).str("a").data()).is_ok());
  }

  TEST_CASE(
      "the leader's COMMIT while an operator's abort is being forced is refused, then "
      "answered by it") {
    store::MemStore s;
    Driver d(s);
    d.prepare(1, "L.1.1", put("k", "v"));
    d.durable(k_rec_prepared, "L.1.1");
    d.step(ev::Resolve{2, "L.1.1", false, false});
    d.step(ev::Commit{3, "L.1.1", "L-node"});
    CHECK(d.reply(3).rfind("ERR STATE", 0) == 0);       // not applied: the leader re-sends it
    d.step(ev::Outcome{"L.1.1", Decision::committed});  // an answer to an earlier query
    CHECK(d.core.find("L.1.1") != nullptr);
    CHECK(!d.core.find("L.1.1")->applying);
    d.durable(k_rec_heuristic, "L.1.1");
    CHECK(d.reply(2) == "ACK");
    CHECK(d.core.find("L.1.1") == nullptr);
    d.step(ev::Commit{4, "L.1.1", "L-node"});
    CHECK(d.reply(4) == "HEURISTIC ABORTED");
    CHECK(!s.m_data.count("k"));
  }

  TEST_CASE("an operator's decision durable before a crash is carried out at the restart") {
    for (bool commit : {true, false}) {
      INFO(commit);
      store::MemStore s;
      Driver d(s);
      d.prepare(1, "L.1.1", put("k", "v"));
      d.durable(k_rec_prepared, "L.1.1");
      d.step(ev::Resolve{2, "L.1.1", commit, false});
      // The HEURISTIC record is in the log; the crash comes before the decision is carried out.
      store::MemStore s2;
      Driver r(s2);
      for (auto& rec : d.log) r.core.recover(rec);
      r.execute(r.core.start(0, 0, {}));
      if (commit && r.core.find("L.1.1")) r.durable(k_rec_committed, "L.1.1");
      CHECK(r.core.find("L.1.1") == nullptr);
      CHECK(s2.m_data.count("k") == (commit ? 1u : 0u));
      r.step(ev::Commit{3, "L.1.1", "L-node"});
      CHECK(r.reply(3) == (commit ? "ACK" : "HEURISTIC ABORTED"));
    }
  }
}

TEST_SUITE("participant catch-up") {
  // Slot 0 of 3, replicas 2: a key of `want` owners ({0,1}, {0,2} or {1,2}).
  std::string key_owned_by(const membership::Membership& m, std::vector<size_t> want, int from) {
    for (int i = from;; ++i) {
      std::string k = "k" + std::to_string(i);
      if (m.owners(k) == want) return k;
    }
  }

  TEST_CASE("a copied page: written and deleted as the source has it, except newer writes") {
    store::MemStore s;
    Driver d(s);
    auto m = membership::Membership::initial({"a:1", "b:2", "c:3"}, 2);
    d.step(ev::Members{0, m});
    std::string k01 = key_owned_by(m, {0, 1}, 0);       // copied from source 1
    std::string k02 = key_owned_by(m, {0, 2}, 0);       // from source 2: not this page's
    std::string gone = key_owned_by(m, {0, 1}, 1000);   // the source deleted it
    std::string newer = key_owned_by(m, {0, 1}, 2000);  // written here since the copy began
    s.m_data[k02] = "stale-but-not-this-page";
    s.m_data[gone] = "old";
    d.step(ev::SyncBegin{1, protocol::SyncBegin{"p1", {1, 2}}});
    CHECK(d.reply(1) == "ACK");
    d.prepare(2, "L.1.1", {Op{OpKind::put, newer, "mine"}});
    d.durable(k_rec_prepared, "L.1.1");
    d.commit(3, "L.1.1");
    protocol::Sync page{"p1", 1, "", "", false, {{k01, "v1"}, {newer, "older"}}, false};
    d.step(ev::Sync{4, page});
    CHECK(d.reply(4) == "ACK");
    CHECK(s.m_data.at(k01) == "v1");
    CHECK(s.m_data.at(newer) == "mine");
    CHECK(s.m_data.at(k02) == "stale-but-not-this-page");
    CHECK_FALSE(s.m_data.count(gone));
  }

  TEST_CASE("a write prepared as a learner before the pass, committed during it, is not undone") {
    // Its PREPARE may reach a source after that source's page was read: the page is older.
    store::MemStore s;
    Driver d(s);
    auto m = membership::Membership::initial({"a:1", "b:2"}, 0);
    d.step(ev::Members{0, m});
    protocol::Prepare p{"L.1.1", "L", "127.0.0.1:9", put("k", "new"), ""};
    p.learner = true;
    d.step(ev::Prepare{1, std::move(p), "L-node"});
    d.durable(k_rec_prepared, "L.1.1");
    d.step(ev::SyncBegin{2, protocol::SyncBegin{"p1", {1}}});
    d.commit(3, "L.1.1");
    REQUIRE(s.m_data.at("k") == "new");
    protocol::Sync page{"p1", 1, "", "", false, {{"k", "old"}}, true};
    d.step(ev::Sync{4, page});
    CHECK(d.reply(4) == "ACK");
    CHECK(s.m_data.at("k") == "new");
  }

  TEST_CASE("a page waits while a prepared write holds a key of its range, and needs its pass") {
    store::MemStore s;
    Driver d(s);
    auto m = membership::Membership::initial({"a:1", "b:2"}, 0);
    d.step(ev::Members{1, m});
    protocol::Sync page{"p1", 0, "", "", false, {{"a", "1"}}, true};
    d.step(ev::Sync{1, page});
    CHECK(d.reply(1).rfind("ERR STATE", 0) == 0);  // no SYNCBEGIN p1
    d.step(ev::SyncBegin{2, protocol::SyncBegin{"p1", {0}}});
    d.prepare(3, "L.1.1", put("b", "x"));  // prepared before: older or newer, unknown yet
    d.step(ev::Sync{4, page});
    CHECK(d.reply(4).rfind("ERR BUSY", 0) == 0);
    CHECK_FALSE(s.m_data.count("a"));
    // Bounded: a range that ends before the locked key is applied.
    protocol::Sync first{"p1", 0, "", "a", true, {{"a", "1"}}, false};
    d.step(ev::Sync{5, first});
    CHECK(d.reply(5) == "ACK");
    CHECK(s.m_data.at("a") == "1");
  }

  TEST_CASE("a learner prepares without evaluating conditions") {
    store::MemStore s;
    Driver d(s);
    protocol::Prepare p{"L.1.1", "L", "127.0.0.1:9", {Op{OpKind::check, "c", "1"}}, "", true};
    p.ops.push_back(Op{OpKind::put, "w", "v"});
    d.step(ev::Prepare{1, p, "L-node"});
    d.durable(k_rec_prepared, "L.1.1");
    CHECK(d.reply(1) == "YES 7");
  }
}

TEST_SUITE("participant membership changes") {
  TEST_CASE(
      "after a member add a participant drops the keys it lost, also from a later commit, "
      "and releases their locks") {
    store::MemStore s;
    Driver d(s);
    // Slot 0 of three, two copies of each key: it holds every key it owns.
    auto was = membership::Membership::initial({"a:1", "b:2", "c:3"}, 2);
    d.step(ev::Members{0, was, 1});
    std::vector<std::string> mine;
    for (int i = 0; i < 200; ++i) {
      std::string k = "k" + std::to_string(i);
      auto o = was.owners(k);
      if (std::count(o.begin(), o.end(), 0u)) mine.push_back(k);
    }
    for (size_t i = 0; i < mine.size(); ++i) {
      std::string txid = "L.1." + std::to_string(i + 1);
      d.prepare(1, txid, put(mine[i], "v"));
      d.durable(k_rec_prepared, txid);
      d.commit(2, txid);
    }
    REQUIRE(s.m_data.size() == mine.size());
    // A fourth slot joins; a write of a key it takes is prepared here before the cutover.
    auto next = was;
    next.slots.push_back({"d:4", "d:4", membership::State::joining});
    next.epoch = 2;
    d.step(ev::Members{0, next, 2});
    std::string lost;
    for (auto& k : mine) {
      auto o = next.next_owners(k);
      if (!std::count(o.begin(), o.end(), 0u)) lost = k;
    }
    REQUIRE(!lost.empty());
    d.prepare(3, "L.1.900", put(lost, "late"));
    d.durable(k_rec_prepared, "L.1.900");
    auto after = next.cutover();
    d.step(ev::Members{0, after, 3});
    // Every key it no longer owns is gone; the rest stays.
    size_t kept = 0;
    for (auto& k : mine) {
      auto o = after.owners(k);
      bool owns = std::count(o.begin(), o.end(), 0u) > 0;
      CHECK(s.m_data.count(k) == static_cast<size_t>(owns));
      kept += owns;
    }
    CHECK(kept < mine.size());
    CHECK(d.core.pruned_keys() == mine.size() - kept);
    // The late commit leaves the lost key out, and releases its lock: a new write of it
    // prepares.
    d.commit(4, "L.1.900");
    CHECK_FALSE(s.m_data.count(lost));
    d.prepare(5, "L.1.901", put(lost, "again"));
    d.durable(k_rec_prepared, "L.1.901");
    CHECK(d.reply(5) == "YES 7");
    CHECK(d.core.check_invariants().empty());
  }
}

TEST_SUITE("participant epochs") {
  TEST_CASE("requests of an older membership epoch are refused, and a newer one is recorded once") {
    store::MemStore s;
    s.m_data["k"] = "v";
    Driver d(s);
    auto prep = [&](ClientId c, const std::string& txid, uint64_t epoch) {
      protocol::Prepare p{txid, "L", "127.0.0.1:9", put("p" + txid, "x"), ""};
      p.epoch = epoch;
      d.step(ev::Prepare{c, std::move(p), "L-node"});
    };
    prep(1, "L.1.1", 3);
    CHECK(d.core.epoch() == 3);
    REQUIRE(d.log.size() == 2);  // the epoch, then the PREPARED that makes it durable
    CHECK(d.log[0].type == k_rec_epoch);
    CHECK(d.log[1].type == k_rec_prepared);
    prep(2, "L.1.2", 3);
    CHECK(d.log.size() == 3);  // the same epoch: not again
    // Older: refused, and nothing written or locked.
    prep(3, "L.1.3", 2);
    CHECK(d.reply(3).rfind("NO EPOCH", 0) == 0);
    CHECK(d.log.size() == 3);
    CHECK_FALSE(d.core.find("L.1.3"));
    d.step(ev::Read{4, "k", 2});
    CHECK(d.reply(4).rfind("ERR EPOCH", 0) == 0);
    d.step(ev::Scan{5, protocol::Scan{"", "", 10, 1000, "", 1}, "L-node"});
    CHECK(d.reply(5).rfind("ERR EPOCH", 0) == 0);
    // Unsaid (a client's READ) or current: served.
    d.step(ev::Read{6, "k", 0});
    CHECK(d.reply(6) == "VALUE #1\nv");
    d.step(ev::Read{7, "k", 3});
    CHECK(d.reply(7) == "VALUE #1\nv");
    // A newer one through a JOIN's membership; kept by a rewrite and by recovery.
    d.step(ev::Members{0, membership::Membership::initial({"a:1"}, 0), 5});
    CHECK(d.core.epoch() == 5);
    auto rw = Driver::all_rewrites(d.core.step(0, 0, ev::LogFull{}));
    REQUIRE(rw.size() == 1);
    store::MemStore s2;
    Core again(CoreConfig{}, s2);
    for (auto& r : rw[0].live) again.recover(r);
    CHECK(again.epoch() == 5);
  }
}
