// Node identity and the checks around it (docs/identity.md): a wiped participant is refused,
// bad --peers/--bind leave nothing behind, a client never takes another cluster's answer, a
// request id is never answered with another request's outcome.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "client/connection.h"
#include "harness.h"

using namespace tpc;
using namespace tpc::it;
namespace fs = std::filesystem;

TEST_SUITE("identity") {
  TEST_CASE("a wiped participant is refused, and reads never answer not found for its keys") {
    Cluster c;
    REQUIRE(c.wait_ready());
    for (int i = 0; i < 20; ++i)
      REQUIRE(c.client({"put", fmt::format("k{}", i), fmt::format("v{}", i)}).code == 0);
    c.kill_participant(1);
    fs::remove_all(c.dir() + "/p2");
    c.start_participant(1);
    // The leader refuses it, says why and how to repair it; status shows it.
    REQUIRE(wait_for_text(c.dir() + "/leader.log", "--restore-from", 10000));
    auto st = c.client({"status"});
    CHECK(st.code == 4);
    CHECK(contains(st.out, "REFUSED"));
    CHECK(contains(st.out, "wiped"));
    // Every read is served by the healthy replica: the value, never "not found".
    for (int round = 0; round < 2; ++round)
      for (int i = 0; i < 20; ++i) {
        auto r = c.client({"get", fmt::format("k{}", i)});
        CHECK(r.code == 0);
        CHECK(r.out == fmt::format("v{}\n", i));
      }
    // With the healthy replica down, a read fails as unavailable: still never "not found".
    c.kill_participant(0);
    auto r = c.client({"get", "k1"});
    CHECK(r.code == 4);
    CHECK_FALSE(contains(r.err, "not found"));
    // Writes need every owner: refused, not half-applied.
    c.start_participant(0);
    REQUIRE(wait_for([&] { return c.stat(0, "keys") == 20; }, 10000));
    auto w = c.client({"put", "k1", "new"});
    CHECK(w.code == 3);
    CHECK(*c.read_at(0, "k1") == "v1");
  }

  TEST_CASE("a bad --peers, --bind or --advertise is refused and leaves nothing persisted") {
    Scratch s;
    std::string d = s.path() + "/leader";
    uint16_t port = free_port(), p1 = free_port();
    auto leader = [&](std::vector<std::string> extra) {
      std::vector<std::string> a = {"leader", "--port", std::to_string(port), "--data-dir", d};
      a.insert(a.end(), extra.begin(), extra.end());
      return run_tpc(a, 10000);
    };
    std::string good = fmt::format("127.0.0.1:{}", p1);
    struct Case {
      std::vector<std::string> args;
      std::string says;
    };
    std::vector<Case> cases = {
        {{"--peers", good + ",a:b"}, "'a:b' is not HOST:PORT"},
        {{"--peers", good + ",127.0.0.1:70000"}, "port in 1..65535"},
        {{"--peers", good + "," + good}, "named twice"},
        {{"--peers", fmt::format("localhost:{},127.0.0.1:{}", p1, p1)}, "same participant"},
        {{"--peers", good, "--replicas", "2"}, "more than the 1 participants"},
        {{"--peers", good, "--bind", "0.0.0.0"}, "add --advertise"},
        {{"--peers", good, "--bind", "::"}, "add --advertise"},
        {{"--peers", good, "--advertise", "0.0.0.0:1"}, "wildcard"},
        {{"--peers", good, "--advertise", "nocolon"}, "not HOST:PORT"},
    };
    for (auto& k : cases) {
      auto r = leader(k.args);
      INFO(r.err);
      CHECK(r.code == 2);
      CHECK(contains(r.err, k.says));
      CHECK_FALSE(fs::exists(d));
    }
    // The corrected command starts (it is not refused for "a different participant set").
    Process p({TPC_BINARY, "participant", "--port", std::to_string(p1), "--id", "1", "--data-dir",
               s.path() + "/p1"},
              s.path() + "/p1.log");
    Process l(
        {TPC_BINARY, "leader", "--port", std::to_string(port), "--data-dir", d, "--peers", good},
        s.path() + "/leader.log");
    REQUIRE(wait_for_text(s.path() + "/leader.log", "admitted to cluster", 10000));
    REQUIRE(wait_for(
        [&] {
          auto conn = client::Connection::open(fmt::format("127.0.0.1:{}", port), 500);
          auto st = conn ? conn->call("STATS", 1000) : Result<std::string>(conn.status());
          return st && st->find("peers_up=1/1") != std::string::npos;
        },
        10000));
    auto r = run_tpc({"client", "--leader", fmt::format("127.0.0.1:{}", port), "put", "k", "v"});
    CHECK(r.code == 0);
  }

  TEST_CASE("a client that knows its cluster refuses another cluster's leader") {
    Cluster a, b;
    REQUIRE(a.wait_ready());
    REQUIRE(b.wait_ready());
    std::string id_a = a.cluster_id();
    REQUIRE(id_a.size() == 36);
    REQUIRE(id_a != b.cluster_id());
    auto ok = a.client({"--cluster-id", id_a, "put", "k", "a"});
    CHECK(ok.code == 0);
    for (auto* verb : {"put", "get"}) {
      std::vector<std::string> args = {"client", "--leader", b.leader_addr(), "--cluster-id", id_a,
                                       verb,     "k"};
      if (std::string(verb) == "put") args.push_back("b");
      auto r = run_tpc(args);
      INFO(r.err);
      CHECK(r.code == 2);
      CHECK(r.out.empty());
      CHECK(contains(r.err, "wrong cluster"));
      CHECK(contains(r.err, id_a));
    }
    // The environment variable does the same.
    auto r = run_tpc({"client", "--leader", b.leader_addr(), "put", "k", "b"}, 30000, "",
                     {{"TPC_CLUSTER_ID", id_a}});
    CHECK(r.code == 2);
    CHECK_FALSE(b.read_at(0, "k").has_value());
    CHECK(run_tpc({"client", "--cluster-id", "nope", "get", "k"}).code == 2);
  }

  TEST_CASE("a participant of one cluster refuses another cluster's leader") {
    Cluster a, b;
    REQUIRE(a.wait_ready());
    REQUIRE(b.wait_ready());
    // A leader of cluster b pointed at a's participants (a typo in --peers) is refused by
    // them, never admitted.
    uint16_t port = free_port();
    Process l({TPC_BINARY, "leader", "--port", std::to_string(port), "--data-dir",
               b.dir() + "/leader-x", "--cluster-id", b.cluster_id(), "--peers",
               a.participant_addr(0) + "," + a.participant_addr(1)},
              b.dir() + "/leader-x.log");
    REQUIRE(wait_for_text(b.dir() + "/leader-x.log", "belongs to cluster", 10000));
    // Such a leader serves nothing: its view of the cluster is not the participants'.
    auto r = run_tpc({"client", "--leader", fmt::format("127.0.0.1:{}", port), "put", "k", "x"});
    CHECK(r.code == 2);
    CHECK(contains(r.err, "view of the cluster is refused"));
    CHECK_FALSE(a.read_at(0, "k").has_value());
  }

  TEST_CASE("a data directory of another role, or of a newer format, is refused") {
    Cluster c;
    REQUIRE(c.wait_ready());
    c.kill_participant(0);
    c.kill_leader();
    auto r = run_tpc({"participant", "--port", std::to_string(free_port()), "--id", "9",
                      "--data-dir", c.dir() + "/leader"});
    CHECK(r.code == 2);
    CHECK(contains(r.err, "data directory of a leader"));
    std::string id = read_file(c.dir() + "/p1/identity");
    auto at = id.find("format 1");
    REQUIRE(at != std::string::npos);
    id.replace(at, 8, "format 99");
    std::ofstream(c.dir() + "/p1/identity") << id;
    r = run_tpc({"participant", "--port", std::to_string(free_port()), "--id", "1", "--data-dir",
                 c.dir() + "/p1"});
    CHECK(r.code == 2);
    CHECK(contains(r.err, "newer tpc"));
  }

  TEST_CASE("a known request id with other ops is refused, never answered with its outcome") {
    Cluster c;
    REQUIRE(c.wait_ready());
    auto r = c.client({"--request-id", "job-7", "put", "a", "1"});
    CHECK(r.code == 0);
    // The same request again: its first outcome, not run twice.
    r = c.client({"--request-id", "job-7", "put", "a", "1"});
    CHECK(r.code == 0);
    CHECK(r.out == "OK\n");
    // Another request under that id: refused (exit 2), and not run.
    r = c.client({"--request-id", "job-7", "put", "b", "2"});
    CHECK(r.code == 2);
    CHECK(contains(r.err, "job-7"));
    CHECK_FALSE(c.read_at(0, "b").has_value());
    // Still refused after a leader restart (the fingerprint is in the log).
    c.kill_leader();
    c.start_leader();
    REQUIRE(c.wait_ready());
    r = c.client({"--request-id", "job-7", "put", "b", "2"});
    CHECK(r.code == 2);
    CHECK(c.client({"--request-id", "bad/id", "put", "b", "2"}).code == 2);
    // Every reply echoes the request's tag; the client checks it.
    auto conn = client::Connection::open(c.leader_addr(), 2000);
    REQUIRE(conn);
    REQUIRE(conn->send_raw("@abc123 TXN abc123 put x 1\n").is_ok());
    auto line = conn->read_line(5000);
    REQUIRE(line);
    CHECK(line->rfind("@abc123 COMMITTED ", 0) == 0);
    REQUIRE(conn->send_raw("@bad/tag PING\n").is_ok());
    line = conn->read_line(5000);
    REQUIRE(line);
    CHECK(line->rfind("ERR PROTO bad tag", 0) == 0);
  }
}
