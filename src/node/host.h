// What every tpc server is, whatever its role: the listening port and its sessions, the
// dispatch of request lines through a verb table (with the roles each verb admits), the
// replies of requests waiting on the core, the core's one tick timer and the metrics
// endpoint's common families. The leader and participant servers are configurations of it:
// a verb table, a core, its executor and the executor's Io (docs/design.md, "One host").
// Single io_context thread.
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "metrics/node.h"
#include "node/identity.h"
#include "node/stats.h"
#include "protocol/session.h"
#include "protocol/waker.h"

namespace tpc::node {

using ClientId = uint64_t;  // a waiting request's handle, as the cores name it; 0: nobody
using Tokens = std::vector<std::string_view>;

// One verb a node serves.
struct Verb {
  std::string_view name;
  // The roles that may send it, separated by spaces ("leader client admin"); empty: anyone,
  // also a peer that sent no HELLO (docs/security.md).
  std::string_view roles;
  // From a leader only on a connection where its JOIN was accepted (participants).
  bool needs_join = false;
  std::function<void(const Tokens& t, protocol::Reply reply)> run;
};

// Why `peer` may not send `verb`, or "" when it may: the DENIED error's text.
std::string refusal(const Verb& verb, const protocol::PeerInfo& peer);

struct HostConfig {
  std::string role;  // "leader" or "participant"
  std::string id;
  std::string bind = "127.0.0.1";
  uint16_t port = 0;
  size_t max_message = protocol::k_default_max_message;
  size_t max_connections = 4096;
  int64_t idle_timeout_ms = 300000;
  std::shared_ptr<const tls::Context> tls;
  std::string metrics_addr;  // HOST:PORT of /metrics; empty: none (nothing is counted then)
};

// The host part of a role's configuration (leader::Config, participant::Config: the same
// field names).
template <class RoleConfig>
HostConfig host_config(std::string role, const RoleConfig& c) {
  return HostConfig{
      std::move(role),   c.id,  c.bind,        c.port, c.max_message, c.max_connections,
      c.idle_timeout_ms, c.tls, c.metrics_addr};
}

class Host {
 public:
  // Binds the port (throws tpc::Error when it cannot); nothing is served before the
  // io_context runs. `ident` answers HELLOs: it may be filled in after this. `tick` runs when
  // the core's wake time comes.
  Host(boost::asio::io_context& io, HostConfig cfg, const Identity& ident,
       std::function<void()> tick);
  ~Host();
  // The verbs served, set before the io_context runs.
  void serve(std::vector<Verb> verbs);
  // Answers `line` as the verb table says: a verb's handler, DENIED for a peer whose role may
  // not send it, PROTO for an unknown verb.
  void dispatch(const std::string& line, protocol::Reply reply);

  uint16_t port() const { return m_server->port(); }
  boost::asio::io_context& io() { return m_io; }
  const HostConfig& config() const { return m_cfg; }
  // Null without --metrics-addr. Outlives the server's log when the server declares its Host
  // first (the log's writer thread observes into it).
  metrics::NodeMetrics* metrics() { return m_metrics.get(); }
  size_t connections() { return m_server->connections(); }
  int64_t uptime_ms() const;
  // The start of this node's STATS snapshot: role, id, cluster, node id and uptime.
  Stats stats() const;

  // A request now waits on the core; `counted` marks those whose outcome metrics observe.
  ClientId wait(protocol::Reply reply, bool counted = false);
  struct Waiting {
    protocol::Reply reply;
    int64_t since_us = 0;  // when it came (with metrics)
    bool counted = false;
  };
  // The waiting request `id`, no longer waiting; nullopt when nobody waits under it.
  std::optional<Waiting> take(ClientId id);

  void wake_at(int64_t at_ms) { m_wake.arm(at_ms); }
  // `f` on the event loop, unless the host has stopped by then.
  void post(std::function<void()> f);
  void after(int64_t ms, std::function<void()> f);
  bool stopped() const { return m_stopped; }
  void stop();
  // New certificates (SIGHUP) for connections accepted from now on.
  void reload_tls(std::shared_ptr<const tls::Context> tls);

 private:
  boost::asio::io_context& m_io;
  HostConfig m_cfg;
  const Identity& m_ident;
  int64_t m_started_ms;
  std::unique_ptr<metrics::NodeMetrics> m_metrics;
  std::unique_ptr<protocol::Server> m_server;
  std::vector<Verb> m_verbs;
  std::string m_verb_names;  // "PUT, GET, ...": for an unknown verb's error
  std::unordered_map<ClientId, Waiting> m_waiting;
  ClientId m_next_client = 1;
  protocol::Waker m_wake;
  bool m_stopped = false;
};

}  // namespace tpc::node
