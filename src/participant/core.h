// The participant's side of two-phase commit as a pure state machine: no sockets, no files, no
// clock, and no writes to the store. Every input is one Event, stepped with the current time;
// every output is a list of Actions (append a log record, apply a batch of commits to the
// store, reply to a request, ask a leader for an outcome, rewrite the log, log a line) and
// the time of the next tick it wants. The server (server.cpp) and the simulator (tests/sim)
// execute them. Spec: docs/recovery.md (rules), docs/design.md (the event/action model).
//
// Commit point of a participant: the PREPARED record is durable before it votes YES. From
// then on it never decides alone: the keys stay locked until the leader's decision arrives
// (or an operator's heuristic decision), and it asks the leader, with backoff, for as long
// as that takes.
//
// Contract with the executor of the actions:
//  - Append records in the order given. Report each forced or lazy record's durability with
//    ev::Durable, in append order. A failed append or sync stops the process.
//  - Apply: write the batch to the store in one store transaction (each op list with its
//    "txid applied" mark), then step ev::Applied. A failed apply stops the process. At most
//    one Apply is outstanding.
//  - Actions::flush: step ev::Flush once the events already queued have been stepped (the
//    end of an event-loop turn); that is where commits are batched.
//  - Ask: send OUTCOME for txid to the leader at that address; report the reply (or its
//    loss) with ev::Outcome.
//  - Rewrite: make the store durable first (the COMMITTED records about to go are the proof
//    of its commits), then replace the log with `live`.
//  - Reply: answer the client once; replies to a client that went away are dropped.
//  - Step ev::Tick at or after `wake_at` (0: no tick wanted).
//
// The store is only read (get) by the core: for conditions and reads.
#pragma once
#include <cstdint>
#include <deque>
#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "common/recent.h"
#include "membership/membership.h"
#include "protocol/messages.h"
#include "store/store.h"
#include "txlog/record.h"

namespace tpc::participant {

using tpc::Op;
using ClientId = uint64_t;  // the executor's handle of a waiting request; 0: nobody waits

// Log record types of a participant.
enum RecordType : uint8_t {
  k_rec_prepared = 1,   // txid, leader id, leader address, at, ops[, request id[, leader
                        // node]]: forced before voting YES
  k_rec_committed = 2,  // txid: written after the store applied it (forced lazily)
  k_rec_aborted = 3,    // txid (not forced: presumed abort covers its loss)
  k_rec_heuristic = 4,  // txid, decision (u8: 1 commit, 0 abort)[, leader address, request
                        // id, relayed (u8), reported (u8)]: an operator's resolution (forced)
  k_rec_reported = 5,   // txid: the leader heard of that heuristic decision (not forced: a
                        // lost one only means reporting it again)
  k_rec_epoch = 6,      // u64: the newest membership epoch a leader gave (not forced: the
                        // next forced record, a PREPARED, makes it durable)
};

// Every record type of the participant's log with its name (docs/log-format.md has a row for
// each; a unit test checks it). The server opens its log with these types only.
inline constexpr std::pair<uint8_t, const char*> k_records[] = {
    {k_rec_prepared, "PREPARED"},   {k_rec_committed, "COMMITTED"}, {k_rec_aborted, "ABORTED"},
    {k_rec_heuristic, "HEURISTIC"}, {k_rec_reported, "REPORTED"},   {k_rec_epoch, "EPOCH"}};

// An outcome an operator gave a prepared transaction here (tpc client resolve). It is kept
// for good: a later COMMIT or ABORT that contradicts it is answered with it, and it is
// reported to the transaction's leader, which records a HEURISTIC MISMATCH if it decided
// otherwise (docs/recovery.md).
struct Heuristic {
  bool commit = false;
  bool relayed = false;     // the operator relayed the leader's decision (resolve without
                            // --force); false: decided without the leader (--force)
  std::string leader_addr;  // where to report it ("": nowhere, a record of an older version)
  std::string rid;          // the client's request id ("" when it sent none)
  bool reported = false;    // the leader answered the report with its decision
};
std::string encode_heuristic(const std::string& txid, const Heuristic& h);
// Error CORRUPT when `payload` is not a whole HEURISTIC record.
Result<std::pair<std::string, Heuristic>> decode_heuristic(const std::string& payload);

struct Prepared {
  std::string txid;
  std::string rid;          // the client's request id ("" when it sent none)
  std::string leader;       // leader id
  std::string leader_addr;  // HOST:PORT to ask for the outcome
  std::string leader_node;  // node id of the leader that prepared it ("" : not known)
  std::vector<Op> ops;
  int64_t prepared_at_ms = 0;  // wall clock: ages survive restarts
  bool durable = false;        // PREPARED record forced
  bool recovered = false;      // rebuilt from the log after a restart
  bool applying = false;       // decided COMMIT: queued for, or in, a store batch
  bool applied = false;        // in the store; COMMITTED record being forced
  uint64_t sync_pass = 0;      // the copy pass under way when it was prepared (0: none)
  bool learner = false;        // prepared as a learner (PREPARE learner=1; not logged)
  // The core's placement generation when it was prepared (not logged: 0 after a restart).
  uint64_t placement_gen = 0;
};

std::string encode_prepared(const Prepared& p);
// Error CORRUPT when `payload` is not a whole PREPARED record.
Result<Prepared> decode_prepared(const std::string& payload);

struct CoreConfig {
  std::string id = "1";
  int64_t read_timeout_ms = 2000;   // a read of an in-doubt key waits this long: ERR INDOUBT
  int64_t resolve_after_ms = 1000;  // a prepared txn older than this asks its leader
  int64_t resolve_backoff_ms = 100;
  int64_t resolve_max_backoff_ms = 5000;
};

namespace ev {
// `from`: the node id of the leader whose connection carried the message (its HELLO, or
// its certificate). Only the leader that prepared a transaction may commit or abort it; an
// operator decides only through Resolve, which is recorded and reported to that leader.
struct Prepare {
  ClientId client = 0;
  protocol::Prepare msg;
  std::string from;
};
struct Commit {
  ClientId client = 0;
  std::string txid;
  std::string from;
};
struct Abort {
  ClientId client = 0;
  std::string txid;
  std::string from;
};
struct Read {
  ClientId client = 0;
  std::string key;
  uint64_t epoch = 0;  // the leader's membership epoch (0: unsaid, a client's)
};
// SCAN: keys under a prefix in key order, waiting (as Read does) while a prepared transaction
// writes a key in the range answered for; new writes there are refused meanwhile. With a
// watch id, the range stays read-locked (writes to it refused, for at most k_watch_ms) until
// ScanCheck asks whether it still is: the leader's proof that its pages are one snapshot.
struct Scan {
  ClientId client = 0;
  protocol::Scan msg;
  std::string from;  // the asking node (watch ids are per node)
};
struct ScanCheck {
  ClientId client = 0;
  std::string watch;
  std::string from;
};
// An operator's decision (tpc client resolve): forced to the log as a HEURISTIC record, then
// carried out. `relayed`: the operator relays the leader's decision (it asked the leader
// first); the participant cannot tell, so it reports it to the leader as any other.
struct Resolve {
  ClientId client = 0;
  std::string txid;
  bool commit = false;
  bool relayed = false;
};
struct Durable {  // a forced or lazy record is durable
  uint8_t type = 0;
  std::string txid;
  int64_t force_us = 0;
};
struct Applied {};  // the outstanding Apply is in the store
struct Flush {};    // end of an event-loop turn
struct Outcome {    // a leader's answer to Ask, or its loss
  std::string txid;
  Result<protocol::Decision> decision = Status::error("UNAVAILABLE", "no answer");
  bool report = false;  // the Ask was a report of an operator's outcome (Ask::heuristic)
};
// A leader of this participant's cluster (its JOIN was accepted) answers outcomes at `addr`.
// With several leaders over one decision store (docs/decision-store.md), a transaction whose
// own leader does not answer is asked of the others, which can settle it.
struct LeaderSeen {
  std::string addr;
};
// The membership this participant was admitted with, and its slot in it (a leader's JOIN):
// what a copied page's keys are matched against.
struct Members {
  size_t slot = 0;
  membership::Membership members;
  uint64_t epoch = 0;  // the leader's membership epoch (0: unsaid)
};
// SYNCBEGIN: a copy pass starts (docs/membership.md); the keys commits write from now on are
// left alone by its pages.
struct SyncBegin {
  ClientId client = 0;
  protocol::SyncBegin msg;
};
// SYNC: a page of the copy, applied (in a store batch, after the commits queued before it)
// unless a prepared write holds a key of its range (ERR BUSY: asked again later).
struct Sync {
  ClientId client = 0;
  protocol::Sync msg;
};
struct Tick {};
struct LogFull {};
}  // namespace ev
using Event =
    std::variant<ev::Prepare, ev::Commit, ev::Abort, ev::Read, ev::Scan, ev::ScanCheck, ev::Resolve,
                 ev::Durable, ev::Applied, ev::Flush, ev::Outcome, ev::LeaderSeen, ev::Members,
                 ev::SyncBegin, ev::Sync, ev::Tick, ev::LogFull>;

using ReplyMsg =
    std::variant<protocol::Vote, protocol::Ack, protocol::HeuristicReply, protocol::ReadReply,
                 protocol::ScanReply, protocol::ScanChecked, protocol::Error>;

inline constexpr int64_t k_watch_ms = 5000;    // a scan's watch is forgotten after this
inline constexpr size_t k_max_watches = 4096;  // watches kept at once (more: ERR BUSY)
inline constexpr size_t k_max_waiting_scans = 1024;
std::string encode(const ReplyMsg& m);

namespace act {
struct Append {
  enum Mode { none, force, lazy } mode = none;  // force and lazy: report ev::Durable
  uint8_t type = 0;
  std::string payload;
  std::string txid;
};
struct Apply {
  // (txid, ops), in order. The ops stay the core's: valid until the next step.
  std::vector<std::pair<std::string, const std::vector<Op>*>> batch;
  bool durable = false;  // make the store durable before ev::Applied (a copy's last page)
};
struct Reply {
  ClientId client = 0;
  ReplyMsg msg;
};
struct Ask {
  std::string leader_addr, txid;
  int64_t held_ms = -1;  // how long it has been held prepared (wall clock)
  // A report of an operator's outcome (no longer in doubt here): OUTCOME's heuristic= and
  // rid=. The answer is the leader's decision, stepped as ev::Outcome as for a query.
  std::optional<bool> heuristic;
  std::string rid;
};
struct Rewrite {
  std::vector<txlog::Record> live;
};
struct Note {  // a line for the operator's log
  enum Level { info, warn, error } level = info;
  std::string text;
};
}  // namespace act
using Action = std::variant<act::Append, act::Apply, act::Reply, act::Ask, act::Rewrite, act::Note>;

struct Actions {
  std::vector<Action> list;
  int64_t wake_at = 0;  // step ev::Tick at or after this time; 0: no tick wanted
  bool flush = false;   // step ev::Flush at the end of this event-loop turn
};

class Core {
 public:
  // `store` is read (get) for conditions and reads; it outlives the core.
  Core(CoreConfig cfg, store::Store& store) : m_cfg(std::move(cfg)), m_store(store) {}

  // --- recovery: every recovered record in order, then start() once.
  void recover(const txlog::Record& rec);
  // Ends recovery. `applied` is the store's set of applied txids, read after the store was
  // made durable (a transaction found applied is acknowledged as done from then on). Redoes, in log
  // order, every commit whose COMMITTED record is in the log but whose apply the store lost (one
  // Apply); re-takes the locks of every in-doubt transaction and asks its leader at once.
  Actions start(int64_t now_ms, int64_t wall_ms, const std::set<std::string>& applied);

  // Runs one event. `now_ms` is monotonic, `wall_ms` the wall clock (for prepared-at times).
  void step(int64_t now_ms, int64_t wall_ms, Event e, Actions& out);
  Actions step(int64_t now_ms, int64_t wall_ms, Event e) {
    Actions a;
    step(now_ms, wall_ms, std::move(e), a);
    return a;
  }

  // --- read-only views, for status, INDOUBT and tests.
  const std::map<std::string, Prepared>& prepared() const { return m_prepared; }
  // Prepared transactions whose outcome this participant does not know yet (not those whose
  // COMMIT it is applying).
  size_t in_doubt() const {
    return static_cast<size_t>(std::count_if(m_prepared.begin(), m_prepared.end(),
                                             [](const auto& p) { return !p.second.applying; }));
  }
  const Prepared* find(const std::string& txid) const;
  // The newest membership epoch a leader gave (PREPARE, READ, SCAN, JOIN): requests of an
  // older one are refused (ERR EPOCH; docs/membership.md). 0: none yet.
  uint64_t epoch() const { return m_epoch; }
  uint64_t epoch_refusals() const { return m_epoch_refusals; }
  const std::map<std::string, Heuristic>& heuristics() const { return m_heuristic; }
  // Heuristic decisions made without the leader (resolve --force), as status counts them.
  size_t forced_heuristics() const {
    return static_cast<size_t>(std::count_if(m_heuristic.begin(), m_heuristic.end(),
                                             [](const auto& h) { return !h.second.relayed; }));
  }
  uint64_t committed_count() const { return m_committed; }
  uint64_t aborted_count() const { return m_aborted; }
  uint64_t redone() const { return m_redone; }
  // Keys deleted because the placement no longer gives them to this participant.
  uint64_t pruned_keys() const { return m_pruned_keys; }
  // Locks match prepared transactions; returns the first violation, empty if none.
  std::string check_invariants() const;

 private:
  void on(int64_t now, int64_t wall, ev::Prepare& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::Commit& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::Abort& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::Read& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::Scan& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::ScanCheck& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::Resolve& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::Durable& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::Applied& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::Flush& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::Outcome& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::LeaderSeen& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::Members& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::SyncBegin& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::Sync& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::Tick& e, Actions& out);
  void on(int64_t now, int64_t wall, ev::LogFull& e, Actions& out);

  void commit(const std::string& txid, ClientId client, Actions& out);
  // A COMMIT or ABORT of a prepared transaction from another node than the leader that
  // prepared it: refused (ERR DENIED, logged). True when refused.
  bool denied(const std::string& verb, const std::string& txid, const std::string& from,
              ClientId client, Actions& out);
  bool resolving(const std::string& txid, ClientId client, Actions& out);
  void abort(const std::string& txid, ClientId client, Actions& out);
  void finish(std::map<std::string, Prepared>::iterator it, Actions& out);
  // `leaders`: a leader's READ (with its epoch), refused for a key this participant no longer
  // owns; an operator's reads any key held here.
  void read(ClientId client, const std::string& key, int64_t now, int64_t deadline, Actions& out,
            bool leaders = false);
  // Re-runs the blocked reads of `keys` at the current step's time.
  void wake_readers(const std::vector<std::string>& keys, Actions& out);
  // The range a scan answered for (or would): under `prefix`, after `after`, and up to `upto`
  // when `bounded` (a page that said MORE), else to the end of the prefix.
  struct ScanRange {
    std::string prefix, after, upto;
    bool bounded = false;
    bool holds(const std::string& key) const {
      return key.compare(0, prefix.size(), prefix) == 0 && key > after &&
             (!bounded || key <= upto);
    }
  };
  struct Lister {  // a SCAN waiting for an in-doubt key of its range
    ClientId client = 0;
    protocol::Scan msg;
    std::string from;
    int64_t deadline_ms = 0;
    ScanRange range;  // as last read
  };
  // A waiting scan's or a watch's range holding `key`: a write to it is refused (CONFLICT),
  // so that scans never starve behind new writers and a watched range stays as read.
  bool scanned(const std::string& key, int64_t now) const;
  void list(Lister l, int64_t now, Actions& out);
  // Re-runs the waiting scans (after locks were released, or at their deadline).
  void wake_listers(int64_t now, Actions& out);
  static void reply(Actions& out, ClientId c, ReplyMsg m);
  int64_t next_wake(int64_t now) const;

  CoreConfig m_cfg;
  store::Store& m_store;
  int64_t m_now = 0;                                              // the time of the step being run
  std::map<std::string, Prepared> m_prepared;                     // prepared, not yet finished
  std::map<std::string, std::string> m_locks;                     // key -> txid
  std::map<std::string, std::vector<ClientId>> m_vote_waiters;    // PREPARED being forced
  std::map<std::string, std::vector<ClientId>> m_commit_waiters;  // COMMITTED being forced
  struct Resolver {
    ClientId client = 0;
    Heuristic h;
  };
  std::map<std::string, Resolver> m_resolvers;  // HEURISTIC being forced
  std::vector<std::string> m_commit_queue;  // decided COMMIT, waiting for the next batch
  std::optional<ev::Members> m_members;     // as admitted (JOIN)
  // The placement this participant last dropped the keys it does not own under (prune): its
  // placed slots' names and the replica count ("" : none yet).
  std::string m_pruned_view;
  // The placement in effect as placement_view() gives it, and a count of its changes (from 1:
  // a transaction recovered from the log counts as prepared under another).
  std::string m_placement_view;
  uint64_t m_placement_gen = 1;
  // The placement in effect of `mem`, as text: the replica count and the placed slots' names.
  static std::string placement_view(const membership::Membership& mem);
  uint64_t m_pruned_keys = 0;
  bool m_prune_wanted = false;  // a prune waits for the batch being applied
  std::deque<std::vector<Op>>
      m_filtered_ops;  // the outstanding Apply's ops left after Flush's filter
  // After a membership change that took keys from this slot (member add): deletes the keys it
  // no longer owns, in pages applied like a copy's.
  void prune(Actions& out);
  uint64_t m_epoch = 0;
  uint64_t m_epoch_refusals = 0;
  // Whether a request of epoch `e` may run: not older than m_epoch. A newer one is recorded
  // (an EPOCH record, made durable by the next forced one).
  bool epoch_ok(uint64_t e, Actions& out);
  std::string epoch_refusal(uint64_t e) const;
  uint64_t m_sync_passes = 0;               // copy passes begun (a Prepared's sync_pass)
  struct SyncPass {
    uint64_t seq = 0;
    std::string pass;
    std::vector<size_t> sources;
    std::set<std::string> dirty;  // keys commits queued since SYNCBEGIN wrote
    uint64_t pages = 0;
    bool gain = false;  // the keys this participant gains (members changing), not owns
    bool drained = false;  // its pages need not wait for keys locked here (SyncBegin)
  };
  std::optional<SyncPass> m_sync;  // a copy under way (catching up)
  struct SyncPage {
    ClientId client = 0;
    std::string mark;  // the store's "applied" mark of this page
    std::vector<Op> ops;
    bool last = false;
  };
  std::vector<SyncPage> m_sync_queue;       // waiting for the next batch
  std::vector<SyncPage> m_sync_applying;    // in the outstanding Apply
  std::vector<std::string> m_applying;      // in the outstanding Apply
  bool m_redo_applying = false;             // the outstanding Apply is recovery's redo
  struct Reader {
    ClientId client;
    int64_t deadline_ms;
    bool leaders = false;  // read()'s
  };
  std::multimap<std::string, Reader> m_readers;                // blocked reads by key
  std::set<std::pair<int64_t, std::string>> m_read_deadlines;  // (deadline, key)
  std::vector<Lister> m_listers;                               // waiting scans
  struct Watch {  // a scan's read lock on the range it answered for
    ScanRange range;
    int64_t expires_ms = 0;
  };
  std::map<std::string, Watch> m_watches;  // "NODE WATCH-ID" -> range
  struct Query {
    int64_t next_ms = 0;
    int64_t backoff_ms = 0;
    uint64_t asked = 0;  // queries sent: odd ones go to another leader, when there is one
  };
  std::vector<std::string> m_leaders_seen;  // ev::LeaderSeen, in order, at most 16
  std::map<std::string, Query> m_queries;  // in-doubt txid -> outcome query state
  int64_t m_next_scan_ms = 0;
  std::map<std::string, Heuristic> m_heuristic;
  // Heuristic decisions the leader has not heard of yet: reported at every scan, with backoff.
  bool report_due(const Heuristic& h) const { return !h.reported && !h.leader_addr.empty(); }
  // The txids of m_heuristic whose report is due: an index, so that a step (next_wake) and a
  // scan look at none of the others, which are kept for good.
  std::set<std::string> m_reports_due;
  void report_heuristics(int64_t now, Actions& out);
  // The leader answered with its decision (an OUTCOME report, or its COMMIT or ABORT).
  void mark_reported(const std::string& txid, Heuristic& h, Actions& out);
  // Recently finished transactions, so a late duplicate PREPARE is not run again.
  RecentSet<std::string> m_recent_aborted{10000};
  RecentSet<std::string> m_recent_committed{10000};
  std::vector<Prepared> m_redo;  // recovery: committed in the log, in log order
  uint64_t m_redone = 0;
  uint64_t m_committed = 0;
  uint64_t m_aborted = 0;
};

}  // namespace tpc::participant
