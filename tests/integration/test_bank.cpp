// The bank test: money moves between accounts spread over three participants (two replicas
// each) by check+put transactions from many concurrent clients, while a participant and the
// leader are killed -9 and restarted. Money is neither created nor destroyed.
#include <doctest/doctest.h>

#include <atomic>
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
using protocol::OpKind;

TEST_SUITE("bank") {
  TEST_CASE("bank: total preserved under concurrent transfers and kill -9") {
    constexpr int k_accounts = 16, k_initial = 1000, k_clients = 6;
    Cluster::Options o;
    o.participants = 3;
    o.replicas = 2;
    o.participant_args = {"--resolve-after", "300"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    for (int i = 0; i < k_accounts; ++i)
      REQUIRE(c.client({"put", fmt::format("acct:{}", i), std::to_string(k_initial)}).code == 0);

    std::atomic<bool> stop{false};
    std::atomic<int> committed{0}, conflicts{0}, checks{0}, unavailable{0}, unknown{0}, other{0};
    std::vector<std::thread> clients;
    for (int t = 0; t < k_clients; ++t)
      clients.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t * 7919 + now_us()));
        client::Options co;
        co.leader = c.leader_addr();
        co.timeout_ms = 13000;  // the reply, then the outcome of a lost one
        for (int n = 0; n < 5000 && !stop; ++n) {
          int a = static_cast<int>(rng() % k_accounts), b = static_cast<int>(rng() % k_accounts);
          if (a == b) continue;
          std::string ka = fmt::format("acct:{}", a), kb = fmt::format("acct:{}", b);
          std::ostringstream va, vb, out, err;
          if (client::run_get(co, ka, va, err) != 0 || client::run_get(co, kb, vb, err) != 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            continue;
          }
          std::string sa = va.str(), sb = vb.str();
          sa.pop_back();
          sb.pop_back();
          long ba = std::stol(sa), bb = std::stol(sb);
          long amount = 1 + static_cast<long>(rng() % 50);
          if (ba < amount) continue;
          int code = client::run_txn(co,
                                     {{OpKind::check, ka, sa},
                                      {OpKind::check, kb, sb},
                                      {OpKind::put, ka, std::to_string(ba - amount)},
                                      {OpKind::put, kb, std::to_string(bb + amount)}},
                                     out, err);
          if (code == 0)
            ++committed;
          else if (code == 3 && err.str().find("conflict") != std::string::npos)
            ++conflicts;
          else if (code == 3 && err.str().find("condition failed") != std::string::npos)
            ++checks;
          else if (code == 3)
            ++unavailable;  // a participant down or a vote timed out
          else if (code == 4)
            ++unknown;
          else
            ++other;
          if (code != 0) std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 20));
        }
      });

    int kills = 0;
    // The kill schedule: load runs meanwhile (this is timing of the scenario, not a wait for
    // a condition).
    auto pause = [](int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); };
    pause(1500);
    c.kill_participant(1);
    ++kills;
    pause(500);
    c.start_participant(1);
    pause(1500);
    c.kill_leader();
    ++kills;
    pause(300);
    c.start_leader();
    pause(2000);
    stop = true;
    for (auto& t : clients) t.join();

    REQUIRE(c.wait_ready(15000));
    CHECK(wait_for(
        [&] {
          for (int i = 0; i < c.size(); ++i)
            if (c.stat(i, "in_doubt") != 0) return false;
          return true;
        },
        20000));
    std::vector<std::string> peers;
    for (int i = 0; i < c.size(); ++i) peers.push_back(c.participant_addr(i));
    auto owners = [&](const std::string& k) { return membership::place(peers, 2, k); };
    long total = 0;
    int disagreements = 0, negative = 0;
    for (int i = 0; i < k_accounts; ++i) {
      std::string k = fmt::format("acct:{}", i);
      std::optional<std::string> first;
      for (size_t p : owners(k)) {
        auto v = c.read_at(static_cast<int>(p), k);
        REQUIRE(v.has_value());
        if (!first)
          first = v;
        else if (*first != *v)
          ++disagreements;
      }
      long bal = std::stol(*first);
      negative += bal < 0;
      total += bal;
    }
    std::cout
        << fmt::format(
               "bank test: {} transfers committed, {} aborted on conflict, {} on a failed "
               "check, {} with a participant down, {} unknown, {} other; {} kills; total {} of {}",
               committed.load(), conflicts.load(), checks.load(), unavailable.load(),
               unknown.load(), other.load(), kills, total, k_accounts * k_initial)
        << std::endl;
    CHECK(total == k_accounts * k_initial);
    CHECK(negative == 0);
    CHECK(disagreements == 0);
    CHECK(committed.load() > 50);
    CHECK(other.load() == 0);
  }
}
