// Scripted scenarios of the leader core: events in, actions out, no I/O and no clock.
#include <doctest/doctest.h>

#include "fatal.h"

#include "leader/core.h"
#include "leader/decisions.h"

using namespace tpc;
using namespace tpc::leader;
using protocol::Decision;
using protocol::Op;
using protocol::OpKind;

namespace {
std::vector<Op> put(const std::string& k) { return {Op{OpKind::put, k, "v"}}; }
const std::vector<std::string> peers3 = {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"};

CoreConfig config(uint64_t incarnation = 1, size_t replicas = 0) {
  CoreConfig c;
  c.id = "L";
  c.incarnation = incarnation;
  c.peers = peers3;
  c.replicas = replicas;
  c.advertise = "127.0.0.1:9";
  return c;
}

// A core with every link up, and helpers that pick actions out of a step's output.
struct Driver {
  Core core;
  int64_t now = 0;
  std::vector<txlog::Record> log;  // every appended record, in order
  explicit Driver(CoreConfig c) : core(std::move(c)) {
    for (size_t p = 0; p < core.config().peers.size(); ++p) step(ev::LinkUp{p});
  }
  Actions step(Event e) {
    auto a = core.step(now, std::move(e));
    for (auto& x : a.list)
      if (auto* ap = std::get_if<act::Append>(&x)) log.push_back({ap->type, ap->payload});
    return a;
  }
  template <class T>
  static std::vector<T> all(const Actions& a) {
    std::vector<T> out;
    for (auto& x : a.list)
      if (auto* t = std::get_if<T>(&x)) out.push_back(*t);
    return out;
  }
  template <class M>
  static std::vector<size_t> sent(const Actions& a) {
    std::vector<size_t> out;
    for (auto& s : all<act::Send>(a))
      if (std::holds_alternative<M>(s.msg)) out.push_back(s.part);
    return out;
  }
  static std::optional<ClientReply> reply_to(const Actions& a, ClientId c) {
    for (auto& r : all<act::Reply>(a))
      if (r.client == c) return r.reply;
    return std::nullopt;
  }
  std::string begin(ClientId c, const std::string& rid, std::vector<Op> ops) {
    auto a = step(ev::Txn{c, rid, std::move(ops), false});
    auto s = all<act::Send>(a);
    REQUIRE(!s.empty());
    return std::get<protocol::Prepare>(s[0].msg).txid;
  }
  static protocol::Vote yes() { return {protocol::Vote::yes, "", "", 5}; }
};
}  // namespace

TEST_SUITE("leader") {
  TEST_CASE("all YES: force decision, then commit to every participant, then END") {
    Driver d(config());
    auto txid = d.begin(7, "r1", put("k"));
    CHECK(txid == "L.1.1");
    CHECK(Driver::all<act::Append>(d.step(ev::Vote{txid, 0, Driver::yes()})).empty());
    d.step(ev::Vote{txid, 1, Driver::yes()});
    CHECK(d.core.decision(txid) == Decision::pending);
    auto a = d.step(ev::Vote{txid, 2, Driver::yes()});
    auto app = Driver::all<act::Append>(a);
    REQUIRE(app.size() == 1);
    CHECK(app[0].type == k_rec_commit);
    CHECK(app[0].force);
    // Nobody hears of the decision before it is durable.
    CHECK(Driver::all<act::Reply>(a).empty());
    CHECK(Driver::sent<protocol::Commit>(a).empty());
    CHECK(d.core.decision(txid) == Decision::pending);
    a = d.step(ev::Durable{txid, 0});
    CHECK(d.core.decision(txid) == Decision::committed);
    auto r = Driver::reply_to(a, 7);
    REQUIRE(r);
    CHECK(r->kind == ClientReply::committed);
    CHECK(Driver::sent<protocol::Commit>(a) == std::vector<size_t>{0, 1, 2});
    CHECK(Driver::all<act::Append>(d.step(ev::CommitReply{txid, 0, true})).empty());
    d.step(ev::CommitReply{txid, 0, true});  // duplicate ack
    d.step(ev::CommitReply{txid, 1, true});
    a = d.step(ev::CommitReply{txid, 2, true});
    app = Driver::all<act::Append>(a);
    REQUIRE(app.size() == 1);
    CHECK(app[0].type == k_rec_end);
    CHECK_FALSE(app[0].force);
    CHECK(d.core.active() == 0);
    r = Driver::reply_to(d.step(ev::Result{8, "r1"}), 8);
    CHECK(r->kind == ClientReply::committed);
    CHECK(r->txid == "L.1.1");
  }

  TEST_CASE("a decision store holding another decision aborts the transaction, never commits it") {
    Driver d(config());
    auto txid = d.begin(7, "r9", put("k"));
    for (size_t p = 0; p < 3; ++p) d.step(ev::Vote{txid, p, Driver::yes()});
    // The COMMIT was asked of the store; it answers that the transaction was settled aborted.
    auto a = d.step(ev::Refused{txid});
    auto r = Driver::reply_to(a, 7);
    REQUIRE(r);
    CHECK(r->kind == ClientReply::aborted);
    CHECK(r->code == "SETTLED");
    CHECK(Driver::sent<protocol::Abort>(a) == std::vector<size_t>{0, 1, 2});
    CHECK(Driver::sent<protocol::Commit>(a).empty());
    CHECK(d.core.decision(txid) == Decision::aborted);
    CHECK(d.core.active() == 0);
    r = Driver::reply_to(d.step(ev::Result{8, "r9"}), 8);
    REQUIRE(r);
    CHECK(r->kind == ClientReply::aborted);
    // A refusal of a transaction not deciding (unknown, or already committed) changes nothing.
    CHECK(d.step(ev::Refused{"L.1.99"}).list.empty());
  }

  TEST_CASE("OUTCOME of another leader's transaction is PENDING, never a presumed abort") {
    Driver d(config());
    auto r = Driver::reply_to(d.step(ev::Outcome{3, "M.1.1", std::nullopt, "", 0}), 3);
    REQUIRE(r);
    CHECK(r->kind == ClientReply::pending);
    // Its own unknown ids are presumed aborted, as always.
    r = Driver::reply_to(d.step(ev::Outcome{4, "L.1.77", std::nullopt, "", 0}), 4);
    REQUIRE(r);
    CHECK(r->kind == ClientReply::aborted);
  }

  TEST_CASE("one NO aborts and tells those that may hold a prepare") {
    Driver d(config());
    auto txid = d.begin(1, "", put("k"));
    d.step(ev::Vote{txid, 0, Driver::yes()});
    auto a = d.step(ev::Vote{txid, 1, {protocol::Vote::no, "CONFLICT", "locked", 0}});
    auto r = Driver::reply_to(a, 1);
    REQUIRE(r);
    CHECK(r->kind == ClientReply::aborted);
    CHECK(r->code == "CONFLICT");
    CHECK(Driver::sent<protocol::Abort>(a) == std::vector<size_t>{0, 2});
    CHECK(Driver::all<act::Append>(a).empty());  // presumed abort: nothing logged
    CHECK(d.core.decision(txid) == Decision::aborted);
    CHECK(d.step(ev::Vote{txid, 2, Driver::yes()}).list.empty());  // late vote ignored
  }

  TEST_CASE("a lost or garbled vote is a NO") {
    Driver d(config());
    auto txid = d.begin(1, "", put("k"));
    auto a = d.step(ev::Vote{txid, 1, protocol::parse_vote(std::string("WAT"))});
    CHECK(Driver::reply_to(a, 1)->code == "ERROR");
    txid = d.begin(2, "", put("k"));
    a = d.step(ev::Vote{txid, 2, protocol::parse_vote(Status::error("UNAVAILABLE", "gone"))});
    CHECK(Driver::reply_to(a, 2)->code == "UNAVAILABLE");
  }

  TEST_CASE("the prepare timeout is a tick: abort at the deadline, never after the decision") {
    Driver d(config());
    auto txid = d.begin(1, "", put("k"));
    auto a = d.step(ev::Tick{});
    CHECK(a.wake_at == 2000);  // the core asks to be woken at the deadline
    d.now = 1999;
    CHECK(Driver::all<act::Reply>(d.step(ev::Tick{})).empty());
    d.now = 2000;
    a = d.step(ev::Tick{});
    auto r = Driver::reply_to(a, 1);
    REQUIRE(r);
    CHECK(r->code == "TIMEOUT");
    CHECK(r->detail.find("127.0.0.1:1") != std::string::npos);
    auto t2 = d.begin(2, "", put("k"));
    for (size_t p = 0; p < 3; ++p) d.step(ev::Vote{t2, p, Driver::yes()});
    d.now = 10000;
    CHECK(Driver::all<act::Reply>(d.step(ev::Tick{})).empty());
    CHECK(d.core.phase(t2) == Core::Phase::deciding);
  }

  TEST_CASE("an unacknowledged COMMIT is re-sent with backoff, and at once when the link returns") {
    Driver d(config());
    auto txid = d.begin(1, "", put("k"));
    for (size_t p = 0; p < 3; ++p) d.step(ev::Vote{txid, p, Driver::yes()});
    d.step(ev::Durable{txid, 0});
    d.step(ev::CommitReply{txid, 0, true});
    d.step(ev::CommitReply{txid, 1, false});  // lost
    d.step(ev::LinkDown{2});
    d.now = 200;
    auto a = d.step(ev::Tick{});
    CHECK(Driver::sent<protocol::Commit>(a) == std::vector<size_t>{1});
    d.now = 400;  // backoff doubled: nothing yet
    CHECK(Driver::sent<protocol::Commit>(d.step(ev::Tick{})).empty());
    d.now = 600;
    CHECK(Driver::sent<protocol::Commit>(d.step(ev::Tick{})) == std::vector<size_t>{1});
    a = d.step(ev::LinkUp{2});
    CHECK(Driver::sent<protocol::Commit>(a) == std::vector<size_t>{2});
    CHECK(d.core.unacked() == 2);
  }

  TEST_CASE("crash after the decision is durable: restart re-sends COMMIT") {
    std::vector<txlog::Record> log;
    {
      Driver d(config());
      auto txid = d.begin(1, "r9", put("k"));
      for (size_t p = 0; p < 3; ++p) d.step(ev::Vote{txid, p, Driver::yes()});
      d.step(ev::Durable{txid, 0});
      d.step(ev::CommitReply{txid, 0, true});  // one acknowledged, then the leader crashed
      log = d.log;
    }
    Core c(config(2));
    for (auto& r : log) c.recover(r);
    c.start(0);
    CHECK(c.decision("L.1.1") == Decision::committed);
    auto a = c.step(0, ev::LinkUp{0});  // acks are not logged: re-send to all (idempotent)
    CHECK(Driver::sent<protocol::Commit>(a) == std::vector<size_t>{0});
    CHECK(c.unacked() == 3);
    auto r = Driver::reply_to(c.step(0, ev::Result{3, "r9"}), 3);
    CHECK(r->kind == ClientReply::committed);
    // New ids never repeat an old incarnation's.
    c.step(0, ev::LinkUp{1});
    c.step(0, ev::LinkUp{2});
    auto b = c.step(0, ev::Txn{4, "", put("x"), false});
    CHECK(std::get<protocol::Prepare>(Driver::all<act::Send>(b)[0].msg).txid == "L.2.1");
  }

  TEST_CASE("a log rewrite keeps undelivered decisions and recent committed request ids") {
    Driver d(config());
    auto t1 = d.begin(1, "rid-7", put("k"));
    for (size_t p = 0; p < 3; ++p) d.step(ev::Vote{t1, p, Driver::yes()});
    d.step(ev::Durable{t1, 0});
    for (size_t p = 0; p < 3; ++p) d.step(ev::CommitReply{t1, p, true});
    auto t2 = d.begin(2, "rid-8", put("x"));  // still preparing: nothing to keep
    auto t3 = d.begin(3, "", put("y"));
    for (size_t p = 0; p < 3; ++p) d.step(ev::Vote{t3, p, Driver::yes()});  // deciding
    auto rw = Driver::all<act::Rewrite>(d.step(ev::LogFull{}));
    REQUIRE(rw.size() == 1);
    REQUIRE(rw[0].live.size() == 2);
    CHECK(rw[0].live[0].type == k_rec_rid);
    CHECK(rw[0].live[1].type == k_rec_commit);
    // After a restart from the rewritten log, RESULT still knows, and t3 is re-sent.
    Core again(config(2));
    for (auto& r : rw[0].live) again.recover(r);
    again.start(0);
    auto r = Driver::reply_to(again.step(0, ev::Result{9, "rid-7"}), 9);
    CHECK(r->kind == ClientReply::committed);
    CHECK(r->txid == t1);
    CHECK(again.decision(t1) == Decision::aborted);  // ended: no participant can still ask
    CHECK(again.decision(t3) == Decision::committed);
    CHECK(again.decision(t2) == Decision::aborted);
  }

  TEST_CASE("a known request id with other ops is refused, before and after a restart") {
    Driver d(config());
    auto t1 = d.begin(1, "rid-1", put("k"));
    // While it runs, and once it committed: the same id with other ops is never answered
    // with this transaction's outcome, and nothing is sent for it.
    auto a = d.step(ev::Txn{2, "rid-1", put("other"), false});
    CHECK(Driver::all<act::Send>(a).empty());
    CHECK(Driver::reply_to(a, 2)->code == "RIDREUSE");
    for (size_t p = 0; p < 3; ++p) d.step(ev::Vote{t1, p, Driver::yes()});
    d.step(ev::Durable{t1, 0});
    a = d.step(ev::Txn{3, "rid-1", put("other"), false});
    CHECK(Driver::reply_to(a, 3)->code == "RIDREUSE");
    // The same request again is answered with its outcome.
    a = d.step(ev::Txn{4, "rid-1", put("k"), false});
    CHECK(Driver::reply_to(a, 4)->kind == ClientReply::committed);
    // The fingerprint survives the COMMIT record, a rewrite and a restart.
    {
      Core again(config(2));
      for (auto& r : d.log) again.recover(r);
      again.start(0);
      a = again.step(0, ev::Txn{5, "rid-1", put("other"), false});
      CHECK(Driver::reply_to(a, 5)->code == "RIDREUSE");
    }
    for (size_t p = 0; p < 3; ++p) d.step(ev::CommitReply{t1, p, true});
    auto rw = Driver::all<act::Rewrite>(d.step(ev::LogFull{}));
    REQUIRE(rw.size() == 1);
    Core again(config(2));
    for (auto& r : rw[0].live) again.recover(r);
    again.start(0);
    a = again.step(0, ev::Txn{6, "rid-1", put("other"), false});
    CHECK(Driver::reply_to(a, 6)->code == "RIDREUSE");
    a = again.step(0, ev::Txn{7, "rid-1", put("k"), false});
    CHECK(Driver::reply_to(a, 7)->kind == ClientReply::committed);
  }

  TEST_CASE("a transaction whose PREPARE a participant would refuse as too long is refused") {
    Driver d(config());
    d.step(ev::LinkUp{1, 300});  // participant 1 accepts lines of 300 bytes
    auto a = d.step(ev::Txn{1, "r1", {Op{OpKind::put, "k", std::string(250, 'v')}}, false});
    CHECK(Driver::all<act::Send>(a).empty());
    CHECK(Driver::reply_to(a, 1)->code == "TOOLONG");
    // A key's escaping counts (100 bytes each written %XX are 300 on the wire); a value is
    // sent as its raw bytes, however many of them would need escaping in a token.
    a = d.step(ev::Txn{2, "", {Op{OpKind::put, std::string(100, '\n'), "v"}}, false});
    CHECK(Driver::reply_to(a, 2)->code == "TOOLONG");
    a = d.step(ev::Txn{3, "", {Op{OpKind::put, "k", std::string(120, '\n')}}, false});
    CHECK(!Driver::all<act::Send>(a).empty());
    CHECK(!Driver::reply_to(a, 3));
    // The refused ones started nothing: the one sent took the first sequence number.
    CHECK(d.begin(4, "", put("k")) == "L.1.2");
  }

  TEST_CASE("a pause holds new transactions and answers once nothing is in flight") {
    Driver d(config());
    auto t1 = d.begin(1, "r1", put("k"));
    auto a = d.step(ev::Pause{2, 5000});
    CHECK_FALSE(Driver::reply_to(a, 2));  // t1 still preparing
    // A new transaction is held: nothing is sent for it.
    a = d.step(ev::Txn{3, "r3", put("x"), false});
    CHECK(Driver::all<act::Send>(a).empty());
    CHECK_FALSE(Driver::reply_to(a, 3));
    for (size_t p = 0; p < 3; ++p) d.step(ev::Vote{t1, p, Driver::yes()});
    a = d.step(ev::Durable{t1, 0});
    CHECK(Driver::reply_to(a, 1)->kind == ClientReply::committed);
    CHECK_FALSE(Driver::reply_to(a, 2));  // committed, but COMMITs not yet acknowledged
    d.step(ev::CommitReply{t1, 0, true});
    d.step(ev::CommitReply{t1, 1, true});
    a = d.step(ev::CommitReply{t1, 2, true});
    REQUIRE(Driver::reply_to(a, 2));
    CHECK(Driver::reply_to(a, 2)->kind == ClientReply::ok);
    // A second pause while paused is refused.
    CHECK(Driver::reply_to(d.step(ev::Pause{4, 5000}), 4)->code == "BUSY");
    // Resume: the held transaction starts.
    a = d.step(ev::Resume{5});
    CHECK(Driver::reply_to(a, 5)->kind == ClientReply::ok);
    CHECK(Driver::sent<protocol::Prepare>(a).size() == 3);
    CHECK_FALSE(d.core.paused());
  }

  TEST_CASE("a pause ends by itself: a backup client that died never stops the cluster") {
    Driver d(config());
    auto t1 = d.begin(1, "", put("k"));
    auto a = d.step(ev::Pause{2, 300});
    CHECK(a.wake_at <= 300);
    d.step(ev::Txn{3, "", put("x"), false});
    d.now = 300;
    for (size_t p = 0; p < 3; ++p) d.step(ev::Vote{t1, p, Driver::yes()});  // still in flight
    a = d.step(ev::Tick{});
    CHECK(Driver::reply_to(a, 2)->code == "TIMEOUT");
    CHECK(Driver::sent<protocol::Prepare>(a).size() == 3);  // the held one runs
    CHECK_FALSE(d.core.paused());
  }

  TEST_CASE("crash before the decision is durable: presumed abort, and the rid is spent") {
    Core c(config(2));
    c.start(0);
    CHECK(c.decision("L.1.5") == Decision::aborted);
    auto r = Driver::reply_to(c.step(0, ev::Result{1, "lost-rid"}), 1);
    CHECK(r->kind == ClientReply::aborted);
    // A request with that rid arriving later is never run.
    auto a = c.step(0, ev::Txn{2, "lost-rid", put("k"), false});
    CHECK(Driver::all<act::Send>(a).empty());
    CHECK(Driver::reply_to(a, 2)->code == "DUPLICATE");
  }

  TEST_CASE("a read goes to an owner, and to the next one when that owner is gone") {
    auto cfg = config();
    cfg.exclude = false;  // down participants stay members (exclusion: its own tests)
    Driver d(cfg);
    auto a = d.step(ev::Get{1, "k"});
    auto s = Driver::all<act::Send>(a);
    REQUIRE(s.size() == 1);
    a = d.step(ev::ReadReply{s[0].read, s[0].part,
                             protocol::parse_read_reply(Status::error("UNAVAILABLE", "lost"))});
    auto s2 = Driver::all<act::Send>(a);
    REQUIRE(s2.size() == 1);
    CHECK(s2[0].part != s[0].part);
    a = d.step(ev::ReadReply{s2[0].read, s2[0].part,
                             protocol::parse_read_reply(std::string("VALUE v%20w"))});
    auto r = Driver::reply_to(a, 1);
    REQUIRE(r);
    CHECK(r->kind == ClientReply::found);
    CHECK(r->value == "v w");
    for (size_t p = 0; p < 3; ++p) d.step(ev::LinkDown{p});
    // Connecting (lost less than --exclude-after ago): the read waits for an owner...
    a = d.step(ev::Get{2, "k"});
    CHECK(a.list.empty());
    CHECK(a.wake_at == 5000);
    // ...and fails once every owner is down.
    d.now = 5000;
    CHECK(Driver::reply_to(d.step(ev::Tick{}), 2)->code == "UNAVAILABLE");
    CHECK(Driver::reply_to(d.step(ev::Get{3, "k"}), 3)->code == "UNAVAILABLE");
  }

  TEST_CASE("a participant not reached yet is connecting: writes for its keys wait for it") {
    // Just started: no link is up yet. A write waits, and runs when the links come up.
    auto cfg = config();
    cfg.exclude = false;  // down participants stay members (exclusion: its own tests)
    Core c(cfg);
    c.start(1000);
    auto a = c.step(1000, ev::Txn{1, "r1", put("k"), false});
    CHECK(a.list.empty());
    CHECK(a.wake_at == 6000);  // --exclude-after (5 s) past the start
    // Its request id is known as pending meanwhile: a retry is not run twice.
    CHECK(Driver::reply_to(c.step(1100, ev::Txn{2, "r1", put("k"), false}), 2)->code == "PENDING");
    c.step(1200, ev::LinkUp{0});
    c.step(1200, ev::LinkUp{1});
    CHECK(Driver::all<act::Send>(c.step(1300, ev::Tick{})).empty());
    a = c.step(1400, ev::LinkUp{2});
    CHECK(Driver::sent<protocol::Prepare>(a) == std::vector<size_t>{0, 1, 2});
    CHECK(c.preparing() == 1);
    // A link lost: connecting again for --exclude-after, then down.
    c.step(2000, ev::LinkDown{1});
    a = c.step(2100, ev::Txn{3, "", put("x"), false});
    CHECK(a.list.empty());
    CHECK(Driver::sent<protocol::Prepare>(c.step(6999, ev::Tick{})).empty());
    CHECK(c.step(6999, ev::Tick{}).wake_at == 7000);
    a = c.step(7000, ev::Tick{});
    // Down now: the write runs and its PREPARE to participant 1 fails as before.
    CHECK(Driver::sent<protocol::Prepare>(a) == std::vector<size_t>{0, 1, 2});
  }

  TEST_CASE("writes wait for a connecting participant while paused, and run at the resume") {
    Core c(config());
    c.start(0);
    c.step(0, ev::LinkUp{0});
    c.step(0, ev::LinkUp{1});
    CHECK(Driver::reply_to(c.step(0, ev::Pause{9, 10000}), 9)->kind == ClientReply::ok);
    CHECK(c.step(0, ev::Txn{1, "", put("k"), false}).list.empty());  // held by the pause
    CHECK(c.step(10, ev::LinkUp{2}).list.empty());
    CHECK(Driver::sent<protocol::Prepare>(c.step(20, ev::Resume{8})).size() == 3);
  }

  TEST_CASE("placement: replicas owners per key, deterministic and spread") {
    Core c(config(1, 1));
    std::vector<int> load(3);
    for (int i = 0; i < 3000; ++i) {
      auto o = c.owners("key" + std::to_string(i));
      REQUIRE(o.size() == 1);
      CHECK(o == c.owners("key" + std::to_string(i)));
      ++load[o[0]];
    }
    for (int l : load) CHECK(l > 700);
    Driver one(config(1, 1)), all(config());
    CHECK(all.core.owners("x").size() == 3);
    // A participant is sent only the ops on keys it owns.
    std::vector<Op> ops;
    for (int i = 0; i < 12; ++i) ops.push_back(Op{OpKind::put, "k" + std::to_string(i), "v"});
    size_t total = 0;
    for (auto& s : Driver::all<act::Send>(one.step(ev::Txn{1, "", ops, false}))) {
      auto& pr = std::get<protocol::Prepare>(s.msg);
      for (auto& op : pr.ops) CHECK(c.owners(op.key) == std::vector<size_t>{s.part});
      total += pr.ops.size();
    }
    CHECK(total == ops.size());
    auto sends = Driver::all<act::Send>(all.step(ev::Txn{2, "", ops, false}));
    REQUIRE(sends.size() == 3);
    for (auto& s : sends) CHECK(std::get<protocol::Prepare>(s.msg).ops.size() == ops.size());
  }
}

TEST_SUITE("leader") {
  TEST_CASE("recovery refuses records that pass the checksum but are malformed") {
    auto refuses = [&](txlog::Record r) {
      Core c(config());
      return tpc::test::fatal_of([&] { c.recover(r); });
    };
    CHECK(refuses({k_rec_commit, encode_commit("L.1.1", "r", {0, 2}, 7)}).empty());
    CHECK(refuses({k_rec_commit, encode_commit("L.1.1", "r", {0, 7}, 7)}).find("unknown peer") !=
          std::string::npos);
    std::string c = encode_commit("L.1.1", "r", {0, 1}, 7);
    CHECK(refuses({k_rec_commit, c.substr(0, c.size() - 1)}).find("undecodable") !=
          std::string::npos);
    CHECK(refuses({k_rec_end, ""}).find("undecodable") != std::string::npos);
    CHECK(refuses({k_rec_rid, txlog::Encoder().str("r").data()}).find("undecodable") !=
          std::string::npos);
    CHECK(refuses({9, ""}).find("unknown record type") != std::string::npos);
  }

  TEST_CASE("the incarnation is bumped at every start, a damaged file is refused") {
    CHECK(*next_incarnation(std::nullopt) == 1);
    CHECK(*next_incarnation(std::string("41\n")) == 42);
    CHECK_FALSE(next_incarnation(std::string("")).is_ok());
    CHECK_FALSE(next_incarnation(std::string("x7")).is_ok());
    CHECK_FALSE(next_incarnation(std::string("0\n")).is_ok());
  }
}

TEST_SUITE("decision batches") {
  TEST_CASE("a batch round-trips any bytes, and anything else is refused") {
    std::vector<std::pair<std::string, std::string>> ds{
        {"1.2.3", encode_commit("1.2.3", "rid-a", {0, 2}, 42)},
        {"1.2.4", std::string("\0\n tpcb1 9\n", 11)},
        {"1.2.5", ""}};
    std::string v = encode_batch(ds);
    auto back = decode_batch(v);
    REQUIRE(back);
    CHECK(*back == ds);
    auto c = decode_commit(back->at(0).second);
    REQUIRE(c);
    CHECK(c->rid == "rid-a");
    CHECK(decode_batch(encode_batch({}))->empty());
    // Cut anywhere, or with a byte more, it is no batch.
    for (size_t n = 0; n < v.size(); ++n) CHECK_FALSE(decode_batch(v.substr(0, n)).is_ok());
    CHECK_FALSE(decode_batch(v + "x").is_ok());
    CHECK_FALSE(decode_batch("tpcb1 1\n0 0\n").is_ok());          // an empty txid
    CHECK_FALSE(decode_batch("tpcb1 1\n-1 0\nx").is_ok());        // not a number
    CHECK_FALSE(decode_batch("tpcb1 1\n1 99999999999\nx").is_ok());  // past every limit
    CHECK_FALSE(decode_batch("tpcb2 0\n").is_ok());
    CHECK_FALSE(decode_batch("abort").is_ok());
  }
}

TEST_SUITE("leader scan") {
  protocol::ScanReply page(bool more, std::vector<std::pair<std::string, std::string>> kvs) {
    protocol::ScanReply r;
    r.kind = protocol::ScanReply::keys;
    r.more = more;
    r.kvs = std::move(kvs);
    return r;
  }

  TEST_CASE("pages merge up to the smallest MORE page's last key, once per key") {
    auto m = merge_scan({page(true, {{"a", "1"}, {"c", "3"}}),
                         page(false, {{"b", "2"}, {"d", "4"}}), page(false, {{"a", "1"}})},
                        10, 1000);
    CHECK(protocol::encode(m) ==
          "KEYS MORE 3 a #1 b #1 c #1\n1\n2\n3");  // d is after c: not yet known
    m = merge_scan({page(false, {{"a", "1"}, {"c", "3"}}), page(false, {{"b", "2"}})}, 10, 1000);
    CHECK(protocol::encode(m) == "KEYS END 3 a #1 b #1 c #1\n1\n2\n3");
    m = merge_scan({page(false, {{"a", "1"}, {"c", "3"}}), page(false, {{"b", "2"}})}, 2, 1000);
    CHECK(protocol::encode(m) == "KEYS MORE 2 a #1 b #1\n1\n2");
    m = merge_scan({page(false, {{"a", "1"}, {"c", "3"}}), page(false, {{"b", "2"}})}, 10, 3);
    CHECK(protocol::encode(m) == "KEYS MORE 1 a #1\n1");
    m = merge_scan({page(false, {}), page(false, {})}, 10, 3);
    CHECK(protocol::encode(m) == "KEYS END 0");
  }

  TEST_CASE("every key on every participant: one is read, the next when it is gone") {
    Driver d(config());
    auto a = d.step(ev::Scan{1, "p/", "", 10, 1000});
    auto s = Driver::all<act::Send>(a);
    REQUIRE(s.size() == 1);
    CHECK(std::get<protocol::Scan>(s[0].msg).watch.empty());  // one snapshot: nothing to check
    a = d.step(ev::ScanReply{s[0].read, s[0].part,
                             protocol::parse_scan_reply(Status::error("UNAVAILABLE", "lost"))});
    auto s2 = Driver::all<act::Send>(a);
    REQUIRE(s2.size() == 1);
    CHECK(s2[0].part != s[0].part);
    a = d.step(ev::ScanReply{s2[0].read, s2[0].part,
                             protocol::parse_scan_reply(std::string("KEYS END 1 p/a #1\n1"))});
    auto r = Driver::reply_to(a, 1);
    REQUIRE(r);
    CHECK(encode(*r) == "KEYS END 1 p/a #1\n1");
  }

  TEST_CASE("spread keys: every participant is read, and the pages hold only if no range changed") {
    Driver d(config(1, 1));
    auto a = d.step(ev::Scan{1, "p/", "", 10, 1000});
    auto s = Driver::all<act::Send>(a);
    REQUIRE(s.size() == 3);
    std::string watch = std::get<protocol::Scan>(s[0].msg).watch;
    CHECK_FALSE(watch.empty());
    std::vector<std::string> pages = {"KEYS END 1 p/a #1\n1", "KEYS END 1 p/c #1\n3",
                                      "KEYS END 1 p/b #1\n2"};
    auto answer = [&](const std::vector<act::Send>& sends) {
      Actions last;
      for (auto& x : sends)
        last = d.step(ev::ScanReply{x.read, x.part, protocol::parse_scan_reply(pages[x.part])});
      return last;
    };
    a = answer(s);
    CHECK_FALSE(Driver::reply_to(a, 1));  // not before every participant vouched for its page
    auto checks = Driver::all<act::Send>(a);
    REQUIRE(checks.size() == 3);
    CHECK(std::get<protocol::ScanCheck>(checks[0].msg).watch == watch);
    // One range changed (a write was prepared there after that participant's page): again.
    a = d.step(ev::ScanChecked{checks[0].read, 0, watch, true});
    a = d.step(ev::ScanChecked{checks[1].read, 1, watch, false});
    a = d.step(ev::ScanChecked{checks[2].read, 2, watch, true});
    CHECK_FALSE(Driver::reply_to(a, 1));
    auto again = Driver::all<act::Send>(a);
    REQUIRE(again.size() == 3);
    std::string watch2 = std::get<protocol::Scan>(again[0].msg).watch;
    CHECK(watch2 != watch);
    a = answer(again);
    for (size_t p = 0; p < 3; ++p) a = d.step(ev::ScanChecked{again[0].read, p, watch2, true});
    auto r = Driver::reply_to(a, 1);
    REQUIRE(r);
    CHECK(encode(*r) == "KEYS END 3 p/a #1 p/b #1 p/c #1\n1\n2\n3");
  }

  TEST_CASE("a range that keeps changing is ERR CONFLICT, a participant down UNAVAILABLE") {
    Driver d(config(1, 1));
    auto a = d.step(ev::Scan{1, "p/", "", 10, 1000});
    for (int attempt = 0; attempt < k_scan_attempts; ++attempt) {
      auto s = Driver::all<act::Send>(a);
      REQUIRE(s.size() == 3);
      std::string w = std::get<protocol::Scan>(s[0].msg).watch;
      for (auto& x : s)
        a = d.step(
            ev::ScanReply{x.read, x.part, protocol::parse_scan_reply(std::string("KEYS END 0"))});
      for (size_t p = 0; p < 3; ++p) a = d.step(ev::ScanChecked{s[0].read, p, w, p != 2});
    }
    auto r = Driver::reply_to(a, 1);
    REQUIRE(r);
    CHECK(r->code == "CONFLICT");
    // With one owner per key, any participant down leaves keys nobody can list.
    d.step(ev::LinkDown{1});
    r = Driver::reply_to(d.step(ev::Scan{2, "", "", 10, 1000}), 2);
    REQUIRE(r);
    CHECK(r->code == "UNAVAILABLE");
    // With two owners, one down is fine: every key has an owner up.
    Driver d2(config(1, 2));
    d2.step(ev::LinkDown{1});
    CHECK(Driver::all<act::Send>(d2.step(ev::Scan{3, "", "", 10, 1000})).size() == 2);
  }
}

// Heuristic outcomes (an operator finished a transaction at a participant): recorded durably
// when they contradict the decision, shown by RESULT, kept across restarts and rewrites until
// forgotten.
TEST_SUITE("leader heuristics") {
  std::string committed(Driver & d, const std::string& rid) {
    auto txid = d.begin(7, rid, put("bank"));
    for (size_t p = 0; p < 3; ++p) d.step(ev::Vote{txid, p, Driver::yes()});
    d.step(ev::Durable{txid, 0});
    return txid;
  }

  TEST_CASE("HEURISTIC ABORTED in reply to COMMIT is recorded before END, and RESULT says so") {
    Driver d(config());
    auto txid = committed(d, "r1");
    d.step(ev::CommitReply{txid, 0, true});
    auto a = d.step(ev::CommitReply{txid, 1, false, true});
    auto app = Driver::all<act::Append>(a);
    REQUIRE(app.size() == 1);
    CHECK(app[0].type == k_rec_heuristic);
    CHECK(app[0].force);
    // The last answer: the END record waits for the mismatch to be durable (with a shared
    // store, the END there must not outlive a mismatch lost in a crash).
    CHECK(Driver::all<act::Append>(d.step(ev::CommitReply{txid, 2, true})).empty());
    app = Driver::all<act::Append>(d.step(ev::Durable{txid, 0, k_rec_heuristic}));
    REQUIRE(app.size() == 1);
    CHECK(app[0].type == k_rec_end);  // the mismatch counted as participant 1's answer
    // The same reply again (a re-send crossed it): recorded once.
    CHECK(Driver::all<act::Append>(d.step(ev::CommitReply{txid, 1, false, true})).empty());
    auto r = Driver::reply_to(d.step(ev::Result{8, "r1"}), 8);
    REQUIRE(r);
    CHECK(r->kind == ClientReply::heuristic);
    CHECK(encode(*r) ==
          "HEURISTIC L.1.1 commit participant 127.0.0.1:2 aborted it on an operator's order "
          "(tpc client heuristics)");
    REQUIRE(d.core.mismatches().size() == 1);
    // Across a restart and a log rewrite, until an operator forgets it.
    Core c2(config(2));
    for (auto& rec : d.log) c2.recover(rec);
    CHECK(c2.mismatches().size() == 1);
    auto rw = Driver::all<act::Rewrite>(c2.step(0, ev::LogFull{}));
    REQUIRE(rw.size() == 1);
    size_t kept = std::count_if(rw[0].live.begin(), rw[0].live.end(),
                                [](auto& x) { return x.type == k_rec_heuristic; });
    CHECK(kept == 1);
    a = d.step(ev::Forget{9, txid});
    CHECK(Driver::reply_to(a, 9)->kind == ClientReply::ok);
    CHECK(d.core.mismatches().empty());
    CHECK(Driver::reply_to(d.step(ev::Forget{10, txid}), 10)->code == "NOTFOUND");
    CHECK(Driver::reply_to(d.step(ev::Result{11, "r1"}), 11)->kind == ClientReply::committed);
    Core c3(config(3));
    for (auto& rec : d.log) c3.recover(rec);
    CHECK(c3.mismatches().empty());
  }

  TEST_CASE(
      "a participant's report contradicting a presumed abort is forced before it is answered") {
    Driver d(config());
    // The leader never decided L.1.5 (it died first): presumed abort. The operator committed
    // it at participant 2.
    auto a = d.step(ev::Outcome{3, "L.1.5", true, "rid5", 2});
    CHECK(!Driver::reply_to(a, 3));  // not before the record is durable
    auto app = Driver::all<act::Append>(a);
    REQUIRE(app.size() == 1);
    CHECK(app[0].type == k_rec_heuristic);
    CHECK(app[0].force);
    // A second report while the force runs waits for it too.
    CHECK(!Driver::reply_to(d.step(ev::Outcome{4, "L.1.5", true, "rid5", 2}), 4));
    a = d.step(ev::Durable{"L.1.5", 0, k_rec_heuristic});
    CHECK(Driver::reply_to(a, 3)->kind == ClientReply::aborted);
    CHECK(Driver::reply_to(a, 4)->kind == ClientReply::aborted);
    auto r = Driver::reply_to(d.step(ev::Result{8, "rid5"}), 8);
    CHECK(r->kind == ClientReply::heuristic);
    CHECK(r->code == "abort");
    // An agreeing report records nothing.
    a = d.step(ev::Outcome{5, "L.1.6", false, "", 1});
    CHECK(Driver::all<act::Append>(a).empty());
    CHECK(Driver::reply_to(a, 5)->kind == ClientReply::aborted);
    // A report from a peer that is none of the participants is answered, not recorded.
    a = d.step(ev::Outcome{6, "L.1.7", true, "", SIZE_MAX});
    CHECK(Driver::all<act::Append>(a).empty());
    CHECK(d.core.mismatches().size() == 1);
  }

  TEST_CASE("a report of an agreeing commit after END is not taken for a mismatch") {
    Driver d(config());
    auto txid = committed(d, "r2");
    for (size_t p = 0; p < 3; ++p) d.step(ev::CommitReply{txid, p, true});
    CHECK(d.core.decision(txid) == Decision::aborted);  // forgotten: presumed abort
    // The request id still says committed: the report agrees.
    auto a = d.step(ev::Outcome{3, txid, true, "r2", 0});
    CHECK(Driver::all<act::Append>(a).empty());
    CHECK(Driver::reply_to(a, 3)->kind == ClientReply::committed);
  }

  TEST_CASE("HEURISTIC COMMITTED in reply to ABORT is recorded") {
    Driver d(config());
    auto txid = d.begin(7, "r3", put("k"));
    d.step(ev::Vote{txid, 0, Driver::yes()});
    d.step(ev::Vote{txid, 1, protocol::Vote{protocol::Vote::no, "CONFLICT", "x", 0}});
    auto a = d.step(ev::AbortReply{txid, 0});
    auto app = Driver::all<act::Append>(a);
    REQUIRE(app.size() == 1);
    CHECK(app[0].type == k_rec_heuristic);
    auto m = decode_mismatch(app[0].payload);
    REQUIRE(m.is_ok());
    CHECK(!m->decided_commit);
    CHECK(m->their_commit);
  }
}

// Several leaders over a shared decision store (etcd): another leader's transactions are
// looked up there, and settled by this core's rule (takeover, fencing); the store only
// executes (docs/decision-store.md).
TEST_SUITE("leader shared store") {
  CoreConfig shared() {
    CoreConfig c = config();
    c.shared_store = true;
    c.takeover_after_ms = 2000;
    return c;
  }
  ClientReply::Kind kind_of(const Actions& a, ClientId c) {
    auto r = Driver::reply_to(a, c);
    REQUIRE(r.has_value());
    return r->kind;
  }

  TEST_CASE("OUTCOME of another leader's transaction is looked up in the store") {
    Driver d(shared());
    auto a = d.step(ev::Outcome{4, "M.3.9", std::nullopt, "", SIZE_MAX, 150});
    auto l = Driver::all<act::Lookup>(a);
    REQUIRE(l.size() == 1);
    CHECK(l[0].client == 4);
    CHECK(l[0].txid == "M.3.9");
    CHECK(l[0].owner == "M");
    CHECK(l[0].held_ms == 150);
    CHECK(Driver::all<act::Reply>(a).empty());
    // Its own transactions are not: presumed abort holds for them.
    auto own = d.step(ev::Outcome{5, "L.1.77", std::nullopt, "", SIZE_MAX, 150});
    CHECK(Driver::all<act::Lookup>(own).empty());
    CHECK(kind_of(own, 5) == ClientReply::aborted);
  }

  TEST_CASE("what the store holds answers: committed, aborted, or pending while its owner lives") {
    Driver d(shared());
    CHECK(kind_of(d.step(ev::Looked{1, "M.3.9", "M", 100, StoreFacts{true, false, true}}), 1) ==
          ClientReply::committed);
    CHECK(kind_of(d.step(ev::Looked{2, "M.3.9", "M", 100, StoreFacts{false, true, false}}), 2) ==
          ClientReply::aborted);
    auto a = d.step(ev::Looked{3, "M.3.9", "M", 100, StoreFacts{false, false, true}});
    CHECK(kind_of(a, 3) == ClientReply::pending);
    CHECK(Driver::all<act::Settle>(a).empty());
    auto e = d.step(ev::Looked{6, "M.3.9", "M", 100, Status::error("UNAVAILABLE", "etcd down")});
    CHECK(kind_of(e, 6) == ClientReply::error);
  }

  TEST_CASE("takeover: an owner that is gone is settled, fenced on its key staying gone") {
    Driver d(shared());
    auto a = d.step(ev::Looked{3, "M.3.9", "M", 100, StoreFacts{false, false, false}});
    auto s = Driver::all<act::Settle>(a);
    REQUIRE(s.size() == 1);
    CHECK(s[0].txid == "M.3.9");
    CHECK(s[0].owner == "M");
    CHECK(s[0].fenced);
    CHECK(Driver::all<act::Reply>(a).empty());  // only once the store has settled it
  }

  TEST_CASE("takeover-after: an owner alive but holding it past the bound is settled unfenced") {
    Driver d(shared());
    auto a = d.step(ev::Looked{3, "M.3.9", "M", 2000, StoreFacts{false, false, true}});
    auto s = Driver::all<act::Settle>(a);
    REQUIRE(s.size() == 1);
    CHECK_FALSE(s[0].fenced);
    // An unknown hold time is never overdue.
    auto u = d.step(ev::Looked{4, "M.3.9", "M", -1, StoreFacts{false, false, true}});
    CHECK(Driver::all<act::Settle>(u).empty());
    CHECK(kind_of(u, 4) == ClientReply::pending);
  }

  TEST_CASE("how a settle ends decides the answer: a batch that holds it wins over the abort") {
    Driver d(shared());
    CHECK(kind_of(d.step(ev::Settled{1, "M.3.9", SettleResult::committed}), 1) ==
          ClientReply::committed);
    CHECK(kind_of(d.step(ev::Settled{2, "M.3.9", SettleResult::settled}), 2) ==
          ClientReply::aborted);
    CHECK(kind_of(d.step(ev::Settled{3, "M.3.9", SettleResult::aborted}), 3) ==
          ClientReply::aborted);
    CHECK(kind_of(d.step(ev::Settled{4, "M.3.9", SettleResult::owner_back}), 4) ==
          ClientReply::pending);
    CHECK(kind_of(d.step(ev::Settled{5, "M.3.9",
                                     Status::error("UNAVAILABLE", "etcd down")}),
                  5) == ClientReply::error);
  }

  TEST_CASE("RESULT of a request unknown here asks the store, never presumes it aborted") {
    Driver d(shared());
    auto a = d.step(ev::Result{8, "r-elsewhere"});
    auto f = Driver::all<act::FindRid>(a);
    REQUIRE(f.size() == 1);
    CHECK(f[0].rid == "r-elsewhere");
    CHECK(Driver::all<act::Reply>(a).empty());
    auto c = d.step(ev::RidFound{8, "r-elsewhere", std::string("M.3.9"), std::nullopt});
    CHECK(kind_of(c, 8) == ClientReply::committed);
    CHECK(Driver::reply_to(c, 8)->txid == "M.3.9");
    CHECK(kind_of(d.step(ev::RidFound{9, "r-x", std::string(), std::nullopt}), 9) ==
          ClientReply::pending);
    // And a request that arrives later is not refused as "already aborted".
    auto t = d.step(ev::Txn{10, "r-elsewhere", put("k"), false});
    CHECK(Driver::sent<protocol::Prepare>(t).size() == 3);
  }

  TEST_CASE("with the store unreachable a transaction fails fast, nothing prepared") {
    Driver d(shared());
    d.step(ev::StoreHealth{false});
    auto a = d.step(ev::Txn{1, "r1", put("k"), false});
    CHECK(Driver::sent<protocol::Prepare>(a).empty());
    auto r = Driver::reply_to(a, 1);
    REQUIRE(r.has_value());
    CHECK(r->kind == ClientReply::error);
    CHECK(r->code == "UNAVAILABLE");
    d.step(ev::StoreHealth{true});
    CHECK(Driver::sent<protocol::Prepare>(d.step(ev::Txn{2, "r2", put("k"), false})).size() == 3);
  }
}

TEST_SUITE("leader shared store") {
  // Found by the simulator: a participant's late report of an operator's commit, after this
  // leader ended the transaction and restarted, was taken for a contradiction.
  TEST_CASE("a report of a commit ended in an earlier incarnation asks the store first") {
    CoreConfig c = config(2);
    c.shared_store = true;
    Driver d(c);
    auto a = d.step(ev::Outcome{3, "L.1.5", true, "r5", 1, -1});
    auto f = Driver::all<act::FindRid>(a);
    REQUIRE(f.size() == 1);
    REQUIRE(f[0].report.has_value());
    CHECK(f[0].report->txid == "L.1.5");
    CHECK(Driver::all<act::Append>(a).empty());  // nothing recorded yet
    // The store says request r5 committed L.1.5: they agree, no mismatch.
    auto ok = d.step(ev::RidFound{3, "r5", std::string("L.1.5"), f[0].report});
    CHECK(Driver::all<act::Append>(ok).empty());
    REQUIRE(Driver::reply_to(ok, 3).has_value());
    CHECK(Driver::reply_to(ok, 3)->kind == ClientReply::committed);
    CHECK(d.core.mismatches().empty());
    // Had it not committed, the operator's commit contradicts the presumed abort: recorded.
    auto bad = d.step(ev::RidFound{4, "r5", std::string(), f[0].report});
    auto rec = Driver::all<act::Append>(bad);
    REQUIRE(rec.size() == 1);
    CHECK(rec[0].type == k_rec_heuristic);
    CHECK(d.core.mismatches().size() == 1);
  }
}

TEST_SUITE("leader membership") {
  // The MEMBERSHIP record an action list appends (nullopt: none).
  std::optional<membership::Membership> appended_members(const Actions& a) {
    for (auto& ap : Driver::all<act::Append>(a))
      if (ap.type == k_rec_membership) {
        REQUIRE(ap.force);
        auto m = membership::decode(ap.payload);
        REQUIRE(m);
        return *m;
      }
    return std::nullopt;
  }
  // Participant `p` down at 0, marked out at --exclude-after (5 s): the change made durable.
  void mark_out(Driver & d, size_t p) {
    d.step(ev::LinkDown{p});
    d.now = 5000;
    d.step(ev::Tick{});
    d.step(ev::Durable{"epoch 2", 0, k_rec_membership});
  }
  // A key whose owners (replicas 2 of 3) include slot `s`.
  std::string key_on(const Core& c, size_t s) {
    for (int i = 0;; ++i) {
      std::string k = "k" + std::to_string(i);
      auto o = c.owners(k);
      if (std::count(o.begin(), o.end(), s)) return k;
    }
  }

  TEST_CASE("a participant down past --exclude-after is marked out durably, and writes go on") {
    Driver d(config(1, 2));
    d.step(ev::LinkDown{2});
    d.now = 4999;
    CHECK_FALSE(appended_members(d.step(ev::Tick{})));
    d.now = 5000;
    auto m = appended_members(d.step(ev::Tick{}));
    REQUIRE(m);
    CHECK(m->epoch == 2);
    CHECK(m->slots[2].state == membership::State::out);
    CHECK(d.core.members().epoch == 1);  // not in effect before it is durable
    // Meanwhile a write waits for it...
    std::string k = key_on(d.core, 2);
    CHECK(Driver::all<act::Send>(d.step(ev::Txn{1, "", put(k), false})).empty());
    // ...and goes to the other owner once it is durable.
    auto a = d.step(ev::Durable{"epoch 2", 0, k_rec_membership});
    CHECK(d.core.members().slots[2].state == membership::State::out);
    CHECK(d.core.exclusions() == 1);
    auto sent = Driver::sent<protocol::Prepare>(a);
    REQUIRE(sent.size() == 1);
    CHECK(sent[0] != 2);
    // Reads too: an in-sync owner only.
    auto r = Driver::all<act::Send>(d.step(ev::Get{2, k}));
    REQUIRE(r.size() == 1);
    CHECK(r[0].part != 2);
    // A second participant down: every key must keep an in-sync copy, so it stays a member.
    d.step(ev::LinkDown{0});
    d.now = 20000;
    CHECK_FALSE(appended_members(d.step(ev::Tick{})));
    CHECK(d.core.members().slots[0].state == membership::State::in_sync);
  }

  TEST_CASE("below --min-insync a write fails and names the key's copies") {
    auto cfg = config(1, 2);
    cfg.min_insync = 2;
    Driver d(cfg);
    mark_out(d, 1);
    std::string k = key_on(d.core, 1);
    auto r = Driver::reply_to(d.step(ev::Txn{1, "", put(k), false}), 1);
    REQUIRE(r);
    CHECK(r->code == "UNAVAILABLE");
    CHECK(r->detail.find("127.0.0.1:2 (out)") != std::string::npos);
    CHECK(r->detail.find("--min-insync 2") != std::string::npos);
  }

  TEST_CASE("a participant back catches up as a learner, then is in-sync again") {
    Driver d(config());
    mark_out(d, 2);
    // Back: catching up, by a durable change.
    auto m = appended_members(d.step(ev::LinkUp{2}));
    REQUIRE(m);
    CHECK(m->slots[2].state == membership::State::catching_up);
    auto a = d.step(ev::Durable{"epoch 3", 0, k_rec_membership});
    auto sends = Driver::all<act::Send>(a);
    REQUIRE(sends.size() == 1);
    auto* begin = std::get_if<protocol::SyncBegin>(&sends[0].msg);
    REQUIRE(begin);
    CHECK(sends[0].part == 2);
    CHECK(begin->sources == std::vector<size_t>{0});  // every key is on slot 0
    // New writes wait until it has begun the pass (the ACK of SYNCBEGIN), then reach it as a
    // learner.
    CHECK(Driver::all<act::Send>(d.step(ev::Txn{1, "", put("w"), false})).empty());
    auto t = Driver::all<act::Send>(d.step(ev::SyncReply{sends[0].read, 2, Status::ok()}));
    std::erase_if(t, [](auto& s) { return !std::holds_alternative<protocol::Prepare>(s.msg); });
    REQUIRE(t.size() == 3);
    std::string txid = std::get<protocol::Prepare>(t[0].msg).txid;
    for (auto& s : t) CHECK(std::get<protocol::Prepare>(s.msg).learner == (s.part == 2));
    // Its NO does not count: the transaction commits, and the copy starts over.
    d.step(ev::Vote{txid, 0, Driver::yes()});
    d.step(ev::Vote{txid, 1, Driver::yes()});
    a = d.step(ev::Vote{txid, 2, {protocol::Vote::no, "CONFLICT", "locked", 0}});
    CHECK(Driver::all<act::Append>(a).size() == 1);  // the COMMIT record
    // The new pass starts once no transaction that may write without it collects votes, and
    // once it and the source have applied every decided COMMIT (applied at it during the
    // pass, an older one would count as newer than the page; at the source after its page is
    // read, the page would miss it).
    CHECK(Driver::all<act::Send>(a).empty());
    d.now += 20;
    CHECK(Driver::all<act::Send>(d.step(ev::Tick{})).empty());  // deciding
    a = d.step(ev::Durable{txid, 0});
    CHECK(Driver::sent<protocol::Commit>(a) == std::vector<size_t>{0, 1, 2});  // also to it
    d.now += 20;
    CHECK(Driver::all<act::Send>(d.step(ev::Tick{})).empty());  // its COMMIT unacknowledged
    d.step(ev::CommitReply{txid, 2, true});
    d.now += 20;
    CHECK(Driver::all<act::Send>(d.step(ev::Tick{})).empty());  // nor applied by the source
    d.step(ev::CommitReply{txid, 0, true});
    d.now += 20;
    auto again = Driver::all<act::Send>(d.step(ev::Tick{}));
    REQUIRE(again.size() == 1);
    auto* begin2 = std::get_if<protocol::SyncBegin>(&again[0].msg);
    REQUIRE(begin2);
    CHECK(begin2->pass != begin->pass);
    // The copy: SYNCBEGIN acknowledged, a page read from the source, applied there.
    a = d.step(ev::SyncReply{again[0].read, 2, Status::ok()});
    auto scan = Driver::all<act::Send>(a);
    REQUIRE(scan.size() == 1);
    CHECK(scan[0].part == 0);
    // Its page, escaped, fits the source's reply line and the learner's SYNC line.
    CHECK(std::get<protocol::Scan>(scan[0].msg).max_bytes * 3 < protocol::k_default_max_message);
    protocol::ScanReply page;
    page.kind = protocol::ScanReply::keys;
    page.kvs = {{"w", "v"}, {"x", "1"}};
    a = d.step(ev::ScanReply{scan[0].read, 0, page});
    auto sync = Driver::all<act::Send>(a);
    REQUIRE(sync.size() == 1);
    auto& pg = std::get<protocol::Sync>(sync[0].msg);
    CHECK(sync[0].part == 2);
    CHECK(pg.kvs.size() == 2);
    CHECK(pg.last);
    // Applied: in-sync again, by a durable change.
    m = appended_members(d.step(ev::SyncReply{sync[0].read, 2, Status::ok()}));
    REQUIRE(m);
    CHECK(m->slots[2].state == membership::State::in_sync);
    d.step(ev::Durable{"epoch 4", 0, k_rec_membership});
    CHECK(d.core.rejoins() == 1);
    CHECK(d.core.members().epoch == 4);
    auto t2 = Driver::all<act::Send>(d.step(ev::Txn{2, "", put("w"), false}));
    for (auto& s : t2) CHECK_FALSE(std::get<protocol::Prepare>(s.msg).learner);
  }

  TEST_CASE("the membership survives a restart and a log rewrite") {
    Driver d(config());
    mark_out(d, 1);
    Core c(config(2));
    for (auto& r : d.log) c.recover(r);
    CHECK(c.members().epoch == 2);
    CHECK(c.members().slots[1].state == membership::State::out);
    auto rw = Driver::all<act::Rewrite>(d.step(ev::LogFull{}));
    REQUIRE(rw.size() == 1);
    Core c2(config(2));
    for (auto& r : rw[0].live) c2.recover(r);
    CHECK(c2.members() == d.core.members());
  }
}

TEST_SUITE("leader membership over a shared store") {
  // A leader "L" of three over a shared store, whose membership the store confirmed at 0
  // (leaders `live`).
  CoreConfig shared(size_t replicas = 2) {
    CoreConfig c = config(1, replicas);
    c.shared_store = true;
    c.members_lease_ms = 1000;
    return c;
  }
  void confirm(Driver & d, std::vector<std::string> live = {"L"}) {
    d.step(ev::MembersSeen{Status::ok(), d.core.members_text(), d.now, std::move(live), false});
  }
  std::string key_on(const Core& c, size_t s) {
    for (int i = 0;; ++i) {
      std::string k = "k" + std::to_string(i);
      auto o = c.owners(k);
      if (std::count(o.begin(), o.end(), s)) return k;
    }
  }
  std::string with_state(const Core& c, size_t s, membership::State st) {
    auto m = c.members();
    m.epoch += 1;
    m.slots[s].state = st;
    return membership::encode(m);
  }

  TEST_CASE("an exclusion is put by compare-and-swap, and used only after the others' leases") {
    Driver d(shared());
    confirm(d);
    d.step(ev::LinkDown{2});
    d.now = 5000;
    auto a = d.step(ev::Tick{});
    CHECK(Driver::all<act::Append>(a).empty());  // not the local log
    auto puts = Driver::all<act::PutMembers>(a);
    REQUIRE(puts.size() == 1);
    CHECK(puts[0].expect == d.core.members_text());
    auto next = membership::decode(puts[0].next);
    REQUIRE(next);
    CHECK(next->epoch == 2);
    CHECK(next->slots[2].state == membership::State::out);
    // Stored: another leader may read slot 2 for up to its lease, so writes wait twice that.
    d.step(ev::MembersSeen{Status::ok(), puts[0].next, d.now, {}, true});
    std::string k = key_on(d.core, 2);
    CHECK(Driver::all<act::Send>(d.step(ev::Txn{1, "", put(k), false})).empty());
    d.now = 6999;
    CHECK(Driver::all<act::Send>(d.step(ev::Tick{})).empty());
    CHECK(d.core.members().epoch == 1);
    d.now = 7000;
    a = d.step(ev::Tick{});
    CHECK(d.core.members().epoch == 2);
    CHECK(d.core.exclusions() == 1);
    auto sent = Driver::sent<protocol::Prepare>(a);
    REQUIRE(sent.size() == 1);
    CHECK(sent[0] != 2);
  }

  TEST_CASE("a lost compare-and-swap adopts the store's membership instead") {
    Driver d(shared());
    confirm(d);
    d.step(ev::LinkDown{2});
    d.now = 5000;
    auto puts = Driver::all<act::PutMembers>(d.step(ev::Tick{}));
    REQUIRE(puts.size() == 1);
    // Another leader marked slot 1 out first: ours did not land.
    std::string theirs = with_state(d.core, 1, membership::State::out);
    d.step(ev::MembersSeen{Status::ok(), theirs, d.now, {}, true});
    d.now = 7000;
    d.step(ev::Tick{});
    CHECK(d.core.members_text() == theirs);
    CHECK(d.core.adopted() == 1);
    CHECK(d.core.members().slots[1].state == membership::State::out);
    // Slot 2 stays: with slot 1 out, a key on 1 and 2 would have no in-sync copy.
    CHECK(d.core.members().slots[2].state == membership::State::in_sync);
  }

  TEST_CASE(
      "a decision refused as of an old membership is taken again if its votes cover the new") {
    Driver d(shared(0));
    confirm(d);
    std::string t1 = d.begin(1, "", put("a"));
    for (size_t p = 0; p < 3; ++p) d.step(ev::Vote{t1, p, Driver::yes()});
    // The store moved on: slot 2 out (every one of t1's writers voted: it still holds).
    std::string out2 = with_state(d.core, 2, membership::State::out);
    d.step(ev::MembersSeen{Status::ok(), out2, -1, {}, false});
    auto a = d.step(ev::Refused{t1, true});
    CHECK(Driver::all<act::Append>(a).empty());  // waits for the change to take effect
    d.now = 2000;
    a = d.step(ev::Tick{});
    auto ap = Driver::all<act::Append>(a);
    REQUIRE(ap.size() == 1);
    CHECK(ap[0].type == k_rec_commit);
    CHECK(d.core.redecided() == 1);
    // One prepared without a slot the new membership writes to: aborted.
    Driver e(shared(0));
    confirm(e);
    e.step(ev::LinkDown{2});
    e.now = 5000;
    auto puts = Driver::all<act::PutMembers>(e.step(ev::Tick{}));
    REQUIRE(puts.size() == 1);
    e.step(ev::MembersSeen{Status::ok(), puts[0].next, e.now, {}, true});
    e.now = 7000;
    e.step(ev::Tick{});
    REQUIRE(e.core.members().slots[2].state == membership::State::out);
    confirm(e);
    std::string t2 = e.begin(2, "", put("b"));
    e.step(ev::Vote{t2, 0, Driver::yes()});
    e.step(ev::Vote{t2, 1, Driver::yes()});
    // Meanwhile slot 2 came back as a learner: t2 never asked it.
    auto rejoined = Driver::all<act::PutMembers>(e.step(ev::LinkUp{2}));
    REQUIRE(rejoined.size() == 1);
    e.step(ev::MembersSeen{Status::ok(), rejoined[0].next, e.now, {}, true});
    REQUIRE(e.core.members().slots[2].state == membership::State::catching_up);
    auto r = Driver::reply_to(e.step(ev::Refused{t2, true}), 2);
    REQUIRE(r);
    CHECK(r->kind == ClientReply::aborted);
    CHECK(r->code == "MEMBERSHIP");
  }

  TEST_CASE("reads wait while the store has not confirmed the membership within the lease") {
    Driver d(shared());
    confirm(d);
    d.now = 999;
    CHECK(Driver::sent<protocol::Read>(d.step(ev::Get{1, "k"})).size() == 1);
    d.now = 1000;
    auto a = d.step(ev::Get{2, "k"});
    CHECK(Driver::all<act::Send>(a).empty());
    CHECK_FALSE(Driver::reply_to(a, 2));
    // The store's word comes: the read runs.
    a = d.step(ev::MembersSeen{Status::ok(), d.core.members_text(), d.now, {"L"}, false});
    CHECK(Driver::sent<protocol::Read>(a).size() == 1);
    // With the store unreachable it fails at once.
    d.now = 5000;
    d.step(ev::StoreHealth{false});
    auto r = Driver::reply_to(d.step(ev::Get{3, "k"}), 3);
    REQUIRE(r);
    CHECK(r->code == "UNAVAILABLE");
  }

  TEST_CASE("a learner's vote counts, and only the lowest live leader copies to it") {
    Driver d(shared(0));
    confirm(d, {"K", "L"});
    // Another leader marked slot 2 out, then catching-up.
    std::string out2 = with_state(d.core, 2, membership::State::out);
    d.step(ev::MembersSeen{Status::ok(), out2, d.now, {"K", "L"}, false});
    d.now = 2000;
    d.step(ev::Tick{});
    std::string back = with_state(d.core, 2, membership::State::catching_up);
    auto a = d.step(ev::MembersSeen{Status::ok(), back, d.now, {"K", "L"}, false});
    REQUIRE(d.core.members().slots[2].state == membership::State::catching_up);
    CHECK(Driver::sent<protocol::SyncBegin>(a).empty());  // "K" < "L": not this leader
    CHECK_FALSE(d.core.catching_up());
    // The lowest id is gone: this leader copies.
    a = d.step(ev::MembersSeen{Status::ok(), d.core.members_text(), d.now, {"L", "M"}, false});
    CHECK(Driver::sent<protocol::SyncBegin>(a) == std::vector<size_t>{2});
    for (auto& s : Driver::all<act::Send>(a))  // the pass begins there
      if (std::holds_alternative<protocol::SyncBegin>(s.msg))
        d.step(ev::SyncReply{s.read, 2, Status::ok()});
    // A learner's NO aborts: another leader's copy cannot know it missed this write.
    std::string t = d.begin(1, "", put("w"));
    d.step(ev::Vote{t, 0, Driver::yes()});
    d.step(ev::Vote{t, 1, Driver::yes()});
    auto r = Driver::reply_to(d.step(ev::Vote{t, 2, {protocol::Vote::no, "CONFLICT", "x", 0}}), 1);
    REQUIRE(r);
    CHECK(r->kind == ClientReply::aborted);
  }
}

TEST_SUITE("creation claim") {
  TEST_CASE("a leader runs under the cluster the store holds, or refuses what differs") {
    const std::string view = "peers a:1,b:1\nreplicas all\n";
    // A new leader (no directory cluster, no --cluster-id) adopts whoever created it.
    auto c = leader::adopt_claim("", "", view, "c2", view);
    REQUIRE(c.is_ok());
    CHECK(*c == "c2");
    CHECK(*leader::adopt_claim("c2", "c2", view, "c2", view) == "c2");
    // Its directory, --cluster-id or view naming another: refused, saying which.
    CHECK(leader::adopt_claim("c1", "", view, "c2", view).status().code() == "DIR");
    CHECK(leader::adopt_claim("", "c1", view, "c2", view).status().code() == "ID");
    CHECK(leader::adopt_claim("", "", "peers a:1\nreplicas all\n", "c2", view).status().code() ==
          "VIEW");
  }
}

// What each participant holds when keys k0..k(N-1) are on their owners in `m`, valued
// v0..v(N-1): slot -> key -> value.
std::map<size_t, std::map<std::string, std::string>> held_by_owners(const membership::Membership& m,
                                                                    int n) {
  std::map<size_t, std::map<std::string, std::string>> held;
  for (int i = 0; i < n; ++i) {
    std::string k = "k" + std::to_string(i);
    for (auto p : m.owners(k)) held[p][k] = "v" + std::to_string(i);
  }
  return held;
}

// Runs a membership change to its end: membership records durable, copies answered from
// `held` (what each slot holds), a link up for each slot whose link is new (a member add, a
// replace; not for the slots in `down`), timers run. Returns client `c`'s answer (nullopt: none in
// 200 rounds); `a` is left holding the last step's actions. SYNC pages are recorded in `copied`.
std::optional<ClientReply> run_move(Driver& d, Actions& a, ClientId c,
                                    std::map<size_t, std::map<std::string, std::string>>& held,
                                    std::map<size_t, std::set<std::string>>& copied,
                                    std::set<size_t> down = {}) {
  std::vector<std::string> addrs;
  for (auto& s : d.core.members().slots) addrs.push_back(s.addr);
  for (int round = 0; round < 200; ++round) {
    std::vector<Event> next;
    for (auto& ap : Driver::all<act::Append>(a))
      if (ap.type == k_rec_membership) next.push_back(ev::Durable{ap.txid, 0, k_rec_membership});
    for (auto& s : Driver::all<act::Send>(a)) {
      if (std::holds_alternative<protocol::SyncBegin>(s.msg)) {
        next.push_back(ev::SyncReply{s.read, s.part, Status::ok()});
      } else if (auto* sc = std::get_if<protocol::Scan>(&s.msg)) {
        protocol::ScanReply r;
        r.kind = protocol::ScanReply::keys;
        for (auto& [k, v] : held[s.part])
          if (k > sc->after) r.kvs.emplace_back(k, v);
        next.push_back(ev::ScanReply{s.read, s.part, r});
      } else if (auto* sy = std::get_if<protocol::Sync>(&s.msg)) {
        for (auto& [k, v] : sy->kvs) {
          copied[s.part].insert(k);
          held[s.part][k] = v;
        }
        next.push_back(ev::SyncReply{s.read, s.part, Status::ok()});
      }
    }
    if (auto r = Driver::reply_to(a, c)) return r;
    // The executor makes a link for a new slot, and anew for one at a new address.
    const auto& m = d.core.members();
    for (size_t p = 0; p < m.size(); ++p)
      if (p >= addrs.size() || m.slots[p].addr != addrs[p]) {
        if (p >= addrs.size()) addrs.push_back(m.slots[p].addr);
        addrs[p] = m.slots[p].addr;
        if (!down.count(p)) next.push_back(ev::LinkUp{p});
      }
    if (next.empty()) {  // waiting on a timer
      d.now += 50;
      next.push_back(ev::Tick{});
    }
    Actions all;
    for (auto& e : next) {
      auto x = d.step(std::move(e));
      all.list.insert(all.list.end(), x.list.begin(), x.list.end());
    }
    a = std::move(all);
  }
  return std::nullopt;
}

TEST_SUITE("leader membership changes") {
  TEST_CASE("a decision the removed participant never acknowledged holds no backup back") {
    Driver d(config(1, 0));  // every key on every slot
    auto txid = d.begin(7, "r1", put("k"));
    for (size_t p = 0; p < 3; ++p) d.step(ev::Vote{txid, p, Driver::yes()});
    d.step(ev::Durable{txid, 0});
    d.step(ev::CommitReply{txid, 0, true, false});
    d.step(ev::CommitReply{txid, 1, true, false});
    REQUIRE(d.core.active() == 1);  // slot 2 (its node dead) never acknowledges
    d.step(ev::LinkDown{2});
    std::map<size_t, std::map<std::string, std::string>> held;
    std::map<size_t, std::set<std::string>> copied;
    auto a = d.step(ev::Remove{8, 2});
    REQUIRE_FALSE(Driver::reply_to(a, 8));  // (it is in-sync still: the removal runs)
    auto done = run_move(d, a, 8, held, copied, {2});
    REQUIRE(done);
    CHECK(done->kind == ClientReply::ok);
    // The pause of a backup answers at once: only the removed slot's acknowledgement is
    // missing.
    auto p = Driver::reply_to(d.step(ev::Pause{9, 10000}), 9);
    REQUIRE(p);
    CHECK(p->kind == ClientReply::ok);
  }

  TEST_CASE("member add: the new slot copies only the keys it gains, then it is in-sync") {
    Driver d(config(1, 2));
    auto m0 = d.core.members();
    auto held = held_by_owners(m0, 200);
    auto a = d.step(ev::Add{7, "127.0.0.1:4"});
    // Another change while it is under way is refused; the same add again waits for it.
    auto other = Driver::reply_to(d.step(ev::Remove{9, 1}), 9);
    REQUIRE(other);
    CHECK(other->code == "STATE");
    CHECK_FALSE(Driver::reply_to(d.step(ev::Add{10, "127.0.0.1:4"}), 10));
    std::map<size_t, std::set<std::string>> copied;
    auto done = run_move(d, a, 7, held, copied);
    REQUIRE(done);
    CHECK(done->kind == ClientReply::ok);
    const auto& m = d.core.members();
    REQUIRE(m.size() == 4);
    CHECK(m.slots[3].state == membership::State::in_sync);
    CHECK(m.slots[3].name == "127.0.0.1:4");
    CHECK(m.epoch == 3);  // joining, then in-sync
    CHECK(done->detail.find("added: 127.0.0.1:4") != std::string::npos);
    // The new slot got exactly the keys it owns now; no other slot copied anything, and each
    // old owner lost at most what the new one took.
    size_t mine = 0;
    for (int i = 0; i < 200; ++i) {
      std::string k = "k" + std::to_string(i);
      auto before = m0.owners(k), after = m.owners(k);
      bool owns = std::count(after.begin(), after.end(), 3u) > 0;
      mine += owns;
      CHECK(copied[3].count(k) == static_cast<size_t>(owns));
      for (auto p : after) CHECK((p == 3 || std::count(before.begin(), before.end(), p)));
    }
    CHECK(copied.size() == 1);
    // About 2/4 of the keys (replicas 2 of 4 slots).
    CHECK(mine > 60);
    CHECK(mine < 140);
    auto waited = Driver::reply_to(a, 10);
    REQUIRE(waited);
    CHECK(waited->detail == done->detail);
    auto again = Driver::reply_to(d.step(ev::Add{8, "127.0.0.1:4"}), 8);
    REQUIRE(again);
    CHECK(again->kind == ClientReply::ok);
    CHECK(d.core.members().epoch == 3);
    // Writes of its keys now go to it as a voter.
    for (int i = 0; i < 200; ++i) {
      std::string k = "k" + std::to_string(i);
      auto o = m.owners(k);
      if (!std::count(o.begin(), o.end(), 3u)) continue;
      auto s = Driver::all<act::Send>(d.step(ev::Txn{20, "", put(k), false}));
      REQUIRE(s.size() == 2);
      CHECK_FALSE(std::get<protocol::Prepare>(s.back().msg).learner);
      break;
    }
    // A leader that restarts recovers the grown membership from its log.
    Core again_core(config(1, 2));
    for (auto& r : d.log) again_core.recover(r);
    CHECK(again_core.members() == d.core.members());
  }

  TEST_CASE(
      "member add of a participant that stays unreachable rolls back; it can be added "
      "again") {
    auto c = config(1, 2);
    c.exclude_after_ms = 1000;
    Driver d(c);
    std::map<size_t, std::map<std::string, std::string>> held;
    std::map<size_t, std::set<std::string>> copied;
    auto a = d.step(ev::Add{7, "127.0.0.1:4"});
    auto done = run_move(d, a, 7, held, copied, {3});
    REQUIRE(done);
    CHECK(done->kind == ClientReply::error);
    CHECK(done->code == "UNAVAILABLE");
    CHECK(d.core.members().slots.at(3).state == membership::State::removed);
    CHECK_FALSE(d.core.members().moving());
    CHECK(copied.empty());
    // Added again: a new slot, with a placement name of its own.
    a = d.step(ev::Add{8, "127.0.0.1:4"});
    done = run_move(d, a, 8, held, copied);
    REQUIRE(done);
    CHECK(done->kind == ClientReply::ok);
    const auto& m = d.core.members();
    REQUIRE(m.size() == 5);
    CHECK(m.slots[4].state == membership::State::in_sync);
    CHECK(m.slots[4].name != m.slots[3].name);
  }

  TEST_CASE(
      "member replace: the slot keeps its keys' placement and is filled at its new "
      "address") {
    Driver d(config(1, 2));
    auto m0 = d.core.members();
    auto held = held_by_owners(m0, 100);
    // The old node is dead; the new one holds nothing.
    d.step(ev::LinkDown{1});
    held[1].clear();
    auto bad = Driver::reply_to(d.step(ev::Replace{9, 1, "127.0.0.1:3"}), 9);
    REQUIRE(bad);  // another participant's address
    CHECK(bad->code == "STATE");
    auto a = d.step(ev::Replace{7, 1, "127.0.0.1:12"});
    CHECK_FALSE(Driver::reply_to(d.step(ev::Replace{10, 1, "127.0.0.1:12"}), 10));
    std::map<size_t, std::set<std::string>> copied;
    auto done = run_move(d, a, 7, held, copied);
    REQUIRE(done);
    CHECK(done->kind == ClientReply::ok);
    CHECK(done->detail.find("participant 1 is 127.0.0.1:12") != std::string::npos);
    const auto& m = d.core.members();
    CHECK(m.slots[1].addr == "127.0.0.1:12");
    CHECK(m.slots[1].name == "127.0.0.1:2");
    CHECK(m.slots[1].state == membership::State::in_sync);
    CHECK(copied.size() == 1);
    for (int i = 0; i < 100; ++i) {
      std::string k = "k" + std::to_string(i);
      CHECK(m.owners(k) == m0.owners(k));  // no key moved
      auto o = m.owners(k);
      CHECK(copied[1].count(k) == static_cast<size_t>(std::count(o.begin(), o.end(), 1u)));
    }
    auto waited = Driver::reply_to(a, 10);
    REQUIRE(waited);
    CHECK(waited->kind == ClientReply::ok);
    // Its messages go to the slot (the executor maps it to the new address).
    auto again = Driver::reply_to(d.step(ev::Replace{8, 1, "127.0.0.1:12"}), 8);
    REQUIRE(again);
    CHECK(again->kind == ClientReply::ok);
  }

  TEST_CASE("a replace whose node never comes up gives way to another replace, or a removal") {
    for (bool remove : {false, true}) {
      CAPTURE(remove);
      auto c = config(1, 2);
      c.exclude_after_ms = 1000;
      Driver d(c);
      auto held = held_by_owners(d.core.members(), 60);
      d.step(ev::LinkDown{1});
      held[1].clear();
      auto a = d.step(ev::Replace{7, 1, "127.0.0.1:12"});
      for (auto& ap : Driver::all<act::Append>(a))
        if (ap.type == k_rec_membership) a = d.step(ev::Durable{ap.txid, 0, k_rec_membership});
      REQUIRE(d.core.members().slots[1].addr == "127.0.0.1:12");
      // (Its node never comes up.) Another change is refused, saying what it waits for.
      auto busy = Driver::reply_to(d.step(ev::Add{9, "127.0.0.1:20"}), 9);
      REQUIRE(busy);
      CHECK(busy->code == "STATE");
      CHECK(busy->detail.find("being replaced at 127.0.0.1:12") != std::string::npos);
      a = remove ? d.step(ev::Remove{8, 1}) : d.step(ev::Replace{8, 1, "127.0.0.1:13"});
      auto first = Driver::reply_to(a, 7);
      REQUIRE(first);
      CHECK(first->code == "STATE");
      std::map<size_t, std::set<std::string>> copied;
      auto done =
          run_move(d, a, 8, held, copied, remove ? std::set<size_t>{1} : std::set<size_t>{});
      REQUIRE(done);
      CHECK(done->kind == ClientReply::ok);
      const auto& s1 = d.core.members().slots[1];
      if (remove) {
        CHECK(s1.state == membership::State::removed);
      } else {
        CHECK(s1.addr == "127.0.0.1:13");
        CHECK(s1.state == membership::State::in_sync);
      }
    }
  }

  TEST_CASE("member replace of the last in-sync copy is refused") {
    Driver d(config(1, 0));  // every key on every slot
    d.step(ev::LinkDown{0});
    d.step(ev::LinkDown{1});
    d.now += 10000;
    std::map<size_t, std::map<std::string, std::string>> held;
    std::map<size_t, std::set<std::string>> copied;
    auto a = d.step(ev::Tick{});
    // Exclusions of 0 and 1 (one at a time): then slot 2 holds the only in-sync copy.
    for (int i = 0; i < 2; ++i) {
      for (auto& ap : Driver::all<act::Append>(a))
        if (ap.type == k_rec_membership) a = d.step(ev::Durable{ap.txid, 0, k_rec_membership});
    }
    REQUIRE(d.core.members().count(membership::State::out) == 2);
    auto r = Driver::reply_to(d.step(ev::Replace{7, 2, "127.0.0.1:13"}), 7);
    REQUIRE(r);
    CHECK(r->code == "STATE");
    CHECK(r->detail.find("last in-sync copy") != std::string::npos);
  }

  TEST_CASE("while a slot leaves, a write of its keys reaches their gainer as a learner of them") {
    Driver d(config(1, 2));
    auto m = d.core.members();
    m.epoch = 2;
    m.slots[2].state = membership::State::leaving;
    d.core.recover(txlog::Record{k_rec_membership, membership::encode(m)});
    REQUIRE(d.core.members().moving());
    // A key of the leaving slot, and the slot that gains it.
    std::string k;
    for (int i = 0; k.empty(); ++i) {
      std::string x = "k" + std::to_string(i);
      auto o = m.owners(x);
      if (std::count(o.begin(), o.end(), 2u)) k = x;
    }
    auto g = m.gains(k);
    REQUIRE(g.size() == 1);
    size_t gainer = g[0], other = 1 - gainer;  // slots 0 and 1: the gainer and the other owner
    auto a = d.step(ev::Txn{1, "", put(k), false});
    auto sends = Driver::all<act::Send>(a);
    REQUIRE(sends.size() == 3);  // both owners in effect, and the gainer
    std::string txid = std::get<protocol::Prepare>(sends[0].msg).txid;
    for (auto& s : sends) CHECK(std::get<protocol::Prepare>(s.msg).learner == (s.part == gainer));
    // The owners' YES votes and the gainer's commit it. A gainer is not dropped as a
    // catching-up learner is (its copy would not cover the write): its NO aborts.
    d.step(ev::Vote{txid, other, Driver::yes()});
    d.step(ev::Vote{txid, 2, Driver::yes()});
    a = d.step(ev::Vote{txid, gainer, Driver::yes()});
    CHECK(Driver::all<act::Append>(a).size() == 1);  // the COMMIT record
    a = d.step(ev::Txn{9, "", put(k), false});
    std::string t2 = std::get<protocol::Prepare>(Driver::all<act::Send>(a)[0].msg).txid;
    a = d.step(ev::Vote{t2, gainer, {protocol::Vote::no, "CONFLICT", "locked", 0}});
    auto r = Driver::reply_to(a, 9);
    REQUIRE(r);
    CHECK(r->kind == ClientReply::aborted);
    // A condition on the key is checked by its owners only: the gainer gets no check of it.
    // With a write of a key it owns too, it is a voter, not a learner.
    std::string j;
    for (int i = 0; j.empty(); ++i) {
      std::string x = "j" + std::to_string(i);
      auto o = m.owners(x);
      if (std::count(o.begin(), o.end(), gainer) && m.gains(x).empty()) j = x;
    }
    a = d.step(ev::Txn{2, "", {Op{OpKind::check, k, "v"}, Op{OpKind::put, j, "w"}}, false});
    for (auto& s : Driver::all<act::Send>(a)) {
      auto& p = std::get<protocol::Prepare>(s.msg);
      if (s.part != gainer) continue;
      CHECK_FALSE(p.learner);
      REQUIRE(p.ops.size() == 1);
      CHECK(p.ops[0].key == j);
    }
    // Reads go to the owners in effect, the leaving slot among them; never to the gainer.
    for (int c = 3; c < 13; ++c) {
      auto r = Driver::all<act::Send>(d.step(ev::Get{static_cast<ClientId>(c), k}));
      REQUIRE(r.size() == 1);
      CHECK(r[0].part != gainer);
    }
  }
}

TEST_SUITE("leader membership changes") {
  TEST_CASE(
      "member remove: the slot leaves, the slots that gain its keys copy them, then it is "
      "removed") {
    Driver d(config(1, 2));
    // What each participant holds: every key on its owners.
    auto m0 = d.core.members();
    auto held = held_by_owners(m0, 60);
    auto a = d.step(ev::Remove{7, 2});
    // Another removal while one is under way is refused; the same one again waits for it.
    auto other = Driver::reply_to(d.step(ev::Remove{9, 1}), 9);
    REQUIRE(other);
    CHECK(other->code == "STATE");
    CHECK_FALSE(Driver::reply_to(d.step(ev::Remove{10, 2}), 10));
    std::map<size_t, std::set<std::string>> copied;  // slot -> keys sent to it by SYNC
    auto done = run_move(d, a, 7, held, copied);
    REQUIRE(done);
    CHECK(done->kind == ClientReply::ok);
    const auto& m = d.core.members();
    CHECK(m.slots[2].state == membership::State::removed);
    CHECK_FALSE(m.moving());
    CHECK(m.epoch == 3);  // leaving, then removed
    // Each key of the removed slot was copied to the slot that gained it, and nothing else.
    for (int i = 0; i < 60; ++i) {
      std::string k = "k" + std::to_string(i);
      auto before = m0.owners(k), after = m.owners(k);
      CHECK(std::count(after.begin(), after.end(), 2u) == 0);
      for (auto p : after) {
        bool gained = !std::count(before.begin(), before.end(), p);
        CHECK(copied[p].count(k) == static_cast<size_t>(gained));
      }
    }
    // What moved, in the answer; the same request sent again during the change is answered
    // with it.
    CHECK(done->detail.find("epoch 3: ") == 0);
    CHECK(done->detail.find("removed: " + m.slots[2].addr) != std::string::npos);
    auto waited = Driver::reply_to(a, 10);
    REQUIRE(waited);
    CHECK(waited->detail == done->detail);
    // Asked again (the operator's command after a leader restart): it is removed, nothing
    // changes.
    auto again = Driver::reply_to(d.step(ev::Remove{8, 2}), 8);
    REQUIRE(again);
    CHECK(again->kind == ClientReply::ok);
    CHECK(d.core.members().epoch == 3);
  }

  // Member remove of a slot whose node is dead, with the removal's copy checked: each key it
  // owned is copied from its other owner to the slot that gains it; nothing is read from it.
  void remove_dead(Driver & d, size_t slot, membership::State first) {
    auto m0 = d.core.members();
    auto held = held_by_owners(m0, 60);
    held[slot].clear();  // (never read: a SCAN of it would find nothing and the check fail)
    auto a = d.step(ev::Remove{7, slot});
    CHECK(d.core.members().epoch == m0.epoch);
    // The change record is durable: the slot leaves as `first`.
    for (auto& ap : Driver::all<act::Append>(a))
      if (ap.type == k_rec_membership) a = d.step(ev::Durable{ap.txid, 0, k_rec_membership});
    REQUIRE(d.core.members().slots[slot].state == first);
    std::map<size_t, std::set<std::string>> copied;
    auto done = run_move(d, a, 7, held, copied, {slot});
    REQUIRE(done);
    CHECK(done->kind == ClientReply::ok);
    const auto& m = d.core.members();
    CHECK(m.slots[slot].state == membership::State::removed);
    CHECK(done->detail.find("removed: " + m.slots[slot].addr) != std::string::npos);
    for (int i = 0; i < 60; ++i) {
      std::string k = "k" + std::to_string(i);
      auto before = m0.owners(k);
      for (auto p : m.owners(k)) {
        bool gained = !std::count(before.begin(), before.end(), p);
        CHECK(copied[p].count(k) == static_cast<size_t>(gained));
        CHECK(held[p].count(k) == 1);
      }
    }
    // Writes of its keys go to the others only, and commit.
    for (int i = 0; i < 60; ++i) {
      std::string k = "k" + std::to_string(i);
      auto s =
          Driver::all<act::Send>(d.step(ev::Txn{20 + static_cast<uint64_t>(i), "", put(k), false}));
      for (auto& x : s) CHECK(x.part != slot);
    }
  }

  TEST_CASE("member remove of a participant marked out copies its keys from the other owners") {
    auto c = config(1, 2);
    c.exclude_after_ms = 1000;
    Driver d(c);
    d.step(ev::LinkDown{2});
    d.now += 2000;
    auto a = d.step(ev::Tick{});
    for (auto& ap : Driver::all<act::Append>(a))
      if (ap.type == k_rec_membership) d.step(ev::Durable{ap.txid, 0, k_rec_membership});
    REQUIRE(d.core.members().slots[2].state == membership::State::out);
    remove_dead(d, 2, membership::State::leaving_out);
  }

  TEST_CASE("member remove of a participant that died just before leaves without it") {
    auto c = config(1, 2);
    c.exclude_after_ms = 1000;
    Driver d(c);
    d.step(ev::LinkDown{2});  // (it may come back: it leaves serving its keys, then is
                              // marked leaving-out once down past --exclude-after)
    remove_dead(d, 2, membership::State::leaving);
  }

  TEST_CASE("member remove of an unreachable participant, exclusion off, leaves without it") {
    auto c = config(1, 2);
    c.exclude = false;
    c.exclude_after_ms = 1000;
    Driver d(c);
    d.step(ev::LinkDown{2});
    d.now += 2000;
    remove_dead(d, 2, membership::State::leaving_out);
  }

  TEST_CASE("a removal's copy leaves out a source that died, while the keys have another") {
    auto c = config(1, 2);
    c.exclude = false;  // (it stays leaving: the copy itself must go on without it)
    c.exclude_after_ms = 1000;
    Driver d(c);
    d.step(ev::LinkDown{2});
    remove_dead(d, 2, membership::State::leaving);
  }
}
