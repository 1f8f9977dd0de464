// The leader server, part two: a transaction from the client's request to its END record
// (phase 1, the decision, phase 2, re-sends, traces) and log rewrites.
#include "leader/server.h"

#include <fmt/format.h>

#include "common/failpoint.h"
#include "common/logging.h"
#include "common/util.h"
#include "txlog/file.h"

namespace tpc::leader {

namespace asio = boost::asio;
using protocol::LineBuilder;
using protocol::Reply;

void Server::trace(const std::string& txid, const std::string& event) {
  auto it = m_traces.find(txid);
  if (it == m_traces.end()) return;
  it->second.events.push_back(fmt::format("{} {}", now_us() - it->second.start_us, event));
}

void Server::on_trace(const std::string& id, Reply reply, int64_t deadline_ms) {
  // Accepts a txid or the client's request id.
  std::string txid = id;
  if (auto r = m_trace_rids.find(id); r != m_trace_rids.end()) txid = r->second;
  auto it = m_traces.find(txid);
  if (it == m_traces.end()) return reply.send("ERR NOTFOUND no trace for " + txid);
  // Wait (bounded) until phase 2 finished, so the timeline shows every acknowledgement.
  if (!it->second.finished && now_ms() < deadline_ms) {
    auto timer = std::make_shared<asio::steady_timer>(m_io, std::chrono::milliseconds(5));
    timer->async_wait([this, timer, id, reply, deadline_ms](boost::system::error_code) {
      if (!m_stopped) on_trace(id, reply, deadline_ms);
    });
    return;
  }
  LineBuilder b("TRACE");
  b.num(static_cast<long long>(it->second.events.size()));
  for (auto& e : it->second.events) b.arg(e);
  m_traces.erase(it);
  std::erase_if(m_trace_rids, [&](auto& kv) { return kv.second == txid; });
  reply.send(b.str());
}

void Server::start_txn(const std::string& rid, std::vector<Op> ops, bool want_trace, Reply reply) {
  auto b = m_core->begin(rid, std::move(ops), now_ms(), m_cfg.prepare_timeout_ms);
  if (b.kind == Core::Begin::known) {
    // The same request again (a client retrying after a lost connection): never run twice.
    if (b.outcome == Outcome::committed) return reply.send("COMMITTED " + b.txid);
    if (b.outcome == Outcome::aborted)
      return reply.send("ABORTED DUPLICATE request id already ended as aborted");
    return reply.send("ERR PENDING request " + rid + " is still in progress as " + b.txid);
  }
  const std::string txid = b.txid;
  m_clients[txid] = reply;
  if (want_trace) {
    m_traces[txid] = Trace{now_us(), now_ms(), {}, false};
    if (!rid.empty()) m_trace_rids[rid] = txid;
    trace(txid,
          fmt::format("begin {} at leader {} (incarnation {})", txid, m_cfg.id, m_incarnation));
  }
  for (auto& [p, mine] : b.targets) {
    // Each participant hears only of the keys it owns: it locks, checks and stores those.
    LineBuilder prepare("PREPARE");
    prepare.raw(txid).raw(m_cfg.id).raw(m_cfg.advertise);
    protocol::append_ops(prepare, mine);
    std::string line = prepare.str();
    trace(txid, "PREPARE sent to participant " + m_links[p]->address());
    m_links[p]->request(line, [this, txid, p](Result<std::string> r) {
      if (!r) {
        trace(txid, "no vote from " + m_links[p]->address() + ": " + r.status().message());
        apply_step(txid, m_core->on_vote(txid, p, false, "UNAVAILABLE", r.status().message()));
        return;
      }
      auto t = protocol::split(*r);
      bool yes = !t.empty() && t[0] == "YES";
      std::string code = t.size() > 1 ? std::string(t[1]) : "ERROR";
      std::string detail;
      if (!yes) {
        size_t s1 = r->find(' ');
        size_t s2 = s1 == std::string::npos ? s1 : r->find(' ', s1 + 1);
        detail = s2 == std::string::npos ? std::string() : r->substr(s2 + 1);
        if (t.empty() || t[0] != "NO") code = "ERROR", detail = *r;
        trace(txid, "vote NO from " + m_links[p]->address() + ": " + code + " " + detail);
      } else {
        trace(txid, "vote YES from " + m_links[p]->address() +
                        (t.size() > 1 ? " (log force " + std::string(t[1]) + " us)" : ""));
      }
      apply_step(txid, m_core->on_vote(txid, p, yes, code, detail));
    });
  }
  auto timer = std::make_unique<asio::steady_timer>(m_io);
  timer->expires_after(std::chrono::milliseconds(m_cfg.prepare_timeout_ms));
  timer->async_wait([this, txid](boost::system::error_code ec) {
    if (ec) return;
    m_timers.erase(txid);
    apply_step(txid, m_core->on_timeout(txid));
  });
  m_timers[txid] = std::move(timer);
}

void Server::apply_step(const std::string& txid, Core::Step s) {
  if (s.kind == Core::Step::none) return;
  auto timer = m_timers.find(txid);
  if (timer != m_timers.end()) {
    timer->second->cancel();
    m_timers.erase(timer);
  }
  if (s.kind == Core::Step::abort) {
    trace(txid, "decision ABORT (" + s.code + "; not logged: presumed abort)");
    for (auto p : s.send_abort) {
      trace(txid, "ABORT sent to participant " + m_links[p]->address());
      m_links[p]->request("ABORT " + txid, [this, txid, p](Result<std::string> r) {
        if (r) trace(txid, "ABORT acknowledged by " + m_links[p]->address());
      });
    }
    if (auto tr = m_traces.find(txid); tr != m_traces.end()) tr->second.finished = true;
    auto c = m_clients.find(txid);
    if (c != m_clients.end()) {
      c->second.send(LineBuilder("ABORTED").raw(s.code).text(s.detail).str());
      m_clients.erase(c);
    }
    log::debug("aborted {}: {} {}", txid, s.code, s.detail);
    return;
  }
  // All YES: the decision record is the commit point; force it before telling anyone.
  failpoint::hit("leader/afterVotes", txid);
  if (int e = failpoint::hit("leader/beforeDecisionFsync", txid))
    fatal(fmt::format("decision of {}: {}", txid, std::strerror(e)));
  trace(txid, "all votes YES; forcing the COMMIT record");
  int64_t forced_at = now_us();
  m_log->append(k_rec_commit, std::move(s.record), true, [this, txid, forced_at] {
    int64_t took = now_us() - forced_at;
    asio::post(m_io, [this, txid, took] {
      trace(txid, fmt::format("COMMIT record durable (log force {} us): the commit point", took));
      on_decision_durable(txid);
    });
  });
}

void Server::on_decision_durable(const std::string& txid) {
  if (m_stopped) return;
  failpoint::hit("leader/afterDecisionFsync", txid);
  auto parts = m_core->on_decision_durable(txid);
  auto c = m_clients.find(txid);
  if (c != m_clients.end()) {
    c->second.send("COMMITTED " + txid);
    m_clients.erase(c);
    trace(txid, "client told COMMITTED");
  }
  bool first = true;
  for (auto p : parts) {
    if (!first) failpoint::hit("leader/betweenCommitSends", txid);
    first = false;
    send_commit(txid, p);
  }
}

void Server::send_commit(const std::string& txid, size_t p) {
  if (!m_links[p]->up() || m_commit_in_flight.count({txid, p})) return;
  if (failpoint::hit("leader/sendCommit", txid)) return;  // message lost; re-sent later
  m_commit_in_flight.insert({txid, p});
  trace(txid, "COMMIT sent to participant " + m_links[p]->address());
  m_links[p]->request("COMMIT " + txid, [this, txid, p](Result<std::string> r) {
    m_commit_in_flight.erase({txid, p});
    if (!r || r->rfind("ACK", 0) != 0) return;  // re-sent by resend_tick
    trace(txid, "COMMIT acknowledged by " + m_links[p]->address() + " (applied)");
    if (m_core->on_ack(txid, p)) {
      failpoint::hit("leader/beforeEndRecord", txid);
      m_log->append(k_rec_end, txlog::Encoder().str(txid).data(), false);
      m_core->on_end(txid);
      trace(txid, "END record written; transaction finished");
      if (auto tr = m_traces.find(txid); tr != m_traces.end()) tr->second.finished = true;
      maybe_compact();
    }
  });
}

void Server::maybe_compact() {
  if (!m_log->wants_rewrite(m_cfg.log_compact_bytes)) return;
  // Keep the COMMIT record of every transaction not yet END-ed, including decisions whose
  // force is still queued (the rewrite is ordered after them and must not drop them).
  std::vector<txlog::Record> live;
  // Recent client requests that committed, so that a client asking RESULT after a lost
  // connection still hears "committed" after this rewrite and a restart (never a presumed
  // abort of what committed).
  for (auto& [rid, txid] : m_core->recent_commits())
    live.push_back({k_rec_rid, txlog::Encoder().str(rid).str(txid).data()});
  for (auto& [txid, t] : m_core->active())
    if (t.phase == Txn::committed || t.phase == Txn::deciding)
      live.push_back({k_rec_commit, encode_commit(t.txid, t.rid, t.parts)});
  size_t n = live.size();
  m_log->rewrite(std::move(live), txlog::Log::replace_file(m_cfg.data_dir + "/txlog"), [this, n] {
    asio::post(m_io, [this, n] {
      log::info("log compacted: {} live records kept, {} bytes", n, m_log->stats().bytes);
    });
  });
}

void Server::resend_tick() {
  if (m_stopped) return;
  for (auto& [txid, p] : m_core->unacked()) send_commit(txid, p);
  // Forget traces nobody fetched (here, not on every transaction's path).
  for (auto it = m_traces.begin(); it != m_traces.end();)
    it = now_ms() - it->second.created_ms > 10000 ? m_traces.erase(it) : std::next(it);
  std::erase_if(m_trace_rids, [&](auto& kv) { return !m_traces.count(kv.second); });
  m_resend.expires_after(std::chrono::milliseconds(m_cfg.resend_interval_ms));
  m_resend.async_wait([this](boost::system::error_code ec) {
    if (!ec) resend_tick();
  });
}

}  // namespace tpc::leader
