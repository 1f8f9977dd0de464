// The etcd client (src/etcd/) against a real etcd from Debian's etcd-server, started here on
// free loopback ports: the create-if-absent decision, lease fencing, prefix ranges, and an
// endpoint that is down.
#include <doctest/doctest.h>

#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>

#include <fmt/format.h>

#include "common/util.h"
#include "etcd/client.h"
#include "harness.h"
#include "leader/decisions.h"
#include "membership/membership.h"

using namespace tpc;
using namespace tpc::it;

namespace {
using Etcd = EtcdServer;

// Runs `f(client, done)` on a fresh io_context until done() is called or 10 s pass.
template <typename F>
bool with_client(const std::vector<std::string>& eps, F f) {
  boost::asio::io_context io;
  auto c = std::make_shared<etcd::Client>(io, eps, 1000);
  bool finished = false;
  f(*c, [&] {
    finished = true;
    io.stop();
  });
  io.run_for(std::chrono::seconds(10));
  c->stop();
  return finished;
}

// The keys under `prefix` and their values; nullopt when etcd does not answer.
std::optional<std::map<std::string, std::string>> keys(const std::string& ep,
                                                       const std::string& prefix) {
  std::optional<std::map<std::string, std::string>> out;
  with_client({ep}, [&](etcd::Client& c, auto done) {
    c.range(prefix, etcd::prefix_end(prefix), [&, done](Result<std::vector<etcd::KeyValue>> r) {
      if (r) {
        out.emplace();
        for (auto& kv : *r) (*out)[kv.key] = kv.value;
      }
      done();
    });
  });
  return out;
}

// A second leader (--id 2) over the same participants and decision store as c's, started on
// a free port and ready (it sees both participants).
struct SecondLeader {
  std::unique_ptr<Process> proc;
  std::string addr;
};
SecondLeader second_leader(Cluster& c, const Etcd& e, const std::string& name,
                           const std::vector<std::string>& extra = {}) {
  uint16_t port = free_port();
  std::vector<std::string> args{"--lease-ttl", "2"};
  args.insert(args.end(), extra.begin(), extra.end());
  SecondLeader l{start_second_leader(c, e, name, port, args),
                 fmt::format("127.0.0.1:{}", port)};
  REQUIRE(wait_for([&] { return leader_ready(l.addr, c.size()); }, 15000));
  return l;
}

// A leader over `e` that stalls `stall_ms` between its votes and its decision, once (as under
// SIGSTOP), holding a lease of `lease_s` seconds.
Cluster::Options stalling_leader(const Etcd& e, const std::string& name, int lease_s,
                                 int stall_ms) {
  Cluster::Options o;
  o.leader_args = {"--decision-store", e.url(), "--cluster-name", name, "--lease-ttl",
                   std::to_string(lease_s)};
  o.leader_env = {{"TPC_FAILPOINTS", fmt::format("leader/afterVotes=1*sleep({})", stall_ms)}};
  return o;
}

// A put through the stalling leader: another leader settled it as aborted first, so its late
// COMMIT fails (exit 3, SETTLED) and nothing of it is written anywhere.
void put_loses_to_other_leader(Cluster& c) {
  auto r = c.client({"put", "k", "v"});
  CHECK(r.code == 3);
  CHECK(r.err.find("SETTLED") != std::string::npos);
  REQUIRE(c.wait_settled());
  CHECK_FALSE(c.read_at(0, "k").has_value());
  CHECK_FALSE(c.read_at(1, "k").has_value());
}
}  // namespace

TEST_SUITE("etcd") {
  TEST_CASE("a decision is created once: the second create-if-absent fails and reads the first") {
    Etcd e;
    REQUIRE(e.wait_healthy());
    std::vector<etcd::TxnResult> results;
    REQUIRE(with_client({e.endpoint()}, [&](etcd::Client& c, auto done) {
      auto decide = [&](const std::string& what, std::function<void()> then) {
        etcd::Txn t;
        t.compare.push_back(etcd::Compare::absent("tpc/d/1.1.1"));
        t.success.push_back(etcd::Op::put("tpc/d/1.1.1", what));
        t.failure.push_back(etcd::Op::get("tpc/d/1.1.1"));
        c.txn(t, [&, then](Result<etcd::TxnResult> r) {
          REQUIRE(r.is_ok());
          results.push_back(*r);
          then();
        });
      };
      decide("commit", [&, done, decide] { decide("abort", done); });
    }));
    REQUIRE(results.size() == 2);
    CHECK(results[0].succeeded);
    CHECK_FALSE(results[1].succeeded);
    REQUIRE(results[1].results.size() == 1);
    REQUIRE(results[1].results[0].size() == 1);
    CHECK(results[1].results[0][0].value == "commit");  // the decision never changes
    CHECK(results[1].revision >= results[0].revision);
  }

  TEST_CASE("a put fenced by a lease fails once the lease is gone") {
    Etcd e;
    REQUIRE(e.wait_healthy());
    int64_t lease = 0;
    bool first = false, after_revoke = true;
    int64_t ttl_left = -1;
    REQUIRE(with_client({e.endpoint()}, [&](etcd::Client& c, auto done) {
      c.lease_grant(5, [&, done](Result<std::pair<int64_t, int64_t>> g) {
        REQUIRE(g.is_ok());
        lease = g->first;
        CHECK(g->second == 5);
        // The leader's liveness key, held by its lease.
        etcd::Txn hold;
        hold.success.push_back(etcd::Op::put("tpc/leaders/1", "alive", lease));
        c.txn(hold, [&, done](Result<etcd::TxnResult> h) {
          REQUIRE(h.is_ok());
          auto fenced = [&](const std::string& key) {
            etcd::Txn t;
            t.compare.push_back(etcd::Compare::absent(key));
            t.compare.push_back(etcd::Compare::leased("tpc/leaders/1", lease));
            t.success.push_back(etcd::Op::put(key, "commit"));
            return t;
          };
          c.txn(fenced("tpc/d/a"), [&, done, fenced](Result<etcd::TxnResult> r) {
            REQUIRE(r.is_ok());
            first = r->succeeded;
            c.lease_keepalive(lease, [&, done, fenced](Result<int64_t> k) {
              REQUIRE(k.is_ok());
              ttl_left = *k;
              c.lease_revoke(lease, [&, done, fenced](Status s) {
                REQUIRE(s.is_ok());
                c.txn(fenced("tpc/d/b"), [&, done](Result<etcd::TxnResult> r2) {
                  REQUIRE(r2.is_ok());
                  after_revoke = r2->succeeded;
                  done();
                });
              });
            });
          });
        });
      });
    }));
    CHECK(first);
    CHECK(ttl_left > 0);
    CHECK_FALSE(after_revoke);  // the lease is gone: its holder can no longer decide
  }

  TEST_CASE("a prefix range, and a down endpoint answered UNAVAILABLE then skipped") {
    Etcd e;
    REQUIRE(e.wait_healthy());
    std::string dead = fmt::format("127.0.0.1:{}", free_port());
    std::vector<Status> seen;
    std::vector<etcd::KeyValue> kvs;
    REQUIRE(with_client({dead, e.endpoint()}, [&](etcd::Client& c, auto done) {
      etcd::Txn t;
      for (int i = 0; i < 3; ++i) t.success.push_back(etcd::Op::put(fmt::format("p/{}", i), "x"));
      t.success.push_back(etcd::Op::put("q/0", "y"));
      c.txn(t, [&, done, t](Result<etcd::TxnResult> r) {
        seen.push_back(r.status());  // the dead endpoint first
        c.txn(t, [&, done](Result<etcd::TxnResult> r2) {
          seen.push_back(r2.is_ok() ? Status::ok() : r2.status());
          c.range("p/", etcd::prefix_end("p/"), [&, done](Result<std::vector<etcd::KeyValue>> g) {
            REQUIRE(g.is_ok());
            kvs = *g;
            done();
          });
        });
      });
    }));
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].code() == "UNAVAILABLE");
    CHECK(seen[1].is_ok());
    REQUIRE(kvs.size() == 3);
    CHECK(kvs[0].key == "p/0");
    CHECK(kvs[2].key == "p/2");
  }

  TEST_CASE("a leader over etcd: its decisions there, ended once acknowledged, a new incarnation per start") {
    Etcd e;
    REQUIRE(e.wait_healthy());
    Cluster::Options o;
    o.leader_args = {"--decision-store", e.url(), "--cluster-name", "t1"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    for (int i = 0; i < 20; ++i)
      REQUIRE(c.client({"put", fmt::format("k{}", i), "v"}).code == 0);
    CHECK(c.read_at(0, "k19") == "v");
    CHECK(c.read_at(1, "k19") == "v");
    // Every decision was acknowledged: its batch key is gone; no abort key was ever written.
    CHECK(wait_for([&] { auto k = keys(e.endpoint(), "/tpc/t1/b/"); return k && k->empty(); },
                   5000));
    CHECK(keys(e.endpoint(), "/tpc/t1/d/")->empty());
    CHECK(keys(e.endpoint(), "/tpc/t1/incarnation/")->at("/tpc/t1/incarnation/1") == "1");
    CHECK(keys(e.endpoint(), "/tpc/t1/leaders/")->count("/tpc/t1/leaders/1") == 1);
    // The same leader id twice is refused while the first holds its lease.
    auto r = run_tpc({"leader", "--port", std::to_string(free_port()), "--peers",
                      c.participant_addr(0) + "," + c.participant_addr(1), "--data-dir",
                      c.dir() + "/other", "--decision-store", e.url(), "--cluster-name", "t1"});
    CHECK(r.code == 2);
    CHECK(r.err.find("already running") != std::string::npos);
    // A restart takes the next incarnation from etcd.
    REQUIRE(c.leader()->terminate() == 0);
    c.start_leader();
    REQUIRE(c.wait_ready(15000));
    CHECK(c.client({"put", "after", "restart"}).code == 0);
    CHECK(keys(e.endpoint(), "/tpc/t1/incarnation/")->at("/tpc/t1/incarnation/1") == "2");
  }

  TEST_CASE("a leader killed after its decision in etcd: restarted, it finishes the commit") {
    Etcd e;
    REQUIRE(e.wait_healthy());
    Cluster::Options o;
    o.leader_args = {"--decision-store", e.url(), "--cluster-name", "t2"};
    o.leader_env = {{"TPC_FAILPOINTS", "leader/afterDecisionFsync=1*crash"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    auto r = c.client({"put", "k", "v"});
    CHECK(r.code == 4);  // the leader died before it answered
    REQUIRE(c.leader()->wait_exit(10000) == 128 + SIGKILL);
    // The decision is in etcd, in a batch key of leader 1; the participants are prepared, in
    // doubt.
    auto d = keys(e.endpoint(), "/tpc/t2/b/1/");
    REQUIRE(d);
    REQUIRE(d->size() == 1);
    auto batch = leader::decode_batch(d->begin()->second);
    REQUIRE(batch);
    REQUIRE(batch->size() == 1);
    CHECK(batch->at(0).first.rfind("1.1.", 0) == 0);
    CHECK(c.stat(0, "in_doubt") == 1);
    c.start_leader();  // without the failpoint
    REQUIRE(c.wait_ready(15000));
    REQUIRE(c.wait_settled());
    CHECK(c.read_at(0, "k") == "v");
    CHECK(c.read_at(1, "k") == "v");
    CHECK(wait_for([&] { auto k = keys(e.endpoint(), "/tpc/t2/b/"); return k && k->empty(); },
                   5000));
  }

  TEST_CASE("etcd down: puts fail fast with exit 4, nothing acknowledged is lost, and it resumes") {
    Etcd e;
    REQUIRE(e.wait_healthy());
    Cluster::Options o;
    o.leader_args = {"--decision-store", e.url(), "--cluster-name", "t3", "--lease-ttl", "3"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    for (int i = 0; i < 10; ++i) REQUIRE(c.client({"put", fmt::format("a{}", i), "1"}).code == 0);
    e.kill();
    REQUIRE(wait_for_text(c.dir() + "/leader.log", "keepalive failed", 10000));
    int64_t t0 = now_ms();
    auto r = c.client({"put", "b", "1"});
    CHECK(r.code == 4);
    CHECK(r.err.find("decision store") != std::string::npos);
    CHECK(now_ms() - t0 < 3000);  // fast: refused, not left to time out
    CHECK_FALSE(c.read_at(0, "b").has_value());
    e.start();
    REQUIRE(wait_for([&] { return c.client({"put", "c", "1"}).code == 0; }, 20000));
    for (int i = 0; i < 10; ++i) {
      CHECK(c.read_at(0, fmt::format("a{}", i)) == "1");
      CHECK(c.read_at(1, fmt::format("a{}", i)) == "1");
    }
  }

  TEST_CASE("takeover: a leader dies between votes and decision, another settles it as aborted") {
    Etcd e;
    REQUIRE(e.wait_healthy());
    Cluster::Options o;
    o.leader_args = {"--decision-store", e.url(), "--cluster-name", "tk", "--lease-ttl", "2"};
    o.leader_env = {{"TPC_FAILPOINTS", "leader/afterVotes=1*crash"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    auto l2 = second_leader(c, e, "tk");
    const std::string& addr2 = l2.addr;
    Scratch s;
    Process put({TPC_BINARY, "client", "--leader", c.leader_addr(), "put", "k", "v"},
                s.path() + "/out");
    REQUIRE(c.leader()->wait_exit(10000) == 128 + SIGKILL);
    int64_t killed = now_ms();
    CHECK(c.stat(0, "in_doubt") + c.stat(1, "in_doubt") >= 1);
    // Its participants ask the other leader, which settles it once the dead one's lease is gone.
    REQUIRE(wait_for([&] { return c.stat(0, "in_doubt") == 0 && c.stat(1, "in_doubt") == 0; },
                     15000));
    int64_t took = now_ms() - killed;
    MESSAGE("in doubt for " << took << " ms after the kill (lease TTL 2 s)");
    CHECK(took < 8000);
    CHECK(put.wait_exit(20000) == 4);  // its leader died before answering: outcome unknown
    CHECK(read_file(c.dir() + "/leader2.log").find("settled") != std::string::npos);
    CHECK_FALSE(c.read_at(0, "k").has_value());
    CHECK_FALSE(c.read_at(1, "k").has_value());
    // The key is free again, through the live leader.
    CHECK(run_tpc({"client", "--leader", addr2, "put", "k", "after"}).code == 0);
    CHECK(c.read_at(0, "k") == "after");
  }

  TEST_CASE("fencing: a leader paused past its lease cannot commit what another settled") {
    Etcd e;
    REQUIRE(e.wait_healthy());
    // Its lease (2 s) expires during the stall (5 s).
    Cluster c(stalling_leader(e, "fe", 2, 5000));
    REQUIRE(c.wait_ready());
    auto l2 = second_leader(c, e, "fe");
    put_loses_to_other_leader(c);
    CHECK(c.log_of_leader().find("holds an abort") != std::string::npos);
    // It took a new lease and goes on.
    REQUIRE(wait_for([&] { return c.client({"put", "k2", "v"}).code == 0; }, 10000));
  }

  TEST_CASE("takeover-after: a live leader holding a transaction too long loses it to another") {
    Etcd e;
    REQUIRE(e.wait_healthy());
    // Its lease (10 s) outlives the stall (4 s): the owner is alive all along, and leader 2
    // settles what participants held in doubt past 1 s.
    Cluster c(stalling_leader(e, "ta", 10, 4000));
    REQUIRE(c.wait_ready());
    auto l2 = second_leader(c, e, "ta", {"--takeover-after", "1000"});
    put_loses_to_other_leader(c);
    CHECK(read_file(c.dir() + "/leader2.log").find("past --takeover-after") != std::string::npos);
    // The owner never lost its lease, and its next batches still land (one compare each now).
    CHECK(c.client({"put", "k", "after"}).code == 0);
    CHECK(c.read_at(0, "k") == "after");
    CHECK(keys(e.endpoint(), "/tpc/ta/d/")->size() == 1);
  }

  TEST_CASE("a client given several leaders uses the first that answers") {
    Etcd e;
    REQUIRE(e.wait_healthy());
    Cluster::Options o;
    o.leader_args = {"--decision-store", e.url(), "--cluster-name", "cl", "--lease-ttl", "2"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    auto l2 = second_leader(c, e, "cl");
    const std::string& addr2 = l2.addr;
    std::string both = c.leader_addr() + "," + addr2;
    CHECK(run_tpc({"client", "--leader", both, "--request-id", "req-a", "put", "a", "1"}).code ==
          0);
    // The other leader knows the request's outcome from etcd; one it cannot know is never
    // called aborted (its own leader may commit it).
    {
      auto conn = client::Connection::open(addr2, 2000);
      REQUIRE(conn.is_ok());
      auto r = conn->call("RESULT req-a", 5000);
      REQUIRE(r.is_ok());
      CHECK(r->rfind("COMMITTED 1.", 0) == 0);
      r = conn->call("RESULT never-sent", 5000);
      REQUIRE(r.is_ok());
      CHECK(*r == "PENDING");
    }
    // status shows every leader listed, and the decision store as each sees it.
    auto st = run_tpc({"client", "--leader", both, "status"});
    CHECK(st.code == 0);
    CHECK(std::regex_search(st.out, std::regex("leader +1 +127\\.0\\.0\\.1:\\d+ +up")));
    CHECK(std::regex_search(st.out, std::regex("leader +2 +127\\.0\\.0\\.1:\\d+ +up")));
    CHECK(st.out.find("leader 2 keeps its decisions in etcd: reachable") != std::string::npos);
    auto js = run_tpc({"client", "--leader", both, "status", "--json"});
    CHECK(js.out.find("\"decisions\":\"etcd\",\"store_up\":true") != std::string::npos);
    c.kill_leader();
    st = run_tpc({"client", "--leader", both, "status"});
    CHECK(st.code == 4);
    CHECK(std::regex_search(st.out, std::regex("leader +- +127\\.0\\.0\\.1:\\d+ +DOWN")));
    CHECK(std::regex_search(st.out, std::regex("participant +1 .* up")));
    CHECK(run_tpc({"client", "--leader", both, "put", "b", "2"}).code == 0);
    CHECK(run_tpc({"client", "get", "b"}, 30000, "", {{"TPC_LEADER", both}}).out == "2\n");
    CHECK(c.read_at(0, "a") == "1");
    CHECK(c.read_at(1, "b") == "2");
    // Every leader down: unavailable, exit 4.
    l2.proc.reset();
    CHECK(run_tpc({"client", "--leader", both, "put", "c", "3"}).code == 4);
  }

  TEST_CASE("a heuristic mismatch over etcd is in the leader's log and in etcd, until forgotten") {
    Etcd e;
    REQUIRE(e.wait_healthy());
    Cluster::Options o;
    o.leader_args = {"--decision-store", e.url(), "--cluster-name", "heur"};
    o.leader_env = {{"TPC_FAILPOINTS", "leader/afterDecisionFsync=1*crash"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    Scratch s;
    auto [put, txid] = put_until_leader_dies(c, "heur-1", "k", "v", s.path());
    REQUIRE(!txid.empty());
    std::string peers = c.participant_addr(0) + "," + c.participant_addr(1);
    REQUIRE(c.client({"--peers", peers, "resolve", txid, "abort", "--force"}).code == 0);
    put->kill9();
    c.start_leader({{"TPC_NONE", "1"}});
    REQUIRE(c.wait_ready(15000));
    CHECK(wait_for([&] { return c.client({"result", "heur-1"}).code == 5; }, 15000));
    auto h = keys(e.endpoint(), "/tpc/heur/h/");
    REQUIRE(h);
    CHECK(h->size() == 2);
    CHECK(h->count("/tpc/heur/h/" + txid + "/0") == 1);
    CHECK(c.client({"forget", txid}).code == 0);
    CHECK(wait_for(
        [&] {
          auto k = keys(e.endpoint(), "/tpc/heur/h/");
          return k && k->empty();
        },
        5000));
  }
}

TEST_SUITE("etcd") {
  TEST_CASE("a leader started after a member add takes the membership's addresses as --peers") {
    Etcd e;
    REQUIRE(e.wait_healthy());
    Cluster::Options o;
    o.leader_args = {"--decision-store", e.url(), "--cluster-name", "grow", "--lease-ttl", "2"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    REQUIRE(c.client({"put", "a", "1"}).code == 0);
    int n = c.add_participant();
    REQUIRE(c.client({"member", "add", c.participant_addr(n)}).code == 0);
    // A new leader given the three participants in effect (not the two the cluster was made
    // with) joins it, and sees all three.
    auto l2 = second_leader(c, e, "grow");
    CHECK(run_tpc({"client", "--leader", l2.addr, "put", "b", "2"}).code == 0);
    CHECK(run_tpc({"client", "--leader", l2.addr, "get", "a"}).out == "1\n");
    CHECK(c.read_at(n, "b") == "2");
    // Another set is refused, saying what the cluster has.
    auto bad = run_tpc({"leader", "--id", "3", "--port", std::to_string(free_port()), "--peers",
                        c.participant_addr(0), "--data-dir", c.dir() + "/leader3",
                        "--decision-store", e.url(), "--cluster-name", "grow"});
    CHECK(bad.code == 2);
    CHECK(bad.err.find("start it with the cluster's --peers") != std::string::npos);
  }

  TEST_CASE(
      "two leaders over etcd agree on the membership: one's change is the other's next write's") {
    Etcd e;
    REQUIRE(e.wait_healthy());
    Cluster::Options o;
    o.participants = 3;
    o.replicas = 2;
    // Leader 1 marks a participant out after 1 s; leader 2 never would by itself.
    o.leader_args = {"--decision-store", e.url(), "--cluster-name",  "mb",
                     "--lease-ttl",      "2",     "--exclude-after", "1000"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    auto l2 = second_leader(c, e, "mb", {"--exclude-after", "600000"});
    std::vector<std::string> addrs{c.participant_addr(0), c.participant_addr(1),
                                   c.participant_addr(2)};
    // Keys on participant 3 (slot 2), written through both leaders.
    std::vector<std::string> on3;
    for (int i = 0; on3.size() < 8; ++i) {
      std::string k = fmt::format("m{}", i);
      auto owners = membership::place(addrs, 2, k);
      if (std::count(owners.begin(), owners.end(), 2)) on3.push_back(k);
    }
    std::map<std::string, std::string> last;
    auto put = [&](const std::string& leader, const std::string& k, const std::string& v) {
      auto r = run_tpc({"client", "--leader", leader, "put", k, v});
      if (r.code == 0) last[k] = v;
      return r.code;
    };
    for (auto& k : on3) REQUIRE(put(k < "m5" ? c.leader_addr() : l2.addr, k, "a") == 0);
    CHECK(stat_at(l2.addr, "epoch") == 1);

    // Participant 3 dies; leader 1 marks it out (through etcd).
    c.participant(2)->kill9();
    REQUIRE(wait_for([&] { return stat_at(c.leader_addr(), "out") == 1; }, 15000));
    long epoch = stat_at(c.leader_addr(), "epoch");
    CHECK(epoch == 2);
    // Leader 2 writes its keys without it: only under leader 1's membership can it commit.
    for (auto& k : on3) CHECK(put(l2.addr, k, "b") == 0);
    CHECK(stat_at(l2.addr, "epoch") == epoch);
    CHECK(stat_at(l2.addr, "out") == 1);
    CHECK(stat_at(l2.addr, "exclusions") == 0);  // it took the change, it did not make it
    auto stored = keys(e.endpoint(), "/tpc/mb/members");
    REQUIRE(stored);
    auto m = membership::decode(stored->at("/tpc/mb/members"));
    REQUIRE(m);
    CHECK(m->epoch == static_cast<uint64_t>(epoch));
    CHECK(m->slots[2].state == membership::State::out);
    auto list2 = run_tpc({"client", "--leader", l2.addr, "member", "list"});
    CHECK(contains(list2.out, c.participant_addr(2) + "        out"));

    // Back: it catches up and both leaders see it in-sync, under one epoch.
    c.start_participant(2);
    REQUIRE(wait_for(
        [&] {
          put(l2.addr, on3[0], "c");
          return stat_at(c.leader_addr(), "in_sync") == 3 && stat_at(l2.addr, "in_sync") == 3;
        },
        30000));
    long e1 = stat_at(c.leader_addr(), "epoch"), e2 = stat_at(l2.addr, "epoch");
    CHECK(e1 == e2);
    CHECK(e1 >= 4);  // out, catching-up, in-sync
    // It holds every acknowledged value: read straight from it.
    for (auto& k : on3) {
      CAPTURE(k);
      CHECK(c.read_at(2, k) == last[k]);
    }
  }
}
