// The participant server, part two: the pump. Steps the core and executes its actions; the
// failpoints of the crash tests sit where each action meets the outside world.
#include <fmt/format.h>

#include "common/failpoint.h"
#include "common/logging.h"
#include "common/util.h"
#include "participant/server.h"

#include "client/connection.h"

namespace tpc::participant {

namespace asio = boost::asio;

void Server::step(Event e) {
  if (m_stopped) return;
  Actions a;
  m_core->step(now_ms(), wall_ms(), std::move(e), a);
  execute(a);
}

void Server::execute(Actions& a) {
  bool finished = false;  // a transaction ended: the log may have outgrown its threshold
  for (auto& action : a.list) {
    if (auto* ap = std::get_if<act::Append>(&action)) {
      finished |= ap->type == k_rec_committed || ap->type == k_rec_aborted;
      const std::string& txid = ap->txid;
      uint8_t type = ap->type;
      if (ap->mode == act::Append::none) {
        m_log->append(type, std::move(ap->payload), false);
        continue;
      }
      if (type == k_rec_prepared)
        if (int e = failpoint::hit("participant/beforePrepareFsync", txid))
          fatal(fmt::format("prepare of {} failed: {}", txid, std::strerror(e)));
      if (type == k_rec_committed) failpoint::hit("participant/afterApplyCommit", txid);
      int64_t at = now_us();
      auto done = [this, txid, type, at] {
        int64_t took = now_us() - at;
        asio::post(m_io, [this, txid, type, took] {
          if (m_stopped) return;
          if (type == k_rec_prepared)
            if (int e = failpoint::hit("participant/afterPrepareFsync", txid))
              fatal(fmt::format("after prepare of {}: {}", txid, std::strerror(e)));
          step(ev::Durable{type, txid, took});
        });
      };
      if (ap->mode == act::Append::lazy)
        m_log->append_lazy(type, std::move(ap->payload), std::move(done));
      else
        m_log->append(type, std::move(ap->payload), true, std::move(done));
    } else if (auto* ap = std::get_if<act::Apply>(&action)) {
      for (auto& [txid, ops] : ap->batch) failpoint::hit("participant/beforeApplyCommit", txid);
      Status st = m_store->begin_batch();
      for (auto& [txid, ops] : ap->batch)
        if (st) st = m_store->apply(txid, *ops);
      if (st) st = m_store->end_batch();
      if (!st) fatal("cannot apply commits: " + st.to_string());
      step(ev::Applied{});
    } else if (auto* r = std::get_if<act::Reply>(&action)) {
      auto it = m_waiting.find(r->client);
      if (it == m_waiting.end()) continue;
      it->second.reply.send(encode(r->msg));
      if (auto* v = std::get_if<protocol::Vote>(&r->msg); v && m_metrics) {
        (v->kind == protocol::Vote::yes ? m_votes_yes : m_votes_no)->inc();
        if (v->code == "CONFLICT") m_conflicts->inc();
        m_prepare_seconds->observe(static_cast<double>(now_us() - it->second.since_us) / 1e6);
      }
      m_waiting.erase(it);
      if (auto* v = std::get_if<protocol::Vote>(&r->msg);
          v && v->kind == protocol::Vote::yes && failpoint::detail::g_any)
        asio::post(m_io, [] { failpoint::hit("participant/afterVoteSend"); });
    } else if (auto* q = std::get_if<act::Ask>(&action)) {
      ask(*q);
    } else if (auto* rw = std::get_if<act::Rewrite>(&action)) {
      rewrite(*rw);
    } else if (auto* n = std::get_if<act::Note>(&action)) {
      if (n->level == act::Note::error)
        log::error("{}", n->text);
      else if (n->level == act::Note::warn)
        log::warn("{}", n->text);
      else
        log::info("{}", n->text);
    }
  }
  m_wake.arm(a.wake_at);
  if (a.flush && !m_flush_posted) {
    m_flush_posted = true;
    asio::post(m_io, [this] {
      m_flush_posted = false;
      step(ev::Flush{});
    });
  }
  if (finished && m_log->wants_rewrite(m_cfg.log_compact_bytes)) step(ev::LogFull{});
}

void Server::rewrite(act::Rewrite& rw) {
  // Commits the log is about to forget must be durable in the store first.
  if (Status st = m_store->make_durable(); !st)
    fatal("cannot checkpoint the store: " + st.to_string());
  size_t n = rw.live.size();
  // Transactions applied so far have no PREPARED record in the rewritten log: once it is
  // durable, their "applied" marks can go.
  uint64_t applied_upto = m_store->applied_seq();
  m_log->rewrite(std::move(rw.live), txlog::Log::replace_file(m_cfg.data_dir + "/txlog"),
                 [this, n, applied_upto] {
                   asio::post(m_io, [this, n, applied_upto] {
                     if (Status st = m_store->prune_applied(applied_upto); !st)
                       fatal("cannot prune applied marks: " + st.to_string());
                     log::info("log compacted: {} live records kept, {} bytes", n,
                               m_log->stats().bytes);
                   });
                 });
}

void Server::reload_tls(std::shared_ptr<const tls::Context> tls) {
  m_cfg.tls = tls;
  m_server->set_tls(tls);
  for (auto& [addr, link] : m_leaders) link->set_tls(tls, "leader");
  client::Connection::use_tls(tls);
}

std::shared_ptr<protocol::Link> Server::leader_link(const std::string& addr) {
  auto it = m_leaders.find(addr);
  if (it != m_leaders.end()) return it->second;
  std::string host;
  uint16_t port;
  if (!parse_host_port(addr, &host, &port)) return nullptr;
  auto link = std::make_shared<protocol::Link>(
      m_io, host, port,
      fmt::format("HELLO {} participant {} {}", protocol::k_version, m_cfg.id,
                  node::hello_tokens(m_ident)),
      m_cfg.max_line);
  link->set_tls(m_cfg.tls, "leader");
  // A leader of another cluster would answer ABORTED (presumed abort) for a transaction it
  // never saw: never ask it.
  link->on_hello([this, addr](const std::string& reply) -> Result<std::string> {
    if (Status s = node::check_cluster(m_ident.cluster, reply, addr); !s) return s;
    return std::string();
  });
  link->start();
  m_leaders[addr] = link;
  return link;
}

void Server::ask(const act::Ask& a) {
  auto link = leader_link(a.leader_addr);
  if (!link) {
    log::error("in-doubt {}: bad leader address {}", a.txid, a.leader_addr);
    return;
  }
  if (!link->up()) {
    // Said at once, so that another leader is asked next (several leaders); with one
    // leader, asked again after the backoff, once it is back.
    asio::post(m_io, [this, txid = a.txid, report = a.heuristic.has_value()] {
      step(ev::Outcome{txid, Status::error("UNAVAILABLE", "leader down"), report});
    });
    return;
  }
  if (failpoint::hit("participant/askOutcome", a.txid)) return;  // query lost
  log::debug("{} {}: asking leader {} for the outcome", a.heuristic ? "heuristic" : "in-doubt",
             a.txid, a.leader_addr);
  link->request(protocol::encode(protocol::OutcomeQuery{a.txid, a.held_ms, a.heuristic, a.rid}),
                [this, txid = a.txid, report = a.heuristic.has_value()](Result<std::string> r) {
                  step(ev::Outcome{txid, protocol::parse_decision(r), report});
                });
}

}  // namespace tpc::participant
