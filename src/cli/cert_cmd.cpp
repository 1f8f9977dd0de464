// tpc cert: a CA, node and client certificates, in the manner of `cockroach cert`
// (docs/security.md).
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "common/status.h"
#include "common/util.h"
#include "tls/certs.h"

namespace tpc::cli {

namespace {
// "10y", "365d", "48h", "30m": seconds; nullopt for anything else.
std::optional<int64_t> parse_lifetime(const std::string& s) {
  if (s.size() < 2) return std::nullopt;
  auto n = parse_int(std::string_view(s).substr(0, s.size() - 1));
  if (!n || *n <= 0 || *n > 100000) return std::nullopt;
  switch (s.back()) {
    case 'y': return *n * 365 * 86400;
    case 'd': return *n * 86400;
    case 'h': return *n * 3600;
    case 'm': return *n * 60;
    default: return std::nullopt;
  }
}

int report(const Result<std::vector<std::string>>& r) {
  if (!r) {
    std::cerr << "tpc cert: " << r.status().message() << "\n";
    return r.status().code() == "IO" ? 1 : 2;
  }
  for (const auto& p : *r) std::cout << "wrote " << p << "\n";
  return 0;
}

int list(const std::string& dir) {
  std::error_code ec;
  std::vector<std::filesystem::path> files;
  for (auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.path().extension() == ".crt") files.push_back(e.path());
  if (ec) {
    std::cerr << "tpc cert: cannot list " << dir << ": " << ec.message() << "\n";
    return 1;
  }
  std::sort(files.begin(), files.end());
  int64_t now = static_cast<int64_t>(std::time(nullptr));
  for (auto& f : files) {
    std::ifstream in(f);
    std::stringstream ss;
    ss << in.rdbuf();
    auto info = tls::parse_cert(ss.str());
    if (!info) {
      std::cout << fmt::format("{:<28} unreadable: {}\n", f.filename().string(),
                               info.status().message());
      continue;
    }
    std::string hosts;
    for (auto& h : info->hosts) hosts += (hosts.empty() ? "" : ",") + h;
    std::cout << fmt::format("{:<28} role {:<12} name {:<20} until {}{}{}\n",
                             f.filename().string(), info->role, info->name,
                             tls::format_time(info->not_after),
                             now > info->not_after ? " EXPIRED" : "",
                             hosts.empty() ? "" : "  hosts " + hosts);
  }
  return 0;
}
}  // namespace

std::function<int()> setup_cert(CLI::App& app) {
  auto* sub = app.add_subcommand("cert", "create the CA, node and client certificates for TLS");
  sub->require_subcommand(1);
  struct Opts {
    tls::CreateOptions create;
    std::string lifetime;
    std::string role;
    std::string name;
    std::vector<std::string> hosts;
  };
  auto o = std::make_shared<Opts>();
  if (const char* env = std::getenv("TPC_CERTS_DIR"); env && *env) o->create.dir = env;
  auto common = [o](CLI::App* c, const char* default_lifetime) {
    c->add_option("--certs-dir", o->create.dir, "where certificates go (env TPC_CERTS_DIR)")
        ->required(o->create.dir.empty());
    c->add_option("--ca-key", o->create.ca_key,
                  "the CA key's file [CERTS_DIR/ca.key]; keep it off the nodes");
    o->lifetime = default_lifetime;
    c->add_option("--lifetime", o->lifetime, "how long it is valid: 10y, 365d, 48h")
        ->capture_default_str();
    c->add_flag("--overwrite", o->create.overwrite, "replace files that exist");
  };
  auto* ca = sub->add_subcommand("create-ca", "a new CA: ca.crt, and ca.key (0600)");
  common(ca, "10y");
  auto* node = sub->add_subcommand(
      "create-node", "a node's certificate, ROLE.crt and ROLE.key, for the HOSTs it answers on");
  common(node, "5y");
  node->add_option("--role", o->role, "leader or participant")
      ->required()
      ->check(CLI::IsMember({"leader", "participant"}));
  node->add_option("hosts", o->hosts, "host names and addresses (at least one)")->required();
  auto* client = sub->add_subcommand(
      "create-client", "a client's certificate, client.NAME.crt and client.NAME.key");
  common(client, "5y");
  client->add_option("name", o->name, "the client's name (tpc client --user NAME)")->required();
  o->role = "";
  client->add_option("--role", o->role,
                     "client (reads and writes) or admin (also status, in-doubt, resolve, "
                     "backup) [client]")
      ->check(CLI::IsMember({"client", "admin"}));
  auto* ls = sub->add_subcommand("list", "the certificates in --certs-dir, roles and expiry");
  ls->add_option("--certs-dir", o->create.dir, "(env TPC_CERTS_DIR)")
      ->required(o->create.dir.empty());
  return [sub, ca, node, client, ls, o]() -> int {
    if (!sub->parsed()) return -1;
    if (ls->parsed()) return list(o->create.dir);
    auto life = parse_lifetime(o->lifetime);
    if (!life) {
      std::cerr << "tpc cert: --lifetime '" << o->lifetime << "': a number and y, d, h or m\n";
      return 2;
    }
    o->create.lifetime_s = *life;
    if (ca->parsed()) return report(tls::create_ca(o->create));
    if (node->parsed()) return report(tls::create_node(o->create, o->role, o->hosts));
    if (client->parsed())
      return report(tls::create_client(o->create, o->name, o->role.empty() ? "client" : o->role));
    return 2;
  };
}

}  // namespace tpc::cli
