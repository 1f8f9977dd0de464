// Typed messages between the roles (spec: docs/protocol.md). Each peer verb is a struct with
// one encode and one decode; each reply has one parser. The cores speak only these structs;
// the servers and the simulator carry them (the servers as lines, the simulator as values).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/status.h"
#include "protocol/codec.h"
#include "protocol/ops.h"

namespace tpc::protocol {

// --- leader -> participant requests.
// PREPARE TXID LEADER-ID LEADER-ADDR [rid=RID] [learner=1] [epoch=N] OP...
struct Prepare {
  std::string txid, leader, leader_addr;
  std::vector<Op> ops;
  std::string rid;  // the client's request id, for tracing a transaction afterwards
  // To a participant catching up (docs/membership.md): its vote does not count, and it does
  // not evaluate the conditions (its copies of other keys may be stale); it only writes.
  bool learner = false;
  // The leader's membership epoch (0: unsaid): a participant that was given a newer one
  // refuses (docs/membership.md).
  uint64_t epoch = 0;
};
struct Commit {  // COMMIT TXID
  std::string txid;
};
struct Abort {  // ABORT TXID
  std::string txid;
};
struct Read {  // READ KEY [epoch=N]
  std::string key;
  uint64_t epoch = 0;  // as Prepare's (a client's READ says none)
};
// SCAN PREFIX AFTER LIMIT MAX-BYTES [WATCH]: keys starting with PREFIX, after AFTER, in key
// order. With WATCH (an id), the participant then watches the range it answered for, until
// SCANCHECK WATCH says whether a transaction prepared a write in it since (docs/protocol.md).
struct Scan {  // SCAN PREFIX AFTER LIMIT MAX-BYTES [WATCH|committed] [epoch=N]
  std::string prefix, after;
  uint64_t limit = 1;
  uint64_t max_bytes = 1;
  std::string watch;   // "": none
  uint64_t epoch = 0;  // as Prepare's
  // Committed values only, without waiting for prepared writes (a copy's page: its learner
  // keeps what commits write during the pass). Never with a watch.
  bool committed = false;
};
struct ScanCheck {  // SCANCHECK WATCH
  std::string watch;
};
// SYNCBEGIN PASS SOURCE[,SOURCE...]: a participant catching up starts copying pass PASS (an
// id) from those in-sync slots: each key comes from the lowest-numbered source among its
// owners. From now on it remembers which keys its commits wrote, and a page of the copy
// leaves those alone.
struct SyncBegin {  // ... [gain] [drained]
  std::string pass;
  std::vector<size_t> sources;
  bool gain = false;  // a copy of the keys it gains while members change, not of those it owns
  // The leader began the pass with no transaction in flight that touches the copy, and reads
  // committed pages (the only leader): a page need not wait for keys locked here.
  bool drained = false;
};
// SYNC PASS SOURCE AFTER MORE|END|LAST UPTO COUNT {KEY VALUE} (UPTO "-" unless MORE): a page of
// pass PASS read from in-sync slot SOURCE: of the keys both own, those after AFTER (up to UPTO with
// MORE, to the end with END) are to be as in the page: written, or deleted when absent from it,
// except those the participant's own commits wrote since SYNCBEGIN. ACK once applied; with END and
// `last`, durable too. (docs/membership.md)
struct Sync {
  std::string pass;
  size_t source = 0;
  std::string after, upto;
  bool more = false;
  std::vector<std::pair<std::string, std::string>> kvs;
  bool last = false;  // the pass's last page: make the store durable before ACK
};
using PeerRequest = std::variant<Prepare, Commit, Abort, Read, Scan, ScanCheck, SyncBegin, Sync>;

// --- participant -> leader request.
// OUTCOME TXID [HELD-MS] [heuristic=commit|abort [rid=RID]]. With `heuristic`, the
// participant no longer holds TXID in doubt: it reports the outcome an operator forced
// (tpc client resolve), and the leader records a HEURISTIC MISMATCH when its own decision
// differs (docs/protocol.md).
struct OutcomeQuery {
  std::string txid;
  int64_t held_ms = -1;  // how long the asking participant has held it prepared (-1: not said)
  std::optional<bool> heuristic;  // the operator's outcome there: true commit, false abort
  std::string rid;                // the client's request id of TXID ("": not known)
};
// OUTCOME's arguments. Error PROTO on anything else.
Result<OutcomeQuery> decode_outcome_query(const std::vector<std::string_view>& t);

// --- replies.
// To PREPARE: "YES [FORCE-US]" or "NO CODE TEXT". Anything else, or a lost connection, is an
// error vote: the leader treats it as NO.
struct Vote {
  enum Kind { yes, no, error } kind = error;
  std::string code;    // no, error
  std::string detail;  // no, error
  int64_t force_us = 0;
};
// To COMMIT, ABORT and RESOLVE: "ACK"; anything else is not an acknowledgement.
struct Ack {};
// To COMMIT or ABORT from a participant that finished TXID otherwise on an operator's order
// (RESOLVE): "HEURISTIC COMMITTED|ABORTED", its own outcome; never a plain ACK.
struct HeuristicReply {
  bool committed = false;
};
// A reply to COMMIT or ABORT: acknowledged, a contradicting heuristic outcome, or neither
// (lost, an error, anything else: re-sent).
enum class PhaseTwo { none, acked, heuristic_committed, heuristic_aborted };
// Any request may be answered "ERR CODE TEXT".
struct Error {
  std::string code, detail;
};
// To OUTCOME: "COMMITTED", "ABORTED" or "PENDING".
enum class Decision { committed, aborted, pending };
// To READ (and GET): "VALUE V", "NOTFOUND", or "ERR CODE TEXT".
struct ReadReply {
  enum Kind { found, absent, error } kind = error;
  std::string value;  // found
  std::string code;   // error: INDOUBT, STORAGE, UNAVAILABLE, ...
  std::string detail;
};

// To SCAN (from a participant, and from the leader to a client): "KEYS MORE|END COUNT {KEY
// VALUE}" or "ERR CODE TEXT". MORE: keys after the last one may follow.
struct ScanReply {
  enum Kind { keys, error } kind = error;
  bool more = false;
  std::vector<std::pair<std::string, std::string>> kvs;
  std::string code, detail;  // error: INDOUBT, STORAGE, BUSY, UNAVAILABLE, ...
};
// To SCANCHECK: "CLEAN" (nothing in the range changed), or "CHANGED" (anything else too).
struct ScanChecked {
  bool clean = false;
};

// To TXN, PUT, DEL (and RESULT): "COMMITTED [TXID]", "ABORTED [CODE TEXT]", "PENDING [TXID]"
// or "ERR CODE TEXT". A lost connection is an error UNAVAILABLE.
// RESULT also: "HEURISTIC TXID commit|abort TEXT": the leader decided TXID so, and a
// participant finished it otherwise on an operator's order (a HEURISTIC MISMATCH).
struct TxnReply {
  enum Kind { committed, aborted, pending, error, heuristic } kind = error;
  std::string txid;    // committed, pending
  std::string code;    // aborted, error
  std::string detail;  // aborted, error, heuristic
  std::string decision;  // heuristic: the leader's decision, commit or abort
};

// The optional "epoch=N" token of a leader's requests (docs/protocol.md): appended when N is
// not 0; parsed (error PROTO unless N is a positive count).
void append_epoch(LineBuilder& b, uint64_t epoch);
Result<uint64_t> parse_epoch(std::string_view token);

std::string encode(const Prepare& m);
std::string encode(const Commit& m);
std::string encode(const Abort& m);
std::string encode(const Read& m);
std::string encode(const Scan& m);
std::string encode(const ScanCheck& m);
std::string encode(const SyncBegin& m);
std::string encode(const Sync& m);
std::string encode(const ScanReply& r);
std::string encode(const ScanChecked& r);
std::string encode(const OutcomeQuery& m);
std::string encode(const PeerRequest& m);
std::string encode(const Vote& v);
std::string encode(Decision d);
std::string encode(const ReadReply& r);
std::string encode(const Ack&);
std::string encode(const HeuristicReply& r);
std::string encode(const Error& e);

// LEADER-ID.INCARNATION.SEQUENCE; error PROTO for anything else.
Status check_txid(std::string_view txid);

// An id on the wire or on the command line (node --id, request id, tag, a txid's leader part):
// 1 to 64 letters, digits, '-' or '_'.
bool is_id(std::string_view s);
// A client request id (also the tag "@RID" the client puts on its requests): an id as above.
// The client makes 32 hex digits (128 bits) from the OS's CSPRNG.
Status check_request_id(std::string_view rid);

// Request decoders take the split tokens of a whole line (verb first). Error PROTO names what
// is wrong.
Result<Prepare> decode_prepare(const std::vector<std::string_view>& t);
Result<std::string> decode_txid_arg(const std::vector<std::string_view>& t);  // COMMIT/ABORT/...
Result<Read> decode_read(std::vector<std::string_view> t);
// SCAN's arguments: LIMIT 1 to k_max_scan_limit, MAX-BYTES at least 1, WATCH an id.
Result<Scan> decode_scan(std::vector<std::string_view> t);
Result<SyncBegin> decode_sync_begin(const std::vector<std::string_view>& t);
Result<Sync> decode_sync(const std::vector<std::string_view>& t);
Result<ScanCheck> decode_scan_check(const std::vector<std::string_view>& t);
inline constexpr uint64_t k_max_scan_limit = 100000;

// Reply parsers take the reply line, or the error of a request that got none.
Vote parse_vote(const Result<std::string>& line);
bool parse_ack(const Result<std::string>& line);
PhaseTwo parse_phase_two(const Result<std::string>& line);
Result<Decision> parse_decision(const Result<std::string>& line);
ReadReply parse_read_reply(const Result<std::string>& line);
ScanReply parse_scan_reply(const Result<std::string>& line);
ScanChecked parse_scan_checked(const Result<std::string>& line);
// To SYNCBEGIN and SYNC: "ACK" (ok), or the error ("ERR CODE TEXT"; lost: UNAVAILABLE).
Status parse_acked(const Result<std::string>& line);
TxnReply parse_txn_reply(const Result<std::string>& line);

// To PEERS: "PEERS {ADDR up|down|refused[ REASON]}", one entry per participant.
struct PeerState {
  std::string addr, state, reason;  // reason: refused only
};
std::vector<PeerState> parse_peers(const std::string& line);

// The "key=value" tokens of a line (STATS replies, HELLO identities): key -> value.
std::map<std::string, std::string> parse_fields(std::string_view line);

// Text after the first `n` tokens of `line` (spaces kept), for "CODE TEXT" replies, with the
// escapes of LineBuilder::text undone.
std::string rest_after(std::string_view line, size_t n);

}  // namespace tpc::protocol
