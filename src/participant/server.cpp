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

Server::Server(asio::io_context& io, Config cfg)
    : m_io(io), m_cfg(std::move(cfg)), m_started_ms(now_ms()), m_tick(io) {
  txlog::make_dirs(m_cfg.data_dir);
  lock_data_dir(m_cfg.data_dir);
  m_store = std::make_unique<store::SqliteStore>(m_cfg.data_dir + "/data.db");
  m_core = std::make_unique<Core>(*m_store);
  std::vector<txlog::Record> recovered;
  m_log = txlog::Log::open(txlog::open_posix_file(m_cfg.data_dir + "/txlog"),
                           m_cfg.data_dir + "/txlog", &recovered);
  for (auto& r : recovered) m_core->recover(r);
  Status redo;
  auto in_doubt = m_core->finish_recovery(now_ms(), &redo);
  if (!redo) throw Error("cannot redo committed transactions: " + redo.to_string());
  for (auto& txid : in_doubt) m_queries[txid] = Query{};  // ask at once
  log::info("recovered {} log records; {} commits redone; {} transactions in doubt",
            recovered.size(), m_core->redone(), in_doubt.size());
  protocol::SessionConfig sc{"participant", m_cfg.id, m_cfg.max_line, m_cfg.max_connections};
  m_server = std::make_unique<protocol::Server>(
      io, m_cfg.bind, m_cfg.port, sc, [this](const std::string& l, Reply r) { handle(l, r); });
  log::info("participant {} listening on {}:{}, data in {}", m_cfg.id, m_cfg.bind, port(),
            m_cfg.data_dir);
  resolve_tick();
}

Server::~Server() { stop(); }

void Server::stop() {
  if (m_stopped) return;
  m_stopped = true;
  m_tick.cancel();
  m_server->stop();
  for (auto& [a, l] : m_leaders) l->stop();
}

void Server::handle(const std::string& line, Reply reply) {
  auto t = protocol::split(line);
  auto verb = t[0];
  auto need = [&](size_t n) {
    if (t.size() >= n) return true;
    reply.send(fmt::format("ERR PROTO {} needs {} arguments", verb, n - 1));
    return false;
  };
  if (verb == "PREPARE") {
    if (need(5)) on_prepare(t, reply);
  } else if (verb == "COMMIT" || verb == "ABORT") {
    if (!need(2)) return;
    std::string txid(t[1]);
    if (verb == "COMMIT")
      on_commit(txid, reply);
    else
      on_abort(txid, reply);
  } else if (verb == "READ") {
    if (!need(2)) return;
    auto key = protocol::unescape(t[1]);
    if (!key) return reply.send("ERR PROTO " + key.status().message());
    on_read(*key, reply, now_ms() + m_cfg.read_timeout_ms);
  } else if (verb == "STATS") {
    on_stats(reply);
  } else if (verb == "INDOUBT") {
    on_indoubt(reply);
  } else if (verb == "RESOLVE") {
    if (!need(3)) return;
    if (t[2] != "commit" && t[2] != "abort")
      return reply.send("ERR PROTO usage: RESOLVE TXID commit|abort");
    on_resolve(std::string(t[1]), t[2] == "commit", reply);
  } else {
    reply.send(LineBuilder("ERR")
                   .raw("PROTO")
                   .text("unknown command " + escape(verb) + " (participant)")
                   .str());
  }
}

void Server::on_prepare(const std::vector<std::string_view>& t, Reply reply) {
  std::string txid(t[1]), leader(t[2]), leader_addr(t[3]);
  auto ops = protocol::parse_ops(t, 4);
  if (!ops) return reply.send("ERR PROTO " + ops.status().message());
  auto r = m_core->prepare(txid, leader, leader_addr, std::move(*ops), wall_ms());
  switch (r.kind) {
    case Core::PrepareResult::vote_no:
      log::debug("vote NO {}: {} {}", txid, r.code, r.detail);
      reply.send(LineBuilder("NO").raw(r.code).text(r.detail).str());
      return;
    case Core::PrepareResult::vote_yes:
      reply.send("YES");
      return;
    case Core::PrepareResult::wait_durable:
      m_vote_waiters[txid].push_back(reply);
      return;
    case Core::PrepareResult::log_then_vote:
      break;
  }
  m_vote_waiters[txid].push_back(reply);
  if (int e = failpoint::hit("participant/beforePrepareFsync", txid))
    fatal(fmt::format("prepare of {} failed: {}", txid, std::strerror(e)));
  int64_t forced_at = now_us();
  m_log->append(k_rec_prepared, std::move(r.record), true, [this, txid, forced_at] {
    asio::post(m_io, [this, txid, forced_at] {
      if (int e = failpoint::hit("participant/afterPrepareFsync", txid))
        fatal(fmt::format("after prepare of {}: {}", txid, std::strerror(e)));
      on_prepare_durable(txid, now_us() - forced_at);
    });
  });
}

void Server::on_prepare_durable(const std::string& txid, int64_t force_us) {
  bool yes = m_core->prepare_durable(txid);
  auto it = m_vote_waiters.find(txid);
  if (it == m_vote_waiters.end()) return;
  auto waiters = std::move(it->second);
  m_vote_waiters.erase(it);
  // YES carries how long the log force took, for `tpc client --trace`.
  for (auto& w : waiters)
    w.send(yes ? fmt::format("YES {}", force_us) : "NO ABORTED transaction was aborted meanwhile");
  if (yes && failpoint::detail::g_any)
    asio::post(m_io, [txid] { failpoint::hit("participant/afterVoteSend", txid); });
}

void Server::on_commit(const std::string& txid, Reply reply) {
  auto* p = m_core->find(txid);
  if (!p) {
    if (auto h = m_core->heuristic(txid); h && !*h)
      log::error(
          "HEURISTIC MISMATCH: {} was aborted by hand (resolve --force) but its leader "
          "decided commit; the other participants committed it",
          txid);
    // Already applied (or never prepared here): acknowledge, apply nothing.
    return reply.send("ACK");
  }
  if (!p->durable) {
    // Cannot happen with a correct leader: it commits only after our YES, sent after the force.
    log::error("COMMIT {} before its prepare is durable; refusing", txid);
    return reply.send("ERR STATE prepare not yet durable");
  }
  // Acknowledged once the COMMITTED record is durable.
  m_commit_waiters[txid].push_back(reply);
  if (p->applied) return;  // already being committed
  // Applied in the next batch: COMMITs that arrive while the store is busy share its work.
  m_commit_queue.push_back(txid);
  if (!m_apply_scheduled) {
    m_apply_scheduled = true;
    asio::post(m_io, [this] { apply_batch(); });
  }
}

void Server::apply_batch() {
  m_apply_scheduled = false;
  auto batch = std::move(m_commit_queue);
  m_commit_queue.clear();
  if (batch.empty() || m_stopped) return;
  for (auto& txid : batch) failpoint::hit("participant/beforeApplyCommit", txid);
  if (Status st = m_store->begin_batch(); !st) fatal("cannot apply commits: " + st.to_string());
  std::vector<std::string> applied;
  for (auto& txid : batch) {
    auto f = m_core->apply_commit(txid);
    if (!f.status) fatal("cannot apply commit of " + txid + ": " + f.status.to_string());
    if (f.known) applied.push_back(txid);
  }
  if (Status st = m_store->end_batch(); !st) fatal("cannot apply commits: " + st.to_string());
  // The COMMITTED record is the durable proof of the commit (the store is not forced): it
  // shares the log's group fsync with concurrent PREPARED records. Only after it is durable
  // are the locks released and the leader told.
  for (auto& txid : applied) {
    failpoint::hit("participant/afterApplyCommit", txid);
    m_log->append_lazy(k_rec_committed, txlog::Encoder().str(txid).data(), [this, txid] {
      asio::post(m_io, [this, txid] { on_committed_durable(txid); });
    });
  }
}

void Server::on_committed_durable(const std::string& txid) {
  auto f = m_core->finish_commit(txid);
  m_queries.erase(txid);
  log::debug("committed {}", txid);
  auto it = m_commit_waiters.find(txid);
  if (it != m_commit_waiters.end()) {
    for (auto& r : it->second) r.send("ACK");
    m_commit_waiters.erase(it);
  }
  wake_readers(f.released);
  maybe_compact();
}

void Server::on_abort(const std::string& txid, Reply reply) {
  if (auto* p = m_core->find(txid); p && p->applied) {
    log::error("ABORT {} after its COMMIT was applied: the leader contradicts itself; ignored",
               txid);
    return reply.send("ERR STATE transaction is committing");
  }
  if (!m_core->find(txid))
    if (auto h = m_core->heuristic(txid); h && *h)
      log::error(
          "HEURISTIC MISMATCH: {} was committed by hand (resolve --force) but its leader "
          "decided abort",
          txid);
  auto f = m_core->abort(txid);
  if (f.known) {
    m_log->append(k_rec_aborted, txlog::Encoder().str(txid).data(), false);
    m_queries.erase(txid);
    maybe_compact();
    log::debug("aborted {}", txid);
    wake_readers(f.released);
  }
  // A vote still waiting for its force will answer NO (the core no longer knows the txid).
  reply.send("ACK");
}

void Server::on_read(const std::string& key, Reply reply, int64_t deadline_ms) {
  auto r = m_core->read(key);
  switch (r.kind) {
    case Core::ReadResult::found:
      return reply.send(LineBuilder("VALUE").arg(r.value).str());
    case Core::ReadResult::absent:
      return reply.send("NOTFOUND");
    case Core::ReadResult::error:
      return reply.send(LineBuilder("ERR").raw("STORAGE").text(r.status.message()).str());
    case Core::ReadResult::blocked:
      break;
  }
  if (now_ms() >= deadline_ms) {
    return reply.send(LineBuilder("ERR")
                          .raw("INDOUBT")
                          .text(fmt::format("key {} has a prepared write of {} whose outcome is "
                                            "not known yet",
                                            escape(key), r.blocker))
                          .str());
  }
  m_readers.emplace(key, Reader{reply, deadline_ms});
  // Wake at the deadline to answer INDOUBT if nothing released the key.
  auto timer = std::make_shared<asio::steady_timer>(m_io);
  timer->expires_after(std::chrono::milliseconds(deadline_ms - now_ms() + 1));
  timer->async_wait([this, timer, key](boost::system::error_code) {
    if (m_stopped) return;
    wake_readers({key});
  });
}

void Server::wake_readers(const std::vector<std::string>& keys) {
  for (auto& key : keys) {
    auto range = m_readers.equal_range(key);
    std::vector<Reader> ready;
    for (auto it = range.first; it != range.second;) {
      ready.push_back(it->second);
      it = m_readers.erase(it);
    }
    for (auto& r : ready)
      if (r.reply.connected()) on_read(key, r.reply, r.deadline_ms);
  }
}

void Server::on_stats(Reply reply) {
  auto ls = m_log->stats();
  reply.send(
      fmt::format("STATS id={} keys={} committed={} aborted={} in_doubt={} heuristic={} "
                  "log_bytes={} log_syncs={} uptime_ms={}",
                  m_cfg.id, m_store->key_count(), m_core->committed_count(),
                  m_core->aborted_count(), m_core->prepared().size(), m_core->heuristics().size(),
                  ls.bytes, ls.syncs, now_ms() - m_started_ms));
}

// --- in-doubt resolution: a prepared participant never decides alone; it asks the leader.

}  // namespace tpc::participant
