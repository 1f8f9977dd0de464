// The client's command dispatcher, shared by `tpc client CMD ...` and the interactive shell.
#pragma once
#include <iosfwd>
#include <string>
#include <vector>

#include "client/client.h"
#include "common/status.h"

namespace tpc::client {

// Runs one client command (args[0] is the command word). Returns its exit code.
// Runs one client command: args[0] is the command, its flags may come anywhere before "--".
int execute(Options o, const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
// The client's commands (put, get, ...).
std::vector<std::string> command_names();
// Every flag of those commands (each once), for completion.
std::vector<std::string> command_flags();

// `tpc client` without a command: a shell with prompt, line editing and history on a terminal;
// with standard input piped, one command per line and one result per line. Errors in one line
// do not end the session; returns the worst exit code seen.
int run_shell(const Options& o);

// Splits a shell line into words: blanks separate, '...' and "..." quote, and inside "..." or
// bare words a backslash escapes (\n \t \r \0 \\ \" \' \xHH). Error USAGE on an open quote.
Result<std::vector<std::string>> shell_split(const std::string& line);

extern const char* const k_help;

}  // namespace tpc::client
