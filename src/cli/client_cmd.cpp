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
  // One table (client::global_options): here for the command line, below for the same options
  // after the command word. TPC_LEADER and the other TPC_<NAME> come in as options (main).
  for (const auto& g : client::global_options()) {
    if (auto* text = std::get_if<std::string client::Options::*>(&g.field))
      sub->add_option(g.name, o.get()->*(*text), g.help)->capture_default_str();
    else
      sub->add_option(g.name, o.get()->*std::get<int client::Options::*>(g.field), g.help)
          ->capture_default_str()
          ->check(CLI::Range(g.lo, g.hi));
  }
  sub->add_flag("--trace", o->trace, "print put/del/txn timelines across nodes");
  // Everything after the command word is taken as is, so values may start with '-'.
  sub->prefix_command();
  sub->footer(client::k_help);
  return [sub, o]() -> int {
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
      auto opt = std::find_if(g.begin(), g.end(), [&](const auto& x) { return name == x.name; });
      if (!command && a == "--json") {
        // `tpc client --json status`: the command's own flag, given before it.
        json_first = true;
        continue;
      }
      if (opt == g.end()) {
        if (!command && a.size() > 2 && a.rfind("--", 0) == 0 && a != "--help") {
          // Before the command word: an option of tpc client, mistyped.
          std::vector<std::string> known{"--trace"};
          for (const auto& x : g) known.push_back(x.name);
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
      client::set_option(*o, *opt, value);
    }
    if (json_first) {
      auto word = std::find_if(kept.begin(), kept.end(),
                               [](const std::string& a) { return a.rfind("-", 0) != 0; });
      if (word == kept.end())
        throw Error("--json needs a command (status, in-doubt, heuristics, member list)", 2);
      kept.insert(word + 1, "--json");
    }
    args = std::move(kept);
    if (!o->cluster_id.empty() && !node::is_uuid(o->cluster_id))
      throw Error("--cluster-id: '" + o->cluster_id +
                      "' is not a cluster id (a UUID, as `tpc client "
                      "status` shows)",
                  2);
    client::Connection::expect_cluster(o->cluster_id);
    // Certificates: asked for (--certs-dir, TPC_CERTS_DIR), or found where `tpc cluster` (and
    // so `make run`) puts them. Found ones give way to plaintext for a server on this machine
    // that runs without certificates; asked-for ones never do.
    bool implicit = o->certs_dir.empty() && tls::has_certs(k_default_certs_dir);
    std::string dir = implicit ? std::string(k_default_certs_dir) : o->certs_dir;
    if (!dir.empty()) {
      auto tls = tls::load(dir, "client." + o->user, "");
      if (!tls) throw Error("certificates: " + tls.status().message(), 2);
      client::Connection::use_tls(*tls, implicit);
    }
    if (args.empty()) return client::run_shell(*o);
    return client::execute(*o, args, std::cout, std::cerr);
  };
}

}  // namespace tpc::cli
