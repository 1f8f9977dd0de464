// Node replacement (--restore-from) and cluster backups (tpc client backup, --restore-backup),
// each under load, checked key by key (docs/operations.md).
#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "client/client.h"
#include "client/connection.h"
#include "common/util.h"
#include "harness.h"
#include "leader/core.h"
#include "store/store.h"

using namespace tpc;
using namespace tpc::it;
using protocol::OpKind;
namespace fs = std::filesystem;

namespace {
// Every key and value of a stopped participant's store.
std::map<std::string, std::string> dump(const std::string& data_dir) {
  store::SqliteStore st(data_dir + "/data.db");
  std::map<std::string, std::string> out;
  std::string after;
  while (true) {
    auto page = st.scan(after, 1000, SIZE_MAX);
    REQUIRE(page.is_ok());
    if (page->empty()) break;
    for (auto& [k, v] : *page) out[k] = v;
    after = page->back().first;
  }
  return out;
}

// Puts to fresh keys and overwrites of a few hot ones, until stopped; counts the commits.
struct Load {
  std::atomic<bool> stop{false};
  std::atomic<int> committed{0}, failed{0};
  std::vector<std::thread> threads;
  Load(const std::string& leader, int n) {
    for (int t = 0; t < n; ++t)
      threads.emplace_back([this, leader, t] {
        client::Options co;
        co.leader = leader;
        co.timeout_ms = 13000;  // the reply, then the outcome of a lost one
        for (int i = 0; i < 100000 && !stop; ++i) {
          std::ostringstream out, err;
          std::string key = i % 3 ? fmt::format("k{}-{}", t, i) : fmt::format("hot{}", i % 7);
          int code = client::run_txn(co, {{OpKind::put, key, fmt::format("v{}", i)}}, out, err);
          (code == 0 ? committed : failed)++;
          if (code != 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      });
  }
  void finish() {
    stop = true;
    for (auto& t : threads) t.join();
    threads.clear();
  }
  ~Load() { finish(); }
};

void settle(Cluster& c) {
  REQUIRE(c.wait_ready(15000));
  REQUIRE(c.wait_settled());
}

void replace_under_load(int participants, int replicas, bool secure) {
  Cluster::Options o;
  o.participants = participants;
  o.replicas = replicas;
  o.secure = secure;  // the replacement then restores over TLS, as a participant
  Cluster c(o);
  REQUIRE(c.wait_ready());
  Load load(c.leader_addr(), 2);
  REQUIRE(wait_for([&] { return load.committed >= 100; }, 20000));
  // The last participant loses its disk.
  int victim = participants - 1;
  c.kill_participant(victim);
  fs::remove_all(c.data_dir(victim));
  // While it is down, the writes of a key it owns wait for it, then (once it is marked out)
  // go on without it: the replacement must catch up on them (docs/membership.md).
  std::vector<std::string> peers;
  for (int i = 0; i < c.size(); ++i) peers.push_back(c.participant_addr(i));
  std::string owned;
  for (int k = 0; owned.empty(); ++k) {
    auto own = membership::place(peers, static_cast<size_t>(replicas), fmt::format("frozen{}", k));
    if (std::find(own.begin(), own.end(), static_cast<size_t>(victim)) != own.end())
      owned = fmt::format("frozen{}", k);
  }
  CHECK(c.client({"put", owned, "x"}).code == 0);
  int before = load.committed;
  c.start_participant(victim, {}, {"--restore-from", c.participant_addr(0)});
  REQUIRE(wait_for_text(c.dir() + fmt::format("/p{}.log", participants), "restored", 20000));
  REQUIRE(c.wait_ready(15000));
  // Under load again, with the replacement taking part.
  REQUIRE(wait_for([&] { return load.committed >= before + 200; }, 30000));
  load.finish();
  settle(c);
  // The replacement caught up on what it missed, and is in-sync again.
  CHECK(wait_for(
      [&] {
        auto conn = client::Connection::open(c.leader_addr(), 1000);
        auto st = conn ? conn->call("STATS", 2000) : Result<std::string>(Status::error("X", ""));
        return st && st->find(fmt::format(" in_sync={} ", participants)) != std::string::npos;
      },
      30000));
  std::string log = c.log_of_leader();
  CHECK(log.find("(restored from a replica) replaces node") != std::string::npos);
  c.kill_leader();
  for (int i = 0; i < c.size(); ++i) CHECK(c.participant(i)->terminate() == 0);
  // Every replica of every key agrees, key by key, and nobody holds a key it does not own.
  std::vector<std::map<std::string, std::string>> stores;
  for (int i = 0; i < c.size(); ++i) stores.push_back(dump(c.data_dir(i)));
  std::set<std::string> all;
  for (auto& s : stores)
    for (auto& [k, v] : s) all.insert(k);
  int mismatches = 0;
  for (auto& k : all) {
    auto owners = membership::place(peers, static_cast<size_t>(replicas), k);
    std::optional<std::string> first;
    for (int i = 0; i < c.size(); ++i) {
      bool owns = std::find(owners.begin(), owners.end(), static_cast<size_t>(i)) != owners.end();
      auto it = stores[i].find(k);
      if (!owns) {
        mismatches += it != stores[i].end();
        continue;
      }
      if (it == stores[i].end()) {
        ++mismatches;
        continue;
      }
      if (!first) first = it->second;
      mismatches += *first != it->second;
    }
  }
  std::cout << fmt::format(
                   "replace test ({} participants, replicas {}): {} keys compared on "
                   "every owner, {} mismatches",
                   participants, replicas ? replicas : participants, all.size(), mismatches)
            << std::endl;
  CHECK(all.size() > 200);
  CHECK(all.count(owned) == 1);
  CHECK(mismatches == 0);
}
}  // namespace

TEST_SUITE("replace") {
  TEST_CASE("a wiped participant restored from a replica under load, over TLS: every replica equal") {
    replace_under_load(2, 0, true);
  }

  TEST_CASE("restored from every co-owner when each key has 2 of 3 replicas") {
    replace_under_load(3, 2, false);
  }

  TEST_CASE("--restore-from refuses without another replica, or into a used directory") {
    Cluster::Options o;
    o.participants = 2;
    o.replicas = 1;
    Cluster c(o);
    REQUIRE(c.wait_ready());
    REQUIRE(c.client({"put", "k", "v"}).code == 0);
    Scratch s;
    auto r = run_tpc({"participant", "--id", "2", "--port", std::to_string(free_port()),
                      "--data-dir", s.path() + "/new", "--restore-from", c.participant_addr(0)});
    CHECK(r.code == 2);
    CHECK(r.err.find("one copy") != std::string::npos);
    CHECK_FALSE(fs::exists(s.path() + "/new/identity"));
    // Into a directory that holds a node already.
    r = run_tpc({"participant", "--id", "2", "--port", std::to_string(free_port()), "--data-dir",
                 c.data_dir(0), "--restore-from", c.participant_addr(0)});
    CHECK(r.code == 2);
    CHECK(r.err.find("empty data directory") != std::string::npos);
    // A participant id the cluster does not know.
    r = run_tpc({"participant", "--id", "7", "--port", std::to_string(free_port()), "--data-dir",
                 s.path() + "/other", "--restore-from", c.participant_addr(0)});
    CHECK(r.code == 2);
    CHECK(r.err.find("no participant with --id 7") != std::string::npos);
  }
}

TEST_SUITE("backup") {
  TEST_CASE("backup under bank load, restored into a fresh cluster: the total holds") {
    constexpr int k_accounts = 12, k_initial = 1000;
    Cluster c;
    REQUIRE(c.wait_ready());
    for (int i = 0; i < k_accounts; ++i)
      REQUIRE(c.client({"put", fmt::format("acct:{}", i), std::to_string(k_initial)}).code == 0);
    std::atomic<bool> stop{false};
    std::atomic<int> transfers{0};
    std::vector<std::thread> clients;
    for (int t = 0; t < 4; ++t)
      clients.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t * 7919 + now_us()));
        client::Options co;
        co.leader = c.leader_addr();
        co.timeout_ms = 5000;
        for (int n = 0; n < 100000 && !stop; ++n) {
          int a = static_cast<int>(rng() % k_accounts), b = static_cast<int>(rng() % k_accounts);
          if (a == b) continue;
          std::string ka = fmt::format("acct:{}", a), kb = fmt::format("acct:{}", b);
          std::ostringstream va, vb, out, err;
          if (client::run_get(co, ka, va, err) != 0 || client::run_get(co, kb, vb, err) != 0)
            continue;
          std::string sa = va.str(), sb = vb.str();
          sa.pop_back();
          sb.pop_back();
          long ba = std::stol(sa), bb = std::stol(sb), amount = 1 + static_cast<long>(rng() % 9);
          if (ba < amount) continue;
          transfers += client::run_txn(co,
                                       {{OpKind::check, ka, sa},
                                        {OpKind::check, kb, sb},
                                        {OpKind::put, ka, std::to_string(ba - amount)},
                                        {OpKind::put, kb, std::to_string(bb + amount)}},
                                       out, err) == 0;
        }
      });
    REQUIRE(wait_for([&] { return transfers >= 100; }, 20000));
    Scratch s;
    std::string dir = s.path() + "/backup";
    auto b = c.client({"backup", dir}, 60000);
    int at_backup = transfers;
    INFO(b.err);
    REQUIRE(b.code == 0);
    CHECK(b.out.find("participant 1 (") != std::string::npos);
    CHECK(b.out.find("participant 2 (") != std::string::npos);
    CHECK(b.out.find("backup of cluster " + c.cluster_id()) != std::string::npos);
    // Transfers go on after the backup.
    REQUIRE(wait_for([&] { return transfers >= at_backup + 50; }, 20000));
    stop = true;
    for (auto& t : clients) t.join();

    // A fresh cluster from the backup: new ports, new directories, a new leader.
    uint16_t lport = free_port();
    std::vector<uint16_t> ports{free_port(), free_port()};
    std::vector<std::unique_ptr<Process>> parts;
    for (int i = 0; i < 2; ++i)
      parts.push_back(std::make_unique<Process>(
          std::vector<std::string>{TPC_BINARY, "participant", "--id", std::to_string(i + 1),
                                   "--port", std::to_string(ports[i]), "--data-dir",
                                   s.path() + fmt::format("/r{}", i + 1), "--restore-backup",
                                   dir + fmt::format("/participant-{}", i + 1)},
          s.path() + fmt::format("/r{}.log", i + 1)));
    Process leader(
        {TPC_BINARY, "leader", "--port", std::to_string(lport), "--data-dir", s.path() + "/rl",
         "--peers", fmt::format("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1])},
        s.path() + "/rl.log");
    std::string laddr = fmt::format("127.0.0.1:{}", lport);
    REQUIRE(wait_for(
        [&] {
          auto r = run_tpc({"client", "--leader", laddr, "status"}, 10000);
          return r.code == 0;
        },
        15000));
    // The restored copy: the bank's total holds, both replicas agree, and it is a cluster
    // of its own that takes new writes.
    long total = 0;
    for (int i = 0; i < k_accounts; ++i) {
      auto r = run_tpc({"client", "--leader", laddr, "get", fmt::format("acct:{}", i)});
      REQUIRE(r.code == 0);
      total += std::stol(r.out);
    }
    CHECK(total == k_accounts * k_initial);
    auto st = run_tpc({"client", "--leader", laddr, "status"});
    CHECK(st.out.find(c.cluster_id()) == std::string::npos);
    CHECK(run_tpc({"client", "--leader", laddr, "put", "after", "restore"}).code == 0);
    leader.terminate();
    for (auto& p : parts) CHECK(p->terminate() == 0);
    auto d1 = dump(s.path() + "/r1"), d2 = dump(s.path() + "/r2");
    CHECK(d1 == d2);
    CHECK(d1.size() == k_accounts + 1);
    std::cout << fmt::format(
                     "backup test: {} transfers before the backup, {} after; restored "
                     "total {} of {}",
                     at_backup, transfers.load() - at_backup, total, k_accounts * k_initial)
              << std::endl;
  }
}
