// The leader server, part two: the pump. Steps the core and executes its actions; the
// failpoints of the crash tests sit where each action meets the outside world.
#include <fmt/format.h>

#include "common/failpoint.h"
#include "common/logging.h"
#include "common/util.h"
#include "leader/server.h"

namespace tpc::leader {

namespace asio = boost::asio;
using protocol::LineBuilder;
using protocol::Reply;

void Server::step(Event e) {
  if (m_stopped) return;
  Actions a;
  m_core->step(now_ms(), std::move(e), a);
  execute(a);
}

void Server::execute(Actions& a) {
  bool ended = false;
  // The txid of the previous action when it sent a COMMIT (points into `a`, no copy).
  const std::string* last_commit_sent = nullptr;
  for (auto& action : a.list) {
    const std::string* commit_sent = nullptr;
    if (auto* ap = std::get_if<act::Append>(&action)) {
      if (ap->type == k_rec_commit) {
        failpoint::hit("leader/afterVotes", ap->txid);
        if (int e = failpoint::hit("leader/beforeDecisionFsync", ap->txid))
          fatal(fmt::format("decision of {}: {}", ap->txid, std::strerror(e)));
      }
      if (ap->type == k_rec_end) {
        failpoint::hit("leader/beforeEndRecord", ap->txid);
        ended = true;
      }
      if (ap->type == k_rec_heuristic) {
        // Once per mismatch: the core records each (txid, participant) once.
        if (auto m = decode_mismatch(ap->payload))
          log::error(
              "HEURISTIC MISMATCH: {} was decided {} here, but participant {} {} it on "
              "an operator's order (tpc client heuristics; forget it with tpc client "
              "forget {})",
              m->txid, m->decided_commit ? "commit" : "abort", m_cfg.peers.at(m->part),
              m->their_commit ? "committed" : "aborted", m->txid);
      }
      if (m_decisions && ap->type == k_rec_forget) m_decisions->forget_mismatches(ap->txid);
      if (m_decisions && ap->type != k_rec_heuristic && ap->type != k_rec_forget) {
        // The etcd decision store: the commit point is etcd's, not this log's. Mismatches go
        // to both (docs/decision-store.md).
        if (ap->type == k_rec_commit) decide(ap->txid, std::move(ap->payload), now_us());
        if (ap->type == k_rec_end) m_decisions->end(ap->txid);
        continue;
      }
      if (!ap->force) {
        m_log->append(ap->type, std::move(ap->payload), false);
        continue;
      }
      int64_t at = now_us();
      // With etcd, a mismatch is durable once in this log and in etcd.
      std::string copy = m_decisions && ap->type == k_rec_heuristic ? ap->payload : "";
      m_log->append(ap->type, std::move(ap->payload), true,
                    [this, txid = ap->txid, at, type = ap->type, copy = std::move(copy)] {
                      int64_t took = now_us() - at;
                      asio::post(m_io, [this, txid, took, type, copy] {
                        if (m_stopped) return;
                        if (type == k_rec_commit) failpoint::hit("leader/afterDecisionFsync", txid);
                        if (!copy.empty()) return store_mismatch(txid, copy, took);
                        step(ev::Durable{txid, took, type});
                      });
                    });
    } else if (auto* s = std::get_if<act::Send>(&action)) {
      if (auto* c = std::get_if<protocol::Commit>(&s->msg)) commit_sent = &c->txid;
      send(*s, commit_sent && last_commit_sent && *commit_sent == *last_commit_sent);
    } else if (auto* r = std::get_if<act::Reply>(&action)) {
      auto it = m_waiting.find(r->client);
      if (it == m_waiting.end()) continue;
      it->second.reply.send(encode(r->reply));
      if (m_metrics && it->second.txn) {
        if (r->reply.kind == ClientReply::committed) {
          m_commit_seconds->observe(static_cast<double>(now_us() - it->second.since_us) / 1e6);
        } else if (r->reply.kind == ClientReply::aborted) {
          auto c = m_abort_reasons.find(r->reply.code);
          (c != m_abort_reasons.end() ? c->second : m_abort_reasons[""])->inc();
        }
      }
      m_waiting.erase(it);
    } else if (auto* rw = std::get_if<act::Rewrite>(&action)) {
      size_t n = rw->live.size();
      m_log->rewrite(
          std::move(rw->live), txlog::Log::replace_file(m_cfg.data_dir + "/txlog"), [this, n] {
            asio::post(m_io, [this, n] {
              log::info("log compacted: {} live records kept, {} bytes", n, m_log->stats().bytes);
            });
          });
    } else if (auto* t = std::get_if<act::Trace>(&action)) {
      record_trace(*t);
    } else if (auto* l = std::get_if<act::Lookup>(&action)) {
      m_decisions->lookup(l->txid, l->owner, [this, l = *l](Result<StoreFacts> f) {
        step(ev::Looked{l.client, l.txid, l.owner, l.held_ms, std::move(f)});
      });
    } else if (auto* st = std::get_if<act::Settle>(&action)) {
      m_decisions->settle(st->txid, st->owner, st->fenced, [this, st = *st](Result<SettleResult> r) {
        if (r && *r == SettleResult::settled)
          log::warn("settled {} as aborted: its leader {} {}", st.txid, st.owner,
                    st.fenced ? "is gone (its lease expired)" : "held it past --takeover-after");
        step(ev::Settled{st.client, st.txid, st.owner, !st.fenced, std::move(r)});
      });
    } else if (auto* fr = std::get_if<act::FindRid>(&action)) {
      m_decisions->find_rid(fr->rid, [this, fr = *fr](Result<std::string> txid) {
        step(ev::RidFound{fr.client, fr.rid, std::move(txid), fr.report});
      });
    }
    last_commit_sent = commit_sent;
  }
  m_wake.arm(a.wake_at);
  if (ended && m_log->wants_rewrite(m_cfg.log_compact_bytes)) step(ev::LogFull{});
}

void Server::store_mismatch(const std::string& txid, const std::string& payload, int64_t took) {
  auto m = decode_mismatch(payload);
  TPC_CHECK(m.is_ok(), "HEURISTIC record this leader wrote is undecodable");
  m_decisions->record_mismatch(txid, m->part, payload, [this, txid, payload, took](Status s) {
    if (m_stopped) return;
    if (s) return step(ev::Durable{txid, took, k_rec_heuristic});
    log::warn("heuristic mismatch of {} not yet in etcd: {}; retrying", txid, s.message());
    auto timer = std::make_shared<asio::steady_timer>(m_io, std::chrono::milliseconds(200));
    timer->async_wait([this, timer, txid, payload, took](boost::system::error_code ec) {
      if (!ec && !m_stopped) store_mismatch(txid, payload, took);
    });
  });
}

void Server::decide(const std::string& txid, std::string payload, int64_t since_us) {
  std::string copy = payload;
  m_decisions->decide(txid, std::move(payload), [this, txid, copy, since_us](Result<bool> r) {
    if (m_stopped) return;
    if (!r) {
      // etcd could not say: the transaction stays undecided (its participants prepared), and
      // the same create-if-absent goes again; it can only find this decision or a settler's.
      log::warn("decision of {} not taken yet: {}; retrying", txid, r.status().message());
      auto timer = std::make_shared<asio::steady_timer>(m_io, std::chrono::milliseconds(200));
      timer->async_wait([this, timer, txid, copy, since_us](boost::system::error_code ec) {
        if (!ec && !m_stopped) decide(txid, copy, since_us);
      });
      return;
    }
    if (*r) {
      failpoint::hit("leader/afterDecisionFsync", txid);
      step(ev::Durable{txid, now_us() - since_us});
    } else {
      log::warn("decision of {}: the decision store holds an abort (settled by another leader)",
                txid);
      step(ev::Refused{txid});
    }
  });
}

void Server::send(act::Send& s, bool after_commit_send) {
  auto& link = m_links.at(s.part);
  size_t p = s.part;
  if (auto* c = std::get_if<protocol::Commit>(&s.msg)) {
    if (after_commit_send) failpoint::hit("leader/betweenCommitSends", c->txid);
    if (failpoint::hit("leader/sendCommit", c->txid)) return;  // lost; the core re-sends it
    link->request(encode(*c), [this, txid = c->txid, p](Result<std::string> r) {
      auto k = protocol::parse_phase_two(r);
      step(ev::CommitReply{txid, p, k == protocol::PhaseTwo::acked,
                           k == protocol::PhaseTwo::heuristic_aborted});
    });
  } else if (auto* pr = std::get_if<protocol::Prepare>(&s.msg)) {
    link->request(encode(*pr), [this, txid = pr->txid, p](Result<std::string> r) {
      step(ev::Vote{txid, p, protocol::parse_vote(r)});
    });
  } else if (auto* rd = std::get_if<protocol::Read>(&s.msg)) {
    link->request(encode(*rd), [this, id = s.read, p](Result<std::string> r) {
      step(ev::ReadReply{id, p, protocol::parse_read_reply(r)});
    });
  } else if (auto* sc = std::get_if<protocol::Scan>(&s.msg)) {
    link->request(encode(*sc), [this, id = s.read, p](Result<std::string> r) {
      step(ev::ScanReply{id, p, protocol::parse_scan_reply(r)});
    });
  } else if (auto* ck = std::get_if<protocol::ScanCheck>(&s.msg)) {
    link->request(encode(*ck), [this, id = s.read, p, watch = ck->watch](Result<std::string> r) {
      step(ev::ScanChecked{id, p, watch, protocol::parse_scan_checked(r).clean});
    });
  } else if (auto* ab = std::get_if<protocol::Abort>(&s.msg)) {
    // Only a contradicting heuristic outcome is reported: ABORT is not re-sent.
    link->request(encode(*ab), [this, txid = ab->txid, p](Result<std::string> r) {
      if (protocol::parse_phase_two(r) == protocol::PhaseTwo::heuristic_committed)
        step(ev::AbortReply{txid, p});
    });
  }
}

void Server::record_trace(act::Trace& t) {
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

}  // namespace tpc::leader
