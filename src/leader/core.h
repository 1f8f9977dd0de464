// The leader's side of two-phase commit (the coordinator) as a pure state machine: no sockets,
// no files, no clock. The server (server.cpp) feeds it requests, votes, acknowledgements,
// timer expiries and log completions, and does the I/O it asks for. Spec: docs/recovery.md.
//
// Commit point of the whole transaction: the leader's COMMIT record is durable. Before it,
// the transaction is aborted by any failure (presumed abort: no record means aborted). After
// it, the leader re-sends COMMIT until every participant acknowledged, then writes END.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "protocol/ops.h"
#include "txlog/record.h"

namespace tpc::leader {

using protocol::Op;

enum RecordType : uint8_t {
  k_rec_commit = 1,  // txid, client request id, participant indices: forced before any reply
  k_rec_end = 2,     // txid: every participant acknowledged (not forced)
  k_rec_rid = 3,     // rid, txid: a recent client request that committed (written by log
                     // rewrites, so RESULT survives them and a restart)
};

enum class Outcome { committed, aborted, pending };

struct Txn {
  enum Phase { preparing, deciding, committed, aborted };
  std::string txid;
  std::string rid;
  std::vector<size_t> parts;     // participant indices that own the keys
  std::map<size_t, bool> votes;  // received votes
  std::set<size_t> unacked;      // committed: participants yet to acknowledge
  Phase phase = preparing;
  int64_t deadline_ms = 0;
  std::string abort_code, abort_detail;
};

class Core {
 public:
  // `peers`: participant addresses in --peers order (placement hashes them). `replicas`: how
  // many participants own each key (0 or >= peers.size(): all).
  Core(std::string leader_id, uint64_t incarnation, std::vector<std::string> peers,
       size_t replicas);

  // --- recovery: every recovered record in order, then finish_recovery().
  void recover(const txlog::Record& rec);
  // Transactions decided COMMIT without END: to be re-sent.
  std::vector<std::string> finish_recovery();

  // Owners of `key`: rendezvous hashing of the key over the peer addresses.
  std::vector<size_t> owners(const std::string& key) const;

  // --- phase 1.
  struct Begin {
    enum Kind { started, known } kind;
    std::string txid;
    // started: send PREPARE to these participants, each with the ops on keys it owns
    std::vector<std::pair<size_t, std::vector<Op>>> targets;
    Outcome outcome = Outcome::pending;  // known: the outcome of an earlier request with this rid
  };
  // Starts a transaction for client request `rid` (may be empty). A rid seen before is not
  // run again: its earlier outcome is returned (kind known).
  Begin begin(const std::string& rid, std::vector<Op> ops, int64_t now_ms, int64_t timeout_ms);

  struct Step {
    enum Kind { none, abort, log_commit } kind = none;
    std::string code, detail;        // abort: reason
    std::vector<size_t> send_abort;  // abort: participants to tell
    std::string record;              // log_commit: payload of the COMMIT record to force
  };
  Step on_vote(const std::string& txid, size_t part, bool yes, const std::string& code,
               const std::string& detail);
  Step on_timeout(const std::string& txid);

  // --- phase 2.
  // The COMMIT record is durable: returns the participants to send COMMIT to.
  std::vector<size_t> on_decision_durable(const std::string& txid);
  // Returns true when this was the last acknowledgement (write END).
  bool on_ack(const std::string& txid, size_t part);
  // END written: forget the transaction (its rid outcome is kept).
  void on_end(const std::string& txid);

  // --- queries.
  // Outcome for a participant asking about txid (presumed abort for anything unknown).
  Outcome outcome(const std::string& txid) const;
  // Outcome of client request rid. An unknown rid is recorded as aborted, so a request with
  // that rid arriving later is refused instead of committed behind the client's back.
  Outcome result(const std::string& rid, std::string* txid);

  // Recent client requests that committed, oldest first: (rid, txid).
  std::vector<std::pair<std::string, std::string>> recent_commits() const;

  Txn* find(const std::string& txid);
  const std::map<std::string, Txn>& active() const { return m_txns; }
  // Committed transactions with unacknowledged participants.
  std::vector<std::pair<std::string, size_t>> unacked() const;
  uint64_t incarnation() const { return m_incarnation; }
  uint64_t committed_count() const { return m_committed; }
  uint64_t aborted_count() const { return m_aborted; }

 private:
  Step abort_txn(Txn& t, std::string code, std::string detail);
  void remember(const std::string& rid, Outcome o, const std::string& txid);
  std::string m_id;
  uint64_t m_incarnation;
  std::vector<std::string> m_peers;
  size_t m_replicas;
  uint64_t m_next_seq = 1;
  std::map<std::string, Txn> m_txns;       // active (not yet ended/forgotten)
  std::set<std::string> m_decided_commit;  // committed, END not yet written
  struct RidOutcome {
    Outcome outcome;
    std::string txid;
  };
  std::map<std::string, RidOutcome> m_rids;
  std::deque<std::string> m_rid_order;  // bounded memory of client request outcomes
  uint64_t m_committed = 0;
  uint64_t m_aborted = 0;
};

std::string encode_commit(const std::string& txid, const std::string& rid,
                          const std::vector<size_t>& parts);
bool decode_commit(const std::string& payload, std::string* txid, std::string* rid,
                   std::vector<size_t>* parts);

}  // namespace tpc::leader
