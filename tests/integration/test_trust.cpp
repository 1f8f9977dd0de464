// Phase two trusts only what it should (docs/security.md, docs/recovery.md): an operator's
// outcome that contradicts the leader's durable decision is reported, never hidden.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "client/connection.h"
#include "harness.h"
#include "protocol/messages.h"

using namespace tpc;
using namespace tpc::it;

namespace {
// `tpc client result RID` once it reports a heuristic mismatch (exit 5), or after 15 s.
RunResult heuristic_result(Cluster& c, const std::string& rid) {
  RunResult res;
  wait_for(
      [&] {
        res = c.client({"result", rid});
        return res.code == 5;
      },
      15000);
  return res;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}
}  // namespace

TEST_SUITE("trust") {
  TEST_CASE(
      "an operator's abort of a durable COMMIT is a heuristic mismatch: recorded, shown, "
      "exit 5, until forgotten") {
    Cluster::Options o;
    // The decision is durable; the leader dies before phase 2.
    o.leader_env = {{"TPC_FAILPOINTS", "leader/afterDecisionFsync=1*crash"}};
    uint16_t metrics = free_port();
    o.leader_args = {"--metrics-addr", "127.0.0.1:" + std::to_string(metrics)};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    Scratch s;
    const std::string rid = "bank-deposit-1";
    auto [put, txid] = put_until_leader_dies(c, rid, "bank", "100", s.path());
    REQUIRE(!txid.empty());
    // The bare ABORT an admin could send before is refused: only RESOLVE decides by hand.
    for (int i = 0; i < 2; ++i) {
      auto admin = client::Connection::open(c.participant_addr(i), 2000, "admin");
      REQUIRE(admin.is_ok());
      auto r = admin->call("ABORT " + txid, 5000);
      REQUIRE(r.is_ok());
      CHECK(r->rfind("ERR DENIED", 0) == 0);
      CHECK(c.stat(i, "in_doubt") == 1);
    }
    std::string peers = c.participant_addr(0) + "," + c.participant_addr(1);
    auto r = c.client({"--peers", peers, "resolve", txid, "abort", "--force"});
    INFO(r.out << r.err);
    REQUIRE(r.code == 0);
    put->kill9();
    c.start_leader();  // re-sends its COMMIT: each participant answers HEURISTIC ABORTED
    REQUIRE(c.wait_ready());
    RunResult res = heuristic_result(c, rid);
    INFO(res.out << res.err);
    CHECK(res.code == 5);
    CHECK(res.err.find("HEURISTIC MISMATCH: the leader decided commit of " + txid) !=
          std::string::npos);
    CHECK(wait_for([&] { return c.stat(-1, "heuristic") == 2; }, 10000));
    // The data is the operator's, the same on every replica and on every read.
    for (int i = 0; i < 5; ++i) CHECK(c.client({"get", "bank"}).code == 1);
    CHECK(!c.read_at(0, "bank"));
    CHECK(!c.read_at(1, "bank"));
    auto h = c.client({"heuristics"});
    CHECK(h.code == 0);
    CHECK(count(h.out, txid + " ") == 2);
    CHECK(h.out.find(rid) != std::string::npos);
    CHECK(c.client({"heuristics", "--json"})
              .out.find("\"decided\":\"commit\",\"outcome\":\"abort\"") != std::string::npos);
    auto st = c.client({"status"});
    CHECK(st.out.find("records 2 HEURISTIC MISMATCH") != std::string::npos);
    CHECK(http_get(metrics, "/metrics").second.find("\ntpc_heuristic_mismatches 2\n") !=
          std::string::npos);
    // Logged once per participant at error level, not again on the re-sends.
    CHECK(count(c.log_of_leader(), "HEURISTIC MISMATCH: " + txid) == 2);
    // Durable: a restart of the leader still shows them.
    c.kill_leader();
    c.start_leader();
    REQUIRE(c.wait_ready());
    CHECK(c.stat(-1, "heuristic") == 2);
    CHECK(c.client({"result", rid}).code == 5);
    // An operator acknowledges them.
    auto f = c.client({"forget", txid});
    CHECK(f.code == 0);
    CHECK(c.client({"forget", txid}).code == 1);
    CHECK(c.client({"heuristics"}).out.find("no heuristic mismatches") != std::string::npos);
    CHECK(c.stat(-1, "heuristic") == 0);
  }

  TEST_CASE(
      "resolve --force commit of a presumed-abort transaction is reported when its leader "
      "returns") {
    Cluster::Options o;
    o.leader_env = {{"TPC_FAILPOINTS", "leader/beforeDecisionFsync=1*crash"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    Scratch s;
    const std::string rid = "forced-commit-1";
    auto [put, txid] = put_until_leader_dies(c, rid, "stuck", "v", s.path());
    REQUIRE(!txid.empty());
    std::string peers = c.participant_addr(0) + "," + c.participant_addr(1);
    auto r = c.client({"--peers", peers, "resolve", txid, "commit", "--force"});
    REQUIRE(r.code == 0);
    CHECK(c.read_at(0, "stuck") == "v");
    put->kill9();
    c.start_leader();  // it never decided: presumed abort; the participants report to it
    REQUIRE(c.wait_ready());
    RunResult res = heuristic_result(c, rid);
    INFO(res.out << res.err);
    CHECK(res.code == 5);
    CHECK(res.err.find("the leader decided abort") != std::string::npos);
    CHECK(wait_for([&] { return c.stat(-1, "heuristic") == 2; }, 10000));
    CHECK(c.log_of_participant(0).find("HEURISTIC MISMATCH: " + txid) != std::string::npos);
  }

  TEST_CASE("a relayed resolve that agrees with the leader records no mismatch") {
    Cluster::Options o;
    o.leader_env = {{"TPC_FAILPOINTS", "leader/sendCommit=error(EIO)"}};
    o.participant_env[0] = {{"TPC_FAILPOINTS", "participant/askOutcome=3*error(EIO)"}};
    o.participant_env[1] = {{"TPC_FAILPOINTS", "participant/askOutcome=3*error(EIO)"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    REQUIRE(c.client({"--request-id", "agree-1", "put", "decided", "yes"}).code == 0);
    std::string txid;
    REQUIRE(wait_for(
        [&] {
          std::smatch m;
          std::string out = c.client({"in-doubt"}).out;
          if (!std::regex_search(out, m, std::regex("\n(1\\.\\d+\\.\\d+) "))) return false;
          txid = m[1];
          return true;
        },
        10000));
    auto r = c.client({"resolve", txid, "commit"});
    CHECK(r.code == 0);
    CHECK(r.out.find("following leader") != std::string::npos);
    // Each participant reports the relayed commit; the leader agrees.
    CHECK(wait_for(
        [&] {
          return c.log_of_participant(0).find("agrees with its leader") != std::string::npos &&
                 c.log_of_participant(1).find("agrees with its leader") != std::string::npos;
        },
        15000));
    CHECK(c.stat(-1, "heuristic") == 0);
    CHECK(c.client({"result", "agree-1"}).code == 0);
  }

  TEST_CASE("a pause ends when the connection that asked for it closes: writes resume within 2 s") {
    Cluster c;
    REQUIRE(c.wait_ready());
    for (int round = 0; round < 2; ++round) {
      INFO("round " << round);
      // An admin pauses for ten minutes and goes away (a backup client that died).
      auto admin = client::Connection::open(c.leader_addr(), 2000, "admin");
      REQUIRE(admin.is_ok());
      auto paused = admin->call("PAUSE 600000", 5000);
      REQUIRE(paused.is_ok());
      REQUIRE(*paused == "OK");
      Scratch s;
      Process put({TPC_BINARY, "client", "--leader", c.leader_addr(), "put",
                   "after-pause-" + std::to_string(round), "v"},
                  s.path() + "/out");
      // Held, not refused, while the connection lives.
      CHECK(put.wait_exit(300) == -1);
      CHECK(!c.read_at(0, "after-pause-" + std::to_string(round)));
      auto closed_at = std::chrono::steady_clock::now();
      {
        auto gone = std::move(*admin);  // closed at the end of this scope
      }
      CHECK(put.wait_exit(2000) == 0);
      auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - closed_at)
                      .count();
      MESSAGE("pause round " << round << ": the held write committed " << took
                             << " ms after the pausing connection closed");
      CHECK(took < 2000);
      CHECK(c.read_at(0, "after-pause-" + std::to_string(round)) == "v");
    }
    CHECK(c.log_of_leader().find("pause ended: the connection that asked for it") !=
          std::string::npos);
    // A backup (PAUSE, copies, RESUME on one connection) still works.
    Scratch b;
    auto r = c.client({"backup", b.path() + "/copy"});
    INFO(r.out << r.err);
    CHECK(r.code == 0);
  }

  TEST_CASE(
      "a leader with another view of the cluster is refused, serves nothing, and reads "
      "stay the same") {
    Cluster::Options o;
    o.participants = 3;
    Cluster c(o);
    REQUIRE(c.wait_ready());
    REQUIRE(c.client({"put", "bank", "100"}).code == 0);
    struct Stray {
      std::string name;
      std::vector<std::string> args;
      std::string says;
    };
    std::vector<Stray> strays = {
        // A typo in --peers: a subset of the cluster.
        {"subset", {"--peers", c.participant_addr(0) + "," + c.participant_addr(1)}, "--peers "},
        // A stale configuration: another replica count.
        {"replicas",
         {"--peers",
          c.participant_addr(0) + "," + c.participant_addr(1) + "," + c.participant_addr(2),
          "--replicas", "1"},
         "--replicas 1, not all"},
    };
    for (auto& st : strays) {
      INFO(st.name);
      uint16_t port = free_port();
      std::vector<std::string> args = {TPC_BINARY,     "leader",
                                       "--id",         "2",
                                       "--port",       std::to_string(port),
                                       "--data-dir",   c.dir() + "/stray-" + st.name,
                                       "--cluster-id", c.cluster_id()};
      args.insert(args.end(), st.args.begin(), st.args.end());
      std::string log = c.dir() + "/stray-" + st.name + ".log";
      Process stray(args, log);
      // Every participant it names refuses it, naming the difference.
      REQUIRE(wait_for_text(log, "ERR VIEW", 10000));
      CHECK(read_file(log).find(st.says) != std::string::npos);
      CHECK(c.log_of_participant(0).find("refusing JOIN: this participant was admitted to "
                                         "another view") != std::string::npos);
      std::string at = "127.0.0.1:" + std::to_string(port);
      auto r = run_tpc({"client", "--leader", at, "put", "bank", "0"});
      CHECK(r.code == 2);
      CHECK(r.err.find("view of the cluster is refused") != std::string::npos);
      CHECK(run_tpc({"client", "--leader", at, "get", "bank"}).code == 2);
      // Nothing changed: every read through the real leader says the same.
      for (int i = 0; i < 10; ++i) {
        auto g = c.client({"get", "bank"});
        CHECK(g.code == 0);
        CHECK(g.out == "100\n");
      }
      for (int j = 0; j < 3; ++j) CHECK(c.read_at(j, "bank") == "100");
    }
    // The real leader is still admitted by all.
    CHECK(c.client({"put", "bank", "200"}).code == 0);
    CHECK(c.read_at(2, "bank") == "200");
  }

  TEST_CASE(
      "two leaders started in the same second over a fresh etcd form one cluster, and "
      "writes through either commit (20 runs)") {
    EtcdServer e;
    REQUIRE(e.wait_healthy());
    for (int run = 0; run < 20; ++run) {
      INFO("run " << run);
      std::string name = "race-" + std::to_string(run);
      Cluster::Options o;
      o.participants = 3;
      o.leader_args = {"--decision-store", e.url(), "--cluster-name", name};
      Cluster c(o);  // leader 1 starts here
      uint16_t port2 = free_port();
      std::string peers =
          c.participant_addr(0) + "," + c.participant_addr(1) + "," + c.participant_addr(2);
      Process l2(
          {TPC_BINARY, "leader", "--id", "2", "--port", std::to_string(port2), "--peers", peers,
           "--data-dir", c.dir() + "/leader2", "--decision-store", e.url(), "--cluster-name", name},
          c.dir() + "/leader2.log");
      std::string addr2 = "127.0.0.1:" + std::to_string(port2);
      REQUIRE(c.wait_ready());
      REQUIRE(wait_for(
          [&] {
            auto conn = client::Connection::open(addr2, 300);
            if (!conn) return false;
            auto r = conn->call("STATS", 1000);
            return r && r->find("peers_up=3/3") != std::string::npos;
          },
          10000));
      // One cluster: both leaders and every participant name the same one.
      auto cluster_of = [](const std::string& addr) {
        auto conn = client::Connection::open(addr, 1000);
        if (!conn) return std::string("?");
        auto r = conn->call("STATS", 1000);
        return r ? protocol::parse_fields(*r)["cluster"] : std::string("?");
      };
      std::string cluster = cluster_of(c.leader_addr());
      CHECK(cluster.size() == 36);
      CHECK(cluster_of(addr2) == cluster);
      for (int j = 0; j < 3; ++j) CHECK(cluster_of(c.participant_addr(j)) == cluster);
      auto r1 = c.client({"put", "k1", "one"});
      auto r2 = run_tpc({"client", "--leader", addr2, "put", "k2", "two"});
      INFO(r1.err << r2.err);
      CHECK(r1.code == 0);
      CHECK(r2.code == 0);
      CHECK(run_tpc({"client", "--leader", addr2, "get", "k1"}).out == "one\n");
      CHECK(c.client({"get", "k2"}).out == "two\n");
    }
  }

  TEST_CASE(
      "over etcd, a leader whose directory or flags name another cluster or view stops at "
      "start") {
    EtcdServer e;
    REQUIRE(e.wait_healthy());
    Cluster::Options o;
    o.leader_args = {"--decision-store", e.url(), "--cluster-name", "solo"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    std::string peers = c.participant_addr(0) + "," + c.participant_addr(1);
    Scratch s;
    // A leader's directory of another cluster.
    std::filesystem::create_directories(s.path() + "/l3");
    std::ofstream(s.path() + "/l3/identity")
        << "format 1\nrole leader\ncluster 00000000-0000-4000-8000-00000000000a\n"
           "node 00000000-0000-4000-8000-00000000000b\norigin init\n";
    auto r = run_tpc(
        {"leader", "--id", "3", "--port", std::to_string(free_port()), "--peers", peers,
         "--data-dir", s.path() + "/l3", "--decision-store", e.url(), "--cluster-name", "solo"},
        20000);
    CHECK(r.code == 2);
    CHECK(r.err.find("belongs to cluster 00000000-0000-4000-8000-00000000000a, but the decision "
                     "store") != std::string::npos);
    // The view: another --peers or --replicas than the cluster's.
    auto v = run_tpc({"leader", "--id", "4", "--port", std::to_string(free_port()), "--peers",
                      c.participant_addr(0), "--data-dir", s.path() + "/l4", "--decision-store",
                      e.url(), "--cluster-name", "solo"},
                     20000);
    CHECK(v.code == 2);
    CHECK(v.err.find("start it with the cluster's --peers and --replicas") != std::string::npos);
    CHECK(v.err.find("peers " + peers) != std::string::npos);
    auto w = run_tpc({"leader", "--id", "5", "--port", std::to_string(free_port()), "--peers",
                      peers, "--replicas", "1", "--data-dir", s.path() + "/l5", "--decision-store",
                      e.url(), "--cluster-name", "solo"},
                     20000);
    CHECK(w.code == 2);
    CHECK(w.err.find("replicas 1") != std::string::npos);
    // --cluster-id of another cluster.
    auto x =
        run_tpc({"leader", "--id", "6", "--port", std::to_string(free_port()), "--peers", peers,
                 "--data-dir", s.path() + "/l6", "--decision-store", e.url(), "--cluster-name",
                 "solo", "--cluster-id", "00000000-0000-4000-8000-000000000000"},
                20000);
    CHECK(x.code == 2);
    CHECK(x.err.find("holds cluster " + c.cluster_id()) != std::string::npos);
  }
}
