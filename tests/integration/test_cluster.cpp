// A working cluster. Real processes on free ports.
#include <doctest/doctest.h>

#include <fmt/format.h>

#include "client/connection.h"
#include "harness.h"

using namespace tpc;
using namespace tpc::it;

TEST_SUITE("cluster") {
  TEST_CASE("a write sent the moment the leader listens commits (participants connecting wait)") {
    Cluster c;
    REQUIRE(c.wait_ready());
    for (int round = 0; round < 5; ++round) {
      CAPTURE(round);
      c.kill_leader();
      c.start_leader();
      // The first connection the leader accepts carries the write at once, before the
      // leader has (likely) reached its participants.
      std::optional<client::Connection> conn;
      REQUIRE(wait_for(
          [&] {
            auto o = client::Connection::open(c.leader_addr(), 200);
            if (o) conn.emplace(std::move(*o));
            return o.is_ok();
          },
          10000));
      auto r = conn->call(fmt::format("PUT early-{} v{}", round, round), 10000);
      REQUIRE(r);
      CHECK(r->rfind("COMMITTED", 0) == 0);
      CHECK(c.read_at(0, fmt::format("early-{}", round)) == fmt::format("v{}", round));
    }
  }

  TEST_CASE("put, get and del through the client, with its exit codes") {
    Cluster c;
    REQUIRE(c.wait_ready());
    auto r = c.client({"put", "greeting", "hello world"});
    CHECK(r.code == 0);
    r = c.client({"get", "greeting"});
    CHECK(r.code == 0);
    CHECK(r.out == "hello world\n");
    // Replicated to every participant.
    CHECK(c.read_at(0, "greeting") == "hello world");
    CHECK(c.read_at(1, "greeting") == "hello world");
    CHECK(c.client({"del", "greeting"}).code == 0);
    r = c.client({"get", "greeting"});
    CHECK(r.code == 1);
    CHECK_FALSE(c.read_at(0, "greeting").has_value());
    CHECK(c.client({"del", "never-there"}).code == 0);
    CHECK(c.client({"put", "only-key"}).code == 2);
    CHECK(c.client({"frobnicate"}).code == 2);
    CHECK(c.client({"get", ""}).code == 2);
  }

  TEST_CASE("any byte string is a key or a value") {
    Cluster c;
    REQUIRE(c.wait_ready());
    std::vector<std::pair<std::string, std::string>> kv = {
        {"with space", "two words"},
        {"newline\nkey", "line1\nline2\r\n"},
        {"percent%22", "%41\"quoted\""},
        {"utf8-\xc3\xa9\xe2\x82\xac", "\xf0\x9f\x98\x80"},
        {"empty-value", ""},
        {"-dash", "--looks-like-an-option"},
    };
    // After "--" every word is an argument, also one that looks like an option.
    for (auto& [k, v] : kv) {
      INFO(k);
      REQUIRE(c.client({"put", "--", k, v}).code == 0);
      auto r = c.client({"get", "--", k});
      CHECK(r.code == 0);
      CHECK(r.out == v + "\n");
    }
    // Without it, a word starting with "--" is an option: refused, nothing written.
    auto opt = c.client({"put", "k2", "--looks-like-an-option"});
    CHECK(opt.code == 2);
    CHECK(opt.err.find("unknown option '--looks-like-an-option'") != std::string::npos);
    CHECK_FALSE(c.read_at(0, "k2").has_value());
    // A single dash starts no option: "-dash" and "-5" are arguments.
    CHECK(c.client({"put", "-dash", "-5"}).code == 0);
    CHECK(c.client({"get", "-dash"}).out == "-5\n");
    // NUL cannot pass through argv; it goes over the wire directly.
    auto conn = client::Connection::open(c.leader_addr(), 2000);
    REQUIRE(conn.is_ok());
    std::string nul_key("a\0b", 3), nul_val("\0\0x", 3);
    auto put = conn->call(protocol::LineBuilder("PUT").arg(nul_key).arg(nul_val).str(), 5000);
    REQUIRE(put.is_ok());
    CHECK(put->rfind("COMMITTED", 0) == 0);
    CHECK(c.read_at(1, nul_key) == nul_val);
  }

  TEST_CASE("every value survives a restart of all processes") {
    Cluster c;
    REQUIRE(c.wait_ready());
    for (int i = 0; i < 20; ++i)
      REQUIRE(c.client({"put", "k" + std::to_string(i), "v" + std::to_string(i)}).code == 0);
    REQUIRE(c.client({"del", "k3"}).code == 0);
    c.kill_leader();
    c.kill_participant(0);
    c.kill_participant(1);
    c.start_participant(0);
    c.start_participant(1);
    c.start_leader();
    REQUIRE(c.wait_ready());
    for (int i = 0; i < 20; ++i) {
      auto r = c.client({"get", "k" + std::to_string(i)});
      if (i == 3) {
        CHECK(r.code == 1);
      } else {
        CHECK(r.code == 0);
        CHECK(r.out == "v" + std::to_string(i) + "\n");
      }
    }
    // New transaction ids after a restart do not collide with old ones.
    CHECK(c.client({"put", "k0", "again"}).code == 0);
    CHECK(c.client({"get", "k0"}).out == "again\n");
  }

  TEST_CASE("garbage gets ERR, the connection stays usable, the cluster keeps working") {
    Cluster c;
    REQUIRE(c.wait_ready());
    auto conn = client::Connection::open(c.leader_addr(), 2000);
    REQUIRE(conn.is_ok());
    for (std::string bad :
         std::vector<std::string>{"FROB x", "PUT onlykey", "GET", "PUT k %zz", "TXN - jump k",
                                  std::string("\x01\x02\xff\xfe garbage", 13), "   "}) {
      auto r = conn->call(bad, 5000);
      REQUIRE(r.is_ok());
      CHECK(r->rfind("ERR ", 0) == 0);
    }
    auto ok = conn->call("PUT k fine", 5000);
    REQUIRE(ok.is_ok());
    CHECK(ok->rfind("COMMITTED", 0) == 0);
    // A value comes back as a data block after its line.
    CHECK(conn->call("GET k", 5000).value() == "VALUE #4\nfine");
    // Pipelined untagged requests are answered in order; a value may be a data block (any
    // bytes, a CR LF after it as well as an LF) or a token.
    REQUIRE(conn->send_raw("PUT p #3\n1\n\n\r\nGET p\nBAD\nPUT q 2\nGET q\n").is_ok());
    CHECK(conn->read_line(5000).value().rfind("COMMITTED", 0) == 0);
    CHECK(conn->read_line(5000).value() == "VALUE #3\n1\n\n");
    CHECK(conn->read_line(5000).value().rfind("ERR PROTO", 0) == 0);
    CHECK(conn->read_line(5000).value().rfind("COMMITTED", 0) == 0);
    CHECK(conn->read_line(5000).value() == "VALUE #1\n2");
    // A data block not followed by its LF: the stream cannot be cut any more; that connection
    // is told why and closed, and the cluster keeps serving others.
    REQUIRE(conn->send_raw("PUT r #1\nxyz\n").is_ok());
    auto why = conn->read_line(5000);
    REQUIRE(why.is_ok());
    CHECK(why->rfind("ERR PROTO", 0) == 0);
    CHECK_FALSE(conn->read_line(2000).is_ok());  // closed
    CHECK(c.client({"get", "p"}).out == "1\n\n\n");
  }

  TEST_CASE("a value over the request limit is a usage error naming the limit, and is not sent") {
    Cluster c;
    REQUIRE(c.wait_ready());
    std::string big(5 << 20, '\0');  // 5 MiB of binary bytes
    uint32_t x = 12345;
    for (auto& ch : big) ch = static_cast<char>((x = x * 1103515245 + 12345) >> 16);
    auto r = run_tpc({"client", "--leader", c.leader_addr(), "put", "big", "-"}, 30000, big);
    CHECK(r.code == 2);
    CHECK(r.err.find("limit of 2097152 bytes") != std::string::npos);
    CHECK(r.err.find("--max-message") != std::string::npos);
    // Over what any node takes (32 MiB): refused before the leader is asked, and without
    // reading the whole input.
    std::string huge((32 << 20) + 1, 'x');
    r = run_tpc({"client", "--leader", "127.0.0.1:1", "put", "big", "-"}, 30000, huge);
    CHECK(r.code == 2);
    CHECK(r.err.find("--max-message at most 33554432") != std::string::npos);
    CHECK(c.client({"get", "big"}).code == 1);  // nothing written
    // The leader served nobody a broken connection: the next write goes through.
    CHECK(c.client({"put", "small", "v"}).code == 0);
  }

  TEST_CASE("an oversize line is refused and closes only that connection") {
    Cluster::Options o;
    o.leader_args = {"--max-message", "4096"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    auto other = client::Connection::open(c.leader_addr(), 2000);
    REQUIRE(other.is_ok());
    auto conn = client::Connection::open(c.leader_addr(), 2000);
    REQUIRE(conn.is_ok());
    auto r = conn->call("PUT k " + std::string(10000, 'x'), 5000);
    REQUIRE(r.is_ok());
    CHECK(r->rfind("ERR TOOLONG", 0) == 0);
    CHECK_FALSE(conn->read_line(2000).is_ok());  // closed
    auto ok = other->call("PUT k small", 5000);
    REQUIRE(ok.is_ok());
    CHECK(ok->rfind("COMMITTED", 0) == 0);
    CHECK(c.client({"get", "k"}).out == "small\n");
  }

  TEST_CASE("a mismatched protocol version fails clearly") {
    Cluster c;
    REQUIRE(c.wait_ready());
    auto conn = client::Connection::open(c.leader_addr(), 2000);
    REQUIRE(conn.is_ok());
    // tpc/1, the format of escaped values on one line: refused, naming both versions.
    auto r = conn->call("HELLO tpc/1 client", 2000);
    REQUIRE(r.is_ok());
    CHECK(r->rfind("ERR VERSION", 0) == 0);
    CHECK(r->find("speaks tpc/2, peer sent tpc/1") != std::string::npos);
  }

  TEST_CASE("an unreachable leader is exit 4") {
    auto r =
        run_tpc({"client", "--leader", "127.0.0.1:" + std::to_string(free_port()), "get", "k"});
    CHECK(r.code == 4);
    CHECK(r.err.find("unavailable") != std::string::npos);
    r = run_tpc({"client", "put", "k", "v"}, 30000, "",
                {{"TPC_LEADER", "127.0.0.1:" + std::to_string(free_port())}});
    CHECK(r.code == 4);
  }

  TEST_CASE("a get after a put returned sees it, even with phase 2 delayed") {
    // The leader pauses between COMMIT sends: the second participant still holds the prepared
    // write when the client already has its answer. A read there must wait, not go stale.
    Cluster::Options o;
    o.leader_env = {{"TPC_FAILPOINTS", "leader/betweenCommitSends=sleep(300)"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    for (int i = 0; i < 5; ++i) {
      std::string v = "v" + std::to_string(i);
      REQUIRE(c.client({"put", "hot", v}).code == 0);
      CHECK(c.read_at(0, "hot") == v);
      CHECK(c.read_at(1, "hot") == v);
    }
  }

  TEST_CASE("a second process on the same data dir is refused") {
    Cluster c;
    REQUIRE(c.wait_ready());
    auto r = run_tpc({"participant", "--port", std::to_string(free_port()), "--id", "1",
                      "--data-dir", c.dir() + "/p1"});
    CHECK(r.code != 0);
    CHECK(r.err.find("in use") != std::string::npos);
  }

  TEST_CASE("--max-message is capped below the log's record limit") {
    // A larger request could carry a PREPARE that no log record can hold: the participant
    // would vote YES on what it cannot remember. --max-line, its older name, is the same.
    for (const char* role : {"participant", "leader"})
      for (const char* opt : {"--max-message", "--max-line"}) {
        std::vector<std::string> args{role,         "--port",     std::to_string(free_port()), opt,
                                      "1073741824", "--data-dir", "/nonexistent/never-created"};
        if (std::string(role) == "leader") args.insert(args.end(), {"--peers", "127.0.0.1:1"});
        auto r = run_tpc(args);
        CHECK(r.code == 2);
        CHECK(r.err.find("max-message") != std::string::npos);
      }
  }
}

TEST_SUITE("cluster") {
  TEST_CASE("past --max-connections the longest idle connection makes room, else ERR BUSY") {
    Cluster::Options o;
    o.leader_args = {"--max-connections", "3"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    std::vector<client::Connection> held;
    for (int i = 0; i < 3; ++i) {
      auto conn = client::Connection::open(c.leader_addr(), 2000, "admin");  // PAUSE is admin's
      REQUIRE(conn.is_ok());
      held.push_back(std::move(*conn));
    }
    // Every connection busy (a transaction held by a pause): a fourth one is refused.
    auto paused = held[0].call("PAUSE 2000", 5000);
    REQUIRE(paused.is_ok());
    REQUIRE(*paused == "OK");
    for (int i = 0; i < 3; ++i)
      REQUIRE(held[i].send_raw(fmt::format("TXN - put k{} v\n", i)).is_ok());
    auto refused = client::Connection::open(c.leader_addr(), 2000);
    CHECK_FALSE(refused.is_ok());
    CHECK(refused.status().message().find("ERR BUSY") != std::string::npos);
    // The pause ends by itself; the held transactions commit.
    for (auto& h : held) {
      auto r = h.read_line(10000);
      REQUIRE(r.is_ok());
      CHECK(r->rfind("COMMITTED", 0) == 0);
    }
    // Now all three are idle: a new connection closes the one idle the longest.
    auto fresh = client::Connection::open(c.leader_addr(), 2000);
    REQUIRE(fresh.is_ok());
    CHECK_FALSE(held[0].call("PING", 2000).is_ok());
    auto r = fresh->call("PUT k v", 5000);
    REQUIRE(r.is_ok());
    CHECK(r->rfind("COMMITTED", 0) == 0);
  }
}
