// Crash recovery. The original example's six failure scenarios, for real: real processes,
// real kill -9, failpoints that stop a process at an exact step of the protocol.
#include <doctest/doctest.h>

#include <sqlite3.h>

#include <filesystem>

#include "harness.h"
#include "leader/core.h"

using namespace tpc;
using namespace tpc::it;

namespace {
const std::map<std::string, std::string> k_crash_before_vote = {
    {"TPC_FAILPOINTS", "participant/beforePrepareFsync=1*crash"}};

// A client run in the background, so a test can crash and restart nodes meanwhile.
struct AsyncClient {
  Scratch s;
  std::unique_ptr<Process> p;
  AsyncClient(Cluster& c, std::vector<std::string> args) {
    std::vector<std::string> a = {TPC_BINARY,      "client",    "--leader",
                                  c.leader_addr(), "--timeout", "10000"};
    a.insert(a.end(), args.begin(), args.end());
    p = std::make_unique<Process>(a, s.path() + "/out");
  }
  int wait(int timeout_ms = 20000) { return p->wait_exit(timeout_ms); }
  std::string output() { return read_file(s.path() + "/out"); }
};

bool no_doubt(Cluster& c, int i) { return c.stat(i, "in_doubt") == 0; }

// Participants whose store holds its transaction open for `ms` (--store-hold).
Cluster::Options store_hold(const std::string& ms) {
  Cluster::Options o;
  o.participant_args = {"--store-hold", ms};
  return o;
}

// How many keys participant i's SQLite file holds committed, as a crash would leave it (read
// by a connection of this process; -1 when it cannot be read).
int committed_keys(Cluster& c, int i) {
  sqlite3* db = nullptr;
  int n = -1;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_open_v2((c.data_dir(i) + "/data.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
          SQLITE_OK &&
      sqlite3_prepare_v2(db, "SELECT count(*) FROM kv", -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n;
}

// A key owned by exactly the given participants under rendezvous placement.
std::string key_owned_by(const Cluster& c, int n, int replicas, std::vector<size_t> owners) {
  std::vector<std::string> peers;
  for (int i = 0; i < n; ++i) peers.push_back(c.participant_addr(i));
  for (int i = 0;; ++i) {
    std::string k = "key" + std::to_string(i);
    if (membership::place(peers, static_cast<size_t>(replicas), k) == owners) return k;
  }
}
}  // namespace

TEST_SUITE("recovery") {
  TEST_CASE("1. happy path: the commit is seen by every participant") {
    Cluster c;
    REQUIRE(c.wait_ready());
    REQUIRE(c.client({"put", "k", "v"}).code == 0);
    CHECK(c.read_at(0, "k") == "v");
    CHECK(c.read_at(1, "k") == "v");
    CHECK(wait_for([&] { return no_doubt(c, 0) && no_doubt(c, 1); }, 5000));
  }

  TEST_CASE("2. a participant dies before voting: abort, exit 3, nobody shows it") {
    Cluster::Options o;
    o.participant_env[1] = k_crash_before_vote;
    Cluster c(o);
    REQUIRE(c.wait_ready());
    auto r = c.client({"put", "k", "v"});
    CHECK(r.code == 3);
    CHECK(c.participant(1)->wait_exit(5000) == 128 + SIGKILL);
    CHECK(c.log_of_participant(1).find("failpoint participant/beforePrepareFsync fired") !=
          std::string::npos);
    CHECK_FALSE(c.read_at(0, "k").has_value());
    c.start_participant(1);
    REQUIRE(c.wait_ready());
    CHECK_FALSE(c.read_at(1, "k").has_value());
    CHECK(wait_for([&] { return no_doubt(c, 0) && no_doubt(c, 1); }, 5000));
    CHECK(c.client({"get", "k"}).code == 1);
  }

  TEST_CASE("3. a participant dies after voting YES: the others commit, it applies on restart") {
    Cluster::Options o;
    o.participant_env[1] = {{"TPC_FAILPOINTS", "participant/afterVoteSend=1*crash"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    CHECK(c.client({"put", "k", "v"}).code == 0);
    CHECK(c.participant(1)->wait_exit(5000) == 128 + SIGKILL);
    CHECK(c.read_at(0, "k") == "v");
    c.start_participant(1);
    CHECK(wait_for([&] { return no_doubt(c, 1); }, 10000));
    CHECK(c.read_at(1, "k") == "v");
  }

  TEST_CASE("4. the leader dies before the decision is durable: in doubt, then aborted") {
    Cluster::Options o;
    o.leader_env = {{"TPC_FAILPOINTS", "leader/beforeDecisionFsync=1*crash"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    AsyncClient put(c, {"put", "k", "v"});
    REQUIRE(c.leader()->wait_exit(10000) == 128 + SIGKILL);
    // Both participants voted YES and must not decide alone: the key stays locked.
    CHECK(c.stat(0, "in_doubt") == 1);
    CHECK(c.stat(1, "in_doubt") == 1);
    CHECK_THROWS_WITH_AS(c.read_at(0, "k"), doctest::Contains("INDOUBT"), std::runtime_error);
    c.start_leader();
    // Presumed abort: the restarted leader has no decision, so the client learns "aborted".
    CHECK(put.wait() == 3);
    CHECK(wait_for([&] { return no_doubt(c, 0) && no_doubt(c, 1); }, 10000));
    CHECK_FALSE(c.read_at(0, "k").has_value());
    CHECK_FALSE(c.read_at(1, "k").has_value());
    REQUIRE(c.wait_ready());
    CHECK(c.client({"put", "k", "after"}).code == 0);
  }

  TEST_CASE("a replacement restored while a decided commit is undelivered copies it prepared") {
    Cluster::Options o;
    o.leader_env = {{"TPC_FAILPOINTS", "leader/afterDecisionFsync=1*crash"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    AsyncClient put(c, {"put", "k", "v"});
    REQUIRE(c.leader()->wait_exit(10000) == 128 + SIGKILL);
    REQUIRE(c.stat(1, "in_doubt") == 1);
    // Participant 2 loses its disk while the commit is decided but undelivered.
    c.kill_participant(1);
    std::filesystem::remove_all(c.data_dir(1));
    c.start_participant(1, {}, {"--restore-from", c.participant_addr(0)});
    REQUIRE(wait_for_text(c.dir() + "/p2.log", "and 1 prepared transactions", 10000));
    REQUIRE(wait_for([&] { return c.stat(1, "in_doubt") == 1; }, 10000));
    // The restarted leader admits the replacement and re-sends its COMMIT: applied there too.
    c.start_leader({{"TPC_NONE", "1"}});
    CHECK(wait_for([&] { return no_doubt(c, 0) && no_doubt(c, 1); }, 10000));
    CHECK(c.read_at(0, "k") == "v");
    CHECK(c.read_at(1, "k") == "v");
  }

  TEST_CASE("5. the leader dies after the decision is durable: every participant commits") {
    for (std::string fp :
         {"leader/afterDecisionFsync=1*crash", "leader/betweenCommitSends=1*crash"}) {
      INFO(fp);
      Cluster::Options o;
      o.leader_env = {{"TPC_FAILPOINTS", fp}};
      Cluster c(o);
      REQUIRE(c.wait_ready());
      AsyncClient put(c, {"put", "k", "v"});
      REQUIRE(c.leader()->wait_exit(10000) == 128 + SIGKILL);
      c.start_leader();
      CHECK(put.wait() == 0);  // the client asks the restarted leader: committed
      CHECK(wait_for([&] { return no_doubt(c, 0) && no_doubt(c, 1); }, 10000));
      CHECK(c.read_at(0, "k") == "v");
      CHECK(c.read_at(1, "k") == "v");
    }
  }

  TEST_CASE("6. both sides crash, restart and go on, other keys commit meanwhile") {
    Cluster::Options o;
    o.participants = 3;
    o.replicas = 2;
    o.leader_env = {{"TPC_FAILPOINTS", "leader/afterDecisionFsync=1*crash"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    std::string x = key_owned_by(c, 3, 2, {0, 1});
    std::string y = key_owned_by(c, 3, 2, {1, 2});
    AsyncClient put(c, {"put", x, "vx"});
    REQUIRE(c.leader()->wait_exit(10000) == 128 + SIGKILL);
    c.kill_participant(0);  // and a participant that holds x prepared
    c.start_leader();
    CHECK(put.wait() == 0);
    // x is committed at participant 1; participant 0 is down holding it in doubt.
    CHECK(wait_for([&] { return no_doubt(c, 1); }, 10000));
    CHECK(c.read_at(1, x) == "vx");
    // Keys that do not live on the dead participant keep committing.
    CHECK(c.client({"put", y, "vy"}).code == 0);
    CHECK(c.client({"get", y}).out == "vy\n");
    CHECK(c.client({"get", x}).out == "vx\n");
    c.start_participant(0);
    CHECK(wait_for([&] { return no_doubt(c, 0); }, 10000));
    CHECK(c.read_at(0, x) == "vx");
    REQUIRE(c.wait_ready());
    CHECK(c.client({"put", x, "vx2"}).code == 0);
    CHECK(c.read_at(0, x) == "vx2");
  }

  TEST_CASE("a prepare that does not get all votes in time is aborted") {
    Cluster::Options o;
    o.participant_env[1] = {{"TPC_FAILPOINTS", "participant/beforePrepareFsync=1*sleep(1500)"}};
    o.leader_args = {"--prepare-timeout", "300"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    auto r = c.client({"put", "k", "v"});
    CHECK(r.code == 3);
    CHECK(r.err.find("TIMEOUT") != std::string::npos);
    CHECK(wait_for([&] { return no_doubt(c, 0) && no_doubt(c, 1); }, 10000));
    CHECK_FALSE(c.read_at(0, "k").has_value());
    CHECK_FALSE(c.read_at(1, "k").has_value());
  }

  TEST_CASE("a failing fdatasync stops the node cleanly, it recovers on restart") {
    Cluster::Options o;
    o.participant_env[0] = {{"TPC_FAILPOINTS", "txlog/sync=1*error(EIO)"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    CHECK(c.client({"put", "k", "v"}).code == 3);
    CHECK(c.participant(0)->wait_exit(5000) == 70);
    CHECK(c.log_of_participant(0).find("fdatasync failed") != std::string::npos);
    c.start_participant(0);
    REQUIRE(c.wait_ready());
    // What reached the file before the failed sync is recovered as in doubt, and resolved by
    // asking the leader (presumed abort).
    CHECK(wait_for([&] { return no_doubt(c, 0); }, 5000));
    CHECK(c.client({"put", "k", "v2"}).code == 0);
    CHECK(c.read_at(0, "k") == "v2");
  }

  TEST_CASE("a failing fdatasync of the leader's decision stops it before anyone hears COMMIT") {
    Cluster::Options o;
    o.leader_env = {{"TPC_FAILPOINTS", "txlog/sync=1*error(EIO)"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    // The decision could not be made durable: the client must not be told it committed.
    int code = c.client({"put", "k", "v"}).code;
    CHECK(code == 4);
    CHECK(c.leader()->wait_exit(5000) == 70);
    CHECK(c.log_of_leader().find("fdatasync failed") != std::string::npos);
    c.start_leader();
    REQUIRE(c.wait_ready());
    // Whatever reached the file is recovered and settled the same way on both participants.
    CHECK(wait_for([&] { return no_doubt(c, 0) && no_doubt(c, 1); }, 10000));
    CHECK(c.read_at(0, "k") == c.read_at(1, "k"));
    CHECK(c.client({"put", "k", "v2"}).code == 0);
    CHECK(c.read_at(0, "k") == "v2");
    CHECK(c.read_at(1, "k") == "v2");
  }

  TEST_CASE("the logs are compacted and stay bounded") {
    Cluster::Options o;
    o.leader_args = {"--log-compact-bytes", "4096"};
    o.participant_args = {"--log-compact-bytes", "4096"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    auto conn = client::Connection::open(c.leader_addr(), 2000);
    REQUIRE(conn.is_ok());
    for (int i = 0; i < 400; ++i) {
      auto r = conn->call("PUT k" + std::to_string(i % 50) + " " + std::string(64, 'v'), 5000);
      REQUIRE(r.is_ok());
      REQUIRE(r->rfind("COMMITTED", 0) == 0);
    }
    CHECK(wait_for([&] { return c.stat(0, "log_bytes") < 8192 && c.stat(-1, "log_bytes") < 8192; },
                   5000));
    CHECK(c.log_of_participant(0).find("log compacted") != std::string::npos);
    // Restart on the compacted logs: the data is all there.
    c.kill_leader();
    c.kill_participant(0);
    c.start_participant(0);
    c.start_leader();
    REQUIRE(c.wait_ready());
    CHECK(c.client({"get", "k7"}).out == std::string(64, 'v') + "\n");
  }

  TEST_CASE("commits a killed participant's store still held are redone from its log") {
    Cluster c(store_hold("60000"));
    REQUIRE(c.wait_ready());
    REQUIRE(c.client({"put", "k", "v"}).code == 0);
    REQUIRE(c.client({"put", "k2", "v2"}).code == 0);
    CHECK(c.read_at(0, "k2") == "v2");  // read back from the held transaction
    CHECK(committed_keys(c, 0) == 0);   // but not committed to SQLite
    c.participant(0)->kill9();
    c.start_participant(0);
    REQUIRE(c.wait_ready());
    CHECK(c.log_of_participant(0).find("; 2 commits redone;") != std::string::npos);
    CHECK(c.read_at(0, "k") == "v");
    CHECK(c.read_at(0, "k2") == "v2");
  }

  TEST_CASE("an idle participant commits its store's held transaction within the hold") {
    Cluster c(store_hold("200"));
    REQUIRE(c.wait_ready());
    REQUIRE(c.client({"put", "k", "v"}).code == 0);
    // Nothing else is written: only the timer can commit it.
    CHECK(wait_for([&] { return committed_keys(c, 0) == 1 && committed_keys(c, 1) == 1; }, 5000));
  }

  TEST_CASE("a replayed COMMIT never overwrites a newer value") {
    Cluster c;
    REQUIRE(c.wait_ready());
    auto conn = client::Connection::open(c.leader_addr(), 2000);
    auto r1 = conn->call("PUT k old", 5000);
    REQUIRE(r1.is_ok());
    std::string old_txid = r1->substr(10);
    // The client retries the conflict with the first write's phase 2 still holding the lock.
    REQUIRE(c.client({"put", "k", "new"}).code == 0);
    // As the leader would replay it: on a connection that JOINed the participant.
    auto p = client::Connection::open(c.participant_addr(0), 2000, "leader");
    std::string join = read_file(c.data_dir(0) + "/membership");
    join.pop_back();
    REQUIRE(p->call(join, 5000).value() == "ACK");
    CHECK(p->call("COMMIT " + old_txid, 5000).value() == "ACK");
    CHECK(p->call("ABORT " + old_txid, 5000).value() == "ACK");
    CHECK(c.read_at(0, "k") == "new");
  }
}
