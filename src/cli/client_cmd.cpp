#include <algorithm>
#include <cstdlib>
#include <iostream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "client/client.h"
#include "client/connection.h"
#include "client/shell.h"
#include "common/logging.h"
#include "common/status.h"
#include "common/util.h"
#include "node/identity.h"
#include "tls/context.h"

namespace tpc::cli {

namespace {
// Where `tpc cluster` (with its default --data-dir) keeps the cluster's certificates.
constexpr const char* k_default_certs_dir = "./tpc-data/certs";
}  // namespace

std::function<int()> setup_client(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "client",
      "talk to the leader: put, get, del, txn, status, in-doubt, resolve, bench; "
      "no command opens a shell");
  auto o = std::make_shared<client::Options>();
  if (const char* env = std::getenv("TPC_LEADER"); env && *env) o->leader = env;
  sub->add_option("--leader", o->leader,
                  "leader address, or several (HOST:PORT,HOST:PORT: the first that answers; "
                  "env TPC_LEADER)")->capture_default_str();
  sub->add_option("--timeout", o->timeout_ms,
                  "ms a whole command may take: connecting, retries, learning a lost outcome")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400000));
  sub->add_option("--retries", o->retries, "times a conflict abort is retried")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  auto cluster = std::make_shared<std::string>();
  if (const char* env = std::getenv("TPC_CLUSTER_ID"); env && *env) *cluster = env;
  sub->add_option("--cluster-id", *cluster,
                  "refuse any node not of this cluster (env TPC_CLUSTER_ID; `status` shows it)");
  auto certs = std::make_shared<std::string>();
  auto user = std::make_shared<std::string>("root");
  if (const char* env = std::getenv("TPC_CERTS_DIR"); env && *env) *certs = env;
  if (const char* env = std::getenv("TPC_USER"); env && *env) *user = env;
  sub->add_option("--certs-dir", *certs,
                  "connect over TLS with DIR/ca.crt and DIR/client.USER.crt (env TPC_CERTS_DIR; "
                  "default ./tpc-data/certs when it exists: where tpc cluster puts them)");
  sub->add_option("--user", *user, "whose client certificate: client.USER.crt (env TPC_USER)")
      ->capture_default_str();
  sub->add_option("--request-id", o->request_id,
                  "put/del/txn: run under this id (1-64 letters, digits, - _); the same "
                  "request sent again is answered with its first outcome, never run twice");
  sub->add_flag("--trace", o->trace, "print put/del/txn timelines across nodes");
  sub->add_option("--peers", o->peers,
                  "participants HOST:PORT,... for in-doubt and resolve when the leader is down");
  // Everything after the command word is taken as is, so values may start with '-'.
  sub->prefix_command();
  sub->footer(client::k_help);
  return [sub, o, cluster, certs, user]() -> int {
    if (!sub->parsed()) return -1;
    log::set_role("client");
    // tpc client's own options may also follow the command (before "--"; bench's options
    // have other names).
    auto args = sub->remaining();
    std::vector<std::string> kept;
    bool command = false;
    bool json_first = false;
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (a == "--") {
        kept.insert(kept.end(), args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
        break;
      }
      std::string name = a.substr(0, a.find('='));
      const auto& g = client::global_options();
      if (!command && a == "--json") {
        // `tpc client --json status`: the command's own flag, given before it.
        json_first = true;
        continue;
      }
      if (std::find(g.begin(), g.end(), name) == g.end()) {
        if (!command && a.size() > 2 && a.rfind("--", 0) == 0 && a != "--help") {
          // Before the command word: an option of tpc client, mistyped.
          std::vector<std::string> known = g;
          known.push_back("--trace");
          std::string near = did_you_mean(name, known);
          throw Error("unknown option '" + name + "'" +
                          (near.empty() ? "" : "; did you mean '" + near + "'?") +
                          " (tpc client --help)",
                      2);
        }
        if (a.rfind("-", 0) != 0) command = true;
        kept.push_back(a);
        continue;
      }
      std::string value;
      if (name.size() < a.size()) {
        value = a.substr(name.size() + 1);
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        throw Error(name + " needs a value", 2);
      }
      auto number = [&](int lo, int hi) {
        auto v = parse_int(value);
        if (!v || *v < lo || *v > hi)
          throw Error(fmt::format("{}: '{}' is not a number in [{} - {}]", name, value, lo, hi), 2);
        return static_cast<int>(*v);
      };
      if (name == "--leader") o->leader = value;
      if (name == "--timeout") o->timeout_ms = number(1, 86400000);
      if (name == "--retries") o->retries = number(0, 1000);
      if (name == "--cluster-id") *cluster = value;
      if (name == "--certs-dir") *certs = value;
      if (name == "--user") *user = value;
      if (name == "--request-id") o->request_id = value;
      if (name == "--peers") o->peers = value;
    }
    if (json_first) {
      auto word = std::find_if(kept.begin(), kept.end(),
                               [](const std::string& a) { return a.rfind("-", 0) != 0; });
      if (word == kept.end())
        throw Error("--json needs a command (status, in-doubt, heuristics, member list)", 2);
      kept.insert(word + 1, "--json");
    }
    args = std::move(kept);
    if (!cluster->empty() && !node::is_uuid(*cluster))
      throw Error("--cluster-id: '" + *cluster +
                      "' is not a cluster id (a UUID, as `tpc client "
                      "status` shows)",
                  2);
    client::Connection::expect_cluster(*cluster);
    // Certificates: asked for (--certs-dir, TPC_CERTS_DIR), or found where `tpc cluster` (and
    // so `make run`) puts them. Found ones give way to plaintext for a server on this machine
    // that runs without certificates; asked-for ones never do.
    bool implicit = certs->empty() && tls::has_certs(k_default_certs_dir);
    std::string dir = implicit ? std::string(k_default_certs_dir) : *certs;
    if (!dir.empty()) {
      auto tls = tls::load(dir, "client." + *user, "");
      if (!tls) throw Error("certificates: " + tls.status().message(), 2);
      client::Connection::use_tls(*tls, implicit);
    }
    if (args.empty()) return client::run_shell(*o);
    return client::execute(*o, args, std::cout, std::cerr);
  };
}

}  // namespace tpc::cli
