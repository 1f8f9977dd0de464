#include "leader/server.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "common/failpoint.h"
#include "common/logging.h"
#include "common/util.h"
#include "txlog/file.h"

namespace tpc::leader {

namespace asio = boost::asio;
using protocol::escape;
using protocol::LineBuilder;
using protocol::Reply;

namespace {
std::string read_small_file(const std::string& path, bool* exists) {
  std::ifstream in(path);
  *exists = static_cast<bool>(in);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

Server::Server(asio::io_context& io, Config cfg)
    : m_io(io), m_cfg(std::move(cfg)), m_started_ms(now_ms()), m_resend(io) {
  txlog::make_dirs(m_cfg.data_dir);
  lock_data_dir(m_cfg.data_dir);
  check_peers_file();
  // Incarnation: bumped durably at every start, so transaction ids never repeat.
  bool exists;
  std::string inc = read_small_file(m_cfg.data_dir + "/incarnation", &exists);
  m_incarnation = exists ? std::strtoull(inc.c_str(), nullptr, 10) + 1 : 1;
  txlog::write_file_atomic(m_cfg.data_dir + "/incarnation", std::to_string(m_incarnation) + "\n");

  m_core = std::make_unique<Core>(m_cfg.id, m_incarnation, m_cfg.peers, m_cfg.replicas);
  std::vector<txlog::Record> recovered;
  m_log = txlog::Log::open(txlog::open_posix_file(m_cfg.data_dir + "/txlog"),
                           m_cfg.data_dir + "/txlog", &recovered);
  for (auto& r : recovered) m_core->recover(r);
  auto pending = m_core->finish_recovery();
  log::info("incarnation {}; recovered {} log records; {} committed transactions to finish",
            m_incarnation, recovered.size(), pending.size());

  if (m_cfg.advertise.empty())
    m_cfg.advertise = fmt::format("{}:{}", m_cfg.bind == "0.0.0.0" ? "127.0.0.1" : m_cfg.bind,
                                  m_cfg.port);
  protocol::SessionConfig sc{"leader", m_cfg.id, m_cfg.max_line, m_cfg.max_connections};
  m_server = std::make_unique<protocol::Server>(
      io, m_cfg.bind, m_cfg.port, sc, [this](const std::string& l, Reply r) { handle(l, r); });
  if (m_cfg.port == 0) m_cfg.advertise = fmt::format("{}:{}", m_cfg.bind, port());

  std::string hello = fmt::format("HELLO {} leader {}", protocol::k_version, m_cfg.id);
  for (auto& peer : m_cfg.peers) {
    std::string host;
    uint16_t port;
    if (!parse_host_port(peer, &host, &port)) throw Error("bad peer address '" + peer + "'", 2);
    auto link = std::make_shared<protocol::Link>(io, host, port, hello, m_cfg.max_line);
    link->on_up([this] { resend_tick(); });
    link->start();
    m_links.push_back(link);
  }
  log::info("leader {} listening on {}:{}, {} participants, replicas {}, data in {}", m_cfg.id,
            m_cfg.bind, port(), m_cfg.peers.size(),
            m_cfg.replicas ? std::to_string(m_cfg.replicas) : std::string("all"), m_cfg.data_dir);
  resend_tick();
}

Server::~Server() { stop(); }

void Server::stop() {
  if (m_stopped) return;
  m_stopped = true;
  m_resend.cancel();
  for (auto& [t, timer] : m_timers) timer->cancel();
  m_server->stop();
  for (auto& l : m_links) l->stop();
}

void Server::check_peers_file() {
  // The participant set decides where keys live: refuse to start on data made with another.
  std::string want;
  for (auto& p : m_cfg.peers) want += p + "\n";
  want += "replicas " + std::to_string(m_cfg.replicas) + "\n";
  bool exists;
  std::string have = read_small_file(m_cfg.data_dir + "/participants", &exists);
  if (!exists) {
    txlog::write_file_atomic(m_cfg.data_dir + "/participants", want);
    return;
  }
  if (have != want)
    throw Error(fmt::format(
        "{}/participants records a different participant set or replica count than "
        "--peers/--replicas:\n--- recorded\n{}--- given\n{}keys would be looked up in the wrong "
        "place; start with the recorded set or a new --data-dir",
        m_cfg.data_dir, have, want));
}

void Server::handle(const std::string& line, Reply reply) {
  auto t = protocol::split(line);
  auto verb = t[0];
  auto arg = [&](size_t i) -> Result<std::string> {
    if (i >= t.size())
      return Status::error("PROTO", fmt::format("{} needs more arguments", verb));
    return protocol::unescape(t[i]);
  };
  auto fail = [&](const Status& s) {
    reply.send(LineBuilder("ERR").raw(s.code()).text(s.message()).str());
  };
  if (verb == "PUT" || verb == "DEL") {
    size_t want = verb == "PUT" ? 3 : 2;
    if (t.size() != want)
      return fail(Status::error("PROTO", verb == "PUT" ? "usage: PUT KEY VALUE" : "usage: DEL KEY"));
    std::vector<std::string_view> ops_tokens{verb == "PUT" ? "put" : "del"};
    for (size_t i = 1; i < t.size(); ++i) ops_tokens.push_back(t[i]);
    auto ops = protocol::parse_ops(ops_tokens, 0);
    if (!ops) return fail(ops.status());
    start_txn("", std::move(*ops), false, reply);
  } else if (verb == "TXN") {
    if (t.size() < 3) return fail(Status::error("PROTO", "usage: TXN RID|- [trace] OP [OP...]"));
    std::string rid = t[1] == "-" ? "" : std::string(t[1]);
    bool want_trace = t[2] == "trace";
    auto ops = protocol::parse_ops(t, want_trace ? 3 : 2);
    if (!ops) return fail(ops.status());
    start_txn(rid, std::move(*ops), want_trace, reply);
  } else if (verb == "TRACE") {
    if (t.size() != 2) return fail(Status::error("PROTO", "usage: TRACE TXID"));
    on_trace(std::string(t[1]), reply, now_ms() + 3000);
  } else if (verb == "PEERS") {
    LineBuilder b("PEERS");
    for (auto& l : m_links) b.raw(l->address()).raw(l->up() ? "up" : "down");
    reply.send(b.str());
  } else if (verb == "GET") {
    if (t.size() != 2) return fail(Status::error("PROTO", "usage: GET KEY"));
    auto key = arg(1);
    if (!key) return fail(key.status());
    on_get(*key, reply);
  } else if (verb == "RESULT") {
    if (t.size() != 2) return fail(Status::error("PROTO", "usage: RESULT RID"));
    on_result(std::string(t[1]), reply);
  } else if (verb == "OUTCOME") {
    if (t.size() != 2) return fail(Status::error("PROTO", "usage: OUTCOME TXID"));
    on_outcome(std::string(t[1]), reply);
  } else if (verb == "STATS") {
    on_stats(reply);
  } else {
    fail(Status::error("PROTO", "unknown command " + escape(verb) +
                                    " (try PUT, GET, DEL, TXN, RESULT, STATS, PING)"));
  }
}

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

void Server::start_txn(const std::string& rid, std::vector<Op> ops, bool want_trace,
                       Reply reply) {
  // Forget traces nobody fetched.
  for (auto it = m_traces.begin(); it != m_traces.end();)
    it = now_ms() - it->second.created_ms > 10000 ? m_traces.erase(it) : std::next(it);
  std::erase_if(m_trace_rids, [&](auto& kv) { return !m_traces.count(kv.second); });
  auto b = m_core->begin(rid, ops, now_ms(), m_cfg.prepare_timeout_ms);
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
    trace(txid, fmt::format("begin {} at leader {} (incarnation {})", txid, m_cfg.id,
                            m_incarnation));
  }
  const auto& all_ops = m_core->find(txid)->ops;
  for (size_t p : b.targets) {
    // Each participant hears only of the keys it owns: it locks, checks and stores those.
    LineBuilder prepare("PREPARE");
    prepare.raw(txid).raw(m_cfg.id).raw(m_cfg.advertise);
    protocol::append_ops(prepare, m_core->ops_for(all_ops, p));
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
  // Past the threshold, and at least twice what the last rewrite left (so a log whose live
  // records alone pass the threshold is not rewritten on every append).
  uint64_t bytes = m_log->stats().bytes;
  if (m_compacting || bytes < m_cfg.log_compact_bytes || bytes < 2 * m_compacted_bytes) return;
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
  m_compacting = true;
  std::string path = m_cfg.data_dir + "/txlog";
  size_t n = live.size();
  m_log->rewrite(
      std::move(live),
      txlog::Log::replace_file(path),
      [this, n] {
        asio::post(m_io, [this, n] {
          m_compacting = false;
          m_compacted_bytes = m_log->stats().bytes;
          log::info("log compacted: {} live records kept, {} bytes", n, m_log->stats().bytes);
        });
      });
}

void Server::resend_tick() {
  if (m_stopped) return;
  for (auto& [txid, p] : m_core->unacked()) send_commit(txid, p);
  m_resend.expires_after(std::chrono::milliseconds(m_cfg.resend_interval_ms));
  m_resend.async_wait([this](boost::system::error_code ec) {
    if (!ec) resend_tick();
  });
}

void Server::on_get(const std::string& key, Reply reply) {
  auto owners = m_core->owners(key);
  // Try owners in rotation, starting at a different one each time; skip those that are down.
  std::vector<size_t> order;
  for (size_t i = 0; i < owners.size(); ++i) order.push_back(owners[(m_read_rr + i) % owners.size()]);
  ++m_read_rr;
  auto attempt = std::make_shared<std::function<void(size_t)>>();
  *attempt = [this, key, reply, order, attempt](size_t i) {
    while (i < order.size() && !m_links[order[i]]->up()) ++i;
    if (i >= order.size()) {
      reply.send("ERR UNAVAILABLE no live participant owns this key");
      *attempt = nullptr;  // break the cycle
      return;
    }
    m_links[order[i]]->request(LineBuilder("READ").arg(key).str(),
                               [reply, attempt, i](Result<std::string> r) {
                                 if (!r) return (*attempt)(i + 1);
                                 reply.send(*r);
                                 *attempt = nullptr;
                               });
  };
  (*attempt)(0);
}

void Server::on_result(const std::string& rid, Reply reply) {
  std::string txid;
  switch (m_core->result(rid, &txid)) {
    case Outcome::committed: return reply.send("COMMITTED " + txid);
    case Outcome::aborted: return reply.send("ABORTED UNKNOWN no decision for this request");
    case Outcome::pending: return reply.send("PENDING " + txid);
  }
}

void Server::on_outcome(const std::string& txid, Reply reply) {
  switch (m_core->outcome(txid)) {
    case Outcome::committed: return reply.send("COMMITTED");
    case Outcome::aborted: return reply.send("ABORTED");
    case Outcome::pending: return reply.send("PENDING");
  }
}

void Server::on_stats(Reply reply) {
  auto ls = m_log->stats();
  size_t up = 0;
  for (auto& l : m_links) up += l->up();
  reply.send(fmt::format("STATS id={} incarnation={} committed={} aborted={} active={} "
                         "peers_up={}/{} log_bytes={} log_syncs={} uptime_ms={}",
                         m_cfg.id, m_incarnation, m_core->committed_count(),
                         m_core->aborted_count(), m_core->active().size(), up, m_links.size(),
                         ls.bytes, ls.syncs, now_ms() - m_started_ms));
}

}  // namespace tpc::leader
