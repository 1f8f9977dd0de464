// Where options come from besides the command line: TPC_<NAME> variables and --config FILE.
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace tpc::cli {

// Inserts into `args` (argv, with args[1] the command word of `sub`), right after the command
// word, the options of `sub` set by TPC_<NAME> variables and then by the --config file, each
// only when not set already: the command line beats the environment, which beats the file.
// Throws tpc::Error (exit 2) on a file that cannot be read or names an unknown option.
void options_from_env_and_file(const CLI::App& sub, std::vector<std::string>& args);

}  // namespace tpc::cli
