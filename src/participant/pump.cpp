// The participant server, part two: the world the executor (executor.h) acts on: the log,
// the store, replies, queries to leaders, the timer.
#include <fmt/format.h>

#include "common/failpoint.h"
#include "common/logging.h"
#include "common/util.h"
#include "participant/server.h"

#include "client/connection.h"

namespace tpc::participant {

namespace asio = boost::asio;

int64_t Server::now_ms() { return tpc::now_ms(); }
int64_t Server::wall_ms() { return tpc::wall_ms(); }
int64_t Server::now_us() { return tpc::now_us(); }

void Server::post(std::function<void()> f) { m_host->post(std::move(f)); }

void Server::append(uint8_t type, std::string payload, const std::string&, act::Append::Mode mode,
                    std::function<void()> done) {
  if (mode == act::Append::none) return m_log->append(type, std::move(payload), false);
  // The log's writer thread completes it: back onto the event loop.
  auto back = [this, done = std::move(done)] { post(done); };
  if (mode == act::Append::lazy)
    m_log->append_lazy(type, std::move(payload), std::move(back));
  else
    m_log->append(type, std::move(payload), true, std::move(back));
}

void Server::rewrite(std::vector<txlog::Record> live, std::function<void()> done) {
  size_t n = live.size();
  m_log->rewrite(std::move(live), txlog::Log::replace_file(m_cfg.data_dir + "/txlog"),
                 [this, n, done = std::move(done)] {
                   post([this, n, done] {
                     done();
                     log::info("log compacted: {} live records kept, {} bytes", n,
                               m_log->stats().bytes);
                   });
                 });
}

bool Server::wants_rewrite(bool finished) {
  return finished && m_log->wants_rewrite(m_cfg.log_compact_bytes);
}

void Server::reply(ClientId client, const ReplyMsg& msg) {
  auto w = m_host->take(client);
  if (!w) return;
  w->reply.send(encode(msg));
  if (auto* v = std::get_if<protocol::Vote>(&msg); v && m_host->metrics()) {
    (v->kind == protocol::Vote::yes ? m_votes_yes : m_votes_no)->inc();
    if (v->code == "CONFLICT") m_conflicts->inc();
    m_prepare_seconds->observe(static_cast<double>(now_us() - w->since_us) / 1e6);
  }
}

void Server::note(const act::Note& n) {
  if (n.level == act::Note::error)
    log::error("{}", n.text);
  else if (n.level == act::Note::warn)
    log::warn("{}", n.text);
  else
    log::info("{}", n.text);
}

void Server::reload_tls(std::shared_ptr<const tls::Context> tls) {
  m_cfg.tls = tls;
  m_host->reload_tls(tls);
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
      m_cfg.max_message);
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
