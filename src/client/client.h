// The client commands: one transaction or read against the leader, with the exit codes of the
// man page:
//   0 done; 1 key not found (get); 2 usage error or bad input; 3 aborted, known not applied
//   anywhere; 4 unavailable or outcome unknown; 5 (result) a heuristic mismatch: the leader
//   decided, and a participant finished the transaction otherwise on an operator's order.
#pragma once
#include <iosfwd>
#include <string>
#include <variant>
#include <vector>

#include "protocol/ops.h"

namespace tpc::client {

enum Exit { k_ok = 0, k_not_found = 1, k_usage = 2, k_aborted = 3, k_unknown = 4, k_heuristic = 5 };

struct Options {
  std::string leader = "127.0.0.1:5000";
  int timeout_ms = 10000;  // a whole command: connecting, retries, learning a lost outcome
  int retries = 3;         // definite aborts for conflict are retried this often
  bool trace = false;      // print the transaction's timeline across nodes
  bool shell = false;      // one result per line: values escaped when not printable
  bool raw = false;        // get: the value's bytes exactly, no newline after them
  std::string peers;       // participants, when the leader is unreachable (in-doubt, resolve)
  std::string request_id;  // put/del/txn: this id instead of a fresh one (a script's safe
                           // retry: the leader never runs one id twice); no conflict retries
  std::string cluster_id;  // refuse any node not of this cluster (empty: any)
  std::string certs_dir;   // TLS with DIR/ca.crt and DIR/client.USER.crt (empty: see cli)
  std::string user = "root";
};

// tpc client's own options (--leader, --timeout, ...): one table serves the command line
// (registered with CLI11), the same options given after the command word, and the
// suggestion for a mistyped one.
struct GlobalOption {
  const char* name;  // "--leader"
  const char* help;
  std::variant<std::string Options::*, int Options::*> field;
  int lo = 0, hi = 0;  // a number's range
};
const std::vector<GlobalOption>& global_options();
// Sets `g` in `o` from `value`; a number outside its range is a tpc::Error (exit 2).
void set_option(Options& o, const GlobalOption& g, const std::string& value);

// Runs ops as one transaction. Writes "OK" to out on commit, reasons to err.
int run_txn(const Options& o, const std::vector<protocol::Op>& ops, std::ostream& out,
            std::ostream& err);
// The outcome of request `rid` (after exit 4): 0 committed, 3 aborted (an id the leader never
// saw is answered aborted and refused from then on), 4 still unknown, 5 a heuristic mismatch
// (the leader's decision and what a participant did on an operator's order differ).
int run_result(const Options& o, const std::string& rid, std::ostream& out, std::ostream& err);
// Prints the value's bytes exactly, then one newline.
int run_get(const Options& o, const std::string& key, std::ostream& out, std::ostream& err);

// Keys starting with `prefix` in key order, at most `limit` (0: all), one "KEY VALUE" line
// each as the shell shows values (pasteable), or only the keys. Read a page at a time, each
// page linearizable; a page the leader could not read as one snapshot (ERR CONFLICT) is read
// again (`retries`). Exit 0 (also for none), 4 when the keys cannot be read (unavailable, in
// doubt, no snapshot).
int run_scan(const Options& o, const std::string& prefix, uint64_t limit, bool keys_only,
             std::ostream& out, std::ostream& err);

// Cluster overview: one row per node. `json`: one machine-readable line.
int run_status(const Options& o, bool json, std::ostream& out, std::ostream& err);
// Transactions prepared somewhere but not finished.
int run_in_doubt(const Options& o, bool json, std::ostream& out, std::ostream& err);
// Finishes an in-doubt transaction by hand. Follows the leader's durable decision and refuses
// to contradict it (exit 3); without a reachable leader needs `force` (a heuristic decision,
// logged by the participants). Exit 1: not in doubt anywhere; 4: cannot reach what it needs.
int run_resolve(const Options& o, const std::string& txid, bool commit, bool force,
                std::ostream& out, std::ostream& err);

// The leader's heuristic mismatches (transactions a participant finished otherwise than the
// leader decided, on an operator's order), until forgotten. Exit 4: leader unreachable.
int run_heuristics(const Options& o, bool json, std::ostream& out, std::ostream& err);
// `member list`: each participant's id, address, state in the membership and key count.
int run_member_list(const Options& o, bool json, std::ostream& out, std::ostream& err);
// `member remove ID` (and the other changes of the members): the leader's MEMBER request,
// answered once the change is done (keys copied, the cutover made), with what moved. Asked
// again of a leader that restarted (the change goes on by itself; asking again waits for it),
// up to 30 minutes or --timeout if longer. Exit 1: no such participant; 2: not an admin; 3:
// refused (nothing changed); 4: no leader answered in time (the change may still finish:
// member list shows it).
int run_member_change(const Options& o, const std::string& request, std::ostream& out,
                      std::ostream& err);
// Acknowledges (and removes from the listing) the mismatches of `txid`. Exit 1: none; 2: not
// an admin; 4: leader unreachable.
int run_forget(const Options& o, const std::string& txid, std::ostream& out, std::ostream& err);

// A transactionally consistent backup of every participant into `dir` (empty or new): the
// leader pauses new transactions until those in flight ended, each participant copies its
// store, the leader resumes; then the copies are fetched. Prints a line per participant and
// a summary. Exit 2: `dir` not empty; 4: the leader or a participant unavailable.
int run_backup(const Options& o, const std::string& dir, std::ostream& out, std::ostream& err);
// Writes every key of the backup in DIR into the cluster (docs/operations.md), any number of
// participants at any addresses, in batches of transactions; refused (exit 2) when the cluster
// holds keys, unless `force`. Exit 2: not a backup, or a copy unreadable; 4: the leader
// unavailable (run it again with force: a key written twice gets the same value).
int run_restore(const Options& o, const std::string& dir, bool force, std::ostream& out,
                std::ostream& err);

// tpc client bench ARGS...: load generator; prints throughput and latency percentiles.
int run_bench_cli(const Options& o, const std::vector<std::string>& args);

// A value as the shell shows it: as is when one word of printable UTF-8, else double-quoted
// with the escapes the shell's input reads back (\" \\ \n \t \r \xHH).
std::string printable(const std::string& value);

// A fresh request id: 128 bits from the OS's CSPRNG, as 32 hex digits.
std::string new_request_id();

}  // namespace tpc::client
