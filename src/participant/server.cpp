#include "participant/server.h"

#include "client/connection.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include <fmt/format.h>

#include "common/logging.h"
#include "common/util.h"
#include "membership/membership.h"
#include "participant/restore.h"
#include "tls/certs.h"
#include "txlog/file.h"

namespace tpc::participant {

namespace asio = boost::asio;
using protocol::escape;
using protocol::LineBuilder;
using protocol::Reply;

Server::Server(asio::io_context& io, Config cfg) : m_io(io), m_cfg(std::move(cfg)) {
  // The port first: a participant that cannot listen writes nothing (connections wait in the
  // backlog until recovery is done and the event loop runs).
  m_host = std::make_unique<node::Host>(io, node::host_config("participant", m_cfg), m_ident,
                                        [this] { step(ev::Tick{}); });
  m_host->serve(verbs());
  client::Connection::use_tls(m_cfg.tls);  // restores read from replicas over it
  if (!m_cfg.restore_from.empty()) restore_from_replica(m_cfg, m_cfg.restore_from, std::cout);
  if (!m_cfg.restore_backup.empty()) restore_from_backup(m_cfg, m_cfg.restore_backup, std::cout);
  txlog::make_dirs(m_cfg.data_dir);
  lock_data_dir(m_cfg.data_dir);
  m_ident = node::open_identity(m_cfg.data_dir, "participant", m_cfg.cluster_id);
  {
    std::ifstream in(m_cfg.data_dir + "/membership");
    std::getline(in, m_membership);
  }
  m_store = std::make_unique<store::SqliteStore>(m_cfg.data_dir + "/data.db", m_cfg.store_hold_ms);
  CoreConfig cc;
  cc.id = m_cfg.id;
  cc.read_timeout_ms = m_cfg.read_timeout_ms;
  cc.resolve_after_ms = m_cfg.resolve_after_ms;
  cc.resolve_max_backoff_ms = m_cfg.resolve_max_backoff_ms;
  m_core = std::make_unique<Core>(std::move(cc), *m_store);
  m_exec = std::make_unique<Executor>(*m_core, static_cast<Io&>(*this));
  std::vector<txlog::Record> recovered;
  m_log = txlog::Log::open(txlog::open_posix_file(m_cfg.data_dir + "/txlog"),
                           m_cfg.data_dir + "/txlog", &recovered, log_format());
  for (auto& r : recovered) m_core->recover(r);
  // What a crashed process committed to SQLite may not be durable yet (synchronous=NORMAL):
  // make it so before recovery counts those commits as done and acknowledges them.
  if (Status st = m_store->make_durable(); !st)
    throw Error("cannot make the store durable: " + st.to_string());
  auto a = m_core->start(now_ms(), wall_ms(), m_store->applied_txids());
  m_exec->execute(a);  // the redo is applied here, before anyone is served
  log::info("recovered {} log records; {} commits redone; {} transactions in doubt",
            recovered.size(), m_core->redone(), m_core->prepared().size());
  commit_store_when_due();
  if (m_host->metrics()) start_metrics(io);
  log::info("participant {} (node {}, cluster {}) listening on {}:{}, data in {}", m_cfg.id,
            m_ident.node, m_ident.cluster.empty() ? "not joined yet" : m_ident.cluster, m_cfg.bind,
            port(), m_cfg.data_dir);
}

Server::~Server() { stop(); }

void Server::commit_store_when_due() {
  if (m_cfg.store_hold_ms <= 0) return;
  m_host->after(std::max(1, m_cfg.store_hold_ms / 2), [this] {
    if (Status st = m_store->commit_due(); !st) fatal("cannot commit the store: " + st.to_string());
    commit_store_when_due();
  });
}

void Server::stop() {
  if (m_host->stopped()) return;
  if (m_exec) m_exec->stop();
  m_host->stop();
  for (auto& [a, l] : m_leaders) l->stop();
}

void Server::start_metrics(boost::asio::io_context& io) {
  auto& m = *m_host->metrics();
  auto& r = m.registry;
  m.watch(*m_log);
  m.connections([this] { return static_cast<double>(m_host->connections()); });
  m_votes_yes = &r.counter("tpc_prepares_total", "PREPAREs answered, by vote.", "vote=\"yes\"");
  m_votes_no = &r.counter("tpc_prepares_total", "PREPAREs answered, by vote.", "vote=\"no\"");
  m_conflicts = &r.counter("tpc_conflicts_total",
                           "PREPAREs refused because a key was locked by another transaction.");
  m_prepare_seconds = &r.histogram(
      "tpc_prepare_seconds", "PREPARE received to vote sent (locks, checks, log force).",
      metrics::latency_buckets());
  // Gauges and counters read the one snapshot taken at the scrape (STATS's).
  r.before_render([this] { m_scraped = stats(); });
  auto read = [this](int64_t node::Stats::*f) {
    return [this, f] { return static_cast<double>(m_scraped.*f); };
  };
  r.counter_fn("tpc_commits_total", "Transactions committed here.", read(&node::Stats::committed));
  r.counter_fn("tpc_aborts_total", "Prepared transactions aborted here.",
               read(&node::Stats::aborted));
  r.gauge("tpc_in_doubt", "Transactions prepared here, their outcome not known yet.",
          [this] { return static_cast<double>(m_scraped.in_doubt()); });
  r.gauge("tpc_in_doubt_oldest_seconds", "Age of the oldest transaction in doubt here (0: none).",
          [this] { return static_cast<double>(m_scraped.oldest_in_doubt_ms) / 1000.0; });
  r.gauge("tpc_heuristic_decisions", "Heuristic decisions (resolve --force) recorded here.",
          read(&node::Stats::heuristic));
  r.gauge("tpc_keys", "Keys stored here.", read(&node::Stats::keys));
  m.serve(io, m_cfg.metrics_addr, [] { return std::string(); });
  log::info("metrics on http://{}/metrics", m_cfg.metrics_addr);
}

// The participant's verbs (docs/protocol.md) and who may send each (docs/security.md). A
// leader must also have had its JOIN accepted on the connection for PREPARE, COMMIT, ABORT
// and a copy's SYNCBEGIN and SYNC: the leader that admitted this participant. An operator
// decides only with RESOLVE (recorded, and reported to the leader): never with a bare COMMIT
// or ABORT.
std::vector<node::Verb> Server::verbs() {
  using node::Tokens;
  auto fail = [](const Reply& reply, const Status& s) {
    reply.send(LineBuilder("ERR").raw(s.code()).text(s.message()).str());
  };
  // A verb whose request decodes into one event of the core.
  auto event = [&](std::string_view name, std::string_view roles, bool join, auto decode) {
    return node::Verb{name, roles, join, [this, fail, decode](const Tokens& t, Reply reply) {
                        auto e = decode(t, reply);
                        if (!e) return fail(reply, e.status());
                        step(std::move(*e));
                      }};
  };
  const char* data = "leader client admin";
  return {
      event("PREPARE", "leader", true,
            [this](const Tokens& t, const Reply& r) -> Result<Event> {
              auto m = protocol::decode_prepare(t);
              if (!m) return m.status();
              return Event{ev::Prepare{client(r), std::move(*m), r.peer().node}};
            }),
      event("COMMIT", "leader", true,
            [this](const Tokens& t, const Reply& r) -> Result<Event> {
              auto txid = protocol::decode_txid_arg(t);
              if (!txid) return txid.status();
              return Event{ev::Commit{client(r), std::move(*txid), r.peer().node}};
            }),
      event("ABORT", "leader", true,
            [this](const Tokens& t, const Reply& r) -> Result<Event> {
              auto txid = protocol::decode_txid_arg(t);
              if (!txid) return txid.status();
              return Event{ev::Abort{client(r), std::move(*txid), r.peer().node}};
            }),
      event("READ", data, false,
            [this](const Tokens& t, const Reply& r) -> Result<Event> {
              auto m = protocol::decode_read(t);
              if (!m) return m.status();
              return Event{ev::Read{client(r), std::move(m->key), m->epoch}};
            }),
      event("SCAN", data, false,
            [this](const Tokens& t, const Reply& r) -> Result<Event> {
              auto m = protocol::decode_scan(t);
              if (!m) return m.status();
              return Event{ev::Scan{client(r), std::move(*m), r.peer().node}};
            }),
      event("SCANCHECK", data, false,
            [this](const Tokens& t, const Reply& r) -> Result<Event> {
              auto m = protocol::decode_scan_check(t);
              if (!m) return m.status();
              return Event{ev::ScanCheck{client(r), std::move(m->watch), r.peer().node}};
            }),
      event("SYNCBEGIN", "leader", true,
            [this](const Tokens& t, const Reply& r) -> Result<Event> {
              auto m = protocol::decode_sync_begin(t);
              if (!m) return m.status();
              return Event{ev::SyncBegin{client(r), std::move(*m)}};
            }),
      event("SYNC", "leader", true,
            [this](const Tokens& t, const Reply& r) -> Result<Event> {
              auto m = protocol::decode_sync(t);
              if (!m) return m.status();
              return Event{ev::Sync{client(r), std::move(*m)}};
            }),
      event("RESOLVE", "admin", false,
            [this](const Tokens& t, const Reply& r) -> Result<Event> {
              if ((t.size() != 3 && t.size() != 4) || (t[2] != "commit" && t[2] != "abort") ||
                  (t.size() == 4 && t[3] != "relayed"))
                return Status::error("PROTO", "usage: RESOLVE TXID commit|abort [relayed]");
              if (Status s = protocol::check_txid(t[1]); !s) return s;
              return Event{
                  ev::Resolve{client(r), std::string(t[1]), t[2] == "commit", t.size() == 4}};
            }),
      {"JOIN", "leader", false, [this](const Tokens& t, Reply r) { on_join(t, r); }},
      {"MEMBERSHIP", "participant admin", false,
       [this, fail](const Tokens&, Reply r) {
         if (m_membership.empty())
           return fail(r, Status::error("STATE", "this participant has not joined a cluster yet"));
         r.send("MEMBERSHIP" + m_membership.substr(4));
       }},
      {"SNAPSHOT", "participant admin", false,
       [this](const Tokens& t, Reply r) { on_snapshot(t, r); }},
      {"BACKUP", "admin", false, [this](const Tokens& t, Reply r) { on_backup(t, r); }},
      {"FETCH", "admin", false, [this](const Tokens& t, Reply r) { on_backup(t, r); }},
      {"DROP", "admin", false, [this](const Tokens& t, Reply r) { on_backup(t, r); }},
      {"STATS", "leader participant client admin", false,
       [this](const Tokens&, Reply r) { r.send(node::encode(stats())); }},
      {"INDOUBT", "leader participant client admin", false,
       [this](const Tokens&, Reply r) { on_indoubt(r); }},
  };
}

void Server::on_join(const std::vector<std::string_view>& t, Reply reply) {
  auto fail = [&](const char* code, const std::string& why) {
    log::error("refusing JOIN: {}", why);
    reply.send(LineBuilder("ERR").raw(code).text(why).str());
  };
  auto m = node::decode_join(t);
  if (!m) return fail("PROTO", m.status().message());
  std::optional<node::Membership> was;
  if (!m_membership.empty())
    if (auto w = node::decode_join(protocol::split(m_membership))) was = std::move(*w);
  const auto& peer = reply.peer();
  if (Status s = node::judge_join(m_ident, was ? &*was : nullptr, m_core->epoch(), *m, peer.cert,
                                  peer.cert_hosts, peer.advertise);
      !s)
    return fail(s.code().c_str(), s.message());
  auto placement = node::placement_of(*m);
  if (!placement) return fail("PROTO", placement.status().message());
  if (m_ident.cluster.empty()) {
    m_ident.cluster = m->cluster;
    node::save_identity(m_cfg.data_dir, m_ident);
    log::info("joined cluster {}", m_ident.cluster);
  }
  reply.peer().joined = true;
  std::string host;
  uint16_t port;
  if (const std::string& adv = reply.peer().advertise; parse_host_port(adv, &host, &port))
    step(ev::LeaderSeen{adv});
  step(ev::Members{m->slot, std::move(*placement), m->epoch});
  std::string line = node::encode_join(*m);
  if (line != m_membership) {
    txlog::write_file_atomic(m_cfg.data_dir + "/membership", line + "\n");
    m_membership = line;
  }
  reply.send("ACK");
}

// SNAPSHOT SLOT prepared       -> PREPARED COUNT {PREPARE-LINE}   (each line one escaped token)
// SNAPSHOT SLOT keys AFTER     -> KEYS NEXT MORE|END COUNT {KEY VALUE}
// What participant SLOT of the membership owns, for its replacement (restore.h): the prepared
// transactions' ops on its keys, and its keys a page at a time in key order. Keys a
// participant owns cannot change while it is out of the cluster (every owner must vote), so
// pages read at different times agree; the replacement asks for the prepared ones first.
void Server::on_snapshot(const std::vector<std::string_view>& t, Reply reply) {
  auto fail = [&](const char* code, const std::string& why) {
    reply.send(LineBuilder("ERR").raw(code).text(why).str());
  };
  if (m_membership.empty()) return fail("STATE", "this participant has not joined a cluster yet");
  auto m = node::decode_join(protocol::split(m_membership));
  if (!m) return fail("STATE", "membership unreadable: " + m.status().message());
  auto slot = t.size() >= 3 ? parse_int(t[1]) : std::nullopt;
  if (!slot || *slot < 0 || static_cast<size_t>(*slot) >= m->members.size() ||
      !(t[2] == "prepared" ? t.size() == 3 : t[2] == "keys" && t.size() == 4))
    return fail("PROTO", "usage: SNAPSHOT SLOT prepared | SNAPSHOT SLOT keys AFTER");
  auto placement = node::placement_of(*m);
  if (!placement) return fail("STATE", "membership unreadable: " + placement.status().message());
  size_t want = static_cast<size_t>(*slot);
  auto owned = [&](const std::string& key) {
    auto o = placement->owners(key);
    return std::find(o.begin(), o.end(), want) != o.end();
  };
  if (t[2] == "prepared") {
    std::vector<std::string> lines;
    for (auto& [txid, p] : m_core->prepared()) {
      if (!p.durable) continue;
      protocol::Prepare msg{txid, p.leader, p.leader_addr, {}, p.rid};
      for (auto& op : p.ops)
        if (owned(op.key)) msg.ops.push_back(op);
      if (!msg.ops.empty()) lines.push_back(protocol::encode(msg));
    }
    LineBuilder b("PREPARED");
    b.num(static_cast<long long>(lines.size()));
    for (auto& l : lines) b.value(l);
    return reply.send(b.str());
  }
  auto after = protocol::unescape(t[3]);
  if (!after) return fail("PROTO", after.status().message());
  std::string cursor = *after;
  store::Store::KeyValues mine;
  size_t bytes = 0, budget = m_cfg.max_message / 4;
  bool more = true;
  // Scan until the page of owned keys is full or the store ends (bounded work per request).
  for (int pages = 0; pages < 64 && bytes < budget; ++pages) {
    auto kv = m_store->scan(cursor, 1000, budget - bytes);
    if (!kv) return fail("STORAGE", kv.status().message());
    for (auto& [k, v] : *kv) {
      cursor = k;
      if (!owned(k)) continue;
      bytes += k.size() + v.size();
      mine.emplace_back(k, v);
    }
    if (kv->size() < 1000) {
      // A short page: the store ended, or the byte budget cut it (then more follow).
      auto next = m_store->scan(cursor, 1, SIZE_MAX);
      if (!next) return fail("STORAGE", next.status().message());
      more = !next->empty();
      break;
    }
  }
  LineBuilder b("KEYS");
  b.arg(cursor).raw(more ? "MORE" : "END").num(static_cast<long long>(mine.size()));
  for (auto& [k, v] : mine) b.arg(k).value(v);
  reply.send(b.str());
}

// BACKUP             -> BACKUP BYTES KEYS   a consistent copy of the store, DIR/backup.db
// FETCH OFFSET LEN   -> DATA MORE|END BYTES  (a data block; LEN at most 1 MiB)
// DROP               -> ACK                  removes the copy
// The copy is made at once (SQLite's online backup, on this thread: no commit lands during
// it); the backup client pauses the leader first, so every participant's copy holds the same
// transactions (docs/operations.md).
void Server::on_backup(const std::vector<std::string_view>& t, Reply reply) {
  auto fail = [&](const char* code, const std::string& why) {
    reply.send(LineBuilder("ERR").raw(code).text(why).str());
  };
  std::string path = m_cfg.data_dir + "/backup.db";
  if (t[0] == "BACKUP") {
    if (t.size() != 1) return fail("PROTO", "usage: BACKUP");
    if (Status s = m_store->backup_to(path); !s) return fail("STORAGE", s.message());
    std::error_code ec;
    auto bytes = std::filesystem::file_size(path, ec);
    if (ec) return fail("STORAGE", ec.message());
    log::info("backup: copied the store ({} keys, {} bytes) to {}", m_store->key_count(), bytes,
              path);
    return reply.send(fmt::format("BACKUP {} {}", bytes, m_store->key_count()));
  }
  if (t[0] == "DROP") {
    std::error_code ec;
    std::filesystem::remove(path, ec);
    return reply.send("ACK");
  }
  auto off = t.size() == 3 ? parse_int(t[1]) : std::nullopt;
  auto len = t.size() == 3 ? parse_int(t[2]) : std::nullopt;
  if (!off || !len || *off < 0 || *len < 1 || *len > (1 << 20))
    return fail("PROTO", "usage: FETCH OFFSET LEN (LEN 1 to 1048576)");
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail("STATE", "no backup copy here (BACKUP first)");
  in.seekg(*off);
  std::string buf(static_cast<size_t>(*len), '\0');
  in.read(buf.data(), *len);
  buf.resize(static_cast<size_t>(in.gcount()));
  bool end = in.eof() || in.peek() == std::ifstream::traits_type::eof();
  reply.send(LineBuilder("DATA").raw(end ? "END" : "MORE").value(buf).str());
}

node::Stats Server::stats() {
  node::Stats s = m_host->stats();
  s.keys = static_cast<int64_t>(m_store->key_count());
  s.committed = static_cast<int64_t>(m_core->committed_count());
  s.aborted = static_cast<int64_t>(m_core->aborted_count());
  s.prepared = static_cast<int64_t>(m_core->prepared().size());
  s.applying = s.prepared - static_cast<int64_t>(m_core->in_doubt());
  int64_t now = wall_ms();
  for (const auto& [txid, p] : m_core->prepared())
    s.oldest_in_doubt_ms = std::max<int64_t>(s.oldest_in_doubt_ms, now - p.prepared_at_ms);
  s.heuristic = static_cast<int64_t>(m_core->forced_heuristics());
  auto ls = m_log->stats();
  s.log_bytes = static_cast<int64_t>(ls.bytes);
  s.log_syncs = static_cast<int64_t>(ls.syncs);
  s.epoch = static_cast<int64_t>(m_core->epoch());
  return s;
}

void Server::on_indoubt(Reply reply) {
  // INDOUBT COUNT { TXID RID|- LEADER-ID LEADER-ADDR AGE-MS NKEYS KEY... }
  LineBuilder b("INDOUBT");
  size_t n = 0;
  for (auto& [txid, p] : m_core->prepared()) n += p.durable && !p.applying;
  b.num(static_cast<long long>(n));
  int64_t now = wall_ms();
  for (auto& [txid, p] : m_core->prepared()) {
    if (!p.durable || p.applying) continue;
    std::set<std::string> keys;
    for (auto& op : p.ops) keys.insert(op.key);
    b.raw(txid).raw(p.rid.empty() ? "-" : p.rid).raw(p.leader).raw(p.leader_addr);
    b.num(p.prepared_at_ms <= now ? now - p.prepared_at_ms : 0);
    b.num(static_cast<long long>(keys.size()));
    for (auto& k : keys) b.arg(k);
  }
  reply.send(b.str());
}

}  // namespace tpc::participant
