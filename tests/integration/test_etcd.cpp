// The etcd client (src/etcd/) against a real etcd from Debian's etcd-server, started here on
// free loopback ports: the create-if-absent decision, lease fencing, prefix ranges, and an
// endpoint that is down.
#include <doctest/doctest.h>

#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <filesystem>

#include <fmt/format.h>

#include "etcd/client.h"
#include "harness.h"

using namespace tpc;
using namespace tpc::it;

namespace {
// A one-member etcd in a scratch directory; killed at destruction.
struct Etcd {
  Scratch dir;
  uint16_t client_port = free_port();
  uint16_t peer_port = free_port();
  std::unique_ptr<Process> proc;
  Etcd() {
    std::string c = fmt::format("http://127.0.0.1:{}", client_port);
    std::string p = fmt::format("http://127.0.0.1:{}", peer_port);
    proc = std::make_unique<Process>(
        std::vector<std::string>{"/usr/bin/etcd", "--name", "e0", "--data-dir", dir.path() + "/e0",
                                 "--listen-client-urls", c, "--advertise-client-urls", c,
                                 "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
                                 "--initial-cluster", "e0=" + p, "--log-level", "warn",
                                 "--logger", "zap"},
        dir.path() + "/etcd.log");
  }
  std::string endpoint() const { return fmt::format("127.0.0.1:{}", client_port); }
};

// Runs `f(client, done)` on a fresh io_context until done() is called or 10 s pass.
template <typename F>
bool with_client(const std::vector<std::string>& eps, F f) {
  boost::asio::io_context io;
  auto c = std::make_shared<etcd::Client>(io, eps, 1000);
  bool finished = false;
  f(*c, [&] {
    finished = true;
    io.stop();
  });
  io.run_for(std::chrono::seconds(10));
  c->stop();
  return finished;
}

bool healthy(const std::string& ep) {
  bool ok = false;
  with_client({ep}, [&](etcd::Client& c, auto done) {
    c.range("health", "", [&, done](Result<std::vector<etcd::KeyValue>> r) {
      ok = r.is_ok();
      done();
    });
  });
  return ok;
}
}  // namespace

TEST_SUITE("etcd") {
  TEST_CASE("a decision is created once: the second create-if-absent fails and reads the first") {
    Etcd e;
    REQUIRE(wait_for([&] { return healthy(e.endpoint()); }, 15000));
    std::vector<etcd::TxnResult> results;
    REQUIRE(with_client({e.endpoint()}, [&](etcd::Client& c, auto done) {
      auto decide = [&](const std::string& what, std::function<void()> then) {
        etcd::Txn t;
        t.compare.push_back(etcd::Compare::absent("tpc/d/1.1.1"));
        t.success.push_back(etcd::Op::put("tpc/d/1.1.1", what));
        t.failure.push_back(etcd::Op::get("tpc/d/1.1.1"));
        c.txn(t, [&, then](Result<etcd::TxnResult> r) {
          REQUIRE(r.is_ok());
          results.push_back(*r);
          then();
        });
      };
      decide("commit", [&, done, decide] { decide("abort", done); });
    }));
    REQUIRE(results.size() == 2);
    CHECK(results[0].succeeded);
    CHECK_FALSE(results[1].succeeded);
    REQUIRE(results[1].results.size() == 1);
    REQUIRE(results[1].results[0].size() == 1);
    CHECK(results[1].results[0][0].value == "commit");  // the decision never changes
    CHECK(results[1].revision >= results[0].revision);
  }

  TEST_CASE("a put fenced by a lease fails once the lease is gone") {
    Etcd e;
    REQUIRE(wait_for([&] { return healthy(e.endpoint()); }, 15000));
    int64_t lease = 0;
    bool first = false, after_revoke = true;
    int64_t ttl_left = -1;
    REQUIRE(with_client({e.endpoint()}, [&](etcd::Client& c, auto done) {
      c.lease_grant(5, [&, done](Result<std::pair<int64_t, int64_t>> g) {
        REQUIRE(g.is_ok());
        lease = g->first;
        CHECK(g->second == 5);
        // The leader's liveness key, held by its lease.
        etcd::Txn hold;
        hold.success.push_back(etcd::Op::put("tpc/leaders/1", "alive", lease));
        c.txn(hold, [&, done](Result<etcd::TxnResult> h) {
          REQUIRE(h.is_ok());
          auto fenced = [&](const std::string& key) {
            etcd::Txn t;
            t.compare.push_back(etcd::Compare::absent(key));
            t.compare.push_back(etcd::Compare::leased("tpc/leaders/1", lease));
            t.success.push_back(etcd::Op::put(key, "commit"));
            return t;
          };
          c.txn(fenced("tpc/d/a"), [&, done, fenced](Result<etcd::TxnResult> r) {
            REQUIRE(r.is_ok());
            first = r->succeeded;
            c.lease_keepalive(lease, [&, done, fenced](Result<int64_t> k) {
              REQUIRE(k.is_ok());
              ttl_left = *k;
              c.lease_revoke(lease, [&, done, fenced](Status s) {
                REQUIRE(s.is_ok());
                c.txn(fenced("tpc/d/b"), [&, done](Result<etcd::TxnResult> r2) {
                  REQUIRE(r2.is_ok());
                  after_revoke = r2->succeeded;
                  done();
                });
              });
            });
          });
        });
      });
    }));
    CHECK(first);
    CHECK(ttl_left > 0);
    CHECK_FALSE(after_revoke);  // the lease is gone: its holder can no longer decide
  }

  TEST_CASE("a prefix range, and a down endpoint answered UNAVAILABLE then skipped") {
    Etcd e;
    REQUIRE(wait_for([&] { return healthy(e.endpoint()); }, 15000));
    std::string dead = fmt::format("127.0.0.1:{}", free_port());
    std::vector<Status> seen;
    std::vector<etcd::KeyValue> kvs;
    REQUIRE(with_client({dead, e.endpoint()}, [&](etcd::Client& c, auto done) {
      etcd::Txn t;
      for (int i = 0; i < 3; ++i) t.success.push_back(etcd::Op::put(fmt::format("p/{}", i), "x"));
      t.success.push_back(etcd::Op::put("q/0", "y"));
      c.txn(t, [&, done, t](Result<etcd::TxnResult> r) {
        seen.push_back(r.status());  // the dead endpoint first
        c.txn(t, [&, done](Result<etcd::TxnResult> r2) {
          seen.push_back(r2.is_ok() ? Status::ok() : r2.status());
          c.range("p/", etcd::prefix_end("p/"), [&, done](Result<std::vector<etcd::KeyValue>> g) {
            REQUIRE(g.is_ok());
            kvs = *g;
            done();
          });
        });
      });
    }));
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].code() == "UNAVAILABLE");
    CHECK(seen[1].is_ok());
    REQUIRE(kvs.size() == 3);
    CHECK(kvs[0].key == "p/0");
    CHECK(kvs[2].key == "p/2");
  }
}
