#include <cstdlib>
#include <iostream>

#include "cli/commands.h"
#include "client/client.h"
#include "common/logging.h"

namespace tpc::cli {

namespace {
const char* k_client_usage =
    "usage: tpc client [--leader HOST:PORT] COMMAND\n"
    "  put KEY VALUE         write VALUE\n"
    "  get KEY               print the value\n"
    "  del KEY               delete KEY\n"
    "  txn OP [OP...]        all-or-nothing; OP: put K V | del K | check K V | absent K\n";
}

std::function<int()> setup_client(CLI::App& app) {
  auto* sub = app.add_subcommand("client", "talk to the leader: put, get, del, txn");
  auto o = std::make_shared<client::Options>();
  if (const char* env = std::getenv("TPC_LEADER"); env && *env) o->leader = env;
  sub->add_option("--leader", o->leader, "leader address (env TPC_LEADER)")->capture_default_str();
  sub->add_option("--timeout", o->timeout_ms, "ms to wait for one reply")->capture_default_str();
  sub->add_option("--retries", o->retries, "times a conflict abort is retried")
      ->capture_default_str();
  // Everything after the command word is taken as is, so values may start with '-'.
  sub->prefix_command();
  sub->footer(k_client_usage);
  return [sub, o]() -> int {
    if (!sub->parsed()) return -1;
    log::set_role("client");
    auto args = sub->remaining();
    if (args.empty()) {
      std::cerr << k_client_usage;
      return client::k_usage;
    }
    std::string cmd = args[0];
    auto usage = [&](const char* what) {
      std::cerr << "usage: tpc client " << what << "\n";
      return client::k_usage;
    };
    using protocol::Op;
    using protocol::OpKind;
    if (cmd == "get") {
      if (args.size() != 2) return usage("get KEY");
      if (args[1].empty()) return usage("get KEY (KEY must not be empty)");
      return client::run_get(*o, args[1], std::cout, std::cerr);
    }
    std::vector<Op> ops;
    if (cmd == "put") {
      if (args.size() != 3) return usage("put KEY VALUE");
      ops.push_back(Op{OpKind::put, args[1], args[2]});
    } else if (cmd == "del") {
      if (args.size() != 2) return usage("del KEY");
      ops.push_back(Op{OpKind::del, args[1], {}});
    } else if (cmd == "txn") {
      std::vector<std::string> toks;
      for (size_t i = 1; i < args.size(); ++i) toks.push_back(args[i]);
      size_t i = 0;
      while (i < toks.size()) {
        const std::string& w = toks[i];
        int n = (w == "put" || w == "check") ? 2 : (w == "del" || w == "absent") ? 1 : -1;
        if (n < 0) return usage("txn OP [OP...]  (OP: put K V | del K | check K V | absent K)");
        if (i + n >= toks.size()) return usage(("txn: " + w + " needs " + (n == 2 ? "KEY VALUE" : "KEY")).c_str());
        Op op{w == "put" ? OpKind::put : w == "check" ? OpKind::check
                           : w == "del" ? OpKind::del : OpKind::absent,
              toks[i + 1], n == 2 ? toks[i + 2] : std::string()};
        ops.push_back(std::move(op));
        i += 1 + n;
      }
      if (ops.empty()) return usage("txn OP [OP...]");
    } else {
      std::cerr << "unknown client command '" << cmd << "'\n" << k_client_usage;
      return client::k_usage;
    }
    for (auto& op : ops) {
      if (op.key.empty()) return usage("... (KEY must not be empty)");
      if (op.key.size() > protocol::k_max_key) return usage("... (KEY longer than 4096 bytes)");
    }
    return client::run_txn(*o, ops, std::cout, std::cerr);
  };
}

}  // namespace tpc::cli
