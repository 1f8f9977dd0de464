// The client commands: one transaction or read against the leader, with the exit codes of the
// man page:
//   0 done; 1 key not found (get); 2 usage error or bad input; 3 aborted, known not applied
//   anywhere; 4 unavailable or outcome unknown.
#pragma once
#include <iosfwd>
#include <string>
#include <vector>

#include "protocol/ops.h"

namespace tpc::client {

enum Exit { k_ok = 0, k_not_found = 1, k_usage = 2, k_aborted = 3, k_unknown = 4 };

struct Options {
  std::string leader = "127.0.0.1:5000";
  int timeout_ms = 10000;  // one request
  int resolve_ms = 5000;   // after a lost connection: how long to ask for the outcome
  int retries = 3;         // definite aborts for conflict are retried this often
};

// Runs ops as one transaction. Writes "OK" to out on commit, reasons to err.
int run_txn(const Options& o, const std::vector<protocol::Op>& ops, std::ostream& out,
            std::ostream& err);
// Prints the value's bytes exactly, then one newline.
int run_get(const Options& o, const std::string& key, std::ostream& out, std::ostream& err);

// A fresh request id: 16 hex digits.
std::string new_request_id();

}  // namespace tpc::client
