#include "client/shell.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <sstream>

// libedit: line editing and history (BSD licence, Debian's libedit-dev).
#include <editline/readline.h>

#include "common/util.h"

namespace tpc::client {

const char* const k_help =
    "commands:\n"
    "  put [--trace] KEY VALUE|-          write VALUE; -: read it from standard input\n"
    "  get [--raw] KEY                    print the value (exit 1: not found); --raw: its\n"
    "                                       exact bytes, no newline\n"
    "  del [--trace] KEY                  delete KEY\n"
    "  scan [--prefix P] [--limit N] [--keys-only]\n"
    "                                     keys (under P) in key order, KEY VALUE per line\n"
    "  txn [--trace] OP [OP...]           all or nothing; OP is one of\n"
    "                                       put KEY VALUE | del KEY | check KEY VALUE | absent "
    "KEY\n"
    "  status [--json]                    leader and participants, one row each\n"
    "  in-doubt [--json]                  transactions prepared but not finished\n"
    "  resolve TXID commit|abort [--force]  finish an in-doubt transaction by hand\n"
    "  result REQUEST-ID                  outcome of a request after exit 4 (0, 3, 4 or 5)\n"
    "  heuristics [--json]                transactions a participant finished against the\n"
    "                                       leader's decision (an operator's resolve)\n"
    "  forget TXID                        acknowledge a heuristic mismatch (admin)\n"
    "  member list [--json]               participants: id, address, state, keys\n"
    "  member add HOST:PORT               add a started participant: it takes its share\n"
    "  member remove ID                   move ID's keys to the others, then remove it\n"
    "  member replace ID HOST:PORT        a new node at HOST:PORT takes ID's place\n"
    "  backup DIR                         consistent copy of every participant into DIR\n"
    "  restore [--force] DIR              write a backup's keys into a new, empty cluster\n"
    "  bench [options]                    load generator (tpc client bench --help)\n"
    "  help, quit\n"
    "exit codes: 0 done, 1 not found, 2 usage, 3 aborted (nothing applied), 4 unavailable or "
    "outcome unknown, 5 heuristic mismatch (result)\n";

Result<std::vector<std::string>> shell_split(const std::string& line) {
  std::vector<std::string> out;
  size_t i = 0;
  auto hex = [](char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
  };
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    if (i >= line.size()) break;
    std::string word;
    bool any = false;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') {
      char c = line[i];
      if (c == '\'') {
        size_t end = line.find('\'', i + 1);
        if (end == std::string::npos) return Status::error("USAGE", "unterminated ' quote");
        word += line.substr(i + 1, end - i - 1);
        i = end + 1;
        any = true;
        continue;
      }
      bool in_dq = c == '"';
      if (in_dq) ++i;
      any = true;
      while (i < line.size()) {
        c = line[i];
        if (in_dq && c == '"') {
          ++i;
          break;
        }
        if (!in_dq && (c == ' ' || c == '\t' || c == '\'' || c == '"' || c == '\r')) break;
        if (c == '\\' && i + 1 < line.size()) {
          char e = line[i + 1];
          i += 2;
          switch (e) {
            case 'n':
              word += '\n';
              break;
            case 't':
              word += '\t';
              break;
            case 'r':
              word += '\r';
              break;
            case '0':
              word += '\0';
              break;
            case 'x':
              if (i + 1 < line.size() && hex(line[i]) >= 0 && hex(line[i + 1]) >= 0) {
                word += static_cast<char>(hex(line[i]) * 16 + hex(line[i + 1]));
                i += 2;
              } else {
                return Status::error("USAGE", "\\x needs two hex digits");
              }
              break;
            default:
              word += e;
          }
          continue;
        }
        word += c;
        ++i;
        if (in_dq && i >= line.size()) return Status::error("USAGE", "unterminated \" quote");
      }
      if (in_dq && (i > line.size() || (i == line.size() && line.back() != '"')))
        return Status::error("USAGE", "unterminated \" quote");
    }
    if (any) out.push_back(std::move(word));
  }
  return out;
}

namespace {
struct Call;
// One command of tpc client and of its shell: its usage, its own flags, and what runs it.
struct Command {
  const char* name;
  const char* usage;
  std::vector<std::string> flags;  // the command's own flags
  int (*run)(Call&);
  // Its words after the command go to it as they are (bench: options of its own, CLI11's).
  bool own_options = false;
};

// One parsed invocation: the words after the command, its flags (--flag or --flag=VALUE).
struct Call {
  Options o;
  const Command& command;
  std::vector<std::string> rest, flags;
  std::ostream& out;
  std::ostream& err;
  bool has(const char* f) const { return std::find(flags.begin(), flags.end(), f) != flags.end(); }
  std::optional<std::string> value_of(const std::string& flag) const {
    std::optional<std::string> v;
    for (const auto& f : flags)
      if (f.rfind(flag + "=", 0) == 0) v = f.substr(flag.size() + 1);
    return v;
  }
  int usage(const std::string& what) const {
    err << "usage: " << what << "\n";
    return k_usage;
  }
  int usage() const { return usage(command.usage); }
  // The command takes exactly `n` arguments, none of them empty.
  bool args(size_t n) const {
    if (rest.size() != n) return false;
    for (const auto& a : rest)
      if (a.empty()) return false;
    return true;
  }
};

int cmd_help(Call& c);
int cmd_get(Call& c) {
  c.o.raw |= !c.o.shell && c.has("--raw");
  return c.args(1) ? run_get(c.o, c.rest[0], c.out, c.err) : c.usage();
}
int cmd_scan(Call& c) {
  if (!c.rest.empty() || c.has("--prefix") || c.has("--limit")) return c.usage();
  uint64_t limit = 0;
  if (auto l = c.value_of("--limit")) {
    auto n = parse_int(*l);
    if (!n || *n < 0) return c.usage("scan --limit N: N a count of keys, 0 for all");
    limit = static_cast<uint64_t>(*n);
  }
  std::string prefix = c.value_of("--prefix").value_or("");
  if (prefix.size() > protocol::k_max_key) return c.usage("scan: PREFIX longer than 4096 bytes");
  return run_scan(c.o, prefix, limit, c.has("--keys-only"), c.out, c.err);
}
int cmd_status(Call& c) {
  return c.args(0) ? run_status(c.o, c.has("--json"), c.out, c.err) : c.usage();
}
int cmd_in_doubt(Call& c) {
  return c.args(0) ? run_in_doubt(c.o, c.has("--json"), c.out, c.err) : c.usage();
}
int cmd_result(Call& c) {
  return c.args(1) ? run_result(c.o, c.rest[0], c.out, c.err) : c.usage();
}
int cmd_heuristics(Call& c) {
  return c.args(0) ? run_heuristics(c.o, c.has("--json"), c.out, c.err) : c.usage();
}
int cmd_member(Call& c) {
  if (c.rest.size() == 1 && c.rest[0] == "list")
    return run_member_list(c.o, c.has("--json"), c.out, c.err);
  if (c.has("--json") || c.rest.empty()) return c.usage();
  auto spaced = [&](size_t from) {
    for (size_t i = from; i < c.rest.size(); ++i)
      if (c.rest[i].empty() || c.rest[i].find_first_of(" \t\r\n") != std::string::npos) return true;
    return false;
  };
  const std::string& verb = c.rest[0];
  if (c.rest.size() == 2 && verb == "add") {
    if (spaced(1)) return c.usage("member add HOST:PORT: an address without spaces");
    return run_member_change(c.o, "MEMBER ADD " + c.rest[1], c.out, c.err);
  }
  if (c.rest.size() == 2 && verb == "remove") {
    if (spaced(1)) return c.usage("member remove ID: ID has no spaces");
    return run_member_change(c.o, "MEMBER REMOVE " + c.rest[1], c.out, c.err);
  }
  if (c.rest.size() == 3 && verb == "replace") {
    if (spaced(1)) return c.usage("member replace ID HOST:PORT: no spaces");
    return run_member_change(c.o, "MEMBER REPLACE " + c.rest[1] + " " + c.rest[2], c.out, c.err);
  }
  return c.usage();
}
int cmd_forget(Call& c) {
  return c.args(1) ? run_forget(c.o, c.rest[0], c.out, c.err) : c.usage();
}
int cmd_backup(Call& c) {
  return c.args(1) ? run_backup(c.o, c.rest[0], c.out, c.err) : c.usage();
}
int cmd_restore(Call& c) {
  return c.args(1) ? run_restore(c.o, c.rest[0], c.has("--force"), c.out, c.err) : c.usage();
}
int cmd_bench(Call& c) {
  if (c.o.shell) {
    c.err << "bench runs from the command line: tpc client bench --help\n";
    return k_usage;
  }
  return run_bench_cli(c.o, c.rest);
}
int cmd_resolve(Call& c) {
  if (c.rest.size() != 2 || (c.rest[1] != "commit" && c.rest[1] != "abort")) return c.usage();
  return run_resolve(c.o, c.rest[0], c.rest[1] == "commit", c.has("--force"), c.out, c.err);
}
// put, del and txn: their ops as one transaction.
int submit(Call& c, const std::vector<Op>& ops) {
  size_t bytes = 0;
  for (const auto& op : ops) {
    if (op.key.empty()) return c.usage(std::string(c.command.name) + ": KEY must not be empty");
    if (op.key.size() > protocol::k_max_key)
      return c.usage(std::string(c.command.name) + ": KEY longer than 4096 bytes");
    bytes += op.key.size() + op.value.size();
  }
  // Over what any node takes: refused without asking the leader for its limit.
  if (bytes > protocol::k_max_message_limit) {
    c.err << "too large: the transaction's keys and values are " << bytes
          << " bytes, over the largest request any node takes (--max-message at most "
          << protocol::k_max_message_limit << ")\n";
    return k_usage;
  }
  c.o.trace |= c.has("--trace");
  return run_txn(c.o, ops, c.out, c.err);
}
int cmd_put(Call& c) {
  if (c.rest.size() != 2) return c.usage();
  if (c.rest[1] == "-") {
    // The value from standard input, every byte of it (like etcdctl put with no value).
    // A literal "-" is written with: txn put KEY -
    if (c.o.shell) return c.usage("put KEY -: reads standard input, which is the shell's own");
    // At most one byte more than any node takes: a larger input is refused without reading
    // all of it.
    std::string value;
    char buf[1 << 16];
    while (value.size() <= protocol::k_max_message_limit &&
           std::cin.read(buf, sizeof buf).gcount() > 0)
      value.append(buf, static_cast<size_t>(std::cin.gcount()));
    if (std::cin.bad()) {
      c.err << "put: cannot read standard input\n";
      return k_usage;
    }
    c.rest[1] = std::move(value);
  }
  return submit(c, {Op{OpKind::put, c.rest[0], c.rest[1]}});
}
int cmd_del(Call& c) {
  if (c.rest.size() != 1) return c.usage();
  return submit(c, {Op{OpKind::del, c.rest[0], {}}});
}
int cmd_txn(Call& c) {
  std::vector<Op> ops;
  const auto& rest = c.rest;
  size_t i = 0;
  while (i < rest.size()) {
    const std::string& w = rest[i];
    int n = (w == "put" || w == "check") ? 2 : (w == "del" || w == "absent") ? 1 : -1;
    if (n < 0)
      return c.usage("txn OP [OP...]; '" + w +
                     "' is not an op (put K V | del K | check K V | absent K)");
    if (i + n >= rest.size()) return c.usage("txn: " + w + (n == 2 ? " KEY VALUE" : " KEY"));
    ops.push_back(Op{w == "put"     ? OpKind::put
                     : w == "check" ? OpKind::check
                     : w == "del"   ? OpKind::del
                                    : OpKind::absent,
                     rest[i + 1], n == 2 ? rest[i + 2] : std::string()});
    i += 1 + n;
  }
  if (ops.empty()) return c.usage("txn OP [OP...]");
  return submit(c, ops);
}

const std::vector<Command>& commands() {
  static const std::vector<Command> c = {
      {"put", "put [--trace] KEY VALUE|-", {"--trace"}, cmd_put},
      {"get", "get [--raw] KEY", {"--raw"}, cmd_get},
      {"del", "del [--trace] KEY", {"--trace"}, cmd_del},
      {"scan",
       "scan [--prefix P] [--limit N] [--keys-only]",
       {"--prefix", "--limit", "--keys-only"},
       cmd_scan},
      {"txn",
       "txn [--trace] OP [OP...]  (OP: put KEY VALUE | del KEY | check KEY VALUE | "
       "absent KEY)",
       {"--trace"},
       cmd_txn},
      {"status", "status [--json]", {"--json"}, cmd_status},
      {"in-doubt", "in-doubt [--json]", {"--json"}, cmd_in_doubt},
      {"resolve", "resolve TXID commit|abort [--force]", {"--force"}, cmd_resolve},
      {"result", "result REQUEST-ID", {}, cmd_result},
      {"heuristics", "heuristics [--json]", {"--json"}, cmd_heuristics},
      {"forget", "forget TXID", {}, cmd_forget},
      {"member",
       "member list [--json] | member add HOST:PORT | member remove ID | member replace ID "
       "HOST:PORT",
       {"--json"},
       cmd_member},
      {"backup", "backup DIR", {}, cmd_backup},
      {"restore", "restore [--force] DIR", {"--force"}, cmd_restore},
      {"bench", "bench [options]", {}, cmd_bench, true},
      {"help", "help", {}, cmd_help},
  };
  return c;
}
int cmd_help(Call& c) {
  c.out << k_help;
  return k_ok;
}
// The commands' flags that take a value (--prefix P, or --prefix=P); the others take none.
bool takes_value(const std::string& flag) { return flag == "--prefix" || flag == "--limit"; }
}  // namespace

std::vector<std::string> command_names() {
  std::vector<std::string> out;
  for (const auto& c : commands()) out.push_back(c.name);
  return out;
}

std::vector<std::string> command_flags() {
  std::vector<std::string> out;
  for (const auto& c : commands())
    for (const auto& f : c.flags)
      if (std::find(out.begin(), out.end(), f) == out.end()) out.push_back(f);
  return out;
}

const std::vector<GlobalOption>& global_options() {
  static const std::vector<GlobalOption> g = {
      {"--leader",
       "leader address, or several (HOST:PORT,HOST:PORT: the first that answers; env "
       "TPC_LEADER)",
       &Options::leader},
      {"--timeout", "ms a whole command may take: connecting, retries, learning a lost outcome",
       &Options::timeout_ms, 1, 86400000},
      {"--retries", "times a conflict abort is retried", &Options::retries, 0, 1000},
      {"--cluster-id",
       "refuse any node not of this cluster (env TPC_CLUSTER_ID; `status` shows it)",
       &Options::cluster_id},
      {"--certs-dir",
       "connect over TLS with DIR/ca.crt and DIR/client.USER.crt (env TPC_CERTS_DIR; default "
       "./tpc-data/certs when it exists: where tpc cluster puts them)",
       &Options::certs_dir},
      {"--user", "whose client certificate: client.USER.crt (env TPC_USER)", &Options::user},
      {"--request-id",
       "put/del/txn: run under this id (1-64 letters, digits, - _); the same request sent "
       "again is answered with its first outcome, never run twice",
       &Options::request_id},
      {"--peers", "participants HOST:PORT,... for in-doubt and resolve when the leader is down",
       &Options::peers},
  };
  return g;
}

void set_option(Options& o, const GlobalOption& g, const std::string& value) {
  if (auto* text = std::get_if<std::string Options::*>(&g.field)) {
    o.*(*text) = value;
    return;
  }
  auto v = parse_int(value);
  if (!v || *v < g.lo || *v > g.hi)
    throw Error(fmt::format("{}: '{}' is not a number in [{} - {}]", g.name, value, g.lo, g.hi), 2);
  o.*std::get<int Options::*>(g.field) = static_cast<int>(*v);
}

int execute(Options o, const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  // Flags anywhere before "--"; after it, every word is an argument (a value may then start
  // with "--"). A lone "-" and words like "-5" are arguments too.
  for (const auto& c : commands())
    if (c.own_options && !args.empty() && args[0] == c.name) {
      Call call{std::move(o), c, {args.begin() + 1, args.end()}, {}, out, err};
      return c.run(call);
    }
  std::vector<std::string> words, flags;
  bool help = false, ended = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    if (ended) {
      words.push_back(a);
    } else if (a == "--") {
      ended = true;
    } else if (a == "--help" || a == "-h") {
      help = true;
    } else if (takes_value(a) && i + 1 < args.size()) {
      flags.push_back(a + "=" + args[++i]);  // a flag with a value: --prefix P, --prefix=P
    } else if (a.size() > 2 && a.rfind("--", 0) == 0) {
      flags.push_back(a);
    } else {
      words.push_back(a);
    }
  }
  if (words.empty()) {
    (help ? out : err) << k_help;
    return help ? k_ok : k_usage;
  }
  // Commands in any case (PUT, Put, put); keys and values as given.
  for (auto& ch : words[0]) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  const std::string& cmd = words[0];
  const Command* command = nullptr;
  std::vector<std::string> names;
  for (const auto& c : commands()) {
    names.push_back(c.name);
    if (cmd == c.name) command = &c;
  }
  if (!command) {
    std::string near = did_you_mean(cmd, names);
    err << "unknown command '" << cmd << "'"
        << (near.empty() ? "" : "; did you mean '" + near + "'?") << " (help lists the commands)\n";
    return k_usage;
  }
  if (help) {
    out << "usage: " << command->usage << "\n";
    return k_ok;
  }
  for (const auto& f : flags) {
    std::string name = f.substr(0, f.find('='));  // --prefix=P: --prefix
    if (std::find(command->flags.begin(), command->flags.end(), name) != command->flags.end() &&
        (name == f || takes_value(name)))
      continue;
    std::vector<std::string> known = command->flags;
    bool global = false;
    for (const auto& g : global_options()) {
      known.push_back(g.name);
      global |= f == g.name || f.rfind(std::string(g.name) + "=", 0) == 0;
    }
    if (global)
      err << f << " is an option of tpc client, not of a shell command (usage: "
          << command->usage << ")\n";
    else if (auto near = did_you_mean(f, known); !near.empty())
      err << "unknown option '" << f << "' of " << cmd << "; did you mean '" << near
          << "'? (usage: " << command->usage << ")\n";
    else
      err << "unknown option '" << f << "' of " << cmd << " (usage: " << command->usage << ")\n";
    return k_usage;
  }
  Call call{std::move(o), *command, {words.begin() + 1, words.end()}, std::move(flags), out, err};
  return command->run(call);
}

namespace {
// One result per line for the shell: the output, or the error text.
int run_line(const Options& o, const std::string& line, bool tty) {
  auto words = shell_split(line);
  if (!words) {
    std::cout << "(error 2) " << words.status().message() << std::endl;
    return k_usage;
  }
  if (words->empty()) return -1;
  std::ostringstream out, err;
  int code = execute(o, *words, out, err);
  std::string text = out.str(), e = err.str();
  if (code == k_ok) {
    std::cout << text << std::flush;
  } else if (code == k_not_found && (*words)[0] == "get") {
    std::cout << "(nil)" << std::endl;
  } else {
    if (!text.empty()) std::cout << text;
    while (!e.empty() && e.back() == '\n') e.pop_back();
    if (!tty) {  // keep it to one line for scripts
      for (auto& c : e)
        if (c == '\n') c = ' ';
    }
    std::cout << "(error " << code << ") " << e << std::endl;
  }
  return code;
}
}  // namespace

namespace {
volatile std::sig_atomic_t g_interrupted = 0;

char* complete_word(const char* text, int state) {
  static std::vector<std::string> matches;
  static size_t next = 0;
  if (state == 0) {
    matches.clear();
    next = 0;
    std::string t(text);
    std::vector<std::string> words = command_names();
    words.push_back("quit");
    for (const auto& f : command_flags()) words.push_back(f);
    for (const auto& f : {"--help", "commit", "abort"}) words.push_back(f);
    for (const auto& w : words)
      if (w.rfind(t, 0) == 0) matches.push_back(w);
  }
  if (next >= matches.size()) return nullptr;
  return strdup(matches[next++].c_str());
}

char** complete(const char* text, int, int) {
  rl_attempted_completion_over = 1;  // no file names
  return rl_completion_matches(text, complete_word);
}
}  // namespace

int run_shell(const Options& base) {
  Options o = base;
  o.shell = true;
  bool tty = ::isatty(0) && ::isatty(1);
  int worst = 0;
  if (!tty) {
    std::string line;
    while (std::getline(std::cin, line)) {
      auto w = shell_split(line);
      if (w && !w->empty() && ((*w)[0] == "quit" || (*w)[0] == "exit")) break;
      int code = run_line(o, line, false);
      if (code > worst) worst = code;
    }
    return worst;
  }
  std::string history;
  if (const char* home = std::getenv("HOME")) history = std::string(home) + "/.tpc_history";
  using_history();
  if (!history.empty()) read_history(history.c_str());
  // Tab completes command words, then flags.
  rl_attempted_completion_function = complete;
  // Ctrl-C abandons the line being typed (readline returns on the interrupted read), Ctrl-D
  // leaves; the history is saved after every command, so nothing is lost either way.
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_interrupted = 1; };
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: the read returns
  struct sigaction old_sa {};
  sigaction(SIGINT, &sa, &old_sa);
  std::cout << "tpc " << TPC_VERSION << " shell, leader " << o.leader
            << ". Type help for commands, Ctrl-D or quit to leave.\n";
  std::string prompt = "tpc " + o.leader + "> ";
  int last = 0;
  while (true) {
    g_interrupted = 0;
    char* raw = readline(prompt.c_str());
    if (!raw) {
      if (g_interrupted) {  // Ctrl-C: a new line, a new prompt
        std::cout << "^C" << std::endl;
        continue;
      }
      std::cout << "\n";
      break;
    }
    std::string line(raw);
    std::free(raw);
    if (g_interrupted) {
      std::cout << std::endl;
      continue;
    }
    auto w = shell_split(line);
    if (w && !w->empty()) {
      add_history(line.c_str());
      if (!history.empty()) write_history(history.c_str());
      std::string first = (*w)[0];
      for (auto& ch : first) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (first == "quit" || first == "exit") break;
    }
    last = run_line(o, line, true);
  }
  sigaction(SIGINT, &old_sa, nullptr);
  if (!history.empty()) write_history(history.c_str());
  // As a shell does: the status of the last command run (0 if none). A script piped in
  // gets the worst instead (above): one failed line must not hide behind later ones.
  return last;
}

}  // namespace tpc::client
