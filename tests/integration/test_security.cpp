// Hardening without certificates (docs/security.md): private file modes, idle connections,
// oversize transactions, validated arguments, and verbs refused by role.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <fmt/format.h>

#include "client/connection.h"
#include "protocol/codec.h"
#include "common/util.h"
#include "harness.h"

using namespace tpc;
using namespace tpc::it;
namespace fs = std::filesystem;

namespace {}  // namespace

namespace {
// A connection to participant i that declares `role`; for "leader", also JOINed as the
// cluster's leader would (with the membership the participant keeps), but under `node`.
client::Connection stranger(Cluster& c, int i, const std::string& role, bool join = false,
                            const std::string& node = "") {
  std::string as = role;
  if (!node.empty()) as += " x cluster=" + c.cluster_id() + " node=" + node;
  auto conn = client::Connection::open(c.participant_addr(i), 2000, as);
  REQUIRE(conn.is_ok());
  if (join) {
    std::string line = read_file(c.data_dir(i) + "/membership");
    line.pop_back();
    REQUIRE(conn->call(line, 5000).value() == "ACK");
  }
  return std::move(*conn);
}
}  // namespace

namespace {
void idle_flood(bool secure) {
  rlimit rl{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &rl) == 0);
  if (rl.rlim_max < 6000) {
    MESSAGE("skipped: this machine allows " << rl.rlim_max << " descriptors, 6000 needed");
    return;
  }
  rlimit want = rl;
  want.rlim_cur = std::max<rlim_t>(rl.rlim_cur, 6000);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &want) == 0);
  Cluster::Options o;
  o.secure = secure;  // the flood never handshakes: it holds TCP connections only
  Cluster c(o);
  REQUIRE(c.wait_ready());
  std::vector<int> fds;
  auto port = static_cast<uint16_t>(std::stoi(c.leader_addr().substr(10)));
  for (int i = 0; i < 5000; ++i) {
    int fd = connect_loopback(port);
    REQUIRE(fd >= 0);
    fds.push_back(fd);
  }
  // Past --max-connections (4096) the longest idle ones make room; a client gets through.
  auto r = c.client({"put", "k", "v"});
  CHECK(r.code == 0);
  CHECK(c.log_of_leader().find("closing the longest idle one") != std::string::npos);
  // The first connections were the ones closed: reading them says so.
  char b;
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  CHECK(wait_for([&] { return ::recv(fds[0], &b, 1, 0) == 0; }, 5000));
  for (int fd : fds) ::close(fd);
  ::setrlimit(RLIMIT_NOFILE, &rl);
}

void oversize_prepare(bool secure) {
  Cluster::Options o;
  o.secure = secure;
  o.participant_args = {"--max-message", "65536"};
  Cluster c(o);
  REQUIRE(c.wait_ready());
  // Legal at the leader (2 MiB messages), too long for the participants.
  auto r = c.client({"put", "big", std::string(70000, 'x')});
  CHECK(r.code == 2);
  CHECK(r.err.find("too large") != std::string::npos);
  CHECK_FALSE(c.read_at(0, "big").has_value());
  // No link was reset: nothing lost, and the next put goes through.
  CHECK(c.client({"put", "small", "x"}).code == 0);
  CHECK(c.log_of_leader().find("lost") == std::string::npos);
  // A line over the leader's own limit: refused as well, exit 2.
  Cluster::Options o2;
  o2.secure = secure;
  o2.leader_args = {"--max-message", "65536"};
  Cluster c2(o2);
  REQUIRE(c2.wait_ready());
  r = c2.client({"put", "big", std::string(70000, 'x')});
  CHECK(r.code == 2);
}

void idle_timeout(bool secure) {
  Cluster::Options o;
  o.secure = secure;
  o.leader_args = {"--idle-timeout", "300"};
  o.participant_args = {"--idle-timeout", "300"};
  Cluster c(o);
  REQUIRE(c.wait_ready());
  // Three idle connections in a row, each closed by the leader after the timeout: by then
  // the leader-participant links carried no request for three participant timeouts.
  for (int i = 0; i < 3; ++i) {
    auto conn = client::Connection::open(c.leader_addr(), 2000);
    REQUIRE(conn);
    int64_t t0 = now_ms();
    auto r = conn->read_line(5000);  // nothing sent: the leader closes it
    CHECK_FALSE(r.is_ok());
    CHECK(now_ms() - t0 >= 250);
  }
  // The links pinged before the participants' timeout: still up, and used.
  CHECK(c.client({"put", "k", "v"}).code == 0);
  CHECK(c.log_of_leader().find("lost") == std::string::npos);
}
}  // namespace

TEST_SUITE("security") {
  TEST_CASE("a stranger cannot abort, forge or resolve a transaction at a participant") {
    Cluster::Options o;
    // The transaction sits between its votes and its decision for a while.
    o.leader_env = {{"TPC_FAILPOINTS", "leader/beforeDecisionFsync=1*sleep(1500)"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    Scratch s;
    Process put({TPC_BINARY, "client", "--leader", c.leader_addr(), "put", "k", "v"},
                s.path() + "/out");
    REQUIRE(wait_for([&] { return c.stat(0, "in_doubt") == 1; }, 5000));
    auto client = stranger(c, 0, "client");
    auto listed = client.call("INDOUBT", 5000);
    REQUIRE(listed.is_ok());
    auto t = protocol::split(*listed);
    REQUIRE(t.size() > 2);
    std::string txid(t[2]);
    // A client may not address phase 2 at all; a declared leader must be the one that
    // admitted this participant; even that connection's node must be the preparing leader's.
    CHECK(denied(client.call("ABORT " + txid, 5000)));
    CHECK(denied(stranger(c, 0, "leader").call("ABORT " + txid, 5000)));
    CHECK(denied(stranger(c, 0, "leader", true, "0000-fake").call("ABORT " + txid, 5000)));
    CHECK(denied(client.call("RESOLVE " + txid + " abort", 5000)));
    // Nothing changed: the client is told OK and both participants commit.
    CHECK(put.wait_exit(20000) == 0);
    CHECK(c.read_at(0, "k") == "v");
    CHECK(c.read_at(1, "k") == "v");
    // A forged transaction from a client connection: refused, nothing written.
    CHECK(denied(client.call("PREPARE 666.1.1 666 127.0.0.1:1 put victim forged", 5000)));
    CHECK(denied(client.call("COMMIT 666.1.1", 5000)));
    CHECK_FALSE(c.read_at(0, "victim").has_value());
    CHECK(c.log_of_participant(0).find("refused ABORT") != std::string::npos);
  }

  TEST_CASE("in-doubt output escapes control bytes, and its JSON is valid UTF-8") {
    Cluster::Options o;
    o.leader_env = {{"TPC_FAILPOINTS", "leader/beforeDecisionFsync=1*crash"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    Scratch s;
    // A key of an ESC sequence and a byte that is not UTF-8, left in doubt.
    Process put({TPC_BINARY, "client", "--leader", c.leader_addr(), "put", "\x1b[2J\xff", "v"},
                s.path() + "/out");
    REQUIRE(c.leader()->wait_exit(10000) == 128 + SIGKILL);
    std::string peers = c.participant_addr(0) + "," + c.participant_addr(1);
    for (bool json : {false, true}) {
      std::vector<std::string> args = {"--peers", peers, "in-doubt"};
      if (json) args.push_back("--json");
      auto r = c.client(args);
      INFO(r.out);
      CHECK(r.code == 0);
      CHECK(r.out.find("%1B[2J%FF") != std::string::npos);
      for (size_t i = 0; i < r.out.size();) {
        size_t len = protocol::utf8_sequence(std::string_view(r.out).substr(i));
        REQUIRE(len > 0);  // valid UTF-8 throughout
        CHECK((static_cast<unsigned char>(r.out[i]) >= 0x20 || r.out[i] == '\n'));
        i += len;
      }
    }
  }

  TEST_CASE("beyond loopback without certificates only with --insecure, and a warning") {
    Scratch s;
    uint16_t port = free_port();
    auto r = run_tpc({"participant", "--id", "1", "--port", std::to_string(port), "--bind",
                      "0.0.0.0", "--data-dir", s.path() + "/p"});
    CHECK(r.code == 2);
    CHECK(r.err.find("--insecure") != std::string::npos);
    CHECK_FALSE(fs::exists(s.path() + "/p"));
    r = run_tpc({"leader", "--port", std::to_string(port), "--bind", "0.0.0.0", "--advertise",
                 fmt::format("127.0.0.1:{}", port), "--peers", "127.0.0.1:1", "--data-dir",
                 s.path() + "/l"});
    CHECK(r.code == 2);
    CHECK_FALSE(fs::exists(s.path() + "/l"));
    Process p({TPC_BINARY, "participant", "--id", "1", "--port", std::to_string(port), "--bind",
               "0.0.0.0", "--insecure", "--data-dir", s.path() + "/p"},
              s.path() + "/p.log");
    CHECK(wait_for_text(s.path() + "/p.log", "INSECURE", 5000));
    CHECK(wait_for_text(s.path() + "/p.log", "listening", 5000));
  }

  TEST_CASE("a junk PREPARE gets ERR and locks nothing") {
    Cluster c;
    REQUIRE(c.wait_ready());
    auto leader = stranger(c, 0, "leader", true, "0000-fake");
    for (std::string junk : {"PREPARE 7.7.7 7 not-an-address put hostage x",
                             "PREPARE 7.7.%1B[31m 7 127.0.0.1:1 put hostage x",
                             "PREPARE 8.1.1 7 127.0.0.1:1 put hostage x"}) {
      INFO(junk);
      auto r = leader.call(junk, 5000);
      REQUIRE(r.is_ok());
      CHECK(r->rfind("ERR PROTO", 0) == 0);
    }
    CHECK(c.stat(0, "in_doubt") == 0);
    CHECK(c.client({"put", "hostage", "free"}).code == 0);
  }

  TEST_CASE("data directories are 0700 and files 0600 under umask 0") {
    mode_t old = ::umask(0);  // the servers inherit it, and must not follow it
    Cluster c;
    ::umask(old);
    REQUIRE(c.wait_ready());
    REQUIRE(c.client({"put", "k", "v"}).code == 0);
    for (std::string d : {c.dir() + "/leader", c.data_dir(0), c.data_dir(1)}) {
      INFO(d);
      CHECK(mode_of(d) == 0700);
      for (auto& e : fs::directory_iterator(d)) {
        INFO(e.path().string());
        CHECK(mode_of(e.path().string()) == 0600);
      }
    }
    CHECK(fs::exists(c.data_dir(0) + "/data.db"));
    CHECK(fs::exists(c.data_dir(0) + "/identity"));
  }

  TEST_CASE("5,000 idle connections do not stop a normal put") { idle_flood(false); }

  TEST_CASE("5,000 idle connections do not stop a normal put over TLS") { idle_flood(true); }

  TEST_CASE("a request whose PREPARE a participant would refuse gets TOOLONG, exit 2") { oversize_prepare(false); }

  TEST_CASE("over TLS too, a request whose PREPARE a participant would refuse gets TOOLONG") { oversize_prepare(true); }

  TEST_CASE("an idle connection is closed after --idle-timeout, and peer links stay up") { idle_timeout(false); }

  TEST_CASE("over TLS too, an idle connection is closed after --idle-timeout and links stay up") { idle_timeout(true); }
}
