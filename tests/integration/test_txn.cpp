// Multi-key transactions, placement, conditions and key locking.
#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "client/client.h"
#include "common/util.h"
#include "harness.h"
#include "leader/core.h"

using namespace tpc;
using namespace tpc::it;
using protocol::Op;
using protocol::OpKind;

namespace {
std::vector<size_t> owners_of(const Cluster& c, int replicas, const std::string& key) {
  std::vector<std::string> peers;
  for (int i = 0; i < c.size(); ++i) peers.push_back(c.participant_addr(i));
  return membership::place(peers, replicas, key);
}
}  // namespace

TEST_SUITE("txn") {
  TEST_CASE("multi-key commit and abort are all-or-nothing") {
    Cluster c;
    REQUIRE(c.wait_ready());
    auto r = c.client({"txn", "put", "acct:a", "100", "put", "acct:b", "5"});
    CHECK(r.code == 0);
    r = c.client({"txn", "check", "acct:a", "100", "check", "acct:b", "5", "put", "acct:a", "90",
                  "put", "acct:b", "15"});
    CHECK(r.code == 0);
    CHECK(c.client({"get", "acct:a"}).out == "90\n");
    CHECK(c.client({"get", "acct:b"}).out == "15\n");
    // A failed condition aborts every op, including the writes before it.
    r = c.client({"txn", "put", "acct:a", "0", "check", "acct:b", "999", "put", "acct:b", "0"});
    CHECK(r.code == 3);
    CHECK(c.client({"get", "acct:a"}).out == "90\n");
    CHECK(c.client({"get", "acct:b"}).out == "15\n");
    r = c.client({"txn", "del", "acct:a", "put", "new", "x"});
    CHECK(r.code == 0);
    CHECK(c.client({"get", "acct:a"}).code == 1);
    CHECK(c.client({"get", "new"}).out == "x\n");
  }

  TEST_CASE("each failing condition says which and what it found") {
    Cluster c;
    REQUIRE(c.wait_ready());
    REQUIRE(c.client({"put", "k", "v1"}).code == 0);
    auto r = c.client({"txn", "check", "k", "v2", "put", "k", "v3"});
    CHECK(r.code == 3);
    CHECK(r.err.find("check k v2 failed: found v1") != std::string::npos);
    r = c.client({"txn", "absent", "k", "put", "k", "v3"});
    CHECK(r.code == 3);
    CHECK(r.err.find("absent k failed: found v1") != std::string::npos);
    r = c.client({"txn", "check", "missing", "x", "put", "k", "v3"});
    CHECK(r.code == 3);
    CHECK(r.err.find("found (absent)") != std::string::npos);
    CHECK(c.client({"txn", "absent", "missing", "put", "missing", "now"}).code == 0);
    CHECK(c.client({"txn", "absent", "missing", "put", "missing", "again"}).code == 3);
    CHECK(c.client({"get", "missing"}).out == "now\n");
    CHECK(c.client({"txn", "put", "k"}).code == 2);
    CHECK(c.client({"txn", "jump", "k"}).code == 2);
    CHECK(c.client({"txn"}).code == 2);
  }

  TEST_CASE("placement with --replicas 1 over three participants") {
    Cluster::Options o;
    o.participants = 3;
    o.replicas = 1;
    Cluster c(o);
    REQUIRE(c.wait_ready());
    std::vector<std::string> keys;
    for (int i = 0; i < 30; ++i) keys.push_back("key" + std::to_string(i));
    for (auto& k : keys) REQUIRE(c.client({"put", k, "v-" + k}).code == 0);
    std::vector<int> per(3);
    for (auto& k : keys) {
      int holders = 0;
      for (int p = 0; p < 3; ++p)
        if (c.read_at(p, k)) {
          ++holders;
          ++per[p];
          CHECK(owners_of(c, 1, k) == std::vector<size_t>{static_cast<size_t>(p)});
        }
      CHECK(holders == 1);  // stored on exactly one participant
    }
    for (int n : per) CHECK(n > 0);
    // A transaction over keys of different participants stores each key on its owner only.
    std::string ka, kb;
    for (auto& k : keys) {
      if (ka.empty())
        ka = k;
      else if (owners_of(c, 1, k) != owners_of(c, 1, ka)) {
        kb = k;
        break;
      }
    }
    REQUIRE(c.client({"txn", "put", ka, "A", "put", kb, "B", "check", ka, "A"}).code == 3);
    REQUIRE(c.client({"txn", "check", ka, "v-" + ka, "put", ka, "A", "put", kb, "B"}).code == 0);
    for (int p = 0; p < 3; ++p) {
      bool owns_a = owners_of(c, 1, ka)[0] == static_cast<size_t>(p);
      bool owns_b = owners_of(c, 1, kb)[0] == static_cast<size_t>(p);
      CHECK((c.read_at(p, ka) == std::optional<std::string>("A")) == owns_a);
      CHECK((c.read_at(p, kb) == std::optional<std::string>("B")) == owns_b);
    }
    // A dead participant blocks only its own keys.
    c.kill_participant(2);
    int ok = 0, blocked = 0;
    for (auto& k : keys) {
      bool on_dead = owners_of(c, 1, k)[0] == 2;
      auto r = c.client({"put", k, "new"});
      if (on_dead) {
        CHECK(r.code == 3);
        CHECK(c.client({"get", k}).code == 4);
        ++blocked;
      } else {
        CHECK(r.code == 0);
        CHECK(c.client({"get", k}).out == "new\n");
        ++ok;
      }
    }
    CHECK(ok > 0);
    CHECK(blocked > 0);
  }

  TEST_CASE("a changed participant set is refused") {
    Scratch s;
    std::string dir = s.path() + "/leader";
    std::string p1 = "127.0.0.1:" + std::to_string(free_port());
    std::string p2 = "127.0.0.1:" + std::to_string(free_port());
    {
      Process l({TPC_BINARY, "leader", "--port", std::to_string(free_port()), "--peers",
                 p1 + "," + p2, "--data-dir", dir},
                s.path() + "/l1.log");
      REQUIRE(wait_for_text(s.path() + "/l1.log", "listening", 5000));
    }
    auto r = run_tpc(
        {"leader", "--port", std::to_string(free_port()), "--peers", p1, "--data-dir", dir});
    CHECK(r.code == 1);
    CHECK(r.err.find("different participant set") != std::string::npos);
    r = run_tpc({"leader", "--port", std::to_string(free_port()), "--peers", p1 + "," + p2,
                 "--replicas", "1", "--data-dir", dir});
    CHECK(r.code == 1);
  }

  TEST_CASE("two leaders coordinate over the same participants at once") {
    Cluster c;
    REQUIRE(c.wait_ready());
    uint16_t port2 = free_port();
    std::string peers = c.participant_addr(0) + "," + c.participant_addr(1);
    // A second leader of the same cluster: its participants refuse any other cluster's.
    Process l2({TPC_BINARY, "leader", "--id", "2", "--port", std::to_string(port2), "--peers",
                peers, "--data-dir", c.dir() + "/leader2", "--cluster-id", c.cluster_id()},
               c.dir() + "/leader2.log");
    std::string addr2 = "127.0.0.1:" + std::to_string(port2);
    REQUIRE(wait_for(
        [&] {
          auto conn = client::Connection::open(addr2, 300);
          return conn && conn->call("STATS", 1000).is_ok() &&
                 conn->call("STATS", 1000)->find("peers_up=2/2") != std::string::npos;
        },
        10000));
    // Both leaders increment one counter with check+put; conflicts are retried. No update is
    // lost: the final value is the number of commits.
    REQUIRE(c.client({"put", "counter", "0"}).code == 0);
    std::atomic<int> commits{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([&, t] {
        client::Options o;
        o.leader = t % 2 ? addr2 : c.leader_addr();
        o.retries = 0;
        for (int i = 0; i < 40; ++i) {
          std::ostringstream out, err;
          if (client::run_get(o, "counter", out, err) != 0) continue;
          std::string v = out.str();
          v.pop_back();
          int n = std::stoi(v);
          if (client::run_txn(
                  o,
                  {{OpKind::check, "counter", v}, {OpKind::put, "counter", std::to_string(n + 1)}},
                  out, err) == 0)
            ++commits;
        }
      });
    for (auto& t : ts) t.join();
    CHECK(commits.load() > 0);
    CHECK(c.client({"get", "counter"}).out == std::to_string(commits.load()) + "\n");
    CHECK(c.read_at(0, "counter") == c.read_at(1, "counter"));
  }

  TEST_CASE("a locked key is a conflict: retried, then exit 3 saying conflict") {
    Cluster::Options o;
    // Participant 1 holds every prepare for a while before it votes.
    o.participant_env[1] = {{"TPC_FAILPOINTS", "participant/afterPrepareFsync=1*sleep(1500)"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    Scratch s;
    Process slow({TPC_BINARY, "client", "--leader", c.leader_addr(), "put", "hot", "slow"},
                 s.path() + "/slow.log");
    REQUIRE(wait_for([&] { return c.stat(0, "in_doubt") == 1; }, 5000));
    auto r = c.client({"--retries", "2", "put", "hot", "fast"});
    CHECK(r.code == 3);
    CHECK(r.err.find("conflict") != std::string::npos);
    CHECK(slow.wait_exit(10000) == 0);
    CHECK(c.client({"get", "hot"}).out == "slow\n");
  }
}

TEST_SUITE("txn") {
  TEST_CASE("a damaged incarnation file is refused, never reset") {
    Scratch s;
    std::string dir = s.path() + "/leader";
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/incarnation") << "garbage\n";
    auto r = run_tpc({"leader", "--port", std::to_string(free_port()), "--peers",
                      "127.0.0.1:" + std::to_string(free_port()), "--data-dir", dir});
    CHECK(r.code == 1);
    CHECK(r.err.find("incarnation is damaged") != std::string::npos);
  }
}
