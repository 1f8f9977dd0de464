// The leader server, part two: the world the executor (executor.h) acts on: the log, the
// links to participants, clients' replies, timers, and the traces of traced transactions.
#include <fmt/format.h>

#include "common/failpoint.h"
#include "common/logging.h"
#include "common/util.h"
#include "leader/server.h"

namespace tpc::leader {

namespace asio = boost::asio;
using protocol::LineBuilder;
using protocol::Reply;

int64_t Server::now_ms() { return tpc::now_ms(); }
int64_t Server::now_us() { return tpc::now_us(); }

void Server::append(uint8_t type, std::string payload, const std::string&, bool force,
                    std::function<void()> done) {
  if (!force) return m_log->append(type, std::move(payload), false);
  // The log's writer thread completes it: back onto the event loop.
  m_log->append(type, std::move(payload), true,
                [this, done = std::move(done)] { m_host->post(done); });
}

void Server::rewrite(std::vector<txlog::Record> live) {
  size_t n = live.size();
  m_log->rewrite(std::move(live), txlog::Log::replace_file(m_cfg.data_dir + "/txlog"), [this, n] {
    asio::post(m_io, [this, n] {
      log::info("log compacted: {} live records kept, {} bytes", n, m_log->stats().bytes);
    });
  });
}

bool Server::wants_rewrite(bool ended) {
  return ended && m_log->wants_rewrite(m_cfg.log_compact_bytes);
}

void Server::request(size_t part, const protocol::PeerRequest& msg,
                     std::function<void(Result<std::string>)> cb) {
  m_links.at(part)->request(encode(msg), std::move(cb));
}

void Server::reply(ClientId client, const ClientReply& r) {
  auto w = m_host->take(client);
  if (!w) return;
  w->reply.send(encode(r));
  if (m_host->metrics() && w->counted) {
    if (r.kind == ClientReply::committed) {
      m_commit_seconds->observe(static_cast<double>(now_us() - w->since_us) / 1e6);
    } else if (r.kind == ClientReply::aborted) {
      auto c = m_abort_reasons.find(r.code);
      (c != m_abort_reasons.end() ? c->second : m_abort_reasons[""])->inc();
    }
  }
}

void Server::after_step() {
  // A new membership epoch: every participant hears it (one that was given it by another
  // leader refused this leader's older JOIN, and takes this one).
  if (m_core->members().epoch == m_join_epoch) return;
  m_join_epoch = m_core->members().epoch;
  ++m_pins_gen;
  // Links follow the membership (a slot added, replaced, removed): changed after this step
  // (stopping a link fails its requests, which steps the core).
  m_host->post([this] {
    if (m_host->stopped()) return;
    sync_links();
    resend_joins();
  });
  resend_joins();
}

void Server::note_error(const std::string& text) { log::error("{}", text); }
void Server::warn(const std::string& text) { log::warn("{}", text); }

void Server::after(int64_t ms, std::function<void()> f) { m_host->after(ms, std::move(f)); }

void Server::trace(const act::Trace& t) {
  auto it = m_traces.find(t.txid);
  if (it == m_traces.end()) {
    // Forget traces nobody fetched.
    int64_t now = now_ms();
    std::erase_if(m_traces, [&](auto& kv) { return now - kv.second.created_ms > 10000; });
    std::erase_if(m_trace_rids, [&](auto& kv) { return !m_traces.count(kv.second); });
    it = m_traces.emplace(t.txid, Trace{now_us(), now, {}, false}).first;
    if (!t.rid.empty()) m_trace_rids[t.rid] = t.txid;
  }
  if (!t.text.empty())
    it->second.events.push_back(fmt::format("{} {}", now_us() - it->second.start_us, t.text));
  if (t.finished) it->second.finished = true;
}

void Server::on_trace(const std::string& id, Reply reply, int64_t deadline_ms) {
  // Accepts a txid or the client's request id.
  std::string txid = id;
  if (auto r = m_trace_rids.find(id); r != m_trace_rids.end()) txid = r->second;
  auto it = m_traces.find(txid);
  if (it == m_traces.end()) return reply.send("ERR NOTFOUND no trace for " + txid);
  // Wait (bounded) until phase 2 finished, so the timeline shows every acknowledgement.
  if (!it->second.finished && now_ms() < deadline_ms) {
    return m_host->after(5, [this, id, reply, deadline_ms] { on_trace(id, reply, deadline_ms); });
  }
  LineBuilder b("TRACE");
  b.num(static_cast<long long>(it->second.events.size()));
  for (auto& e : it->second.events) b.arg(e);
  m_traces.erase(it);
  std::erase_if(m_trace_rids, [&](auto& kv) { return kv.second == txid; });
  reply.send(b.str());
}

}  // namespace tpc::leader
