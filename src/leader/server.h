// The leader process: a node::Host configured with the leader's verbs, around leader::Core.
// It decodes requests into events, steps the core, and executes the actions: log appends (the
// log's writer thread hands completions back by post), messages on the links to the
// participants, replies to clients, log rewrites, and the core's ticks. It holds no protocol
// state of its own: the host keeps which reply belongs to which waiting client; the server
// keeps traces for `--trace`. Single io_context thread.
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "leader/core.h"
#include "leader/decisions.h"
#include "leader/executor.h"
#include "node/host.h"
#include "node/identity.h"
#include "node/stats.h"
#include "protocol/link.h"
#include "tls/context.h"
#include "txlog/log.h"

namespace tpc::leader {

struct Config {
  std::string id = "1";
  std::string bind = "127.0.0.1";
  uint16_t port = 5000;
  std::string advertise;   // HOST:PORT participants use to reach this leader; default bind:port
  std::string cluster_id;  // for a new data directory: join this cluster (default: a new one)
  std::vector<std::string> peers;
  size_t replicas = 0;  // 0: every participant
  std::string data_dir;
  size_t max_message = protocol::k_default_max_message;
  size_t max_connections = 4096;
  int64_t idle_timeout_ms = 300000;  // connections with nothing in flight this long are closed
  std::string certs_dir;  // --certs-dir: TLS with ROLE.crt from here; empty: plaintext
  std::shared_ptr<const tls::Context> tls;  // loaded from certs_dir (cli: check_transport)
  std::string metrics_addr;  // HOST:PORT of /metrics and /healthz; empty: none (no counting)
  std::string log_format = "text";  // text or json (applied by the command line)
  std::string log_file;             // empty: stderr
  bool insecure = false;  // serve plaintext beyond loopback (no certificates): told explicitly
  int prepare_timeout_ms = 2000;
  int resend_interval_ms = 200;
  uint64_t log_compact_bytes = 16ull << 20;  // rewrite the log past this size
  // Where decisions are kept: "local" (this leader's log) or etcd://HOST:PORT[,...]
  // (docs/decision-store.md), under the prefix /tpc/CLUSTER-NAME/.
  std::string decision_store = "local";
  std::string cluster_name = "default";
  int64_t lease_ttl_s = 3;
  // A transaction a participant has held prepared this long may be settled (aborted, unless
  // decided) by any leader, even while its own leader lives.
  int64_t takeover_after_ms = 2000;
  int64_t exclude_after_ms = 5000;  // --exclude-after
  int min_insync = 1;               // --min-insync
  // While other transactions collect votes, a decision batch waits up to this long for them.
  int64_t batch_wait_ms = 3;
};

// Checks a leader's configuration before anything is written: every --peers entry is
// HOST:PORT with a port in 1..65535 and a host that resolves; no participant is named twice,
// also under another name (localhost:P and 127.0.0.1:P); a wildcard --bind (0.0.0.0, ::)
// needs --advertise; --advertise is HOST:PORT and not a wildcard; --decision-store is local
// or etcd://HOST:PORT[,...], --cluster-name an id. Throws tpc::Error (exit 2)
// naming the first problem. `resolve` off: syntax only (the simulator, unit tests).
void validate(const Config& cfg, bool resolve = true);

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
  // PUT, DEL, TXN, GET and SCAN: refused while a participant refuses this leader's view.
  node::Verb data_verb(std::string_view name,
                       std::function<void(const node::Tokens&, protocol::Reply)> run);
  ClientId client(protocol::Reply reply, bool txn = false) {
    return m_host->wait(std::move(reply), txn);
  }
  void step(Event e) { m_exec->step(std::move(e)); }
  // Io: what the executor does through this process's log, links, clients and timers.
  int64_t now_ms() override;
  int64_t now_us() override;
  void append(uint8_t type, std::string payload, const std::string& txid, bool force,
              std::function<void()> done) override;
  void rewrite(std::vector<txlog::Record> live) override;
  bool wants_rewrite(bool ended) override;
  void request(size_t part, const protocol::PeerRequest& msg,
               std::function<void(Result<std::string>)> cb) override;
  void reply(ClientId client, const ClientReply& r) override;
  void trace(const act::Trace& t) override;
  void note_error(const std::string& text) override;
  void warn(const std::string& text) override;
  void after(int64_t ms, std::function<void()> f) override;
  void wake_at(int64_t at_ms) override { m_host->wake_at(at_ms); }
  void after_step() override;
  void on_trace(const std::string& id, protocol::Reply reply, int64_t deadline_ms);
  // What this leader reports of itself: STATS and the metrics (node/stats.h).
  node::Stats stats();
  void on_peers(protocol::Reply reply);
  void on_members(protocol::Reply reply);
  void on_heuristics(protocol::Reply reply);
  // Whether DIR/participants is still to be written. When it records another set than
  // --peers/--replicas, the recorded one is used (the set the cluster was made with), and
  // check_given_peers() judges --peers once the membership is recovered.
  bool check_peers_file();
  std::string peers_file_text() const;
  // --peers after recovery: the set the cluster was made with, or the membership in effect
  // (warned about when the membership changed since); anything else throws.
  void check_given_peers();
  // The membership in the decision store; proposed first (every one of `peers` in-sync, each
  // key on `replicas` of them, 0: all) if the store has none yet.
  std::string claim_members(const DecisionStoreOptions& dso, const std::vector<std::string>& peers,
                            size_t replicas) const;
  // Whether `peers` and `replicas` (0: all) name `mem`'s participants in effect.
  static bool names_membership(const membership::Membership& mem,
                               const std::vector<std::string>& peers, int64_t replicas);
  std::vector<std::string> m_given_peers;  // --peers as given, when DIR/participants differs
  int64_t m_given_replicas = 0;
  // The links follow the membership: one per slot, made anew when its address changes (member
  // replace), a new one for a slot added, stopped for a removed one.
  void sync_links();
  void make_link(size_t p);
  std::vector<std::string> m_link_addr;  // the address each link dials
  // The cluster's view as this leader's flags give it: "peers A,B,...\nreplicas R|all\n".
  std::string view_text() const;
  // With an etcd decision store: takes the cluster's id and view from the store (creating
  // them by one compare-and-swap if absent), and sets m_cfg.cluster_id to it. Throws
  // tpc::Error (exit 2) when this directory, --cluster-id or the flags' view differ.
  void adopt_cluster(const DecisionStoreOptions& dso);
  void load_pins();
  void save_pins();
  // The handshake check of participant p's link: its identity against the pinned one.
  Result<std::string> admit(size_t p, const std::string& hello_reply);
  std::string join_line(size_t p) const;  // JOIN for participant p: the current membership
  void resend_joins();
  // "ADDR: REASON" of the first participant that refuses this leader's view of the cluster
  // (another cluster, or its JOIN's --peers, --replicas or decision store), "" when none.
  // Such a leader serves no read or write: its placement is not the cluster's.
  std::string view_refused() const;
  // A pause lasts no longer than the connection that asked for it: polled while paused.
  void watch_pause(protocol::Reply pauser);

  boost::asio::io_context& m_io;
  Config m_cfg;
  uint64_t m_incarnation = 0;
  node::Identity m_ident;
  // Before the log: the log's writer thread observes into the host's metrics until the log is
  // gone.
  std::unique_ptr<node::Host> m_host;
  struct Pin {         // the participant admitted at a slot of --peers
    std::string id;    // its --id
    std::string node;  // its node id; empty: not yet seen
    std::string addr;  // the slot's address it was admitted at ("": not recorded, older file)
  };
  std::vector<Pin> m_pins;
  // The slot of the participant named by its --id or its address (MEMBER's argument).
  std::optional<size_t> slot_of(std::string_view who) const;
  uint64_t m_pins_gen = 0;           // bumped at every change of m_pins, and of the epoch
  uint64_t m_join_epoch = 0;         // the membership epoch the last JOINs carried
  std::vector<uint64_t> m_join_gen;  // the m_pins_gen each participant's last JOIN carried
  std::unique_ptr<Core> m_core;
  node::Stats m_scraped;  // the snapshot the metrics read, taken at each scrape
  metrics::Histogram* m_commit_seconds = nullptr;
  std::map<std::string, metrics::Counter*> m_abort_reasons;  // CODE -> counter ("" : others)
  void start_metrics(boost::asio::io_context& io);
  std::unique_ptr<txlog::Log> m_log;
  std::unique_ptr<EtcdDecisions> m_decisions;  // --decision-store etcd://...: the commit points
  std::unique_ptr<Executor> m_exec;
  std::vector<std::shared_ptr<protocol::Link>> m_links;
  std::unique_ptr<boost::asio::steady_timer> m_pause_watch;  // while paused: its connection
  struct Trace {
    int64_t start_us = 0;
    int64_t created_ms = 0;
    std::vector<std::string> events;  // "MICROS text"
    bool finished = false;
  };
  std::map<std::string, Trace> m_traces;            // txid -> timeline, for TXN ... trace
  std::map<std::string, std::string> m_trace_rids;  // client request id -> txid
};

}  // namespace tpc::leader
