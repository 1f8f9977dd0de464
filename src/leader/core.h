// The leader's side of two-phase commit (the coordinator) as a pure state machine: no sockets,
// no files, no clock. Every input is one Event, stepped with the current time; every output is
// a list of Actions (append a log record, send a message to a participant, reply to a client,
// rewrite the log) and the time of the next tick it wants. The server (server.cpp) and the
// simulator (tests/sim) are its only users: they decode, step, and execute the actions.
// Spec: docs/recovery.md (rules), docs/design.md (the event/action model).
//
// Commit point of the whole transaction: the leader's COMMIT record is durable. Before it,
// the transaction is aborted by any failure (presumed abort: no record means aborted). After
// it, the leader re-sends COMMIT (with backoff) until every participant acknowledged, then
// writes END and forgets the transaction.
//
// Contract with the executor of the actions:
//  - Append records in the order given; report a forced (or the COMMIT) record's durability
//    with ev::Durable, in append order. A failed append or sync stops the process.
//  - Send: deliver the message to participant `part` as a request; report its reply (or its
//    loss, when the connection fails first) with the event the message names (ev::Vote for
//    Prepare, ev::CommitReply for Commit, ev::ReadReply for Read; replies to Abort are not
//    reported). Messages may be lost; the core re-sends what matters.
//  - Reply: answer client `client` once; replies to a client that went away are dropped.
//  - Step ev::Tick at or after `wake_at` (0: no tick wanted).
#pragma once
#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "membership/membership.h"
#include "protocol/messages.h"
#include "txlog/record.h"

namespace tpc::leader {

using tpc::Op;

enum RecordType : uint8_t {
  k_rec_commit = 1,  // txid, client request id, participant indices[, ops digest]: forced
                     // before any reply
  k_rec_end = 2,     // txid: every participant acknowledged (not forced)
  k_rec_rid = 3,  // rid, txid[, ops digest]: a recent client request that committed (written by log
                  // rewrites, so RESULT survives them and a restart)
  k_rec_heuristic = 4,   // txid, rid, participant index, decided (u8), theirs (u8): a HEURISTIC
                         // MISMATCH (forced); kept until FORGET
  k_rec_forget = 5,      // txid: an operator acknowledged its mismatches (not forced: a lost
                         // one only shows them again)
  k_rec_membership = 6,  // the membership's one-line encoding (docs/membership.md): forced
                         // before any transaction uses it; the last one holds
};

// Every record type of the leader's log with its name (docs/log-format.md has a row for each;
// a unit test checks it). The server opens its log with these types only.
inline constexpr std::pair<uint8_t, const char*> k_records[] = {
    {k_rec_commit, "COMMIT"},       {k_rec_end, "END"},       {k_rec_rid, "RID"},
    {k_rec_heuristic, "HEURISTIC"}, {k_rec_forget, "FORGET"}, {k_rec_membership, "MEMBERSHIP"}};

// A participant finished a transaction on an operator's order (tpc client resolve) otherwise
// than this leader decided it: a heuristic outcome, as Narayana and the XA standard call it.
// Recorded durably and shown (RESULT, HEURISTICS, STATS) until an operator forgets it.
struct Mismatch {
  std::string txid, rid;
  size_t part = 0;
  bool decided_commit = false;  // this leader's decision
  bool their_commit = false;    // the participant's outcome
};
std::string encode_mismatch(const Mismatch& m);
// Error CORRUPT when `payload` is not a whole HEURISTIC record.
Result<Mismatch> decode_mismatch(const std::string& payload);

using membership::place;

using ClientId = uint64_t;  // the executor's handle of a waiting client; 0: nobody waits

struct CoreConfig {
  std::string id = "1";
  uint64_t incarnation = 1;
  std::vector<std::string> peers;  // participant addresses in --peers order (placement)
  size_t replicas = 0;             // owners of each key; 0 or >= peers.size(): all
  std::string advertise;           // HOST:PORT participants ask outcomes at
  int64_t prepare_timeout_ms = 2000;
  int64_t resend_ms = 200;       // first re-send of an unacknowledged COMMIT
  int64_t resend_max_ms = 3200;  // backoff cap
  // A participant's message limit until its link says otherwise (the participants' default).
  size_t peer_max_message = protocol::k_default_max_message;
  // A decision store shared with other leaders (etcd): another leader's transactions are
  // looked up there and settled by this leader when their own is gone, and a request id
  // unknown here may be another's (docs/decision-store.md).
  bool shared_store = false;
  // Shared store: a transaction a participant has held in doubt this long may be settled
  // even while its leader lives (--takeover-after).
  int64_t takeover_after_ms = 2000;
  // A participant whose link is not up is "connecting" for this long after the link was lost
  // (or after start): requests for its keys wait for it instead of failing. After it, the
  // participant is down (--exclude-after).
  int64_t exclude_after_ms = 5000;
  // A write needs this many in-sync owners of each of its keys (--min-insync).
  size_t min_insync = 1;
  // Participants unreachable past exclude_after_ms are marked out by a membership change
  // (docs/membership.md). Off: they stay members, and writes to their keys fail.
  bool exclude = true;
  // Shared store: a membership read from the store is trusted this long for reads and scans
  // (they wait once the last read that confirmed it is older), and a change that takes a copy
  // out of in-sync is used only twice this long after it was stored (docs/membership.md,
  // "Several leaders").
  int64_t members_lease_ms = 1000;
};

// What a shared decision store holds of another leader's transaction (act::Lookup).
struct StoreFacts {
  bool committed = false;    // a batch of its leader holds its decision
  bool aborted = false;      // a settler's abort key exists
  bool owner_alive = false;  // its leader's key is held by a live lease
};
// A participant's report of an operator's outcome of this leader's transaction `txid`
// (ev::Outcome with `heuristic`) waiting for the shared store (act::FindRid).
struct ReportOf {
  std::string txid;
  bool heuristic = false;
  size_t part = SIZE_MAX;
};
// How an act::Settle ended.
enum class SettleResult {
  committed,   // a batch of the owner holds it after all: committed
  settled,     // this leader's abort key was created: aborted
  aborted,     // another settler's abort key was there: aborted
  owner_back,  // the owner's key is back (fenced settle): the owner decides
};

namespace ev {
struct Txn {  // TXN / PUT / DEL from a client
  ClientId client = 0;
  std::string rid;  // client request id, may be empty
  std::vector<Op> ops;
  bool trace = false;
};
struct Get {
  ClientId client = 0;
  std::string key;
};
// SCAN PREFIX AFTER LIMIT from a client: keys under PREFIX after AFTER in key order, at most
// LIMIT of them and about `max_bytes` (at least one key), linearizably (docs/protocol.md).
struct Scan {
  ClientId client = 0;
  std::string prefix, after;
  uint64_t limit = 1;
  uint64_t max_bytes = 1;
};
struct ScanReply {  // a participant's reply to SCAN (or its loss)
  uint64_t scan = 0;
  size_t part = 0;
  protocol::ScanReply reply;
};
struct ScanChecked {  // a participant's reply to SCANCHECK (or its loss: not clean)
  uint64_t scan = 0;
  size_t part = 0;
  std::string watch;
  bool clean = false;
};
struct Result {  // RESULT RID
  ClientId client = 0;
  std::string rid;
};
// OUTCOME TXID from a participant in doubt; or, with `heuristic`, its report of an outcome an
// operator forced there: a contradicting one is recorded (durably, before the reply).
struct Outcome {
  ClientId client = 0;
  std::string txid;
  std::optional<bool> heuristic;  // the participant's outcome: true commit, false abort
  std::string rid;                // the client's request id, as the participant knows it
  size_t part = SIZE_MAX;         // the reporting participant (SIZE_MAX: not one of ours)
  int64_t held_ms = -1;           // how long the participant has held it in doubt (-1: unsaid)
};
// FORGET TXID: an operator acknowledged TXID's heuristic mismatches.
struct Forget {
  ClientId client = 0;
  std::string txid;
};
struct Vote {  // reply to PREPARE (or its loss)
  std::string txid;
  size_t part = 0;
  protocol::Vote vote;
};
struct CommitReply {  // reply to COMMIT (or its loss)
  std::string txid;
  size_t part = 0;
  bool acked = false;
  bool heuristic = false;  // "HEURISTIC ABORTED": the participant aborted it on an operator's
                           // order (recorded; it counts as its answer)
};
// "HEURISTIC COMMITTED" in reply to ABORT: the participant committed it on an operator's
// order. (Other replies to ABORT are not reported.)
struct AbortReply {
  std::string txid;
  size_t part = 0;
};
struct ReadReply {
  uint64_t read = 0;
  size_t part = 0;
  protocol::ReadReply reply;
};
struct Durable {  // the forced record `type` (COMMIT or HEURISTIC) of txid is durable
  std::string txid;
  int64_t force_us = 0;
  uint8_t type = k_rec_commit;
};
// The decision store holds another decision for txid than the COMMIT asked for (an etcd
// decision store: a leader that took over settled it as aborted first). The transaction is
// aborted: the client is told so, the participants get ABORT.
struct Refused {
  std::string txid;
  // Not an abort: the membership the decision was taken under is no longer the store's
  // (ev::MembersSeen brought the new one first). The transaction is decided again under the
  // new membership if its votes cover it, else aborted.
  bool stale_members = false;
};
// Shared store: the membership it holds (its one-line encoding), read at `asked_ms` (the
// executor's poll, the answer to act::PutMembers, or a decision refused as stale); `leaders`:
// the leaders whose keys are held (empty: not read). An error: the store could not say.
struct MembersSeen {
  Status status = Status::ok();
  std::string encoded;
  int64_t asked_ms = -1;  // -1: not a confirmation (a refused decision's)
  std::vector<std::string> leaders;
  bool put = false;  // the answer to this leader's act::PutMembers
};
// The answer to act::Lookup (an error: the store could not say).
struct Looked {
  ClientId client = 0;
  std::string txid, owner;
  int64_t held_ms = -1;
  tpc::Result<StoreFacts> facts = StoreFacts{};
};
// The answer to act::Settle.
struct Settled {
  ClientId client = 0;
  std::string txid;
  tpc::Result<SettleResult> result = SettleResult::owner_back;
};
// The answer to act::FindRid: the txid that committed request `rid` ("": none known).
struct RidFound {
  ClientId client = 0;
  std::string rid;
  tpc::Result<std::string> txid = std::string();
  std::optional<ReportOf> report;  // act::FindRid's, echoed
};
// A shared decision store became reachable with this leader's lease held (up), or not.
struct StoreHealth {
  bool up = true;
};
// A participant's reply to SYNCBEGIN or SYNC (or its loss): ok, or the error.
struct SyncReply {
  uint64_t id = 0;
  size_t part = 0;
  Status status = Status::ok();
};
struct LinkUp {
  size_t part = 0;
  size_t max_message = 0;  // the longest message the participant accepts (its HELLO); 0: not said
};
struct LinkDown {
  size_t part = 0;
};
struct Tick {};
struct LogFull {};  // the log outgrew its threshold: answer with a Rewrite
// PAUSE MS (a backup): new transactions wait; the reply "OK" comes once every transaction in
// flight has ended (decided, and every COMMIT acknowledged), so that each participant's
// store then holds the same transactions. The pause ends with Resume, or by itself after
// `max_ms` (a backup client that died never stops the cluster for long).
struct Pause {
  ClientId client = 0;
  int64_t max_ms = 10000;
};
struct Resume {
  ClientId client = 0;
};
// An operator removes a participant (member remove): its slot leaves, its keys are copied to
// the slots that gain them, then the cutover removes it. Answered once it is removed.
struct Remove {
  ClientId client = 0;
  size_t slot = 0;
};
// An operator adds a participant at `addr` (member add): a new slot joins, copies the keys it
// gains as a learner (its vote does not count), then the cutover makes it in-sync. Answered
// once it is (or once the add rolled back: the new participant was down past exclude_after_ms).
struct Add {
  ClientId client = 0;
  std::string addr;
};
// An operator gives participant `slot` a new node at `addr` (member replace): the slot keeps
// its placement name, so no key moves; it is out until the node at `addr` is reachable, then
// catches up there. Answered once it is in-sync at `addr`.
struct Replace {
  ClientId client = 0;
  size_t slot = 0;
  std::string addr;
};
}  // namespace ev
using Event =
    std::variant<ev::Txn, ev::Get, ev::Scan, ev::Result, ev::Outcome, ev::Forget, ev::Vote,
                 ev::CommitReply, ev::AbortReply, ev::ReadReply, ev::ScanReply, ev::ScanChecked,
                 ev::Durable, ev::Refused, ev::Looked, ev::Settled, ev::RidFound, ev::StoreHealth,
                 ev::MembersSeen, ev::SyncReply, ev::LinkUp, ev::LinkDown, ev::Tick, ev::LogFull,
                 ev::Pause, ev::Resume, ev::Remove, ev::Add, ev::Replace>;

// What a client is told.
struct ClientReply {
  enum Kind {
    committed,  // COMMITTED [TXID]
    aborted,    // ABORTED [CODE TEXT]
    pending,    // PENDING [TXID]
    error,      // ERR CODE TEXT
    found,      // VALUE V
    not_found,  // NOTFOUND
    ok,         // OK [DETAIL]
    keys,       // KEYS MORE|END COUNT {KEY VALUE}
    heuristic,  // HEURISTIC TXID commit|abort TEXT (code: this leader's decision)
  } kind = error;
  std::string txid, code, detail, value;
  std::vector<std::pair<std::string, std::string>> kvs;  // keys
  bool more = false;                                     // keys
};

// One page of a scan from the participants' pages: the keys up to the smallest last key of a
// page that said MORE (beyond it that participant did not say), one copy of each key, then at
// most `limit` keys and `max_bytes` (at least one key). MORE when anything was cut.
protocol::ScanReply merge_scan(const std::vector<protocol::ScanReply>& pages, uint64_t limit,
                               uint64_t max_bytes);
inline constexpr int k_scan_attempts = 8;  // a scan whose read lock kept being lost: ERR CONFLICT
std::string encode(const ClientReply& r);

namespace act {
struct Append {
  uint8_t type = 0;
  std::string payload;
  bool force = false;  // forced: report ev::Durable{txid} once durable
  std::string txid;
};
struct Send {
  size_t part = 0;
  protocol::PeerRequest msg;
  uint64_t read = 0;  // Read, Scan, ScanCheck: the id to report in ev::ReadReply, ev::ScanReply,
                      // ev::ScanChecked
};
struct Reply {
  ClientId client = 0;
  ClientReply reply;
};
struct Rewrite {  // replace the whole log with these records (after every queued append)
  std::vector<txlog::Record> live;
};
struct Trace {  // a step of a transaction the client asked to trace
  std::string txid, rid, text;
  bool finished = false;
};
// Shared store: read what it holds of `txid`, a transaction of leader `owner`; answer with
// ev::Looked (echoing the fields).
struct Lookup {
  ClientId client = 0;
  std::string txid, owner;
  int64_t held_ms = -1;
};
// Shared store: settle `txid` of leader `owner` as aborted: create its abort key only if
// absent and, when `fenced`, only while the owner's key is gone; read the owner's batches in
// the same transaction. Answer with ev::Settled.
struct Settle {
  ClientId client = 0;
  std::string txid, owner;
  bool fenced = true;
};
// Shared store: which transaction committed request `rid`; answer with ev::RidFound
// (echoing `report`).
struct FindRid {
  ClientId client = 0;
  std::string rid;
  std::optional<ReportOf> report;  // asked for a participant's report
};
// Shared store: membership `next` replaces `expect` there by compare-and-swap (only if the
// store still holds `expect`, byte for byte). Answer with ev::MembersSeen (`put`): the store's
// membership after it.
struct PutMembers {
  std::string expect, next;
};
}  // namespace act
using Action = std::variant<act::Append, act::Send, act::Reply, act::Rewrite, act::Trace,
                            act::Lookup, act::Settle, act::FindRid, act::PutMembers>;

struct Actions {
  std::vector<Action> list;
  int64_t wake_at = 0;  // step ev::Tick at or after this time; 0: no tick wanted
};

class Core {
 public:
  explicit Core(CoreConfig cfg);

  // --- recovery: every recovered record in order, then start() once.
  void recover(const txlog::Record& rec);
  // Ends recovery: re-sends COMMIT for every decision without END.
  Actions start(int64_t now_ms);

  // Runs one event at time `now_ms` (monotonic). Appends to `out` and sets out.wake_at.
  void step(int64_t now_ms, Event e, Actions& out);
  Actions step(int64_t now_ms, Event e) {
    Actions a;
    step(now_ms, std::move(e), a);
    return a;
  }

  std::vector<size_t> owners(const std::string& key) const { return m_members.owners(key); }
  // The membership in effect (a change being forced is not, yet), and its encoding as the
  // log or the shared store holds it.
  const membership::Membership& members() const { return m_members; }
  const std::string& members_text() const { return m_members_text; }

  // --- read-only views, for status and tests.
  enum class Phase { preparing, deciding, committed };
  std::optional<Phase> phase(const std::string& txid) const;
  protocol::Decision decision(const std::string& txid) const;  // as OUTCOME answers
  size_t active() const { return m_txns.size(); }
  // Transactions still collecting votes.
  size_t preparing() const { return m_deadlines.size(); }
  // Whether this leader remembers request `rid` (RESULT answers from its memory).
  bool paused() const { return m_paused.has_value(); }
  size_t unacked() const;  // (txn, participant) pairs waiting for a COMMIT acknowledgement
  uint64_t incarnation() const { return m_cfg.incarnation; }
  uint64_t committed_count() const { return m_committed; }
  // Membership changes this leader made that marked a participant out, and that made one
  // in-sync again.
  uint64_t exclusions() const { return m_exclusions; }
  uint64_t rejoins() const { return m_rejoins; }
  // Shared store: membership changes taken from another leader; decisions refused as of an
  // older membership and taken again under the new one.
  uint64_t adopted() const { return m_adopted; }
  uint64_t redecided() const { return m_redecided; }
  // Copies finished (each ends with a rejoin): keys and bytes copied, and time taken.
  struct CatchUpTotals {
    uint64_t keys = 0, bytes = 0;
    int64_t ms = 0;        // all copies together
    int64_t last_ms = -1;  // the last copy (-1: none yet)
  };
  const CatchUpTotals& catchup_totals() const { return m_catchup_totals; }
  // The copy under way: its participant, keys and bytes so far, since when (for status and
  // metrics); nullopt when none.
  struct CatchUpView {
    size_t slot = 0;
    uint64_t keys = 0, bytes = 0, passes = 0;
    int64_t started_ms = 0;
  };
  std::optional<CatchUpView> catching_up() const {
    if (!m_catchup) return std::nullopt;
    return CatchUpView{m_catchup->slot, m_catchup->keys, m_catchup->bytes, m_catchup->passes,
                       m_catchup->started_ms};
  }
  uint64_t aborted_count() const { return m_aborted; }
  const CoreConfig& config() const { return m_cfg; }
  // Heuristic mismatches recorded and not yet forgotten, by (txid, participant).
  const std::map<std::pair<std::string, size_t>, Mismatch>& mismatches() const {
    return m_mismatches;
  }

 private:
  struct Txn {
    std::string rid;
    uint64_t digest = 0;  // ops_digest of the client's request
    ClientId client = 0;
    std::vector<size_t> parts;     // participants that own the keys
    std::set<size_t> learners;     // of them, those catching up: their votes do not count
    std::set<size_t> dropped;      // learners not waited for (they still get the decision)
    // Owners of its keys that were out, so not asked (with `parts`, every owner: a catch-up
    // waits for it, and a new membership may need their votes). Usually none.
    std::vector<size_t> skipped;
    std::map<size_t, bool> votes;  // received votes
    uint64_t placement_gen = 0;    // m_placement_gen when it was prepared
    Phase phase = Phase::preparing;
    int64_t deadline_ms = 0;
    struct Pending {  // committed: a participant yet to acknowledge
      int64_t next_send_ms = 0;
      int64_t backoff_ms = 0;
    };
    std::map<size_t, Pending> unacked;
    bool trace = false;
  };
  struct PendingRead {
    ClientId client;
    std::string key;
    std::vector<size_t> order;
    size_t next = 0;
  };

  void on(int64_t now, ev::Txn& e, Actions& out);
  void on(int64_t now, ev::Get& e, Actions& out);
  void on(int64_t now, ev::Scan& e, Actions& out);
  void on(int64_t now, ev::ScanReply& e, Actions& out);
  void on(int64_t now, ev::ScanChecked& e, Actions& out);
  void start_scan(uint64_t id, Actions& out);
  struct PendingScan;
  // Replies with the merged page and forgets the scan.
  void finish_scan(std::map<uint64_t, PendingScan>::iterator it, Actions& out);
  void on(int64_t now, ev::Result& e, Actions& out);
  void on(int64_t now, ev::Outcome& e, Actions& out);
  void on(int64_t now, ev::Forget& e, Actions& out);
  void on(int64_t now, ev::Vote& e, Actions& out);
  void on(int64_t now, ev::CommitReply& e, Actions& out);
  void on(int64_t now, ev::AbortReply& e, Actions& out);
  // Records a mismatch once (forced); `waiter` gets `r` once it is durable (0: nobody).
  void mismatch(Mismatch m, ClientId waiter, ClientReply r, Actions& out);
  void answer_outcome(ClientId client, const std::string& txid, std::optional<bool> heuristic,
                      const std::string& report_rid, size_t part, protocol::Decision d,
                      Actions& out);
  void on(int64_t now, ev::ReadReply& e, Actions& out);
  void on(int64_t now, ev::Durable& e, Actions& out);
  void on(int64_t now, ev::Refused& e, Actions& out);
  void on(int64_t now, ev::Looked& e, Actions& out);
  void on(int64_t now, ev::Settled& e, Actions& out);
  void on(int64_t now, ev::RidFound& e, Actions& out);
  void on(int64_t now, ev::StoreHealth& e, Actions& out);
  void on(int64_t now, ev::MembersSeen& e, Actions& out);
  void on(int64_t now, ev::SyncReply& e, Actions& out);
  void on(int64_t now, ev::LinkUp& e, Actions& out);
  void on(int64_t now, ev::LinkDown& e, Actions& out);
  void on(int64_t now, ev::Tick& e, Actions& out);
  void on(int64_t now, ev::LogFull& e, Actions& out);
  void on(int64_t now, ev::Pause& e, Actions& out);
  void on(int64_t now, ev::Resume& e, Actions& out);
  void on(int64_t now, ev::Remove& e, Actions& out);
  // `client` is answered once the members stop moving (answer_moves).
  void wait_for_move(int64_t now, ClientId client);
  void on(int64_t now, ev::Add& e, Actions& out);
  void on(int64_t now, ev::Replace& e, Actions& out);
  // The address participant p is reached at now.
  const std::string& addr(size_t p) const { return m_members.slots[p].addr; }
  // Sizes the per-participant vectors to the membership (a member add made slots).
  void grow(int64_t now);
  // Tells the operators waiting for a member add, remove or replace that it ended (apply_change).
  void answer_moves(const membership::Membership& was, int64_t now, Actions& out);
  // While members change: the next slot that must copy the keys it gains, or the cutover once
  // every one has.
  void move_keys(int64_t now, Actions& out);
  // Why a member change is refused while another runs (or a replace waits for its node).
  std::string busy() const;
  // The replace under way gives way to another change of its slot: its waiters answered
  // ERR STATE `why`.
  void end_replace(const std::string& why, Actions& out);
  void resume(int64_t now, Actions& out);
  // Runs a transaction admitted by on(ev::Txn) (its request id checked), or parks it while a
  // participant owning one of its keys is connecting.
  void begin(int64_t now, ev::Txn& e, uint64_t digest, Actions& out);
  // Whether participant p's link is down but may come up soon: lost (or never up since
  // start) less than exclude_after_ms ago.
  bool connecting(size_t p, int64_t now) const {
    return !m_up[p] && now < m_lost_at[p] + m_cfg.exclude_after_ms;
  }
  // Parks `e` when one of `parts` is connecting (true), until that changes.
  template <typename E>
  bool park(int64_t now, const std::vector<size_t>& parts, E& e, Actions& out, bool wait = false);
  // Shared store: parks a read or a scan (or fails it, the store unreachable) while the
  // membership in effect is not confirmed recently (true).
  bool wait_for_members(int64_t now, ev::Get* g, ev::Scan* s, Actions& out);
  // Runs the parked requests again (a link came up, or a connecting participant is down).
  void unpark(int64_t now, Actions& out);
  // The earliest time a connecting participant turns down (INT64_MAX: none is connecting).
  int64_t connecting_until(int64_t now) const;
  // Proposes membership `next` (epoch one higher): forced to the log, or put in the shared
  // store by compare-and-swap; in effect once durable (apply_change).
  void change_members(membership::Membership next, Actions& out);
  // m_changing is durable: it takes effect now, or (shared store, a copy leaves in-sync) once
  // every other leader's trust in the old one has run out.
  void stage_change(int64_t now, Actions& out);
  void apply_change(int64_t now, Actions& out);
  // Shared store: whether transaction t's YES votes cover membership m: every owner of its
  // keys that m writes to voted YES (or, `preparing`, was asked to).
  bool covers(const Txn& t, const membership::Membership& m, bool preparing) const;
  // Shared store: the membership in effect is confirmed recent enough for reads.
  bool members_fresh(int64_t now) const {
    return !m_cfg.shared_store || !m_cfg.exclude ||
           (m_confirmed_ms != INT64_MIN && now < m_confirmed_ms + m_cfg.members_lease_ms);
  }
  // Shared store: whether this leader copies participants that catch up: the lowest live
  // leader id does (the others would restart its passes).
  bool drives_catchup() const {
    return !m_cfg.shared_store ||
           (!m_leaders.empty() &&
            *std::min_element(m_leaders.begin(), m_leaders.end()) == m_cfg.id);
  }
  // Whether a down participant may be marked out now: exclusion on and no change being made
  // (one at a time).
  bool excluding() const { return m_cfg.exclude && !m_changing; }
  // Marks out the participants down past exclude_after_ms (one change at a time).
  void exclude_down(int64_t now, Actions& out);
  // All counted votes YES: force the COMMIT record.
  void decide_if_ready(std::map<std::string, Txn>::iterator it, Actions& out);
  // Learner `part` took no part in it after all (its NO, its loss, or no vote in time): the
  // transaction goes on without it, and its copy starts over (it missed this write).
  void drop_learner(Txn& t, size_t part, int64_t now, Actions& out);
  // Whether learner p's missing or NO vote may be dropped (its copy is not complete yet).
  bool learner_may_drop(size_t p) const;
  // --- catching up (docs/membership.md): one participant at a time.
  void rejoin(int64_t now, Actions& out);  // marks up out slots catching-up; starts copies
  void start_catchup(size_t slot, int64_t now, Actions& out, bool gain = false);
  void catchup_send(int64_t now, Actions& out);  // the current step's request
  bool catchup_scan_reply(ev::ScanReply& e, int64_t now, Actions& out);
  // Whether participant p is in-sync and reachable: asked for reads and scans.
  bool serves(size_t p) const {
    return m_up[p] && m_members.slots[p].state == membership::State::in_sync;
  }
  void check_paused(Actions& out);

  void abort_txn(std::map<std::string, Txn>::iterator it, std::string code, std::string detail,
                 Actions& out);
  void send_commit(const std::string& txid, Txn& t, size_t part, int64_t now, Actions& out);
  void try_read(uint64_t id, Actions& out);
  // Callers test t.trace first, so untraced transactions build no text.
  void trace(const std::string& txid, const Txn& t, std::string text, Actions& out,
             bool finished = false);
  void remember(const std::string& rid, protocol::Decision d, const std::string& txid,
                uint64_t digest);
  int64_t next_wake(int64_t now) const;

  CoreConfig m_cfg;
  uint64_t m_next_seq = 1;
  std::map<std::string, Txn> m_txns;                      // not yet aborted or ended
  std::set<std::pair<int64_t, std::string>> m_deadlines;  // preparing: (deadline, txid)
  std::set<std::string> m_decided;                        // committed, END not yet written
  int64_t m_next_resend_ms = 0;
  std::vector<bool> m_up;              // link to each participant is up
  std::vector<int64_t> m_lost_at;      // when each link was last lost (start: the core's start)
  // Requests waiting for a connecting participant, in arrival order (a Txn's request id is
  // remembered as pending meanwhile).
  struct Parked {
    std::variant<ev::Txn, ev::Get, ev::Scan> e;
    uint64_t digest = 0;
  };
  std::deque<Parked> m_parked;
  int64_t m_unpark_at = INT64_MAX;      // the first parked request's participant turns down then
  struct CatchUp {
    size_t slot = 0;
    bool gain = false;  // a copy of the keys the slot gains (members changing), not owns
    std::string pass;
    enum Step { begin, scan, sync, done } step = begin;
    std::vector<size_t> sources;  // in-sync slots at the start of the pass
    size_t src = 0;               // the source being read
    std::string after;            // its next page starts after this key
    uint64_t id = 0;              // the outstanding request (0: none; sent at retry_at)
    int64_t retry_at = 0;
    int64_t drain_since = -1;  // when its pass first waited for transactions to end (-1: not)
    protocol::Sync page;  // the page being applied
    int64_t started_ms = 0;
    uint64_t keys = 0, bytes = 0, passes = 0;
  };
  // `c`'s sources without those down past connecting, if every key it copies still has a
  // source among its owners then (a dead node holds no copy up); otherwise all of them (the
  // copy waits).
  std::vector<size_t> live_sources(const CatchUp& c, int64_t now) const;
  std::optional<CatchUp> m_catchup;
  uint64_t m_next_pass = 1;
  // While members change: the slots whose copy of the keys they gain is complete (and that
  // have stayed in-sync since), and the operators waiting for the change to end.
  std::set<size_t> m_gained;
  // Bumped by every change that puts a slot in or out of a placement (a member leaving,
  // joining, the cutover): a transaction prepared before has no vote from the slots that
  // write its keys now, so no new membership covers it.
  uint64_t m_placement_gen = 0;
  std::vector<ClientId> m_move_waiting;
  // A member replace under way (one at a time): answered once its slot is in-sync at `addr`.
  struct Replacing {
    size_t slot = 0;
    std::string addr;
    std::vector<ClientId> waiting;
    int64_t started_ms = 0;
    CatchUpTotals from;
  };
  std::optional<Replacing> m_replacing;
  int64_t m_move_started_ms = 0;  // when the change began here, and the copy totals then
  CatchUpTotals m_move_from;
  uint64_t m_exclusions = 0, m_rejoins = 0, m_adopted = 0, m_redecided = 0;
  CatchUpTotals m_catchup_totals;
  membership::Membership m_members;                  // in effect
  std::string m_members_text;                        // its encoding, as stored
  std::optional<membership::Membership> m_changing;  // being forced; new requests wait
  std::string m_changing_text;
  bool m_staged = false;  // m_changing is durable; it takes effect at m_apply_at
  int64_t m_apply_at = 0;
  bool m_change_mine = true;   // m_changing is this leader's proposal (not adopted)
  int64_t m_put_retry_at = 0;  // shared store: an unanswered put goes again then (0: none)
  // Shared store: when the store last confirmed the membership in effect (the read's start),
  // and the confirmation of m_changing seen while it was staged.
  int64_t m_confirmed_ms = INT64_MIN, m_staged_confirmed_ms = INT64_MIN;
  std::vector<std::string> m_leaders;       // live leaders, from the store
  std::set<std::string> m_stale_decisions;  // refused as stale while a change was staged
  std::vector<size_t> m_peer_max_message;   // each participant's message limit
  struct RidOutcome {
    protocol::Decision decision;
    std::string txid;
    uint64_t digest = 0;  // of the request's ops; 0: not known (RESULT of an unknown id)
  };
  std::map<std::string, RidOutcome> m_rids;
  std::deque<std::string> m_rid_order;  // bounded memory of client request outcomes
  std::map<uint64_t, PendingRead> m_reads;
  struct PendingScan {
    ev::Scan req;
    std::vector<size_t> order;  // every key on every participant: one of them, in rotation
    size_t next = 0;
    std::vector<size_t> parts;  // asked in this attempt
    std::string watch;          // this attempt's watch id ("": one participant, no check)
    int attempt = 0;
    std::map<size_t, protocol::ScanReply> pages;
    std::map<size_t, bool> checks;
    protocol::ScanReply merged;
  };
  std::map<uint64_t, PendingScan> m_scans;
  uint64_t m_next_read = 1;
  size_t m_read_rr = 0;
  bool m_store_up = true;  // shared store: reachable, with this leader's lease held
  uint64_t m_committed = 0;
  uint64_t m_aborted = 0;
  struct Paused {
    ClientId client = 0;   // waits for "OK" until nothing is in flight
    int64_t until_ms = 0;  // resumes by itself then
    std::deque<ev::Txn> held;
  };
  std::optional<Paused> m_paused;
  std::map<std::pair<std::string, size_t>, Mismatch> m_mismatches;
  // Replies held until a HEURISTIC record of txid is durable.
  std::multimap<std::string, std::pair<ClientId, ClientReply>> m_mismatch_waiters;
  std::map<std::string, int> m_mismatch_forcing;  // txid -> HEURISTIC records being forced
  std::set<std::string> m_end_after_mismatch;     // finished, their END after those records
};

// Whether membership `next` may follow `was`: the same replica count, and every slot of `was`
// at the same index with the same placement name (a member add appends slots).
bool is_successor(const membership::Membership& was, const membership::Membership& next);

// The incarnation of a starting leader, from the content of its incarnation file (nullopt:
// no file yet, the first start). Bumped at every start, so transaction ids never repeat; a
// damaged file is an error CORRUPT (never a restart at 1). The caller writes the result back
// durably before it serves anyone.
Result<uint64_t> next_incarnation(const std::optional<std::string>& file);

std::string encode_commit(const std::string& txid, const std::string& rid,
                          const std::vector<size_t>& parts, uint64_t digest);
struct CommitRecord {
  std::string txid, rid;
  std::vector<size_t> parts;
  uint64_t digest = 0;  // ops_digest of the request; 0 in records of older versions
};
// Error CORRUPT when `payload` is not a whole COMMIT record.
Result<CommitRecord> decode_commit(const std::string& payload);

}  // namespace tpc::leader
