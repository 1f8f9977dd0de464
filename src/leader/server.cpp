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
  char* end = nullptr;
  uint64_t last = exists ? std::strtoull(inc.c_str(), &end, 10) : 0;
  // A damaged incarnation would let transaction ids repeat: refuse it rather than guess.
  if (exists && (end == inc.c_str() || last == 0))
    throw Error(m_cfg.data_dir + "/incarnation is damaged; refusing to start");
  m_incarnation = last + 1;
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
    m_cfg.advertise =
        fmt::format("{}:{}", m_cfg.bind == "0.0.0.0" ? "127.0.0.1" : m_cfg.bind, m_cfg.port);
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
    if (i >= t.size()) return Status::error("PROTO", fmt::format("{} needs more arguments", verb));
    return protocol::unescape(t[i]);
  };
  auto fail = [&](const Status& s) {
    reply.send(LineBuilder("ERR").raw(s.code()).text(s.message()).str());
  };
  if (verb == "PUT" || verb == "DEL") {
    size_t want = verb == "PUT" ? 3 : 2;
    if (t.size() != want)
      return fail(
          Status::error("PROTO", verb == "PUT" ? "usage: PUT KEY VALUE" : "usage: DEL KEY"));
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

void Server::on_get(const std::string& key, Reply reply) {
  auto owners = m_core->owners(key);
  // Try owners in rotation, starting at a different one each time; skip those that are down.
  std::vector<size_t> order;
  for (size_t i = 0; i < owners.size(); ++i)
    order.push_back(owners[(m_read_rr + i) % owners.size()]);
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
    case Outcome::committed:
      return reply.send("COMMITTED " + txid);
    case Outcome::aborted:
      return reply.send("ABORTED UNKNOWN no decision for this request");
    case Outcome::pending:
      return reply.send("PENDING " + txid);
  }
}

void Server::on_outcome(const std::string& txid, Reply reply) {
  switch (m_core->outcome(txid)) {
    case Outcome::committed:
      return reply.send("COMMITTED");
    case Outcome::aborted:
      return reply.send("ABORTED");
    case Outcome::pending:
      return reply.send("PENDING");
  }
}

void Server::on_stats(Reply reply) {
  auto ls = m_log->stats();
  size_t up = 0;
  for (auto& l : m_links) up += l->up();
  reply.send(fmt::format(
      "STATS id={} incarnation={} committed={} aborted={} active={} "
      "peers_up={}/{} log_bytes={} log_syncs={} uptime_ms={}",
      m_cfg.id, m_incarnation, m_core->committed_count(), m_core->aborted_count(),
      m_core->active().size(), up, m_links.size(), ls.bytes, ls.syncs, now_ms() - m_started_ms));
}

}  // namespace tpc::leader
