// Subcommands of the tpc executable. Each is set up on a CLI11 app and run after parsing;
// main only composes them (CLI11's subcom_in_files layout).
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace tpc::cli {
// Each returns the function that runs the subcommand once parsing succeeded; it returns the
// process exit code.
std::function<int()> setup_participant(CLI::App& app);
std::function<int()> setup_leader(CLI::App& app);
std::function<int()> setup_client(CLI::App& app);
std::function<int()> setup_cluster(CLI::App& app);
std::function<int()> setup_cert(CLI::App& app);
// tpc completion bash|zsh: a completion script made from `app`'s commands and options.
std::function<int()> setup_completion(CLI::App& app);
}  // namespace tpc::cli
