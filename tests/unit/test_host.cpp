// node::Host: the verb table's role rules, and dispatch over a real connection (unknown verbs,
// refusals, a handler's reply, a request that waits on the core).
#include <doctest/doctest.h>

#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>

#include "node/host.h"
#include "node/stats.h"
#include "protocol/link.h"

using namespace tpc;
namespace asio = boost::asio;

namespace {
protocol::PeerInfo peer(const std::string& role, bool joined = false) {
  protocol::PeerInfo p;
  p.role = role;
  p.joined = joined;
  return p;
}
}  // namespace

TEST_SUITE("node host") {
  TEST_CASE("a verb's roles: anyone when empty, else the roles named, a JOIN where asked") {
    node::Verb open{"STATS", "", false, {}};
    node::Verb data{"READ", "leader client admin", false, {}};
    node::Verb joined{"PREPARE", "leader", true, {}};
    CHECK(node::refusal(open, peer("")).empty());
    CHECK(node::refusal(open, peer("client")).empty());
    CHECK(node::refusal(data, peer("client")).empty());
    CHECK(node::refusal(data, peer("admin")).empty());
    CHECK(node::refusal(data, peer("participant")) ==
          "READ is not for role participant (only leader client admin)");
    CHECK(node::refusal(data, peer("")) == "READ needs a HELLO first (role leader client admin)");
    // "lead" is not "leader": roles match as whole words.
    CHECK_FALSE(node::refusal(data, peer("lead")).empty());
    CHECK(node::refusal(joined, peer("leader")) ==
          "PREPARE only from the leader that admitted this participant (JOIN)");
    CHECK(node::refusal(joined, peer("leader", true)).empty());
    CHECK_FALSE(node::refusal(joined, peer("client", true)).empty());
  }

  TEST_CASE("dispatch: a handler's reply, a waiting request, DENIED and an unknown verb") {
    asio::io_context io(1);
    node::Identity ident;
    ident.role = "participant";
    ident.node = "00000000-0000-0000-0000-000000000001";
    int ticks = 0;
    node::HostConfig hc;
    hc.role = "participant";
    hc.id = "7";
    node::Host host(io, hc, ident, [&] { ++ticks; });
    std::optional<node::ClientId> parked;
    host.serve({
        {"ECHO", "", false,
         [](const node::Tokens& t, protocol::Reply r) {
           r.send("SAID " + std::string(t.size() > 1 ? t[1] : ""));
         }},
        {"LATER", "leader", false,
         [&](const node::Tokens&, protocol::Reply r) { parked = host.wait(std::move(r)); }},
        {"SECRET", "admin", false, [](const node::Tokens&, protocol::Reply r) { r.send("OK"); }},
    });
    // A client: HELLO as role client.
    auto link =
        std::make_shared<protocol::Link>(io, "127.0.0.1", host.port(), "HELLO tpc/2 client c1");
    std::vector<std::string> got(3);
    link->on_up([&] {
      link->request("ECHO hi", [&](Result<std::string> r) {
        got[0] = (r ? *r : "lost " + r.status().message());
      });
      link->request("SECRET", [&](Result<std::string> r) {
        got[1] = (r ? *r : "lost " + r.status().message());
      });
      link->request("FROB", [&](Result<std::string> r) {
        got[2] = (r ? *r : "lost " + r.status().message());
        io.stop();
      });
    });
    link->start();
    asio::steady_timer guard(io, std::chrono::seconds(10));
    guard.async_wait([&](boost::system::error_code ec) {
      if (!ec) io.stop();
    });
    io.run();
    CHECK(got[0] == "SAID hi");
    CHECK(got[1] == "ERR DENIED SECRET is not for role client (only admin)");
    CHECK(got[2].rfind("ERR PROTO unknown command FROB (a participant serves ECHO, LATER, SECRET",
                       0) == 0);
    // A request that waits on the core: answered when its handle is taken, once.
    io.restart();
    auto leader =
        std::make_shared<protocol::Link>(io, "127.0.0.1", host.port(), "HELLO tpc/2 leader 1");
    std::string later;
    leader->on_up([&] {
      leader->request("LATER", [&](Result<std::string> r) {
        later = (r ? *r : "lost " + r.status().message());
        io.stop();
      });
    });
    leader->start();
    // Parked, then answered by whoever takes the handle (here: the next turns of the loop).
    std::function<void()> poll = [&] {
      if (!parked) return host.after(1, poll);
      auto w = host.take(*parked);
      REQUIRE(w.has_value());
      CHECK_FALSE(host.take(*parked).has_value());
      w->reply.send("DONE");
    };
    host.after(1, poll);
    guard.expires_after(std::chrono::seconds(10));
    guard.async_wait([&](boost::system::error_code ec) {
      if (!ec) io.stop();
    });
    io.run();
    CHECK(later == "DONE");
    // The core's timer: a wake time that has come fires the tick.
    io.restart();
    host.wake_at(1);
    host.after(20, [&] { io.stop(); });
    io.run();
    CHECK(ticks == 1);
    link->stop();
    leader->stop();
    host.stop();
  }
}

TEST_SUITE("node stats") {
  TEST_CASE("a STATS line carries its role's fields and reads back") {
    node::Stats l;
    l.role = "leader";
    l.id = "1";
    l.cluster = "c";
    l.node = "n";
    l.committed = 10;
    l.peers_up = 2;
    l.peers = 3;
    l.last_catchup_ms = -1;
    l.decisions = "etcd";
    l.store = "down";
    l.keys = 99;  // not a leader's field: not on its line
    std::string line = node::encode(l);
    CHECK(line.rfind("STATS id=1 cluster=c node=n incarnation=0 replicas=0 committed=10 ", 0) == 0);
    CHECK(line.find(" peers_up=2/3 ") != std::string::npos);
    CHECK(line.find("keys=99") == std::string::npos);
    CHECK(line.find(" store=down") != std::string::npos);
    auto back = node::decode_stats(line);
    REQUIRE(back.is_ok());
    CHECK(back->role == "leader");
    CHECK(back->committed == 10);
    CHECK(back->peers_up == 2);
    CHECK(back->peers == 3);
    CHECK(back->last_catchup_ms == -1);
    CHECK(back->store == "down");
    CHECK(back->keys == 0);
    CHECK(node::encode(*back) == line);
    // A local leader says no store=.
    l.decisions = "local";
    l.store = "";
    CHECK(node::encode(l).find("store=") == std::string::npos);

    node::Stats p;
    p.role = "participant";
    p.id = "2";
    p.node = "m";
    p.keys = 5;
    p.prepared = 3;
    p.applying = 1;
    p.active = 7;  // a leader's field: not on a participant's line
    line = node::encode(p);
    CHECK(line.find(" cluster=- ") != std::string::npos);  // not joined yet
    CHECK(line.find(" in_doubt=3 applying=1 ") != std::string::npos);
    CHECK(line.find("active=") == std::string::npos);
    back = node::decode_stats(line);
    REQUIRE(back.is_ok());
    CHECK(back->role == "participant");
    CHECK(back->cluster.empty());
    CHECK(back->in_doubt() == 2);
    CHECK(node::encode(*back) == line);
  }

  TEST_CASE("a line that is not STATS, or a field that is not a number, is refused") {
    CHECK_FALSE(node::decode_stats("ERR PROTO x").is_ok());
    CHECK_FALSE(node::decode_stats("STATSX id=1").is_ok());
    CHECK_FALSE(node::decode_stats("STATS id=1 keys=many").is_ok());
    CHECK_FALSE(node::decode_stats("STATS id=1 decisions=local peers_up=2").is_ok());
    // An older node's line without some fields: they keep their defaults.
    auto old = node::decode_stats("STATS id=1 keys=4");
    REQUIRE(old.is_ok());
    CHECK(old->keys == 4);
    CHECK(old->epoch == 0);
  }
}
