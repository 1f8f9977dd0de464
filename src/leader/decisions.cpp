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
constexpr size_t k_max_ops = 128;  // etcd's default --max-txn-ops: compares, and each branch
constexpr size_t k_max_batch = 120;  // decisions per batch: one compare each, and the batch's
                                     // lease and absence compares; request-id puts permitting
constexpr int k_retry_ms = 200;      // a batch etcd did not answer is sent again after this
// Ended transactions' keys wait this long for a decision batch to carry them, or until a
// request's worth has gathered.
constexpr int k_end_delay_ms = 100;

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

namespace {
// At start: etcd did not answer (exit 4).
Error unreachable(const Status& s) {
  return Error("decision store: " + s.message() + " (is etcd running? --decision-store)", 4);
}
}  // namespace

Result<std::string> adopt_claim(const std::string& local, const std::string& requested,
                                const std::string& view, const std::string& held,
                                const std::string& held_view) {
  if (!local.empty() && local != held) return Status::error("DIR", held);
  if (!requested.empty() && requested != held) return Status::error("ID", held);
  if (view != held_view) return Status::error("VIEW", held_view);
  return held;
}

std::pair<std::string, std::string> EtcdDecisions::claim_cluster(const DecisionStoreOptions& o,
                                                                 const std::string& cluster,
                                                                 const std::string& view) {
  std::string key = o.prefix + "cluster";
  etcd::Txn claim;
  claim.compare.push_back(etcd::Compare::absent(key));
  claim.success.push_back(etcd::Op::put(key, "tpcc1\n" + cluster + "\n" + view));
  claim.failure.push_back(etcd::Op::get(key));
  auto r = blocking<etcd::TxnResult>(o, [&](etcd::Client& c, auto cb) { c.txn(claim, cb); });
  if (!r) throw unreachable(r.status());
  if (r->succeeded) return {cluster, view};
  if (r->results.size() != 1 || r->results[0].size() != 1)
    throw Error("decision store: " + key + " vanished while read; try again", 4);
  const std::string& v = r->results[0][0].value;
  auto nl = v.find('\n', 6);
  if (v.rfind("tpcc1\n", 0) != 0 || nl == std::string::npos)
    throw Error("decision store: " + key + " is damaged; refusing to start", 1);
  return {v.substr(6, nl - 6), v.substr(nl + 1)};
}

std::string EtcdDecisions::claim_members(const DecisionStoreOptions& o, const std::string& first) {
  std::string key = o.prefix + "members";
  etcd::Txn claim;
  claim.compare.push_back(etcd::Compare::absent(key));
  claim.success.push_back(etcd::Op::put(key, first));
  claim.failure.push_back(etcd::Op::get(key));
  auto r = blocking<etcd::TxnResult>(o, [&](etcd::Client& c, auto cb) { c.txn(claim, cb); });
  if (!r) throw unreachable(r.status());
  if (r->succeeded) return first;
  if (r->results.size() != 1 || r->results[0].size() != 1)
    throw Error("decision store: " + key + " vanished while read; try again", 4);
  return r->results[0][0].value;
}

EtcdDecisions::Startup EtcdDecisions::open(const DecisionStoreOptions& o) {
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
    // Our own lease is as short: kept alive while we wait (else the take finds it gone).
    auto kept =
        blocking<int64_t>(o, [&](etcd::Client& c, auto cb) { c.lease_keepalive(st.lease, cb); });
    if (!kept) throw unreachable(kept.status());
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
                              (*cur)[0].mod_revision, {}, {}});
    }
    bump.success.push_back(etcd::Op::put(ikey, std::to_string(n + 1)));
    auto r = blocking<etcd::TxnResult>(o, [&](etcd::Client& c, auto cb) { c.txn(bump, cb); });
    if (!r) throw unreachable(r.status());
    if (r->succeeded) st.incarnation = n + 1;
  }
  if (st.incarnation == 0) throw Error("decision store: cannot take an incarnation", 4);
  // This leader's decisions not yet ended: its batches.
  std::string bprefix = o.prefix + "b/" + o.leader_id + "/";
  auto bs = blocking<std::vector<etcd::KeyValue>>(
      o, [&](etcd::Client& c, auto cb) { c.range(bprefix, etcd::prefix_end(bprefix), cb); });
  if (!bs) throw unreachable(bs.status());
  for (auto& kv : *bs) {
    auto ds = decode_batch(kv.value);
    if (!ds) throw Error("decision store: " + kv.key + ": " + ds.status().message(), 1);
    std::vector<std::string> txids;
    for (auto& [txid, payload] : *ds) {
      txids.push_back(txid);
      st.decisions.emplace_back(txid, std::move(payload));
    }
    st.batches.emplace_back(kv.key, std::move(txids));
  }
  // Heuristic mismatches of this leader's transactions ("ID." txids).
  std::string hprefix = o.prefix + "h/" + o.leader_id + ".";
  auto hs = blocking<std::vector<etcd::KeyValue>>(
      o, [&](etcd::Client& c, auto cb) { c.range(hprefix, etcd::prefix_end(hprefix), cb); });
  if (!hs) throw unreachable(hs.status());
  for (auto& kv : *hs) st.mismatches.push_back(kv.value);
  // etcd's raft leader first: a request to a follower is forwarded to it, at a cost in CPU
  // and time. Only at start: a leader elected later is reached through the follower.
  st.endpoints = o.endpoints;
  for (size_t i = 1; i < o.endpoints.size(); ++i) {
    DecisionStoreOptions one = o;
    one.endpoints = {o.endpoints[i]};
    auto lead = blocking<bool>(one, [](etcd::Client& c, auto cb) { c.is_leader(cb); });
    if (lead && *lead) {
      std::swap(st.endpoints[0], st.endpoints[i]);
      break;
    }
  }
  return st;
}

std::string encode_batch(const std::vector<std::pair<std::string, std::string>>& decisions) {
  std::string out = fmt::format("tpcb1 {}\n", decisions.size());
  for (const auto& [txid, payload] : decisions)
    out += fmt::format("{} {}\n{}{}", txid.size(), payload.size(), txid, payload);
  return out;
}

Result<std::vector<std::pair<std::string, std::string>>> decode_batch(std::string_view v) {
  auto bad = [](const std::string& why) {
    return Status::error("CORRUPT", "not a decision batch: " + why);
  };
  // One "A B\n" header line of decimal numbers; returns false on anything else.
  auto line = [&v](std::string_view* out) {
    size_t nl = v.find('\n');
    if (nl == std::string_view::npos) return false;
    *out = v.substr(0, nl);
    v.remove_prefix(nl + 1);
    return true;
  };
  auto number = [](std::string_view t, uint64_t limit, uint64_t* n) {
    if (t.empty() || t.size() > 9) return false;
    *n = 0;
    for (char c : t) {
      if (c < '0' || c > '9') return false;
      *n = *n * 10 + static_cast<uint64_t>(c - '0');
    }
    return *n <= limit;
  };
  std::string_view head;
  uint64_t count;
  if (!line(&head) || head.substr(0, 6) != "tpcb1 " || !number(head.substr(6), 100000, &count))
    return bad("no 'tpcb1 N' header");
  std::vector<std::pair<std::string, std::string>> out;
  for (uint64_t i = 0; i < count; ++i) {
    std::string_view h;
    if (!line(&h)) return bad("entry " + std::to_string(i) + " has no header");
    size_t sp = h.find(' ');
    uint64_t a, b;
    if (sp == std::string_view::npos || !number(h.substr(0, sp), 1 << 10, &a) ||
        !number(h.substr(sp + 1), 1 << 24, &b) || a == 0)
      return bad("entry " + std::to_string(i) + " has a bad header");
    if (v.size() < a + b) return bad("entry " + std::to_string(i) + " is cut short");
    out.emplace_back(std::string(v.substr(0, a)), std::string(v.substr(a, b)));
    v.remove_prefix(a + b);
  }
  if (!v.empty()) return bad("bytes after the last entry");
  return out;
}

EtcdDecisions::EtcdDecisions(asio::io_context& io, DecisionStoreOptions o, const Startup& st)
    : m_o(std::move(o)),
      m_client(std::make_shared<etcd::Client>(io, m_o.endpoints, m_o.timeout_ms)),
      m_decider(std::make_shared<etcd::Client>(io, m_o.endpoints, m_o.timeout_ms)),
      m_lease(st.lease),
      m_rid_timer(io),
      m_end_timer(io),
      m_retry_timer(io),
      m_incarnation(st.incarnation),
      m_timer(io),
      m_linger(io) {
  for (const auto& [key, txids] : st.batches) {
    if (txids.empty()) {
      m_ends.push_back(key);
      continue;
    }
    m_open[key] = txids.size();
    for (const auto& t : txids) m_batch_of[t] = key;
  }
}

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

void EtcdDecisions::record_mismatch(const std::string& txid, size_t part, std::string payload,
                                    std::function<void(Status)> cb) {
  etcd::Txn t;
  t.success.push_back(
      etcd::Op::put(fmt::format("{}h/{}/{}", m_o.prefix, txid, part), std::move(payload)));
  m_client->txn(t, [alive = m_alive, cb = std::move(cb)](Result<etcd::TxnResult> r) {
    if (!*alive) return;
    cb(r ? Status() : r.status());
  });
}

void EtcdDecisions::forget_mismatches(const std::string& txid) {
  std::string prefix = m_o.prefix + "h/" + txid + "/";
  etcd::Txn t;
  t.success.push_back({etcd::Op::Kind::del, prefix, {}, etcd::prefix_end(prefix), 0, 0});
  m_client->txn(t, [txid](Result<etcd::TxnResult> r) {
    if (!r)
      log::warn("decision store: mismatches of {} not forgotten in etcd: {}", txid,
                r.status().message());
  });
}

void EtcdDecisions::stop() {
  if (m_stopped) return;
  m_stopped = true;
  *m_alive = false;
  m_timer.cancel();
  m_rid_timer.cancel();
  m_end_timer.cancel();
  m_client->stop();
  m_retry_timer.cancel();
  m_decider->stop();
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
        set_healthy(false);
      } else if (*r == 0) {
        log::error("decision store: lease {} expired; taking a new one", m_lease);
        set_healthy(false);
        return relet();
      } else {
        if (!m_healthy) log::info("decision store: reachable again");
        set_healthy(true);
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
    take.compare.push_back(etcd::Compare::absent(leader_key(m_o.leader_id)));
    take.success.push_back(etcd::Op::put(leader_key(m_o.leader_id), m_o.advertise, lease));
    m_client->txn(take, [this, alive, lease](Result<etcd::TxnResult> t) {
      if (!*alive) return;
      m_reletting = false;
      if (t && t->succeeded) {
        m_lease = lease;
        set_healthy(true);
        log::info("decision store: new lease {}", lease);
      }
      keepalive();
    });
  });
}

void EtcdDecisions::decide(const std::string& txid, std::string payload, const std::string& members,
                           std::function<void(Result<bool>)> cb) {
  m_queue.push_back({txid, std::move(payload), members, std::move(cb), now_us()});
  flush();
}

void EtcdDecisions::flush() {
  if (m_queue.empty() || m_stopped) return;
  if (m_in_flight) return;
  // Like PostgreSQL's commit_delay: while other transactions are still collecting votes, the
  // batch waits for them a little (--batch-wait), so that they share its etcd round. (Waiting
  // only for those already collecting votes when the first decision came was slower, 7,300
  // to 7,900 txn/s against 9,000 to 10,300: under load, etcd's rounds are what is scarce.)
  int64_t until = m_queue.front().since_us + m_o.batch_wait_us;
  if (m_o.batch_wait_us > 0 && m_preparing && m_preparing() > 0 &&
      m_queue.size() < k_max_batch && now_us() < until) {
    if (!m_lingering) {
      m_lingering = true;
      m_linger.expires_after(std::chrono::microseconds(until - now_us()));
      m_linger.async_wait([this, alive = m_alive](boost::system::error_code ec) {
        if (ec || !*alive) return;
        m_lingering = false;
        flush();
      });
    }
    return;
  }
  // Every decision waiting goes in one batch key, in one etcd transaction: this leader's key
  // still held by its lease, the batch key absent (a re-sent batch lands once), no abort key
  // of its transactions; then the batch, the request ids, and batches ended meanwhile.
  auto b = std::make_shared<Batch>();
  b->key = batches_of(m_o.leader_id) + fmt::format("{}.{}", m_incarnation, ++m_batch_seq);
  etcd::Txn& t = b->txn;
  t.compare.push_back(etcd::Compare::leased(leader_key(m_o.leader_id), m_lease));
  t.compare.push_back(etcd::Compare::absent(b->key));
  // No abort key of its transactions: one range compare over this incarnation's while no
  // other leader ever settled one of them (so far the rule), one compare each after that.
  std::string aborts = m_o.prefix + fmt::format("d/{}.{}.", m_o.leader_id, m_incarnation);
  if (!m_settled_seen) t.compare.push_back(etcd::Compare::none_under(aborts));
  // The membership its decisions were taken under is still the store's: one batch holds
  // decisions of one membership.
  b->members = m_queue.front().members;
  t.compare.push_back({members_key(),
                       etcd::Compare::Target::value,
                       etcd::Compare::Result::equal,
                       0,
                       b->members,
                       {}});
  std::vector<std::pair<std::string, std::string>> entries;
  size_t puts = 1;
  while (!m_queue.empty() && b->items.size() < k_max_batch &&
         m_queue.front().members == b->members) {
    auto c = decode_commit(m_queue.front().payload);
    bool rid = c && !c->rid.empty() && m_rid_lease;
    if (puts + (rid ? 1 : 0) > k_max_ops) break;
    Pending p = std::move(m_queue.front());
    m_queue.pop_front();
    if (m_settled_seen) t.compare.push_back(etcd::Compare::absent(abort_key(p.txid)));
    if (rid) {
      t.success.push_back(etcd::Op::put(rid_key(c->rid), p.txid, m_rid_lease));
      ++puts;
    }
    entries.emplace_back(p.txid, p.payload);
    b->items.push_back(std::move(p));
  }
  t.success.push_back(etcd::Op::put(b->key, encode_batch(entries)));
  // Ended batches ride along (each etcd transaction is a raft entry and a disk write).
  while (!m_ends.empty() && t.success.size() < k_max_ops) {
    t.success.push_back(etcd::Op::del(m_ends.back()));
    b->ends.push_back(std::move(m_ends.back()));
    m_ends.pop_back();
  }
  // On a failed compare: did an earlier attempt land, is the lease held, which were settled.
  t.failure.push_back(etcd::Op::get(b->key));
  t.failure.push_back(etcd::Op::get(leader_key(m_o.leader_id)));
  t.failure.push_back(etcd::Op::range(aborts, etcd::prefix_end(aborts)));
  t.failure.push_back(etcd::Op::get(members_key()));
  m_in_flight = true;
  send(std::move(b));
}

void EtcdDecisions::send(std::shared_ptr<Batch> b) {
  m_decider->txn(b->txn, [this, alive = m_alive, b](Result<etcd::TxnResult> r) {
    if (!*alive) return;
    if (!r) {
      // etcd could not say whether it landed: the same batch again, until it can.
      if (m_healthy) log::warn("decision store: {}; retrying", r.status().message());
      set_healthy(false);
      m_retry_timer.expires_after(std::chrono::milliseconds(k_retry_ms));
      m_retry_timer.async_wait([this, alive, b](boost::system::error_code ec) {
        if (ec || !*alive) return;
        send(b);
      });
      return;
    }
    m_in_flight = false;
    auto found = [&](size_t i) -> const std::vector<etcd::KeyValue>& {
      static const std::vector<etcd::KeyValue> none;
      return i < r->results.size() ? r->results[i] : none;
    };
    if (r->succeeded || !found(0).empty()) {
      // Landed (now, or an earlier attempt whose reply was lost).
      set_healthy(true);
      landed(*b);
    } else {
      for (auto& e : b->ends) m_ends.push_back(std::move(e));
      if (found(1).empty() || found(1)[0].lease != m_lease) {
        // This leader lost its lease: nothing of the batch landed, nor can it under that
        // lease. Undecided: the caller tries again, under the next lease, where an abort
        // key written meanwhile is found.
        set_healthy(false);
        relet();
        for (auto& p : b->items)
          p.cb(Status::error("UNAVAILABLE", "decision store: this leader's lease was lost"));
      } else {
        // Some were settled by another leader: those are aborted; the others go again.
        std::unordered_map<std::string, bool> settled;
        for (const auto& kv : found(2)) settled[kv.key] = true;
        m_settled_seen = m_settled_seen || !settled.empty();
        // The others: the membership changed (EPOCH: taken again or aborted by the core),
        // or they go again.
        std::string members = found(3).empty() ? std::string() : found(3)[0].value;
        std::vector<Pending> again;
        for (auto& p : b->items) {
          if (settled.count(abort_key(p.txid)))
            p.cb(false);
          else if (members != b->members)
            p.cb(Status::error("EPOCH", members));
          else
            again.push_back(std::move(p));
        }
        for (auto it = again.rbegin(); it != again.rend(); ++it)
          m_queue.push_front(std::move(*it));
      }
    }
    flush();
  });
}

void EtcdDecisions::put_members(const std::string& expect, const std::string& next,
                                std::function<void(Result<std::string>)> cb) {
  etcd::Txn t;
  t.compare.push_back(etcd::Compare::leased(leader_key(m_o.leader_id), m_lease));
  t.compare.push_back(
      {members_key(), etcd::Compare::Target::value, etcd::Compare::Result::equal, 0, expect, {}});
  t.success.push_back(etcd::Op::put(members_key(), next));
  t.failure.push_back(etcd::Op::get(members_key()));
  m_client->txn(t, [alive = m_alive, next, cb = std::move(cb)](Result<etcd::TxnResult> r) {
    if (!*alive) return;
    if (!r) return cb(r.status());
    if (r->succeeded) return cb(next);
    if (r->results.size() != 1 || r->results[0].size() != 1)
      return cb(Status::error("UNAVAILABLE", "decision store: no membership key"));
    cb(r->results[0][0].value);
  });
}

void EtcdDecisions::read_members(std::function<void(Result<MembersView>)> cb) {
  etcd::Txn read;
  std::string leaders = m_o.prefix + "leaders/";
  read.success.push_back(etcd::Op::get(members_key()));
  read.success.push_back(etcd::Op::range(leaders, etcd::prefix_end(leaders)));
  m_client->txn(read, [alive = m_alive, leaders, cb = std::move(cb)](Result<etcd::TxnResult> r) {
    if (!*alive) return;
    if (!r) return cb(r.status());
    if (r->results.size() != 2 || r->results[0].size() != 1)
      return cb(Status::error("UNAVAILABLE", "decision store: no membership key"));
    MembersView v;
    v.members = r->results[0][0].value;
    for (auto& kv : r->results[1]) v.leaders.push_back(kv.key.substr(leaders.size()));
    cb(std::move(v));
  });
}

void EtcdDecisions::landed(Batch& b) {
  m_open[b.key] = b.items.size();
  for (auto& p : b.items) m_batch_of[p.txid] = b.key;
  for (auto& p : b.items) p.cb(true);
}

void EtcdDecisions::set_healthy(bool up) {
  if (m_healthy == up) return;
  m_healthy = up;
  if (m_on_health) m_on_health(up);
}

namespace {
// Whether one of the batches `bs` holds a decision of `txid`.
bool batches_hold(const std::vector<etcd::KeyValue>& bs, const std::string& txid) {
  for (const auto& kv : bs) {
    auto ds = decode_batch(kv.value);
    if (!ds) continue;  // not a batch: it decides nothing
    for (const auto& d : *ds)
      if (d.first == txid) return true;
  }
  return false;
}
}  // namespace

void EtcdDecisions::lookup(const std::string& txid, const std::string& owner,
                           std::function<void(Result<StoreFacts>)> cb) {
  etcd::Txn read;
  std::string batches = batches_of(owner);
  read.success.push_back(etcd::Op::range(batches, etcd::prefix_end(batches)));
  read.success.push_back(etcd::Op::get(abort_key(txid)));
  read.success.push_back(etcd::Op::get(leader_key(owner)));
  m_client->txn(read, [alive = m_alive, txid, cb = std::move(cb)](Result<etcd::TxnResult> r) {
    if (!*alive) return;
    if (!r) return cb(r.status());
    if (r->results.size() != 3) return cb(Status::error("UNAVAILABLE", "etcd: short reply"));
    StoreFacts f;
    f.committed = batches_hold(r->results[0], txid);
    f.aborted = !r->results[1].empty();
    f.owner_alive = !r->results[2].empty();
    cb(f);
  });
}

void EtcdDecisions::settle(const std::string& txid, const std::string& owner, bool fenced,
                           std::function<void(Result<SettleResult>)> cb) {
  std::string batches = batches_of(owner);
  etcd::Txn t;
  t.compare.push_back(etcd::Compare::absent(abort_key(txid)));
  if (fenced) t.compare.push_back(etcd::Compare::absent(leader_key(owner)));
  t.success.push_back(etcd::Op::put(abort_key(txid), k_abort));
  t.success.push_back(etcd::Op::range(batches, etcd::prefix_end(batches)));
  t.failure.push_back(etcd::Op::get(abort_key(txid)));
  t.failure.push_back(etcd::Op::range(batches, etcd::prefix_end(batches)));
  m_client->txn(t, [alive = m_alive, txid, cb = std::move(cb)](Result<etcd::TxnResult> r) {
    if (!*alive) return;
    if (!r) return cb(r.status());
    if (r->results.size() != 2) return cb(Status::error("UNAVAILABLE", "etcd: short reply"));
    if (batches_hold(r->results[1], txid)) return cb(SettleResult::committed);
    if (r->succeeded) return cb(SettleResult::settled);
    if (!r->results[0].empty()) return cb(SettleResult::aborted);
    cb(SettleResult::owner_back);  // the owner came back meanwhile: it decides
  });
}

void EtcdDecisions::end(const std::string& txid) {
  auto it = m_batch_of.find(txid);
  if (it == m_batch_of.end()) return;
  std::string key = std::move(it->second);
  m_batch_of.erase(it);
  auto o = m_open.find(key);
  if (o == m_open.end() || --o->second > 0) return;
  m_open.erase(o);
  m_ends.push_back(std::move(key));
  if (m_ends.size() >= k_max_ops) return flush_ends();
  if (m_end_timer_set || m_stopped) return;
  // Ended batches wait a little for a decision batch to carry them.
  m_end_timer_set = true;
  m_end_timer.expires_after(std::chrono::milliseconds(k_end_delay_ms));
  m_end_timer.async_wait([this, alive = m_alive](boost::system::error_code ec) {
    if (ec || !*alive) return;
    m_end_timer_set = false;
    flush_ends();
  });
}

void EtcdDecisions::flush_ends() {
  if (m_ends_in_flight || m_ends.empty() || m_stopped) return;
  etcd::Txn t;
  size_t n = std::min(m_ends.size(), k_max_ops);
  for (size_t i = 0; i < n; ++i) t.success.push_back(etcd::Op::del(m_ends[i]));
  m_ends.erase(m_ends.begin(), m_ends.begin() + static_cast<std::ptrdiff_t>(n));
  m_ends_in_flight = true;
  m_client->txn(t, [this, alive = m_alive](Result<etcd::TxnResult> r) {
    if (!*alive) return;
    m_ends_in_flight = false;
    if (!r) log::debug("decision store: ended batches not removed: {}", r.status().message());
    if (m_ends.size() >= k_max_ops) flush_ends();
  });
}

}  // namespace tpc::leader
