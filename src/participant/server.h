// The participant process: the I/O shell around participant::Core.
// Owns the SQLite store, the transaction log, the listening socket, the links to leaders
// (to ask outcomes of in-doubt transactions) and the timers. Single io_context thread; the
// log's writer thread hands completions back with asio::post.
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "participant/core.h"
#include "protocol/link.h"
#include "protocol/session.h"
#include "store/store.h"
#include "txlog/log.h"

namespace tpc::participant {

struct Config {
  std::string id = "1";
  std::string bind = "127.0.0.1";
  uint16_t port = 5001;
  std::string data_dir;
  size_t max_line = protocol::k_default_max_line;
  size_t max_connections = 4096;
  int read_timeout_ms = 2000;   // a read of an in-doubt key waits this long, then ERR INDOUBT
  int resolve_after_ms = 1000;  // a prepared txn older than this asks its leader
  int resolve_max_backoff_ms = 5000;
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
  void on_prepare(const std::vector<std::string_view>& t, protocol::Reply reply);
  void on_prepare_durable(const std::string& txid, int64_t force_us);
  void on_commit(const std::string& txid, protocol::Reply reply);
  void on_abort(const std::string& txid, protocol::Reply reply);
  void on_read(const std::string& key, protocol::Reply reply, int64_t deadline_ms);
  void on_stats(protocol::Reply reply);
  void on_indoubt(protocol::Reply reply);
  void on_resolve(const std::string& txid, bool commit, protocol::Reply reply);
  void wake_readers(const std::vector<std::string>& keys);
  void apply_batch();
  void on_committed_durable(const std::string& txid);
  void finish_outcome(const std::string& txid, bool commit);
  void resolve_tick();
  void maybe_compact();
  void ask_leader(const std::string& txid);
  std::shared_ptr<protocol::Link> leader_link(const std::string& addr);

  boost::asio::io_context& m_io;
  Config m_cfg;
  int64_t m_started_ms;
  std::unique_ptr<store::SqliteStore> m_store;
  std::unique_ptr<Core> m_core;
  std::unique_ptr<txlog::Log> m_log;
  std::unique_ptr<protocol::Server> m_server;
  std::map<std::string, std::vector<protocol::Reply>> m_vote_waiters;  // txid -> replies
  struct Reader {
    protocol::Reply reply;
    int64_t deadline_ms;
  };
  std::multimap<std::string, Reader> m_readers;  // key -> waiting reads
  struct Query {
    int64_t next_ms = 0;
    int backoff_ms = 100;
    bool in_flight = false;
  };
  std::map<std::string, Query> m_queries;  // in-doubt txid -> outcome query state
  std::map<std::string, std::shared_ptr<protocol::Link>> m_leaders;  // address -> link
  boost::asio::steady_timer m_tick;
  bool m_stopped = false;
  // COMMITs waiting to be applied together in one store transaction (one fsync).
  std::vector<std::string> m_commit_queue;
  // Replies to send once a transaction's COMMITTED record is durable.
  std::map<std::string, std::vector<protocol::Reply>> m_commit_waiters;
  bool m_apply_scheduled = false;
};

}  // namespace tpc::participant
