// The participant process: a node::Host configured with the participant's verbs, around
// participant::Core. It decodes requests into events, steps the core, and executes the
// actions: log appends (the log's writer thread hands completions back with asio::post),
// store batches, replies, OUTCOME queries on links to leaders, log rewrites, and the core's
// ticks. It holds no protocol state of its own: the host keeps which reply belongs to which
// waiting request. Single io_context thread.
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "node/host.h"
#include "node/identity.h"
#include "node/stats.h"
#include "participant/core.h"
#include "participant/executor.h"
#include "protocol/link.h"
#include "store/store.h"
#include "tls/context.h"
#include "txlog/log.h"

namespace tpc::participant {

// The participant's log: its role and record types (txlog::Log::open refuses any other).
inline txlog::Format log_format() {
  txlog::Format f{2, {}};
  for (auto& [type, name] : k_records) f.types.push_back(type);
  return f;
}

struct Config {
  std::string id = "1";
  std::string bind = "127.0.0.1";
  uint16_t port = 5001;
  std::string data_dir;
  size_t max_message = protocol::k_default_max_message;
  size_t max_connections = 4096;
  int64_t idle_timeout_ms = 300000;  // connections with nothing in flight this long are closed
  std::string certs_dir;  // --certs-dir: TLS with ROLE.crt from here; empty: plaintext
  std::shared_ptr<const tls::Context> tls;  // loaded from certs_dir (cli: check_transport)
  std::string metrics_addr;  // HOST:PORT of /metrics and /healthz; empty: none (no counting)
  std::string log_format = "text";  // text or json (applied by the command line)
  std::string log_file;             // empty: stderr
  bool insecure = false;       // serve plaintext beyond loopback (no certificates): told explicitly
  int read_timeout_ms = 2000;  // a read of an in-doubt key waits this long, then ERR INDOUBT
  int resolve_after_ms = 1000;  // a prepared txn older than this asks its leader
  int resolve_max_backoff_ms = 5000;
  uint64_t log_compact_bytes = 16ull << 20;  // rewrite the log past this size
  // The store keeps one SQLite transaction open across the commits of this many ms (store.h):
  // a page many commits change is written once per hold. 0: committed every batch.
  int store_hold_ms = 500;
  std::string cluster_id;      // for a new data directory: belong to this cluster from the start
  std::string restore_from;    // HOST:PORT: first rebuild the (empty) data dir from replicas
  std::string restore_backup;  // DIR: first fill the (empty) data dir from a backup
};

class Server : private Io {
 public:
  // Opens the data dir and recovers; throws tpc::Error on a startup failure.
  Server(boost::asio::io_context& io, Config cfg);
  ~Server();
  uint16_t port() const { return m_host->port(); }
  void stop();
  // New certificates (SIGHUP): for connections made from now on; open ones keep theirs.
  void reload_tls(std::shared_ptr<const tls::Context> tls);

 private:
  std::vector<node::Verb> verbs();
  ClientId client(protocol::Reply reply) { return m_host->wait(std::move(reply)); }
  void step(Event e) { m_exec->step(std::move(e)); }
  // Io: what the executor does through this process's log, store, sockets and timer.
  int64_t now_ms() override;
  int64_t wall_ms() override;
  int64_t now_us() override;
  void append(uint8_t type, std::string payload, const std::string& txid, act::Append::Mode mode,
              std::function<void()> done) override;
  void rewrite(std::vector<txlog::Record> live, std::function<void()> done) override;
  bool wants_rewrite(bool finished) override;
  store::Store& store() override { return *m_store; }
  void reply(ClientId client, const ReplyMsg& msg) override;
  void ask(const act::Ask& a) override;
  void note(const act::Note& n) override;
  void post(std::function<void()> f) override;
  void wake_at(int64_t at_ms) override { m_host->wake_at(at_ms); }
  // What this participant reports of itself: STATS and the metrics (node/stats.h).
  node::Stats stats();
  void on_indoubt(protocol::Reply reply);
  void on_join(const std::vector<std::string_view>& t, protocol::Reply reply);
  void on_snapshot(const std::vector<std::string_view>& t, protocol::Reply reply);
  void on_backup(const std::vector<std::string_view>& t, protocol::Reply reply);
  std::shared_ptr<protocol::Link> leader_link(const std::string& addr);
  // Every half --store-hold, commits the store's held transaction once it is due (store.h),
  // so an idle participant does not keep one open.
  void commit_store_when_due();

  boost::asio::io_context& m_io;
  Config m_cfg;
  node::Identity m_ident;
  // Before the log: the log's writer thread observes into the host's metrics until the log is
  // gone.
  std::unique_ptr<node::Host> m_host;
  std::string m_membership;  // the last JOIN line, as kept in DIR/membership
  std::unique_ptr<store::SqliteStore> m_store;
  std::unique_ptr<Core> m_core;
  std::unique_ptr<Executor> m_exec;
  std::unique_ptr<txlog::Log> m_log;
  void start_metrics(boost::asio::io_context& io);
  node::Stats m_scraped;  // the snapshot the metrics read, taken at each scrape
  metrics::Counter *m_votes_yes = nullptr, *m_votes_no = nullptr, *m_conflicts = nullptr;
  metrics::Histogram* m_prepare_seconds = nullptr;
  std::map<std::string, std::shared_ptr<protocol::Link>> m_leaders;  // address -> link
};

}  // namespace tpc::participant
