// Mutual TLS (docs/security.md): certificates from tpc cert, roles from certificates, another
// CA and expired certificates refused with a clear message, rotation by SIGHUP.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <ctime>
#include <filesystem>
#include <regex>

#include <fmt/format.h>

#include "harness.h"
#include "protocol/codec.h"
#include "tls/certs.h"
#include "txlog/file.h"

using namespace tpc;
using namespace tpc::it;
namespace fs = std::filesystem;

namespace {

// Writes DIR/BASE.crt and .key: a certificate of `role` signed by DIR's CA, valid between
// the two times (seconds from now).
void write_cert(const std::string& dir, const std::string& base, const std::string& role,
                int64_t from_s, int64_t until_s) {
  int64_t now = static_cast<int64_t>(std::time(nullptr));
  std::vector<std::string> hosts;
  if (role == "leader" || role == "participant") hosts = {"localhost", "127.0.0.1"};
  auto kp = tls::make_cert({role, base, hosts, now + from_s, now + until_s},
                           read_file(tls::cert_path(dir, "ca")), read_file(tls::key_path(dir, "ca")));
  REQUIRE(kp.is_ok());
  txlog::write_file_atomic(tls::cert_path(dir, base), kp->cert_pem);
  txlog::write_file_atomic(tls::key_path(dir, base), kp->key_pem);
}

// A connection to participant i as the holder of `base`'s certificate in `dir`, declaring
// `hello_role` in its HELLO (what a stranger would claim).
client::Connection connect_as(Cluster& c, int i, const std::string& dir, const std::string& base,
                              const std::string& role, const std::string& hello_role) {
  UseCerts as(dir, base.rfind("client.", 0) == 0 ? base.substr(7) : base, role);
  auto conn = client::Connection::open(c.participant_addr(i), 3000, hello_role);
  REQUIRE(conn.is_ok());
  return std::move(*conn);
}
}  // namespace

TEST_SUITE("tls") {
  TEST_CASE("tpc cert: keys 0600, roles and hosts in the certificates, nothing overwritten") {
    Scratch s;
    std::string dir = s.path() + "/certs";
    auto r = run_tpc({"cert", "create-ca", "--certs-dir", dir});
    REQUIRE(r.code == 0);
    CHECK(run_tpc({"cert", "create-node", "--role", "leader", "db1.example", "10.0.0.7",
                   "--certs-dir", dir})
              .code == 0);
    CHECK(run_tpc({"cert", "create-client", "ops", "--role", "admin", "--certs-dir", dir}).code ==
          0);
    CHECK(run_tpc({"cert", "create-client", "app"}, 30000, "", {{"TPC_CERTS_DIR", dir}}).code ==
          0);
    for (auto key : {"ca.key", "leader.key", "client.ops.key", "client.app.key"})
      CHECK(mode_of(dir + "/" + key) == 0600);
    CHECK(mode_of(dir) == 0700);
    auto leader = tls::parse_cert(read_file(dir + "/leader.crt"));
    REQUIRE(leader.is_ok());
    CHECK(leader->role == "leader");
    CHECK(leader->hosts == std::vector<std::string>{"db1.example", "10.0.0.7"});
    CHECK(tls::parse_cert(read_file(dir + "/client.ops.crt"))->role == "admin");
    CHECK(tls::parse_cert(read_file(dir + "/client.app.crt"))->role == "client");
    CHECK(tls::parse_cert(read_file(dir + "/ca.crt"))->is_ca);
    // Nothing is replaced without --overwrite; bad arguments are refused.
    std::string ca = read_file(dir + "/ca.crt");
    r = run_tpc({"cert", "create-ca", "--certs-dir", dir});
    CHECK(r.code == 2);
    CHECK(r.err.find("--overwrite") != std::string::npos);
    CHECK(read_file(dir + "/ca.crt") == ca);
    CHECK(run_tpc({"cert", "create-node", "--role", "admin", "h", "--certs-dir", dir}).code == 2);
    CHECK(run_tpc({"cert", "create-node", "--role", "leader", "--certs-dir", dir}).code == 2);
    CHECK(run_tpc({"cert", "create-client", "bad/name", "--certs-dir", dir}).code == 2);
    r = run_tpc({"cert", "list", "--certs-dir", dir});
    CHECK(r.code == 0);
    CHECK(std::regex_search(r.out, std::regex("client\\.ops\\.crt +role admin")));
    // Another directory without the CA cannot sign.
    r = run_tpc({"cert", "create-client", "x", "--certs-dir", s.path() + "/empty"});
    CHECK(r.code == 2);
    CHECK(r.err.find("create-ca") != std::string::npos);
  }

  TEST_CASE("a secure cluster: TLS only, roles from certificates, every probe refused") {
    Cluster::Options o;
    o.secure = true;
    // The transaction sits between its votes and its decision for a while.
    o.leader_env = {{"TPC_FAILPOINTS", "leader/beforeDecisionFsync=1*sleep(1500)"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    std::string certs = c.certs_dir();
    REQUIRE(run_tpc({"cert", "create-client", "app", "--certs-dir", certs}).code == 0);
    // Plaintext is refused everywhere, with a reason.
    {
      UseCerts plain("");
      auto conn = client::Connection::open(c.participant_addr(0), 2000, "leader");
      REQUIRE_FALSE(conn.is_ok());
      CHECK(conn.status().code() == "SECURE");
      auto r = run_tpc({"client", "--leader", c.leader_addr(), "put", "k", "v"});
      CHECK(r.code == 2);
      CHECK(r.err.find("speaks TLS only") != std::string::npos);
    }
    Scratch s;
    Process put({TPC_BINARY, "client", "--leader", c.leader_addr(), "--certs-dir", certs,
                 "--user", "app", "put", "k", "v"},
                s.path() + "/out");
    REQUIRE(wait_for([&] { return c.stat(0, "in_doubt") == 1; }, 5000));
    // A client certificate, whatever its HELLO claims, cannot reach phase 1 or 2.
    auto app = connect_as(c, 0, certs, "client.app", "", "leader");
    auto listed = app.call("INDOUBT", 5000);
    REQUIRE(listed.is_ok());
    auto t = protocol::split(*listed);
    REQUIRE(t.size() > 2);
    std::string txid(t[2]);
    CHECK(denied(app.call("ABORT " + txid, 5000)));
    CHECK(denied(app.call("COMMIT " + txid, 5000)));
    CHECK(denied(app.call("RESOLVE " + txid + " abort", 5000)));
    CHECK(denied(app.call("PREPARE 666.1.1 666 127.0.0.1:1 put victim forged", 5000)));
    CHECK(denied(app.call("PREPARE 7.7.7 7 not-an-address put hostage x", 5000)));
    // Only a leader certificate may JOIN or PREPARE: a client's or a participant's that
    // claims the leader role (with the cluster's own membership) is refused at each.
    std::string membership = read_file(c.data_dir(0) + "/membership");
    membership.pop_back();
    auto part_cert = connect_as(c, 0, certs, "participant", "participant",
                                "leader x cluster=" + c.cluster_id() + " node=0000-fake");
    for (auto* conn : {&app, &part_cert}) {
      CHECK(denied(conn->call(membership, 5000)));
      CHECK(denied(conn->call("PREPARE 1.99.1 1 127.0.0.1:1 put victim forged", 5000)));
      CHECK(denied(conn->call("COMMIT " + txid, 5000)));
      CHECK(denied(conn->call("ABORT " + txid, 5000)));
    }
    // A leader certificate on another connection than the preparing leader's: still refused.
    auto rogue = connect_as(c, 0, certs, "leader", "leader",
                            "leader x node=0000-fake advertise=127.0.0.1:1");
    std::string join = read_file(c.data_dir(0) + "/membership");
    join.pop_back();
    REQUIRE(rogue.call(join, 5000).value() == "ACK");
    CHECK(denied(rogue.call("ABORT " + txid, 5000)));
    // A junk PREPARE from it locks nothing.
    auto junk = rogue.call("PREPARE 7.7.7 7 not-an-address put hostage x", 5000);
    REQUIRE(junk.is_ok());
    CHECK(junk->rfind("ERR PROTO", 0) == 0);
    // Nothing changed: the client is told OK and both participants commit.
    CHECK(put.wait_exit(20000) == 0);
    CHECK(c.read_at(0, "k") == "v");
    CHECK(c.read_at(1, "k") == "v");
    CHECK_FALSE(c.read_at(0, "victim").has_value());
    CHECK(c.client({"put", "hostage", "free"}).code == 0);
    // The refusal is logged with the certificate's identity.
    CHECK(std::regex_search(c.log_of_participant(0),
                            std::regex("refused ABORT from 127\\.0\\.0\\.1:\\d+ \\(certificate 'app', role client")));
    // The leader's administrative verbs need an admin certificate.
    {
      UseCerts as(certs, "app");
      auto conn = client::Connection::open(c.leader_addr(), 2000, "admin");
      REQUIRE(conn.is_ok());
      CHECK(denied(conn->call("PAUSE 100", 5000)));
    }
    auto r = c.client({"--user", "app", "resolve", txid, "abort"});
    CHECK(r.code != 0);
  }

  TEST_CASE("a node or client certificate of another CA is refused") {
    Cluster::Options o;
    o.secure = true;
    Cluster c(o);
    REQUIRE(c.wait_ready());
    Scratch s;
    std::string other = s.path() + "/other";
    make_certs(other);
    // A client of another CA: refused by the leader, told why.
    auto r = run_tpc({"client", "--leader", c.leader_addr(), "--certs-dir", other, "put", "a", "1"});
    CHECK(r.code == 2);
    CHECK(r.err.find("does not trust") != std::string::npos);
    CHECK(wait_for_text(c.dir() + "/leader.log", "signed by a CA it does not trust", 5000));
    // A participant whose certificate is of another CA: the leader does not use it.
    c.kill_participant(1);
    std::string port = c.participant_addr(1).substr(c.participant_addr(1).rfind(':') + 1);
    Process p2({TPC_BINARY, "participant", "--id", "2", "--port", port, "--data-dir",
                c.data_dir(1), "--certs-dir", other},
               s.path() + "/p2.log");
    CHECK(wait_for(
        [&] {
          auto st = c.client({"status"});
          return st.out.find("REFUSED") != std::string::npos;
        },
        10000));
    CHECK(wait_for_text(c.dir() + "/leader.log", "refused the peer's certificate", 5000));
    // Not used: once marked out (--exclude-after), writes go on without it.
    CHECK(c.client({"put", "b", "2"}).code == 0);
    CHECK(c.read_at(0, "b") == "2");
    CHECK(wait_for_text(c.dir() + "/leader.log", "participant " + c.participant_addr(1) + " is out",
                        5000));
  }

  TEST_CASE("an expired certificate is refused with a clear message") {
    Cluster::Options o;
    o.secure = true;
    Cluster c(o);
    REQUIRE(c.wait_ready());
    std::string certs = c.certs_dir();
    write_cert(certs, "client.old", "admin", -7200, -3600);
    // The client sees it before it connects.
    auto r = c.client({"--user", "old", "put", "a", "1"});
    CHECK(r.code == 2);
    CHECK(r.err.find("client.old.crt expired on") != std::string::npos);
    // Sent anyway, the server refuses it and says so; the client is told.
    {
      UseCerts as(certs, "old", "", false);
      auto conn = client::Connection::open(c.leader_addr(), 3000);
      REQUIRE_FALSE(conn.is_ok());
      CHECK(conn.status().code() == "TLS");
      CHECK(conn.status().message().find("expired") != std::string::npos);
    }
    CHECK(wait_for_text(c.dir() + "/leader.log", "certificate has expired", 5000));
    // A node with an expired certificate does not start.
    Scratch s;
    std::string dir = s.path() + "/certs";
    fs::create_directory(dir);
    for (auto f : {"ca.crt", "ca.key"}) fs::copy_file(certs + "/" + f, dir + "/" + f);
    write_cert(dir, "participant", "participant", -7200, -3600);
    r = run_tpc({"participant", "--id", "9", "--port", std::to_string(free_port()), "--data-dir",
                 s.path() + "/p", "--certs-dir", dir});
    CHECK(r.code == 2);
    CHECK(r.err.find("participant.crt expired on") != std::string::npos);
    CHECK_FALSE(fs::exists(s.path() + "/p"));
    // And a stranger's HELLO on a plaintext port never reaches a TLS one by mistake: the
    // cluster still works.
    CHECK(c.client({"put", "a", "1"}).code == 0);
  }

  TEST_CASE("rotation: a second CA is trusted, new certificates, SIGHUP, no downtime") {
    Cluster::Options o;
    o.secure = true;
    Cluster c(o);
    REQUIRE(c.wait_ready());
    std::string certs = c.certs_dir();
    REQUIRE(c.client({"put", "before", "1"}).code == 0);
    // Step 1: every node trusts both CAs (ca.crt holds both), reloaded by SIGHUP.
    Scratch s;
    std::string next = s.path() + "/next";
    make_certs(next);
    std::string both = read_file(certs + "/ca.crt") + read_file(next + "/ca.crt");
    txlog::write_file_atomic(certs + "/ca.crt", both);
    txlog::write_file_atomic(next + "/ca.crt", both);
    auto hup = [&] {
      for (int i = 0; i < c.size(); ++i) ::kill(c.participant(i)->pid(), SIGHUP);
      ::kill(c.leader()->pid(), SIGHUP);
    };
    hup();
    REQUIRE(wait_for_text(c.dir() + "/leader.log", "certificates reloaded", 5000));
    // Step 2: the new CA's certificates replace the old ones, reloaded again.
    for (auto base : {"leader", "participant", "client.root"})
      for (auto ext : {".crt", ".key"})
        txlog::write_file_atomic(certs + "/" + base + ext, read_file(next + "/" + base + ext));
    hup();
    for (int i = 0; i < c.size(); ++i)
      REQUIRE(wait_for(
          [&] {
            std::string log = c.log_of_participant(i);
            size_t first = log.find("certificates reloaded");
            return first != std::string::npos &&
                   log.find("certificates reloaded", first + 1) != std::string::npos;
          },
          5000));
    // A client holding only the new CA's certificate works against the rotated cluster.
    auto r = run_tpc({"client", "--leader", c.leader_addr(), "--certs-dir", next, "put", "after",
                      "2"});
    CHECK(r.code == 0);
    CHECK(c.client({"get", "before"}).out == "1\n");
    // A broken reload keeps the old certificates and says why.
    txlog::write_file_atomic(certs + "/participant.key", "garbage");
    ::kill(c.participant(0)->pid(), SIGHUP);
    CHECK(wait_for_text(c.dir() + "/p1.log", "certificates not reloaded", 5000));
    CHECK(run_tpc({"client", "--leader", c.leader_addr(), "--certs-dir", next, "put", "again",
                   "3"})
              .code == 0);
  }

  TEST_CASE("certificates found in ./tpc-data/certs give way to a plaintext node, asked-for ones do not") {
    Cluster c;  // plaintext, on loopback
    REQUIRE(c.wait_ready());
    Scratch s;
    make_certs(s.path() + "/tpc-data/certs");
    auto in_dir = [&](const std::string& args) {
      Process p({"/bin/sh", "-c",
                 "cd " + s.path() + " && exec " + TPC_BINARY + " client --leader " +
                     c.leader_addr() + " " + args},
                s.path() + "/out");
      return p.wait_exit(20000);
    };
    CHECK(in_dir("put found 1") == 0);
    CHECK(c.read_at(0, "found") == "1");
    CHECK(in_dir("--certs-dir tpc-data/certs put asked 1") == 2);
    CHECK(read_file(s.path() + "/out").find("TLS") != std::string::npos);
    CHECK_FALSE(c.read_at(0, "asked").has_value());
  }

  TEST_CASE("a full TLS port says ERR BUSY inside TLS") {
    Cluster::Options o;
    o.secure = true;
    o.leader_args = {"--max-connections", "1"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    auto held = client::Connection::open(c.leader_addr(), 2000, "admin");
    REQUIRE(held.is_ok());
    REQUIRE(held->call("PAUSE 2000", 5000).value() == "OK");
    REQUIRE(held->send_raw("TXN - put k v\n").is_ok());  // in flight: not idle
    auto refused = client::Connection::open(c.leader_addr(), 3000);
    REQUIRE_FALSE(refused.is_ok());
    CHECK(refused.status().message().find("ERR BUSY") != std::string::npos);
  }

  TEST_CASE("a leader certificate that does not name the host the leader advertises cannot JOIN") {
    Cluster::Options o;
    o.secure = true;
    Cluster c(o);
    REQUIRE(c.wait_ready());
    // A leader certificate of the same CA, for another machine.
    std::string other = c.dir() + "/other-certs";
    std::filesystem::create_directories(other);
    std::filesystem::copy_file(tls::cert_path(c.certs_dir(), "ca"), tls::cert_path(other, "ca"));
    tls::CreateOptions co{other, tls::key_path(c.certs_dir(), "ca"), 86400, false};
    REQUIRE(tls::create_node(co, "leader", {"db9.example"}).is_ok());
    uint16_t port = free_port();
    Process l2({TPC_BINARY, "leader", "--id", "2", "--port", std::to_string(port), "--peers",
                c.participant_addr(0) + "," + c.participant_addr(1), "--data-dir",
                c.dir() + "/leader2", "--cluster-id", c.cluster_id(), "--certs-dir", other},
               c.dir() + "/leader2.log");
    REQUIRE(wait_for_text(c.dir() + "/leader2.log", "not the host it advertises", 10000));
    CHECK(read_file(c.dir() + "/leader2.log").find("names db9.example") != std::string::npos);
    // The cluster's own leader, whose certificate names 127.0.0.1, is admitted as before.
    CHECK(c.client({"put", "k", "v"}).code == 0);
  }
}
