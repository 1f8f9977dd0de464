// The participant's side of two-phase commit as a pure state machine: no sockets, no files,
// no clock. The server (server.cpp) feeds it requests and log completions, and does the I/O
// it asks for. Spec: docs/recovery.md.
//
// Commit point of a participant: the PREPARED record is durable before it votes YES. From
// then on it never decides alone: the keys stay locked until the leader's decision arrives.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "protocol/ops.h"
#include "store/store.h"
#include "txlog/record.h"

namespace tpc::participant {

using protocol::Op;

// Log record types of a participant.
enum RecordType : uint8_t {
  k_rec_prepared = 1,   // txid, leader id, leader address, ops: forced before voting YES
  k_rec_committed = 2,  // txid: written after the store applied it (not forced)
  k_rec_aborted = 3,    // txid (not forced: presumed abort covers its loss)
  k_rec_heuristic = 4,  // txid, decision (u8: 1 commit, 0 abort): an operator's forced
                        // resolution without the leader (forced)
};

struct Prepared {
  std::string txid;
  std::string leader;       // leader id
  std::string leader_addr;  // HOST:PORT to ask for the outcome
  std::vector<Op> ops;
  int64_t prepared_at_ms = 0;
  bool durable = false;    // PREPARED record forced
  bool recovered = false;  // rebuilt from the log after a restart
  bool applied = false;    // commit applied to the store; COMMITTED record being forced
};

std::string encode_prepared(const Prepared& p);
bool decode_prepared(const std::string& payload, Prepared* out);

class Core {
 public:
  explicit Core(store::Store& store) : m_store(store) {}

  // --- recovery: feed every recovered record in order, then finish_recovery().
  void recover(const txlog::Record& rec);
  // Redoes, in log order, every commit whose COMMITTED record is in the log but whose apply
  // did not reach the store (the store is not forced at commit; the log is). Re-takes the
  // locks of every in-doubt transaction. Returns the in-doubt txids; Status STORAGE in *st
  // when the store fails.
  std::vector<std::string> finish_recovery(int64_t now_ms, Status* st = nullptr);
  uint64_t redone() const { return m_redone; }

  // --- phase 1.
  struct PrepareResult {
    enum Kind { vote_no, vote_yes, log_then_vote, wait_durable } kind;
    std::string code;    // vote_no: CONFLICT, CHECK, ABORTED, STORAGE
    std::string detail;  // vote_no: human text
    std::string record;  // log_then_vote: the PREPARED payload to force
  };
  // Checks conditions and takes locks under the same critical section. log_then_vote: the
  // caller forces `record`, then calls prepare_durable() and votes YES. A repeated PREPARE of
  // a durable txn answers vote_yes; of one still being forced, wait_durable.
  PrepareResult prepare(const std::string& txid, const std::string& leader,
                        const std::string& leader_addr, std::vector<Op> ops, int64_t now_ms);
  // Returns true when txid is still prepared (vote YES), false if it was aborted meanwhile.
  bool prepare_durable(const std::string& txid);

  // --- phase 2. Both are idempotent.
  struct Finish {
    bool known = false;                 // txid was prepared here
    std::vector<std::string> released;  // keys whose locks were released
    Status status;                      // commit: STORAGE when the store failed (stop)
  };
  // A COMMIT, in two halves. apply_commit() writes the store (inside the caller's store
  // batch) and keeps the locks; finish_commit() releases them once the COMMITTED record is
  // durable. Between the two, the transaction is `applied`. A txid not prepared here (a
  // re-delivery after apply) is not known: acknowledged as is, nothing applied.
  Finish apply_commit(const std::string& txid);
  Finish finish_commit(const std::string& txid);
  Finish abort(const std::string& txid);

  // --- reads.
  struct ReadResult {
    enum Kind { found, absent, blocked, error } kind;
    std::string value;    // found
    std::string blocker;  // blocked: txid holding a prepared write on the key
    Status status;        // error
  };
  ReadResult read(const std::string& key);

  // --- heuristic decisions (tpc client resolve --force).
  void record_heuristic(const std::string& txid, bool commit);
  // nullopt: no heuristic decision for txid; else the decision taken (true = commit).
  std::optional<bool> heuristic(const std::string& txid) const;
  const std::map<std::string, bool>& heuristics() const { return m_heuristic; }

  const std::map<std::string, Prepared>& prepared() const { return m_prepared; }
  Prepared* find(const std::string& txid);
  uint64_t committed_count() const { return m_committed; }
  uint64_t aborted_count() const { return m_aborted; }

  // Check the invariants (locks match prepared transactions); returns a description of the
  // first violation, empty if none. Used by tests.
  std::string check_invariants() const;

 private:
  void release(const Prepared& p, std::vector<std::string>* released);
  void remember_aborted(const std::string& txid);
  store::Store& m_store;
  std::map<std::string, Prepared> m_prepared;
  std::map<std::string, std::string> m_locks;  // key -> txid
  std::map<std::string, bool> m_heuristic;
  std::set<std::string> m_recent_aborted;
  std::deque<std::string> m_recent_aborted_order;
  std::vector<Prepared> m_redo;  // recovery: committed in the log, in log order
  uint64_t m_redone = 0;
  uint64_t m_committed = 0;
  uint64_t m_aborted = 0;
};

}  // namespace tpc::participant
