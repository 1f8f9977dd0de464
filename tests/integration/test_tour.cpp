// The small defects found on the tour of the trust issue, each shown fixed with real
// processes: escaping, addresses, the client's options and keys, roles, exits, certificates.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "client/connection.h"
#include "harness.h"
#include "tls/certs.h"

using namespace tpc;
using namespace tpc::it;

TEST_SUITE("tour") {
  TEST_CASE("an abort reason is escaped once, however many nodes relay it") {
    Cluster c;
    REQUIRE(c.wait_ready());
    REQUIRE(c.client({"put", "a b", "x y"}).code == 0);
    auto r = c.client({"txn", "check", "a b", "nope z", "put", "q", "1"});
    CHECK(r.code == 3);
    CHECK(contains(r.err, "check a%20b nope%20z failed: found x%20y"));
    CHECK_FALSE(contains(r.err, "%25"));
  }

  TEST_CASE("GET and DEL of an empty or oversize key are usage errors, on the wire too") {
    Cluster c;
    REQUIRE(c.wait_ready());
    std::string huge(protocol::k_max_key + 1, 'k');
    for (std::string cmd : {"get", "del"}) {
      INFO(cmd);
      CHECK(c.client({cmd, ""}).code == 2);
      auto r = c.client({cmd, huge});
      CHECK(r.code == 2);
      CHECK(contains(r.err, "longer than 4096 bytes"));
    }
    auto leader = client::Connection::open(c.leader_addr(), 2000);
    REQUIRE(leader.is_ok());
    CHECK(leader->call("GET \"\"", 2000).value() == "ERR PROTO empty key");
    CHECK(leader->call("GET " + huge, 2000).value().rfind("ERR PROTO key longer", 0) == 0);
    CHECK(leader->call("DEL \"\"", 2000).value() == "ERR PROTO empty key");
    auto part = client::Connection::open(c.participant_addr(0), 2000, "client");
    REQUIRE(part.is_ok());
    CHECK(part->call("READ \"\"", 2000).value() == "ERR PROTO empty key");
  }

  TEST_CASE("an unknown HELLO role is refused") {
    Cluster c;
    REQUIRE(c.wait_ready());
    for (auto addr : {c.leader_addr(), c.participant_addr(0)}) {
      int fd = connect_loopback(static_cast<uint16_t>(std::stoi(addr.substr(addr.find(':') + 1))));
      REQUIRE(fd >= 0);
      std::string hello = "HELLO tpc/2 wizard 1\n";
      REQUIRE(::write(fd, hello.data(), hello.size()) == static_cast<ssize_t>(hello.size()));
      std::string got;
      char buf[512];
      timeval tv{5, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
      ::close(fd);  // the server closed it after the refusal (read returned 0)
      CHECK(n == 0);
      CHECK(contains(got, "ERR PROTO unknown role wizard"));
    }
  }

  TEST_CASE("tpc client --json status, as the man page says") {
    Cluster c;
    REQUIRE(c.wait_ready());
    auto r = c.client({"--json", "status"});
    CHECK(r.code == 0);
    CHECK(r.out.rfind("{\"nodes\":[", 0) == 0);
    CHECK(c.client({"--json"}).code == 2);
  }

  TEST_CASE("--bind localhost is loopback, and IPv6 addresses are shown in brackets") {
    uint16_t pp = free_port(), lp = free_port();
    Scratch s;
    Process p({TPC_BINARY, "participant", "--id", "1", "--port", std::to_string(pp), "--bind",
               "localhost", "--data-dir", s.path() + "/p"},
              s.path() + "/p.log");
    REQUIRE(wait_for_text(s.path() + "/p.log", "listening on 127.0.0.1:", 10000));
    CHECK(contains(read_file(s.path() + "/p.log"), "loopback only"));
    if (!std::filesystem::exists("/proc/net/if_inet6")) {
      MESSAGE("skipped the IPv6 half: this machine has no IPv6");
      return;
    }
    uint16_t p6 = free_port();
    Process q({TPC_BINARY, "participant", "--id", "2", "--port", std::to_string(p6), "--bind",
               "::1", "--data-dir", s.path() + "/q"},
              s.path() + "/q.log");
    REQUIRE(wait_for_text(s.path() + "/q.log", "listening on", 10000));
    Process l({TPC_BINARY, "leader", "--port", std::to_string(lp), "--bind", "::1", "--peers",
               fmt::format("[::1]:{}", p6), "--data-dir", s.path() + "/l"},
              s.path() + "/l.log");
    std::string leader = fmt::format("[::1]:{}", lp);
    RunResult st;
    CHECK(wait_for(
        [&] {
          st = run_tpc({"client", "--leader", leader, "status"});
          return st.code == 0;
        },
        10000));
    INFO(st.out << st.err);
    CHECK(contains(st.out, fmt::format("[::1]:{}", p6)));
    CHECK(contains(st.out, fmt::format("[::1]:{}", lp)));
    CHECK(run_tpc({"client", "--leader", leader, "put", "k", "v"}).code == 0);
  }

  TEST_CASE(
      "the README's first TLS commands work on a fresh directory, the CA key's directory "
      "is 0700") {
    Scratch s;
    auto cert = [&](std::vector<std::string> args) {
      args.insert(args.begin(), "cert");
      args.insert(args.end(),
                  {"--certs-dir", s.path() + "/certs", "--ca-key", s.path() + "/safe/ca.key"});
      return run_tpc(args);
    };
    CHECK(cert({"create-ca"}).code == 0);
    CHECK(mode_of(s.path() + "/safe") == 0700);
    CHECK(mode_of(s.path() + "/safe/ca.key") == 0600);
    CHECK(cert({"create-node", "--role", "participant", "db2.example", "10.0.0.6"}).code == 0);
    CHECK(cert({"create-node", "--role", "leader", "db1.example", "10.0.0.5"}).code == 0);
    CHECK(cert({"create-client", "ops", "--role", "admin"}).code == 0);
    CHECK(std::filesystem::exists(s.path() + "/certs/client.ops.crt"));
  }

  TEST_CASE(
      "over TLS: a denied backup exits 2, and a wrong-host refusal is explained on both sides") {
    Cluster::Options o;
    o.secure = true;
    Cluster c(o);
    REQUIRE(c.wait_ready());
    std::string certs = c.certs_dir();
    REQUIRE(run_tpc({"cert", "create-client", "app", "--certs-dir", certs}).code == 0);
    Scratch s;
    auto b = c.client({"--user", "app", "backup", s.path() + "/copy"});
    CHECK(b.code == 2);
    CHECK(contains(b.err, "admin"));
    // Participant 1 restarted with a certificate for another host only: the leader refuses
    // it, and the participant's log says why instead of "internal error".
    // (Participant 2 keeps the certificate it loaded at its start.)
    c.kill_participant(0);
    tls::CreateOptions co{certs, "", 86400, true};
    REQUIRE(tls::create_node(co, "participant", {"db9.example"}).is_ok());
    c.start_participant(0);
    CHECK(wait_for_text(c.dir() + "/p1.log", "does not name the host", 15000));
    CHECK_FALSE(contains(read_file(c.dir() + "/p1.log"), "internal error"));
    CHECK(wait_for_text(c.dir() + "/leader.log", "is not a certificate for host", 15000));
  }
}
