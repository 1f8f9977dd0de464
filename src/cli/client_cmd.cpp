#include <cstdlib>
#include <iostream>

#include "cli/commands.h"
#include "client/client.h"
#include "client/shell.h"
#include "common/logging.h"

namespace tpc::cli {

std::function<int()> setup_client(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "client",
      "talk to the leader: put, get, del, txn, status, in-doubt, resolve, bench; "
      "no command opens a shell");
  auto o = std::make_shared<client::Options>();
  if (const char* env = std::getenv("TPC_LEADER"); env && *env) o->leader = env;
  sub->add_option("--leader", o->leader, "leader address (env TPC_LEADER)")->capture_default_str();
  sub->add_option("--timeout", o->timeout_ms, "ms to wait for one reply")->capture_default_str();
  sub->add_option("--retries", o->retries, "times a conflict abort is retried")
      ->capture_default_str();
  sub->add_flag("--trace", o->trace, "print put/del/txn timelines across nodes");
  sub->add_option("--peers", o->peers,
                  "participants HOST:PORT,... for in-doubt and resolve when the leader is down");
  // Everything after the command word is taken as is, so values may start with '-'.
  sub->prefix_command();
  sub->footer(client::k_help);
  return [sub, o]() -> int {
    if (!sub->parsed()) return -1;
    log::set_role("client");
    auto args = sub->remaining();
    if (args.empty()) return client::run_shell(*o);
    if (args[0] == "bench") return client::run_bench_cli(*o, {args.begin() + 1, args.end()});
    return client::execute(*o, args, std::cout, std::cerr);
  };
}

}  // namespace tpc::cli
