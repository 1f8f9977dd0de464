#include "leader/decisions.h"

#include <thread>

#include <fmt/format.h>

#include "common/logging.h"
#include "common/util.h"
#include "leader/core.h"

namespace tpc::leader {

namespace asio = boost::asio;

namespace {
// A settler's decision (a COMMIT's value is a log record payload, never this text).
constexpr const char* k_abort = "abort";
// etcd's default --max-txn-ops is 128; a batch's compares and puts each stay below it.
constexpr size_t k_max_batch = 60;  // each decision is two puts (its key, its request id)

// Runs one call on a private io_context, blocking up to the client's timeouts.
template <typename T, typename Start>
Result<T> blocking(const DecisionStoreOptions& o, Start start) {
  asio::io_context io;
  auto c = std::make_shared<etcd::Client>(io, o.endpoints, o.timeout_ms);
  std::optional<Result<T>> out;
  // Each endpoint gets one try.
  std::function<void(size_t)> attempt = [&](size_t left) {
    start(*c, [&, left](Result<T> r) {
      if (!r && r.status().code() == "UNAVAILABLE" && left > 1) return attempt(left - 1);
      out.emplace(std::move(r));
    });
  };
  attempt(o.endpoints.size());
  io.run();
  c->stop();
  if (!out) return Status::error("UNAVAILABLE", "etcd did not answer");
  return std::move(*out);
}
}  // namespace

Result<std::vector<std::string>> parse_decision_store(const std::string& url) {
  const std::string scheme = "etcd://";
  if (url.rfind(scheme, 0) != 0)
    return Status::error("USAGE", "--decision-store: 'local' or etcd://HOST:PORT[,HOST:PORT...]");
  auto eps = split_list(url.substr(scheme.size()), ',');
  if (eps.empty()) return Status::error("USAGE", "--decision-store: no etcd endpoint");
  for (const auto& e : eps) {
    std::string h;
    uint16_t p;
    if (!parse_host_port(e, &h, &p) || p == 0)
      return Status::error("USAGE", "--decision-store: '" + e + "' is not HOST:PORT");
  }
  return eps;
}

EtcdDecisions::Startup EtcdDecisions::open(const DecisionStoreOptions& o) {
  auto unreachable = [](const Status& s) {
    return Error("decision store: " + s.message() + " (is etcd running? --decision-store)", 4);
  };
  Startup st;
  auto lease = blocking<std::pair<int64_t, int64_t>>(
      o, [&](etcd::Client& c, auto cb) { c.lease_grant(o.lease_ttl_s, cb); });
  if (!lease) throw unreachable(lease.status());
  st.lease = lease->first;
  // This leader's key: refused while another process holds it.
  std::string lkey = o.prefix + "leaders/" + o.leader_id;
  etcd::Txn take;
  take.compare.push_back(etcd::Compare::absent(lkey));
  take.success.push_back(etcd::Op::put(lkey, o.advertise, st.lease));
  take.failure.push_back(etcd::Op::get(lkey));
  // A key left by this leader's previous process (killed: its lease outlives it by up to the
  // TTL) goes by itself: wait that long before calling the id taken.
  int64_t until = now_ms() + o.lease_ttl_s * 1000 + 1000;
  auto took = blocking<etcd::TxnResult>(o, [&](etcd::Client& c, auto cb) { c.txn(take, cb); });
  while (took && !took->succeeded && now_ms() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    took = blocking<etcd::TxnResult>(o, [&](etcd::Client& c, auto cb) { c.txn(take, cb); });
  }
  if (!took) throw unreachable(took.status());
  if (!took->succeeded) {
    std::string at = took->results.size() == 1 && took->results[0].size() == 1
                         ? took->results[0][0].value
                         : std::string("?");
    throw Error(fmt::format("decision store: leader {} is already running (at {}, its lease is "
                            "live): give this leader another --id, or stop the other one",
                            o.leader_id, at),
                2);
  }
  // The incarnation: read, then compare-and-swap on its modification revision.
  std::string ikey = o.prefix + "incarnation/" + o.leader_id;
  for (int attempt = 0; attempt < 10 && st.incarnation == 0; ++attempt) {
    auto cur = blocking<std::vector<etcd::KeyValue>>(
        o, [&](etcd::Client& c, auto cb) { c.range(ikey, "", cb); });
    if (!cur) throw unreachable(cur.status());
    uint64_t n = 0;
    etcd::Txn bump;
    if (cur->empty()) {
      bump.compare.push_back(etcd::Compare::absent(ikey));
    } else {
      auto v = parse_int((*cur)[0].value);
      if (!v || *v < 0) throw Error("decision store: " + ikey + " is not a number", 1);
      n = static_cast<uint64_t>(*v);
      bump.compare.push_back({ikey, etcd::Compare::Target::mod, etcd::Compare::Result::equal,
                              (*cur)[0].mod_revision, {}});
    }
    bump.success.push_back(etcd::Op::put(ikey, std::to_string(n + 1)));
    auto r = blocking<etcd::TxnResult>(o, [&](etcd::Client& c, auto cb) { c.txn(bump, cb); });
    if (!r) throw unreachable(r.status());
    if (r->succeeded) st.incarnation = n + 1;
  }
  if (st.incarnation == 0) throw Error("decision store: cannot take an incarnation", 4);
  // This leader's decisions not yet ended: its transaction ids start with "ID.".
  std::string dprefix = o.prefix + "d/" + o.leader_id + ".";
  auto ds = blocking<std::vector<etcd::KeyValue>>(
      o, [&](etcd::Client& c, auto cb) { c.range(dprefix, etcd::prefix_end(dprefix), cb); });
  if (!ds) throw unreachable(ds.status());
  for (auto& kv : *ds)
    if (kv.value != k_abort)  // settled by another leader: nothing to re-drive
      st.decisions.emplace_back(kv.key.substr(o.prefix.size() + 2), std::move(kv.value));
  return st;
}

EtcdDecisions::EtcdDecisions(asio::io_context& io, DecisionStoreOptions o, int64_t lease)
    : m_o(std::move(o)),
      m_client(std::make_shared<etcd::Client>(io, m_o.endpoints, m_o.timeout_ms)),
      m_lease(lease),
      m_rid_timer(io),
      m_timer(io) {}

EtcdDecisions::~EtcdDecisions() { stop(); }

void EtcdDecisions::start() {
  keepalive();
  renew_rid_lease();
}

void EtcdDecisions::renew_rid_lease() {
  if (m_stopped) return;
  m_client->lease_grant(3600, [this, alive = m_alive](Result<std::pair<int64_t, int64_t>> r) {
    if (!*alive) return;
    if (r) m_rid_lease = r->first;
    // A new one every half hour (or a minute after a failure): keys live 30 to 60 minutes.
    m_rid_timer.expires_after(std::chrono::seconds(r ? 1800 : 60));
    m_rid_timer.async_wait([this, alive](boost::system::error_code ec) {
      if (!ec && *alive) renew_rid_lease();
    });
  });
}

void EtcdDecisions::find_rid(const std::string& rid,
                             std::function<void(Result<std::string>)> cb) {
  m_client->range(rid_key(rid), "", [alive = m_alive, cb = std::move(cb)](
                                        Result<std::vector<etcd::KeyValue>> r) {
    if (!*alive) return;
    if (!r) return cb(r.status());
    cb(r->empty() ? std::string() : (*r)[0].value);
  });
}

void EtcdDecisions::stop() {
  if (m_stopped) return;
  m_stopped = true;
  *m_alive = false;
  m_timer.cancel();
  m_rid_timer.cancel();
  m_client->stop();
  // A stopping leader gives its lease back, so that it can start again at once (and, later,
  // others take over at once); bounded by the timeout.
  auto r = blocking<bool>(m_o, [&](etcd::Client& c, auto cb) {
    c.lease_revoke(m_lease, [cb](Status s) { cb(s ? Result<bool>(true) : Result<bool>(s)); });
  });
  if (!r) log::warn("decision store: lease not given back: {}", r.status().message());
}

void EtcdDecisions::keepalive() {
  if (m_stopped) return;
  m_timer.expires_after(std::chrono::milliseconds(m_o.lease_ttl_s * 1000 / 3));
  m_timer.async_wait([this, alive = m_alive](boost::system::error_code ec) {
    if (ec || !*alive) return;
    m_client->lease_keepalive(m_lease, [this, alive](Result<int64_t> r) {
      if (!*alive) return;
      if (!r) {
        if (m_healthy) log::warn("decision store: lease keepalive failed: {}", r.status().message());
        m_healthy = false;
      } else if (*r == 0) {
        log::error("decision store: lease {} expired; taking a new one", m_lease);
        m_healthy = false;
        return relet();
      } else {
        if (!m_healthy) log::info("decision store: reachable again");
        m_healthy = true;
      }
      keepalive();
    });
  });
}

void EtcdDecisions::relet() {
  // A new lease and this leader's key again. Until then no decision can be taken: each
  // decide() answers UNAVAILABLE (its compare on the old lease fails) and is tried again.
  if (m_reletting || m_stopped) return;
  m_reletting = true;
  m_client->lease_grant(m_o.lease_ttl_s, [this, alive = m_alive](auto r) {
    if (!*alive) return;
    if (!r) {
      m_reletting = false;
      m_timer.expires_after(std::chrono::milliseconds(500));
      m_timer.async_wait([this, alive](boost::system::error_code ec) {
        if (!ec && *alive) relet();
      });
      return;
    }
    int64_t lease = r->first;
    etcd::Txn take;
    take.compare.push_back(etcd::Compare::absent(leader_key()));
    take.success.push_back(etcd::Op::put(leader_key(), m_o.advertise, lease));
    m_client->txn(take, [this, alive, lease](Result<etcd::TxnResult> t) {
      if (!*alive) return;
      m_reletting = false;
      if (t && t->succeeded) {
        m_lease = lease;
        m_healthy = true;
        log::info("decision store: new lease {}", lease);
      }
      keepalive();
    });
  });
}

void EtcdDecisions::decide(const std::string& txid, std::string payload,
                           std::function<void(Result<bool>)> cb) {
  m_queue.push_back({txid, std::move(payload), std::move(cb)});
  flush();
}

void EtcdDecisions::flush() {
  if (m_in_flight || m_queue.empty() || m_stopped) return;
  // Every decision waiting goes in one etcd transaction: each key absent, this leader's key
  // still held by its lease; then all are created.
  std::vector<Pending> batch;
  while (!m_queue.empty() && batch.size() < k_max_batch) {
    batch.push_back(std::move(m_queue.front()));
    m_queue.pop_front();
  }
  etcd::Txn t;
  t.compare.push_back(etcd::Compare::leased(leader_key(), m_lease));
  for (auto& p : batch) {
    t.compare.push_back(etcd::Compare::absent(decision_key(p.txid)));
    t.success.push_back(etcd::Op::put(decision_key(p.txid), p.payload));
    if (auto c = decode_commit(p.payload); c && !c->rid.empty() && m_rid_lease)
      t.success.push_back(etcd::Op::put(rid_key(c->rid), p.txid, m_rid_lease));
  }
  m_in_flight = true;
  auto shared = std::make_shared<std::vector<Pending>>(std::move(batch));
  m_client->txn(t, [this, alive = m_alive, shared](Result<etcd::TxnResult> r) {
    if (!*alive) return;
    m_in_flight = false;
    if (r && r->succeeded) {
      m_healthy = true;
      for (auto& p : *shared) p.cb(true);
    } else if (!r) {
      m_healthy = false;
      for (auto& p : *shared) p.cb(r.status());
    } else {
      // A compare failed: one of these was decided already, or the lease is gone. Each on
      // its own, so that one settled transaction does not hold up the others.
      for (auto& p : *shared) decide_one(std::move(p));
    }
    flush();
  });
}

void EtcdDecisions::decide_one(Pending p) {
  etcd::Txn t;
  t.compare.push_back(etcd::Compare::leased(leader_key(), m_lease));
  t.compare.push_back(etcd::Compare::absent(decision_key(p.txid)));
  t.success.push_back(etcd::Op::put(decision_key(p.txid), p.payload));
  if (auto c = decode_commit(p.payload); c && !c->rid.empty() && m_rid_lease)
    t.success.push_back(etcd::Op::put(rid_key(c->rid), p.txid, m_rid_lease));
  t.failure.push_back(etcd::Op::get(decision_key(p.txid)));
  auto shared = std::make_shared<Pending>(std::move(p));
  m_client->txn(t, [this, alive = m_alive, shared](Result<etcd::TxnResult> r) {
    if (!*alive) return;
    if (!r) {
      m_healthy = false;
      return shared->cb(r.status());
    }
    if (r->succeeded) return shared->cb(true);
    const auto& found = r->results.size() == 1 ? r->results[0] : std::vector<etcd::KeyValue>{};
    if (found.empty()) {
      // The key is absent, so the lease compare failed: this leader lost its lease.
      m_healthy = false;
      relet();
      return shared->cb(Status::error("UNAVAILABLE", "decision store: this leader's lease was lost"));
    }
    shared->cb(found[0].value == shared->payload);
  });
}

void EtcdDecisions::settle(const std::string& txid, const std::string& owner,
                           std::function<void(Result<protocol::Decision>)> cb) {
  std::string owner_key = m_o.prefix + "leaders/" + owner;
  etcd::Txn t;
  t.compare.push_back(etcd::Compare::absent(decision_key(txid)));
  t.compare.push_back(etcd::Compare::absent(owner_key));
  t.success.push_back(etcd::Op::put(decision_key(txid), k_abort));
  t.failure.push_back(etcd::Op::get(decision_key(txid)));
  m_client->txn(t, [alive = m_alive, txid, owner, cb = std::move(cb)](
                       Result<etcd::TxnResult> r) {
    if (!*alive) return;
    if (!r) return cb(r.status());
    if (r->succeeded) {
      log::warn("settled {} as aborted: its leader {} is gone (its lease expired)", txid, owner);
      return cb(protocol::Decision::aborted);
    }
    const auto& found = r->results.size() == 1 ? r->results[0] : std::vector<etcd::KeyValue>{};
    if (found.empty()) return cb(protocol::Decision::pending);  // the owner lives: it decides
    cb(found[0].value == k_abort ? protocol::Decision::aborted : protocol::Decision::committed);
  });
}

void EtcdDecisions::end(const std::string& txid) {
  m_ends.push_back(decision_key(txid));
  flush_ends();
}

void EtcdDecisions::flush_ends() {
  if (m_ends_in_flight || m_ends.empty() || m_stopped) return;
  etcd::Txn t;
  size_t n = std::min(m_ends.size(), k_max_batch);
  for (size_t i = 0; i < n; ++i) t.success.push_back(etcd::Op::del(m_ends[i]));
  m_ends.erase(m_ends.begin(), m_ends.begin() + static_cast<std::ptrdiff_t>(n));
  m_ends_in_flight = true;
  m_client->txn(t, [this, alive = m_alive](Result<etcd::TxnResult> r) {
    if (!*alive) return;
    m_ends_in_flight = false;
    if (!r) log::debug("decision store: ends not removed: {}", r.status().message());
    flush_ends();
  });
}

}  // namespace tpc::leader
