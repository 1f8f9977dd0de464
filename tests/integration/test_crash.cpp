// Randomized crash test: concurrent client load while processes are killed with -9 at random
// moments and at random failpoints, then healed and checked for anomalies.
// TPC_CRASH_RUNS (default 4) and TPC_CRASH_MS (default 2500) bound it; `make crash-test`
// runs a longer one. Also the restart loop (SIGTERM and restart of every process under load).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "client/client.h"
#include "common/failpoint.h"
#include "common/util.h"
#include "harness.h"
#include "leader/core.h"

using namespace tpc;
using namespace tpc::it;

namespace {
int env_int(const char* name, int dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : dflt;
}

// Every failpoint of the protocol steps (the txlog ones fail I/O rather than mark a step).
std::vector<std::string> protocol_failpoints() {
  std::vector<std::string> out;
  for (auto* n = failpoint::k_names; *n; ++n)
    if (std::string_view(*n).rfind("txlog/", 0) != 0) out.emplace_back(*n);
  return out;
}

struct Totals {
  int runs = 0, kills = 0, txns = 0, anomalies = 0;
  int committed = 0, aborted = 0, unknown = 0;
};

// A power failure: every process killed at once, then every log cut back to the length its
// last completed fdatasync covered (the logs record it under TPC_TEST_RECORD_SYNCED), so
// whatever sat in the page cache only is gone.
void power_failure(Cluster& c) {
  c.kill_leader();
  for (int i = 0; i < c.size(); ++i) c.kill_participant(i);
  std::vector<std::string> dirs{c.dir() + "/leader"};
  for (int i = 0; i < c.size(); ++i) dirs.push_back(c.dir() + "/p" + std::to_string(i + 1));
  for (auto& d : dirs) {
    std::ifstream in(d + "/txlog.synced");
    uint64_t synced = 0;
    if (!(in >> synced)) continue;  // nothing synced since the log was created
    std::error_code ec;
    if (std::filesystem::file_size(d + "/txlog", ec) > synced)
      std::filesystem::resize_file(d + "/txlog", synced, ec);
    CHECK_FALSE(ec);  // not REQUIRE: client threads are running
  }
}

// Four client threads writing two-key transactions ("a-ID", "b-ID") until `stop`, each to
// the leader(s) leader_of(thread); every request id and its exit code go to `results`.
std::vector<std::thread> writers(std::function<std::string(int)> leader_of,
                                 const std::string& prefix, std::atomic<bool>& stop,
                                 std::mutex& mu,
                                 std::vector<std::pair<std::string, int>>& results) {
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t)
    clients.emplace_back([&, t, leader_of, prefix] {
      client::Options co;
      co.leader = leader_of(t);
      co.timeout_ms = 13000;  // the reply, then the outcome of a lost one
      for (int n = 0; n < 100000 && !stop; ++n) {
        std::string id = fmt::format("{}t{}n{}", prefix, t, n);
        std::ostringstream out, err;
        int code = client::run_txn(co,
                                   {{protocol::OpKind::put, "a-" + id, "va-" + id},
                                    {protocol::OpKind::put, "b-" + id, "vb-" + id}},
                                   out, err);
        {
          std::lock_guard<std::mutex> g(mu);
          results.emplace_back(id, code);
        }
        // Back off while the cluster is partly down instead of spinning on quick failures.
        if (code != 0) std::this_thread::sleep_for(std::chrono::milliseconds(20 + t * 5));
      }
    });
  return clients;
}

// After healing: every transaction all or nothing on every owner of its keys, as its exit
// code says (0 all, 3 none, 4 either), no key on a participant that does not own it, every
// participant answering. Returns the anomalies; counts outcomes into `tot`.
int check_results(Cluster& c, int replicas, const std::vector<std::pair<std::string, int>>& results,
                  int run, Totals& tot) {
  int anomalies = 0;
  std::vector<client::Connection> readers;
  for (int i = 0; i < c.size(); ++i) {
    auto conn = client::Connection::open(c.participant_addr(i), 2000);
    REQUIRE(conn.is_ok());
    readers.push_back(std::move(*conn));
  }
  std::vector<std::string> peers;
  for (int i = 0; i < c.size(); ++i) peers.push_back(c.participant_addr(i));
  auto owners = [&](const std::string& k) {
    return membership::place(peers, static_cast<size_t>(replicas), k);
  };
  auto read = [&](int i, const std::string& key) -> std::optional<std::string> {
    auto r = readers[i].call(protocol::LineBuilder("READ").arg(key).str(), 5000);
    REQUIRE(r.is_ok());
    if (*r == "NOTFOUND") return std::nullopt;
    auto t = protocol::split(*r);
    REQUIRE(t.size() == 2);
    REQUIRE(t[0] == "VALUE");
    return *protocol::unescape(t[1]);
  };
  for (auto& [id, code] : results) {
    int present = 0, absent = 0, wrong = 0, copies = 0;
    for (std::string k : {"a-", "b-"})
      for (size_t i : owners(k + id)) {
        ++copies;
        auto v = read(static_cast<int>(i), k + id);
        if (!v)
          ++absent;
        else if (*v == "v" + k.substr(0, 1) + "-" + id)
          ++present;
        else
          ++wrong;
      }
    // A participant that does not own a key never holds it.
    if (replicas != 0)
      for (std::string k : {"a-", "b-"}) {
        auto own = owners(k + id);
        for (int i = 0; i < c.size(); ++i)
          if (std::find(own.begin(), own.end(), static_cast<size_t>(i)) == own.end() &&
              read(i, k + id))
            ++wrong;
      }
    bool all = present == copies, none = absent == copies;
    bool ok = wrong == 0 && (code == 0 ? all : code == 3 ? none : (code == 4 && (all || none)));
    if (!ok) {
      ++anomalies;
      MESSAGE("run " << run << " " << id << ": exit " << code << ", present " << present
                     << ", absent " << absent << ", wrong " << wrong);
    }
    tot.committed += code == 0;
    tot.aborted += code == 3;
    tot.unknown += code == 4;
  }
  for (int i = 0; i < c.size(); ++i) {
    auto conn = client::Connection::open(c.participant_addr(i), 2000);
    if (!conn) {
      ++anomalies;
      continue;
    }
    auto pong = conn->call("PING", 2000);
    if (!pong || *pong != "PONG") ++anomalies;
  }
  return anomalies;
}

void one_run(int run, std::mt19937& rng, Totals& tot, double seconds, bool power) {
  Cluster::Options o;
  o.participants = 2 + static_cast<int>(rng() % 2);
  // With three participants, half the runs place each key on two of them.
  if (o.participants == 3 && rng() % 2) o.replicas = 2;
  o.leader_args = {"--log-compact-bytes", "16384", "--prepare-timeout", "1000"};
  o.participant_args = {"--log-compact-bytes", "16384", "--resolve-after", "300"};
  // One process starts with a failpoint that crashes it at a random step, some of the time.
  static const std::vector<std::string> points = protocol_failpoints();
  std::string fp = points[rng() % points.size()];
  std::string spec = fmt::format("{}=5%crash", fp);
  bool on_leader = fp.rfind("leader/", 0) == 0;
  int fp_part = static_cast<int>(rng() % o.participants);
  // Under power loss, a third of the COMMITs are lost on the way (and re-sent), so many
  // decisions are still undelivered when the power goes.
  const std::map<std::string, std::string> power_env{
      {"TPC_TEST_RECORD_SYNCED", "1"}, {"TPC_FAILPOINTS", "leader/sendCommit=30%error(EIO)"}};
  if (power) {
    o.leader_env = power_env;
    for (int i = 0; i < o.participants; ++i) o.participant_env[i] = power_env;
  } else if (on_leader) {
    o.leader_env = {{"TPC_FAILPOINTS", spec}};
  } else {
    o.participant_env[fp_part] = {{"TPC_FAILPOINTS", spec}};
  }
  const std::map<std::string, std::string> restart_env =
      power ? power_env : std::map<std::string, std::string>{{"TPC_NONE", "1"}};
  Cluster c(o);
  REQUIRE(c.wait_ready());

  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<std::pair<std::string, int>> results;  // id -> exit code
  auto clients = writers([&](int) { return c.leader_addr(); }, fmt::format("r{}", run), stop, mu,
                         results);

  int kills = 0;
  int64_t end = now_ms() + static_cast<int64_t>(seconds * 1000);
  while (now_ms() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 500));
    int victim = static_cast<int>(rng() % (c.size() + 1));  // c.size() is the leader
    if (power)
      power_failure(c), kills += c.size();
    else if (victim == c.size())
      c.kill_leader();
    else
      c.kill_participant(victim);
    ++kills;
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 300));
    // Restart the victim and anything a failpoint crashed, without failpoints.
    if (!c.leader() || !c.leader()->alive()) {
      if (c.leader() && !c.leader()->alive()) ++kills;
      c.start_leader(restart_env);
    }
    for (int i = 0; i < c.size(); ++i)
      if (!c.participant(i) || !c.participant(i)->alive()) {
        if (c.participant(i) && !c.participant(i)->alive()) ++kills;
        c.start_participant(i, restart_env);
      }
  }
  stop = true;
  for (auto& t : clients) t.join();
  // The process started with a failpoint may never have been killed, and some points are met
  // only while healing (participant/askOutcome): kill it once more so that it heals unarmed.
  if (!power) {
    if (on_leader)
      c.kill_leader();
    else
      c.kill_participant(fp_part);
    ++kills;
  }
  // Heal: everything up, nothing in doubt.
  if (!c.leader() || !c.leader()->alive()) c.start_leader(restart_env);
  for (int i = 0; i < c.size(); ++i)
    if (!c.participant(i) || !c.participant(i)->alive()) c.start_participant(i, restart_env);
  REQUIRE(c.wait_ready(15000));
  // Bounded generously: on a loaded machine (two test jobs on two cores), the re-sends' and
  // outcome queries' backoffs (up to 3.2 s and 5 s) take a while to meet.
  bool healed = c.wait_settled(45000);
  int anomalies = 0;
  if (!healed) {
    ++anomalies;
    std::string where = fmt::format("leader active={}", c.stat(-1, "active"));
    for (int i = 0; i < c.size(); ++i)
      where += fmt::format(", P{} in_doubt={}", i + 1, c.stat(i, "in_doubt"));
    MESSAGE("run " << run << ": transactions still in doubt after healing (" << where << ")");
  }
  anomalies += check_results(c, o.replicas, results, run, tot);
  tot.runs++;
  tot.kills += kills;
  tot.txns += static_cast<int>(results.size());
  tot.anomalies += anomalies;
}

// The crash test with two leaders over a three-member etcd decision store: leaders,
// participants and etcd members killed -9, etcd's quorum lost for a while, a leader stalled
// with SIGSTOP past its lease and resumed, while clients that know both leaders write. Every transaction must end all or nothing as its exit code says, and
// everything left in doubt must be settled once healed.
void etcd_run(int run, std::mt19937& rng, Totals& tot, double seconds) {
  EtcdServer e(3);
  REQUIRE(e.wait_healthy());
  Cluster::Options o;
  o.leader_args = {"--decision-store", e.url(), "--cluster-name", "crash", "--lease-ttl", "2",
                   "--prepare-timeout", "1000"};
  o.participant_args = {"--resolve-after", "300"};
  Cluster c(o);
  REQUIRE(c.wait_ready());
  uint16_t port2 = free_port();
  std::string addr2 = fmt::format("127.0.0.1:{}", port2);
  std::unique_ptr<Process> l2;
  auto start_l2 = [&] {
    l2 = start_second_leader(c, e, "crash", port2, {"--lease-ttl", "2", "--prepare-timeout", "1000"});
  };
  start_l2();
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<std::pair<std::string, int>> results;
  // Half the clients try leader 2 first.
  auto clients = writers(
      [&](int t) {
        return t % 2 ? addr2 + "," + c.leader_addr() : c.leader_addr() + "," + addr2;
      },
      fmt::format("e{}", run), stop, mu, results);
  int kills = 0;
  int64_t end = now_ms() + static_cast<int64_t>(seconds * 1000);
  while (now_ms() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 500));
    switch (rng() % 7) {
      case 0: c.kill_leader(); break;
      case 1: l2.reset(); break;
      case 2: c.kill_participant(static_cast<int>(rng() % c.size())); break;
      case 5: e.kill_member(static_cast<int>(rng() % 3)); break;  // restarted below
      case 6: {  // quorum lost for a while, then restored
        int keep = static_cast<int>(rng() % 3);
        for (int m = 0; m < 3; ++m)
          if (m != keep) e.kill_member(m);
        std::this_thread::sleep_for(std::chrono::milliseconds(500 + rng() % 2000));
        break;
      }
      case 3: {  // a leader stalls past its lease, then resumes
        Process* p = rng() % 2 ? c.leader() : l2.get();
        if (p && p->alive()) {
          ::kill(p->pid(), SIGSTOP);
          std::this_thread::sleep_for(std::chrono::milliseconds(2500 + rng() % 1000));
          ::kill(p->pid(), SIGCONT);
        }
        break;
      }
      default: break;  // a quiet spell
    }
    ++kills;
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 300));
    e.start();
    if (!c.leader() || !c.leader()->alive()) c.start_leader();
    if (!l2 || !l2->alive()) start_l2();
    for (int i = 0; i < c.size(); ++i)
      if (!c.participant(i) || !c.participant(i)->alive()) c.start_participant(i);
  }
  stop = true;
  for (auto& t : clients) t.join();
  // Heal: everything up. A leader restarted right after a kill may have found its previous
  // process's lease still live and refused to start (exit 2): start it again.
  e.start();
  REQUIRE(e.wait_healthy());
  bool ready = wait_for(
      [&] {
        if (!c.leader()->alive()) c.start_leader();
        if (!l2->alive()) start_l2();
        for (int i = 0; i < c.size(); ++i)
          if (!c.participant(i)->alive()) c.start_participant(i);
        return c.wait_ready(2000);
      },
      30000);
  REQUIRE(ready);
  int anomalies = 0;
  if (!c.wait_settled(45000)) {
    ++anomalies;
    MESSAGE("etcd run " << run << ": transactions still in doubt after healing");
  }
  anomalies += check_results(c, 0, results, run, tot);
  tot.runs++;
  tot.kills += kills;
  tot.txns += static_cast<int>(results.size());
  tot.anomalies += anomalies;
}

// The restart loop: every process SIGTERMed and restarted in every round, in random order,
// under three concurrent `tpc client put` loops that know their cluster. While the leader is
// down, some rounds put a leader of another cluster on its port (as a neighbour's test or
// deployment taking a freed port would): its answers must never reach our clients as OK.
// Afterwards every put that exited 0 must be on every participant, and every put that exited
// 3 on none.
void restart_loop(int rounds, std::mt19937& rng) {
  Cluster c;
  REQUIRE(c.wait_ready());
  const std::string cluster = c.cluster_id();
  REQUIRE(cluster.size() == 36);
  Scratch other;  // the other cluster: one participant, and a leader started on demand
  uint16_t other_port = free_port();
  Process other_part({TPC_BINARY, "participant", "--port", std::to_string(other_port), "--id", "1",
                      "--data-dir", other.path() + "/p"},
                     other.path() + "/p.log");

  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<std::pair<std::string, int>> results;  // key -> exit code
  std::atomic<int> acked{0}, wrong_cluster{0};
  std::vector<std::thread> loops;
  for (int t = 0; t < 3; ++t)
    loops.emplace_back([&, t] {
      for (int n = 0; n < 100000 && !stop; ++n) {
        std::string key = fmt::format("t{}n{}", t, n);
        auto r = run_tpc({"client", "--leader", c.leader_addr(), "--cluster-id", cluster,
                          "--timeout", "5000", "put", key, "v" + key},
                         60000);
        acked += r.code == 0;
        wrong_cluster += r.code == 2 && r.err.find("wrong cluster") != std::string::npos;
        std::lock_guard<std::mutex> g(mu);
        results.emplace_back(key, r.code);
      }
    });

  int restarts = 0, impostors = 0, stalled = 0, unclean = 0;
  for (int round = 0; round < rounds; ++round) {
    std::vector<int> order{-1, 0, 1};  // -1: the leader
    std::shuffle(order.begin(), order.end(), rng);
    for (int who : order) {
      Process* p = who < 0 ? c.leader() : c.participant(who);
      unclean += p->terminate(10000) != 0;
      ++restarts;
      if (who >= 0) {
        c.start_participant(who);
        continue;
      }
      if (rng() % 2) {
        // Another cluster's leader on our leader's port, for a moment.
        ++impostors;
        std::string log = other.path() + fmt::format("/leader{}.log", round);
        Process imp({TPC_BINARY, "leader", "--port", c.leader_addr().substr(10), "--data-dir",
                     other.path() + "/leader", "--peers", fmt::format("127.0.0.1:{}", other_port)},
                    log);
        if (wait_for_text(log, "listening", 5000)) {
          int before = wrong_cluster;
          wait_for([&] { return wrong_cluster > before; }, 2000);
        }
        imp.terminate(10000);
      }
      c.start_leader();
    }
    // The cluster serves again after every round; the next round starts after 20 to 60 more
    // acknowledged puts, so that restarts land among transactions in flight.
    int before = acked, want = 20 + static_cast<int>(rng() % 41);
    if (!wait_for([&] { return acked >= before + want; }, 30000)) ++stalled;
  }
  stop = true;
  for (auto& t : loops) t.join();
  REQUIRE(c.wait_ready(15000));
  REQUIRE(c.wait_settled());
  int lost = 0, resurrected = 0, ok = 0, aborted = 0, unknown = 0, other_exit = 0;
  for (auto& [key, code] : results) {
    ok += code == 0;
    aborted += code == 3;
    unknown += code == 4;
    other_exit += code != 0 && code != 3 && code != 4;
    for (int i = 0; i < c.size(); ++i) {
      auto v = c.read_at(i, key);
      if (code == 0 && v != "v" + key) {
        ++lost;
        MESSAGE("acknowledged put " << key << " missing or wrong at participant " << i + 1);
      }
      if (code == 3 && v) {
        ++resurrected;
        MESSAGE("aborted put " << key << " present at participant " << i + 1);
      }
    }
  }
  std::cout << fmt::format(
                   "restart test: {} rounds, {} restarts ({} unclean stops), {} foreign "
                   "leaders, {} puts ({} acknowledged, {} aborted, {} unknown, {} refused as "
                   "wrong cluster, {} other), {} lost acknowledged writes, {} aborted writes "
                   "present",
                   rounds, restarts, unclean, impostors, results.size(), ok, aborted, unknown,
                   wrong_cluster.load(), other_exit, lost, resurrected)
            << std::endl;
  CHECK(lost == 0);
  CHECK(resurrected == 0);
  CHECK(unclean == 0);
  CHECK(stalled == 0);
  CHECK(ok > 0);
  CHECK(other_exit == wrong_cluster.load());  // exit 2 only for the foreign leader
}
}  // namespace

TEST_SUITE("crash") {
  void crash_test(const char* what, bool power, int default_runs) {
    int runs = env_int(power ? "TPC_POWER_RUNS" : "TPC_CRASH_RUNS", default_runs);
    double seconds = env_int("TPC_CRASH_MS", 2500) / 1000.0;
    unsigned seed =
        static_cast<unsigned>(env_int("TPC_CRASH_SEED", static_cast<int>(now_us() & 0x7fffffff)));
    MESSAGE("seed " << seed << " (TPC_CRASH_SEED reproduces the schedule)");
    std::mt19937 rng(seed);
    Totals tot;
    for (int r = 0; r < runs; ++r) one_run(r, rng, tot, seconds, power);
    std::cout << fmt::format(
                     "{}: {} runs, {} kills, {} txns ({} committed, {} aborted, {} "
                     "unknown), {} anomalies",
                     what, tot.runs, tot.kills, tot.txns, tot.committed, tot.aborted, tot.unknown,
                     tot.anomalies)
              << std::endl;
    CHECK(tot.anomalies == 0);
    CHECK(tot.committed > 0);
  }

  TEST_CASE("randomized crash test") { crash_test("crash test", false, 4); }

  // kill -9 never loses what the page cache holds, so a missing fdatasync is invisible to the
  // crash test; this one cuts every log back to what was synced.
  TEST_CASE("randomized power-loss test") { crash_test("power-loss test", true, 3); }

  // TPC_ETCD_RUNS (default 2) bounds it.
  TEST_CASE("randomized crash test with two leaders over etcd") {
    int runs = env_int("TPC_ETCD_RUNS", 2);
    double seconds = env_int("TPC_CRASH_MS", 2500) / 1000.0 * 2;
    unsigned seed =
        static_cast<unsigned>(env_int("TPC_CRASH_SEED", static_cast<int>(now_us() & 0x7fffffff)));
    MESSAGE("seed " << seed << " (TPC_CRASH_SEED reproduces the schedule)");
    std::mt19937 rng(seed);
    Totals tot;
    for (int r = 0; r < runs; ++r) etcd_run(r, rng, tot, seconds);
    std::cout << fmt::format(
                     "etcd crash test: {} runs, {} kills and stalls, {} txns ({} committed, {} "
                     "aborted, {} unknown), {} anomalies",
                     tot.runs, tot.kills, tot.txns, tot.committed, tot.aborted, tot.unknown,
                     tot.anomalies)
              << std::endl;
    CHECK(tot.anomalies == 0);
    CHECK(tot.committed > 0);
  }

  // Defaults everywhere (lease TTL 3 s, --takeover-after 2 s, --resolve-after 1 s).
  TEST_CASE("kill -9 of one of two leaders under load: the other settles all it left in doubt within 5 s") {
    EtcdServer e(3);
    REQUIRE(e.wait_healthy());
    Cluster::Options o;
    o.leader_args = {"--decision-store", e.url(), "--cluster-name", "kill"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    uint16_t port2 = free_port();
    auto l2 = start_second_leader(c, e, "kill", port2);
    REQUIRE(wait_for([&] { return leader_ready(fmt::format("127.0.0.1:{}", port2)); }, 15000));
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::vector<std::pair<std::string, int>> results;
    // The load goes to leader 1 only: its transactions are the ones left behind.
    auto clients = writers([&](int) { return c.leader_addr(); }, "k", stop, mu, results);
    auto committed = [&] {
      std::lock_guard<std::mutex> g(mu);
      return std::count_if(results.begin(), results.end(), [](auto& r) { return r.second == 0; });
    };
    REQUIRE(wait_for([&] { return committed() >= 50; }, 15000));
    // Frozen mid-flight (SIGSTOP) until some transaction is seen in doubt, then killed.
    long in_doubt = 0;
    for (int attempt = 0; attempt < 20 && in_doubt == 0; ++attempt) {
      ::kill(c.leader()->pid(), SIGSTOP);
      in_doubt = c.stat(0, "in_doubt") + c.stat(1, "in_doubt");
      if (in_doubt == 0) {
        ::kill(c.leader()->pid(), SIGCONT);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    REQUIRE(in_doubt > 0);
    c.kill_leader();
    int64_t killed = now_ms();
    REQUIRE(wait_for([&] { return c.stat(0, "in_doubt") == 0 && c.stat(1, "in_doubt") == 0; },
                     20000));
    int64_t took = now_ms() - killed;
    stop = true;
    for (auto& t : clients) t.join();
    std::cout << fmt::format("leader kill test: {} in doubt at the kill, all settled by leader 2 "
                             "{} ms after it",
                             in_doubt, took)
              << std::endl;
    CHECK(took <= 5000);
    Totals tot;
    CHECK(check_results(c, 0, results, 0, tot) == 0);
  }

  TEST_CASE("etcd quorum lost and restored under load loses nothing acknowledged") {
    EtcdServer e(3);
    REQUIRE(e.wait_healthy());
    Cluster::Options o;
    o.leader_args = {"--decision-store", e.url(), "--cluster-name", "quorum", "--lease-ttl",
                     "3", "--prepare-timeout", "1000"};
    o.participant_args = {"--resolve-after", "300"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::vector<std::pair<std::string, int>> results;
    auto clients = writers([&](int) { return c.leader_addr(); }, "q", stop, mu, results);
    auto outcomes = [&](size_t from) {
      std::lock_guard<std::mutex> g(mu);
      std::map<int, int> n;
      for (size_t i = from; i < results.size(); ++i) ++n[results[i].second];
      return std::make_pair(n, results.size());
    };
    REQUIRE(wait_for([&] { return outcomes(0).first[0] >= 20; }, 15000));
    // Two of three members die: no quorum. The transactions in flight wait for etcd (their
    // clients time out and are told "unknown"); after them, new ones fail fast with exit 4.
    e.kill_member(1);
    e.kill_member(2);
    size_t killed_at = outcomes(0).second;
    REQUIRE(wait_for([&] { return outcomes(killed_at).first[4] >= 8; }, 40000));
    size_t mark = outcomes(0).second;
    int64_t t0 = now_ms();
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    auto [during, upto] = outcomes(mark);
    int64_t spent = now_ms() - t0;
    MESSAGE("without quorum for " << spent << " ms: " << during[0] << " committed, " << during[4]
                                  << " unknown (exit 4), " << during[3] << " aborted");
    CHECK(during[0] == 0);
    CHECK(during[4] >= 4);  // fast: several per writer in 1.5 s, not one 5 s timeout each
    // Quorum back: writes resume.
    e.start();
    REQUIRE(e.wait_healthy());
    REQUIRE(wait_for([&] { return outcomes(upto).first[0] >= 20; }, 30000));
    stop = true;
    for (auto& t : clients) t.join();
    REQUIRE(c.wait_settled(45000));
    Totals tot;
    CHECK(check_results(c, 0, results, 0, tot) == 0);
    CHECK(tot.committed > 40);
    std::cout << fmt::format(
                     "etcd quorum test: {} txns ({} committed, {} aborted, {} unknown), "
                     "{} committed while quorum was lost",
                     results.size(), tot.committed, tot.aborted, tot.unknown, during[0])
              << std::endl;
  }

  // TPC_RESTART_ROUNDS (default 6) bounds it; `make crash-test` runs 25.
  TEST_CASE("restart loop under concurrent puts loses no acknowledged write") {
    unsigned seed =
        static_cast<unsigned>(env_int("TPC_CRASH_SEED", static_cast<int>(now_us() & 0x7fffffff)));
    MESSAGE("seed " << seed << " (TPC_CRASH_SEED reproduces the schedule)");
    std::mt19937 rng(seed);
    restart_loop(env_int("TPC_RESTART_ROUNDS", 6), rng);
  }
}
