// tpc: a distributed key-value store with two-phase commit. main only composes subcommands.
#include <sys/resource.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <iostream>

#include "cli/commands.h"
#include "cli/sources.h"
#include "common/logging.h"
#include "common/status.h"
#include "common/util.h"

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
      tpc::cli::setup_cluster(app), tpc::cli::setup_cert(app), tpc::cli::setup_completion(app)};
  // A mistyped subcommand is named, with the nearest one, instead of "a subcommand is
  // required".
  if (argc >= 2 && argv[1][0] != '-') {
    std::vector<std::string> names;
    for (const auto* s : app.get_subcommands({})) names.push_back(s->get_name());
    std::string word = argv[1];
    if (std::find(names.begin(), names.end(), word) == names.end()) {
      names.push_back("--version");
      names.push_back("--help");
      std::string near = word == "version" ? "--version" : tpc::did_you_mean(word, names);
      std::cerr << "tpc: unknown command '" << word << "'"
                << (near.empty() ? "" : "; did you mean 'tpc " + near + "'?")
                << " (tpc --help lists the commands)\n";
      return 2;
    }
  }
  // Every option of every command also comes from the environment, TPC_<NAME> (--log-level:
  // TPC_LOG_LEVEL), and from --config FILE (TOML or INI, read by CLI11: 'name = value', at the
  // top or under [COMMAND]). Precedence: the command line, then the environment, then the file;
  // the others are taken as if given right after the command word, unless set before.
  for (auto* sub : app.get_subcommands({}))
    sub->add_option("--config")->type_name("FILE")->description(
        "read options from FILE: TOML or INI, 'name = value' per option, at the top or under [" +
        sub->get_name() + "] (the command line and TPC_<NAME> variables win over it)");
  std::vector<std::string> args(argv, argv + argc);
  try {
    if (args.size() >= 2)
      for (auto* sub : app.get_subcommands({}))
        if (sub->get_name() == args[1]) tpc::cli::options_from_env_and_file(*sub, args);
  } catch (const tpc::Error& e) {
    std::cerr << "tpc: " << e.what() << "\n";
    return e.exit_code();
  }
  std::vector<char*> argv2;
  for (auto& a : args) argv2.push_back(a.data());
  argc = static_cast<int>(argv2.size());
  argv = argv2.data();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    // An unknown option: the nearest option of that command.
    for (const auto* s : app.get_subcommands()) {
        std::vector<std::string> opts;
        for (const auto* opt : s->get_options())
          for (const auto& n : opt->get_lnames()) opts.push_back("--" + n);
        for (int i = 2; i < argc; ++i) {
          std::string a = argv[i];
          a = a.substr(0, a.find('='));
          if (a.rfind("--", 0) != 0 || std::find(opts.begin(), opts.end(), a) != opts.end())
            continue;
          if (auto near = tpc::did_you_mean(a, opts); !near.empty())
            std::cerr << "did you mean '" << near << "' for '" << a << "'?\n";
        }
    }
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
