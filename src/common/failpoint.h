// Failpoints: named places where a test can make a real process crash, pause or fail.
//
// Enabled only from outside, through the environment variable TPC_FAILPOINTS, in the grammar
// shared by etcd's gofail and FreeBSD's fail(9):
//
//   TPC_FAILPOINTS = spec { ";" spec }
//   spec           = NAME "=" term { "->" term }
//   term           = [ PERCENT "%" ] [ COUNT "*" ] action [ "(" ARG ")" ]
//   action         = "off" | "crash" | "sleep" | "error" | "print"
//
// e.g. TPC_FAILPOINTS='participant/afterPrepareFsync=1*crash;leader/betweenCommitSends=sleep(500)'
// A term with a COUNT is used that many times, then the next term applies.
// crash: SIGKILL to self (as `kill -9`). sleep(MS): blocks the calling thread. error(EIO|ENOSPC):
// hit() returns that errno and the caller treats it as the real failure. print: only logs.
// Every firing logs "failpoint NAME fired txid=...".
//
// When TPC_FAILPOINTS is unset, hit() is one relaxed atomic load.
#pragma once
#include <atomic>
#include <functional>
#include <string>
#include <string_view>

namespace tpc::failpoint {

namespace detail {
extern std::atomic<bool> g_any;
int eval(std::string_view name, std::string_view txid);
}  // namespace detail

// Parses `spec` and replaces every configured failpoint. Returns an error text, empty if valid.
std::string configure(const std::string& spec);
// Reads TPC_FAILPOINTS; a malformed value is a startup error (thrown as tpc::Error).
void configure_from_env();

// Evaluates failpoint `name`. Returns 0, or the errno of an error(...) action.
inline int hit(std::string_view name, std::string_view txid = {}) {
  if (!detail::g_any.load(std::memory_order_relaxed)) return 0;
  return detail::eval(name, txid);
}

// A function that decides every failpoint instead of TPC_FAILPOINTS (the simulator: it
// crashes the simulated node at an I/O by throwing). Empty: none. Single-threaded use only.
using Hook = std::function<int(std::string_view name, std::string_view txid)>;
void set_hook(Hook hook);

// Every failpoint name the code uses, for docs, --help and validation.
extern const char* const k_names[];

}  // namespace tpc::failpoint
