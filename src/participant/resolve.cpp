// The participant server, part two: transactions in doubt (asking their leader, listing
// them, an operator's heuristic decision) and log rewrites.
#include "participant/server.h"

#include <set>

#include <fmt/format.h>

#include "common/failpoint.h"
#include "common/logging.h"
#include "common/util.h"
#include "txlog/file.h"

namespace tpc::participant {

namespace asio = boost::asio;
using protocol::escape;
using protocol::LineBuilder;
using protocol::Reply;

void Server::on_indoubt(Reply reply) {
  // INDOUBT COUNT { TXID LEADER-ID LEADER-ADDR AGE-MS NKEYS KEY... }
  LineBuilder b("INDOUBT");
  size_t n = 0;
  for (auto& [txid, p] : m_core->prepared()) n += p.durable && !p.applied;
  b.num(static_cast<long long>(n));
  int64_t now = wall_ms();
  for (auto& [txid, p] : m_core->prepared()) {
    if (!p.durable || p.applied) continue;
    std::set<std::string> keys;
    for (auto& op : p.ops) keys.insert(op.key);
    b.raw(txid).raw(p.leader).raw(p.leader_addr);
    b.num(p.prepared_at_ms <= now ? now - p.prepared_at_ms : 0);
    b.num(static_cast<long long>(keys.size()));
    for (auto& k : keys) b.arg(k);
  }
  reply.send(b.str());
}

void Server::on_resolve(const std::string& txid, bool commit, Reply reply) {
  auto* p = m_core->find(txid);
  if (!p || !p->durable || p->applied)
    return reply.send("ERR NOTFOUND " + txid + " is not in doubt here");
  log::warn("HEURISTIC decision by an operator: {} {} without its leader",
            commit ? "commit" : "abort", txid);
  std::string rec = txlog::Encoder().str(txid).u8(commit ? 1 : 0).data();
  m_log->append(k_rec_heuristic, std::move(rec), true, [this, txid, commit, reply] {
    asio::post(m_io, [this, txid, commit, reply] {
      m_core->record_heuristic(txid, commit);
      auto* q = m_core->find(txid);
      if (!q || q->applied) return reply.send("ACK");  // resolved meanwhile
      if (commit) return on_commit(txid, reply);       // ACK once durable
      Reply none;
      on_abort(txid, none);
      reply.send("ACK");
    });
  });
}

void Server::maybe_compact() {
  if (!m_log->wants_rewrite(m_cfg.log_compact_bytes)) return;
  // Commits the log is about to forget must be durable in the store first.
  if (Status st = m_store->make_durable(); !st)
    fatal("cannot checkpoint the store: " + st.to_string());
  // Keep the PREPARED record of every transaction not finished yet (also those whose force
  // is still queued: the rewrite is ordered after it, and must not lose it).
  std::vector<txlog::Record> live;
  for (auto& [txid, p] : m_core->prepared()) live.push_back({k_rec_prepared, encode_prepared(p)});
  // Heuristic decisions stay visible for good (they are few, and an operator must see them).
  for (auto& [txid, commit] : m_core->heuristics())
    live.push_back({k_rec_heuristic, txlog::Encoder().str(txid).u8(commit ? 1 : 0).data()});
  size_t n = live.size();
  // Transactions applied so far are not in `live`: once the rewrite is durable, no PREPARED
  // record of theirs remains, and their "applied" marks can go.
  uint64_t applied_upto = m_store->applied_seq();
  m_log->rewrite(std::move(live), txlog::Log::replace_file(m_cfg.data_dir + "/txlog"),
                 [this, n, applied_upto] {
                   asio::post(m_io, [this, n, applied_upto] {
                     if (Status st = m_store->prune_applied(applied_upto); !st)
                       fatal("cannot prune applied marks: " + st.to_string());
                     log::info("log compacted: {} live records kept, {} bytes", n,
                               m_log->stats().bytes);
                   });
                 });
}

void Server::resolve_tick() {
  if (m_stopped) return;
  int64_t now = now_ms(), wall = wall_ms();
  for (auto& [txid, p] : m_core->prepared()) {
    if (!p.durable || p.applied) continue;
    if (!p.recovered && wall - p.prepared_at_ms < m_cfg.resolve_after_ms &&
        wall >= p.prepared_at_ms)
      continue;
    auto& q = m_queries[txid];
    if (!q.in_flight && now >= q.next_ms) ask_leader(txid);
  }
  m_tick.expires_after(std::chrono::milliseconds(100));
  m_tick.async_wait([this](boost::system::error_code ec) {
    if (!ec) resolve_tick();
  });
}

std::shared_ptr<protocol::Link> Server::leader_link(const std::string& addr) {
  auto it = m_leaders.find(addr);
  if (it != m_leaders.end()) return it->second;
  std::string host;
  uint16_t port;
  if (!parse_host_port(addr, &host, &port)) return nullptr;
  auto link = std::make_shared<protocol::Link>(
      m_io, host, port, fmt::format("HELLO {} participant {}", protocol::k_version, m_cfg.id),
      m_cfg.max_line);
  link->start();
  m_leaders[addr] = link;
  return link;
}

void Server::ask_leader(const std::string& txid) {
  auto* p = m_core->find(txid);
  if (!p) return;
  auto& q = m_queries[txid];
  auto link = leader_link(p->leader_addr);
  q.next_ms = now_ms() + q.backoff_ms;
  q.backoff_ms = std::min(q.backoff_ms * 2, m_cfg.resolve_max_backoff_ms);
  if (!link) {
    log::error("in-doubt {}: bad leader address {}", txid, p->leader_addr);
    return;
  }
  if (!link->up()) return;  // retried on a later tick, once the leader is back
  if (failpoint::hit("participant/askOutcome", txid)) return;  // query lost
  q.in_flight = true;
  link->request("OUTCOME " + txid, [this, txid](Result<std::string> r) {
    auto it = m_queries.find(txid);
    if (it != m_queries.end()) it->second.in_flight = false;
    if (!r) return;
    auto t = protocol::split(*r);
    if (t.empty()) return;
    if (t[0] == "COMMITTED")
      finish_outcome(txid, true);
    else if (t[0] == "ABORTED")
      finish_outcome(txid, false);
    // PENDING: the leader is still collecting votes; ask again later.
  });
}

void Server::finish_outcome(const std::string& txid, bool commit) {
  if (!m_core->find(txid)) return;
  log::info("in-doubt {} resolved by its leader: {}", txid, commit ? "commit" : "abort");
  Reply none;
  if (commit)
    on_commit(txid, none);
  else
    on_abort(txid, none);
}

}  // namespace tpc::participant
