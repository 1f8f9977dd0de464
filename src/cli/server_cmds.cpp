#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <iostream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "common/failpoint.h"
#include "common/logging.h"
#include "common/util.h"
#include "leader/server.h"
#include "node/identity.h"
#include "participant/restore.h"
#include "participant/server.h"
#include "protocol/messages.h"
#include "store/store.h"
#include "tls/context.h"
#include "txlog/record.h"

namespace tpc::cli {
namespace asio = boost::asio;

namespace {
// Options the leader and the participant share, bound straight into their configs.
template <typename Config>
void add_common(CLI::App* sub, Config& cfg, std::string& log_level) {
  sub->add_option("--certs-dir", cfg.certs_dir,
                  "serve and connect over TLS with the CA and this role's certificate in DIR "
                  "(tpc cert; env TPC_CERTS_DIR)")
      ->envname("TPC_CERTS_DIR");
  sub->add_flag("--insecure", cfg.insecure,
                "serve plaintext beyond loopback without certificates (anyone who can reach "
                "the port is trusted)");
  sub->add_option("--cluster-id", cfg.cluster_id,
                  "for a new data directory: the cluster it belongs to (a leader makes a new "
                  "one by default; a participant joins its first leader's); for an existing "
                  "one: refuse to start unless it belongs to this cluster");
  sub->add_option("--bind", cfg.bind, "address to listen on")->capture_default_str();
  sub->add_option("--metrics-addr", cfg.metrics_addr,
                  "serve Prometheus metrics at http://HOST:PORT/metrics and health at /healthz "
                  "(default: off)");
  sub->add_option("--log-compact-bytes", cfg.log_compact_bytes,
                  "rewrite the log with only live records once it is this large")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1024}, uint64_t{1} << 40));
  sub->add_option("--log-level", log_level, "debug, info, warn, error or off (any case)")
      ->capture_default_str();
  sub->add_option("--log-format", cfg.log_format,
                  "text, or json: one JSON object per line (ts, level, node, msg)")
      ->capture_default_str();
  sub->add_option("--log-file", cfg.log_file,
                  "write the log here (appended) instead of stderr; reopened on SIGHUP, for "
                  "rotation");
  static_assert(protocol::k_max_message_limit + (1 << 20) < txlog::k_max_payload);
  // --max-line: its name before values travelled as data blocks, when a request was one line.
  sub->add_option("--max-message,--max-line", cfg.max_message,
                  "longest accepted request, its line and its values, in bytes (at most 32 MiB)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{64}, protocol::k_max_message_limit));
  sub->add_option("--idle-timeout", cfg.idle_timeout_ms,
                  "ms after which a connection with nothing in flight is closed")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{100}, int64_t{86400000}));
  sub->add_option("--max-connections", cfg.max_connections,
                  "open connections accepted; past it the longest idle one is closed, else "
                  "ERR BUSY")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
}

// Without certificates a node serves plaintext to anyone who can reach its port. On loopback
// (the default) that is this machine only; beyond it, only when told --insecure.
bool is_loopback(const std::string& bind) {
  boost::system::error_code ec;
  auto a = asio::ip::make_address(bind, ec);
  return !ec && a.is_loopback();
}

template <typename Config>
void check_transport(Config& cfg, const std::string& role) {
  // A name (localhost) is listened on as its address: loopback if it resolves to loopback.
  auto addr = bind_address(cfg.bind);
  if (!addr) throw Error(addr.status().message(), 2);
  cfg.bind = *addr;
  if (!cfg.certs_dir.empty()) {
    auto tls = tls::load(cfg.certs_dir, role, role);
    if (!tls) throw Error("--certs-dir: " + tls.status().message(), 2);
    cfg.tls = *tls;
    log::info("secure: TLS 1.3, certificate {} ({} '{}', valid until {}), peers checked against "
              "{}/ca.crt",
              tls::cert_path(cfg.certs_dir, role), (*tls)->own.role, (*tls)->own.name,
              tls::format_time((*tls)->own.not_after), cfg.certs_dir);
    return;
  }
  if (is_loopback(cfg.bind)) {
    log::info("insecure: plaintext, no certificates (loopback only)");
    return;
  }
  if (!cfg.insecure)
    throw Error(fmt::format("--bind {} serves beyond this machine, and without certificates "
                            "anyone who can reach the port can read and change data and "
                            "decide transactions: give --insecure to run it that way anyway "
                            "(docs/security.md)",
                            cfg.bind),
                2);
  log::warn(
      "INSECURE: plaintext without certificates on {}; anyone who can reach this port is "
      "trusted with the role it claims (docs/security.md)",
      cfg.bind);
}

template <typename Config>
void apply_common(const Config& cfg, const std::string& log_level, const std::string& role) {
  if (!cfg.cluster_id.empty() && !node::is_uuid(cfg.cluster_id))
    throw Error("--cluster-id: '" + cfg.cluster_id + "' is not a cluster id (a UUID)", 2);
  log::Level l;
  if (!log::parse_level(log_level, &l))
    throw Error("--log-level must be debug, info, warn, error or off", 2);
  log::set_level(l);
  log::Format f;
  if (!log::parse_format(cfg.log_format, &f)) throw Error("--log-format must be text or json", 2);
  log::set_format(f);
  if (std::string why; !log::set_file(cfg.log_file, &why)) throw Error("--log-file " + why, 2);
  log::set_role(role);
  failpoint::configure_from_env();
}

// SIGHUP reopens --log-file (after a rotation moved it) and reloads the certificates
// (rotation, docs/security.md): connections made from then on use the new ones; a reload that
// fails keeps the old ones and says why.
template <typename Srv>
void reload_on_hup(asio::signal_set& hup, Srv& server, const std::string& dir,
                   const std::string& role) {
  hup.async_wait([&hup, &server, dir, role](boost::system::error_code ec, int) {
    if (ec) return;
    if (std::string why; !log::reopen(&why))
      log::error("SIGHUP: log file not reopened, still writing to the old one: {}", why);
    else
      log::info("SIGHUP: log file reopened");
    if (dir.empty()) {
      log::info("SIGHUP: no --certs-dir, nothing to reload");
    } else if (auto tls = tls::load(dir, role, role); !tls) {
      log::error("SIGHUP: certificates not reloaded, keeping the old ones: {}",
                 tls.status().message());
    } else {
      server.reload_tls(*tls);
      log::info("SIGHUP: certificates reloaded ({} '{}', valid until {})", (*tls)->own.role,
                (*tls)->own.name, tls::format_time((*tls)->own.not_after));
    }
    reload_on_hup(hup, server, dir, role);
  });
}

template <typename Srv>
int serve(asio::io_context& io, Srv& server, const std::string& certs_dir,
          const std::string& role) {
  asio::signal_set hup(io, SIGHUP);
  reload_on_hup(hup, server, certs_dir, role);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int sig) {
    if (ec) return;
    log::info("signal {}: stopping", sig);
    server.stop();
    hup.cancel();
    io.stop();
  });
  io.run();
  return 0;
}

}  // namespace

std::function<int()> setup_participant(CLI::App& app) {
  auto* sub = app.add_subcommand("participant", "run a participant: holds data, votes, applies");
  auto cfg = std::make_shared<participant::Config>();
  auto log_level = std::make_shared<std::string>("info");
  sub->add_option("--port", cfg->port, "TCP port to listen on")->required();
  sub->add_option("--id", cfg->id, "participant id (letters, digits, - and _)")->required();
  sub->add_option("--data-dir", cfg->data_dir, "data directory [./tpc-data/participant-ID]");
  sub->add_option("--read-timeout", cfg->read_timeout_ms,
                  "ms a read of an in-doubt key waits before failing")
      ->capture_default_str()
      ->check(CLI::Range(0, 3600000));
  sub->add_option("--resolve-after", cfg->resolve_after_ms,
                  "ms after which a prepared transaction asks its leader for the outcome")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400000));
  sub->add_option("--store-hold", cfg->store_hold_ms,
                  fmt::format("ms the store keeps one SQLite transaction open across commits (at "
                              "most {} key writes; 0: commit each batch); a crash makes recovery "
                              "redo at most this much from the log",
                              store::SqliteStore::k_hold_max_writes))
      ->capture_default_str()
      ->check(CLI::Range(0, 60000));
  auto* rf = sub->add_option("--restore-from", cfg->restore_from,
                             "rebuild an empty --data-dir from the live participant HOST:PORT, "
                             "then join in participant --id's place");
  sub->add_option("--restore-backup", cfg->restore_backup,
                  "start an empty --data-dir from a backup DIR/participant-N (tpc client backup)")
      ->excludes(rf);
  add_common(sub, *cfg, *log_level);
  return [sub, cfg, log_level]() -> int {
    if (!sub->parsed()) return -1;
    if (!protocol::is_id(cfg->id)) throw Error("--id: letters, digits, - and _ only", 2);
    if (cfg->data_dir.empty()) cfg->data_dir = "./tpc-data/participant-" + cfg->id;
    apply_common(*cfg, *log_level, "participant-" + cfg->id);
    check_transport(*cfg, "participant");
    std::string host;
    uint16_t port;
    if (!cfg->restore_from.empty() && !parse_host_port(cfg->restore_from, &host, &port))
      throw Error("--restore-from: '" + cfg->restore_from + "' is not HOST:PORT", 2);
    asio::io_context io(1);
    participant::Server server(io, *cfg);
    return serve(io, server, cfg->certs_dir, "participant");
  };
}

std::function<int()> setup_leader(CLI::App& app) {
  auto* sub = app.add_subcommand("leader", "run the leader: the two-phase commit coordinator");
  auto cfg = std::make_shared<leader::Config>();
  auto log_level = std::make_shared<std::string>("info");
  auto peers = std::make_shared<std::string>();
  sub->add_option("--peers", *peers, "participants, HOST:PORT[,HOST:PORT...]")->required();
  sub->add_option("--port", cfg->port, "TCP port to listen on")->capture_default_str();
  sub->add_option("--id", cfg->id, "leader id (letters, digits, - and _)")->capture_default_str();
  sub->add_option("--data-dir", cfg->data_dir, "data directory [./tpc-data/leader-ID]");
  sub->add_option("--advertise", cfg->advertise,
                  "HOST:PORT participants use to reach this leader [BIND:PORT]");
  sub->add_option("--replicas", cfg->replicas,
                  "participants that hold each key (0: all, the default)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--prepare-timeout", cfg->prepare_timeout_ms,
                  "ms to wait for all votes before aborting")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600000));
  sub->add_option("--exclude-after", cfg->exclude_after_ms,
                  "ms a participant may stay unreachable before it counts as down; until then "
                  "requests for its keys wait for it (a leader that just started, a link "
                  "reconnecting)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{3600000}));
  sub->add_option("--min-insync", cfg->min_insync,
                  "in-sync copies each key of a write needs; fewer: the write fails (exit 4)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  sub->add_option("--decision-store", cfg->decision_store,
                  "where commit decisions are kept: local (this leader's log) or "
                  "etcd://HOST:PORT[,HOST:PORT...]")
      ->capture_default_str();
  sub->add_option("--cluster-name", cfg->cluster_name,
                  "with an etcd decision store: the cluster's keys are under /tpc/NAME/")
      ->capture_default_str();
  sub->add_option("--lease-ttl", cfg->lease_ttl_s,
                  "with an etcd decision store: seconds this leader's lease outlives it")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{60}));
  sub->add_option("--takeover-after", cfg->takeover_after_ms,
                  "with an etcd decision store: ms a participant may hold a transaction in doubt "
                  "before any leader may settle it, even while its own leader lives")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{100}, int64_t{86400000}));
  sub->add_option("--batch-wait", cfg->batch_wait_ms,
                  "with an etcd decision store: ms a decision waits for transactions still "
                  "collecting votes, to share one etcd request with them (0: never)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{100}));
  add_common(sub, *cfg, *log_level);
  return [sub, cfg, log_level, peers]() -> int {
    if (!sub->parsed()) return -1;
    if (!protocol::is_id(cfg->id)) throw Error("--id: letters, digits, - and _ only", 2);
    cfg->peers = split_list(*peers, ',');
    leader::validate(*cfg);
    if (cfg->data_dir.empty()) cfg->data_dir = "./tpc-data/leader-" + cfg->id;
    apply_common(*cfg, *log_level, "leader-" + cfg->id);
    check_transport(*cfg, "leader");
    asio::io_context io(1);
    leader::Server server(io, *cfg);
    return serve(io, server, cfg->certs_dir, "leader");
  };
}

}  // namespace tpc::cli
