// The leader process: the I/O shell around leader::Core. Owns the log, the links to the
// participants, the listening socket for clients (and participants asking outcomes) and the
// timers. Single io_context thread; the log's writer thread hands completions back by post.
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "leader/core.h"
#include "protocol/link.h"
#include "protocol/session.h"
#include "txlog/log.h"

namespace tpc::leader {

struct Config {
  std::string id = "1";
  std::string bind = "127.0.0.1";
  uint16_t port = 5000;
  std::string advertise;  // HOST:PORT participants use to reach this leader; default bind:port
  std::vector<std::string> peers;
  size_t replicas = 0;  // 0: every participant
  std::string data_dir;
  size_t max_line = protocol::k_default_max_line;
  size_t max_connections = 4096;
  int prepare_timeout_ms = 2000;
  int resend_interval_ms = 200;
  uint64_t log_compact_bytes = 16ull << 20;  // rewrite the log past this size
};

class Server {
 public:
  // Opens the data dir and recovers; throws tpc::Error on a startup failure.
  Server(boost::asio::io_context& io, Config cfg);
  ~Server();
  uint16_t port() const { return m_server->port(); }
  void stop();

 private:
  void handle(const std::string& line, protocol::Reply reply);
  void start_txn(const std::string& rid, std::vector<Op> ops, bool trace, protocol::Reply reply);
  void trace(const std::string& txid, const std::string& event);
  void on_trace(const std::string& txid, protocol::Reply reply, int64_t deadline_ms);
  void apply_step(const std::string& txid, Core::Step step);
  void on_decision_durable(const std::string& txid);
  void send_commit(const std::string& txid, size_t part);
  void on_get(const std::string& key, protocol::Reply reply);
  void on_result(const std::string& rid, protocol::Reply reply);
  void on_outcome(const std::string& txid, protocol::Reply reply);
  void on_stats(protocol::Reply reply);
  void resend_tick();
  void maybe_compact();
  void check_peers_file();

  boost::asio::io_context& m_io;
  Config m_cfg;
  int64_t m_started_ms;
  uint64_t m_incarnation = 0;
  std::unique_ptr<Core> m_core;
  std::unique_ptr<txlog::Log> m_log;
  std::vector<std::shared_ptr<protocol::Link>> m_links;
  std::unique_ptr<protocol::Server> m_server;
  std::map<std::string, protocol::Reply> m_clients;  // txid -> client waiting for the outcome
  std::map<std::string, std::unique_ptr<boost::asio::steady_timer>> m_timers;  // prepare timeouts
  std::set<std::pair<std::string, size_t>> m_commit_in_flight;
  struct Trace {
    int64_t start_us = 0;
    int64_t created_ms = 0;
    std::vector<std::string> events;  // "MICROS text"
    bool finished = false;
  };
  std::map<std::string, Trace> m_traces;            // txid -> timeline, for TXN ... trace
  std::map<std::string, std::string> m_trace_rids;  // client request id -> txid
  size_t m_read_rr = 0;
  boost::asio::steady_timer m_resend;
  bool m_stopped = false;
};

}  // namespace tpc::leader
