// tpc: a distributed key-value store with two-phase commit. main only composes subcommands.
#include <sys/resource.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/commands.h"
#include "common/logging.h"
#include "common/status.h"

int main(int argc, char** argv) {
  // Whatever the caller's umask: data directories 0700, files 0600 (the store, the logs,
  // identities, backups, the shell's history). SQLite's files follow it too.
  ::umask(077);
  // Servers hold a descriptor per connection: allow as many as the hard limit does.
  if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  CLI::App app{"tpc: a key-value store whose writes are atomic across machines (two-phase commit)",
               "tpc"};
  app.set_version_flag("--version", std::string("tpc ") + TPC_VERSION);
  app.require_subcommand(1);
  std::vector<std::function<int()>> runs = {
      tpc::cli::setup_participant(app), tpc::cli::setup_leader(app), tpc::cli::setup_client(app),
      tpc::cli::setup_cluster(app), tpc::cli::setup_cert(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    for (auto& run : runs) {
      int rc = run();
      if (rc >= 0) return rc;
    }
  } catch (const tpc::Error& e) {
    tpc::log::write(tpc::log::Level::error, e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    tpc::log::write(tpc::log::Level::error, std::string("unexpected error: ") + e.what());
    return 1;
  }
  return 2;
}
