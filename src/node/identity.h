// Who a data directory belongs to (spec: docs/identity.md). Every data directory holds a small
// text file `identity`, written when the directory is initialised:
//
//   format 1
//   role participant
//   cluster 3f1c...   (a UUID; "-" for a participant not yet joined to a leader)
//   node 9a0b...      (this node's UUID: a wiped or replaced directory gets a new one)
//   replaces 51d2...  (optional: the node this one took over through --restore-from)
//   origin init       (init, restore-from HOST:PORT, backup DIR: how the directory began)
//
// Nodes exchange identities in the handshake; the leader pins each participant's node id, so
// a participant whose data directory was wiped, replaced or belongs to another cluster is
// refused instead of answering "not found" for committed keys.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "membership/membership.h"

namespace tpc::node {

// The on-disk format of a data directory that this binary writes and reads. A directory of a
// newer format is refused: an older binary must not guess at what it cannot read.
constexpr int k_format = 1;

struct Identity {
  int format = k_format;
  std::string role;     // "leader" or "participant"
  std::string cluster;  // empty: not joined yet
  std::string node;
  std::string replaces;  // empty unless restored from a replica
  std::string origin = "init";
};

std::string encode(const Identity& id);
// Error CORRUPT for a damaged file (unknown keys are ignored; a missing role or node is not).
Result<Identity> decode(const std::string& text);

// Opens DIR's identity for a node of `role`, creating it when missing:
//  - a new directory (or one from before identities existed) gets a fresh node id, and the
//    cluster `cluster` (empty: unjoined; a leader makes a new cluster id when it is empty);
//  - an existing one must be of `role` and of a format this binary reads, and of `cluster`
//    when that is given; otherwise a tpc::Error (exit 2) says what the directory is.
// `origin` is recorded in a new identity only.
Identity open_identity(const std::string& dir, const std::string& role, const std::string& cluster,
                       const std::string& origin = "init");
// Rewrites DIR's identity durably (a participant joining its cluster).
void save_identity(const std::string& dir, const Identity& id);
// Whether DIR holds an identity file.
bool has_identity(const std::string& dir);

// This node's identity as handshake tokens: "cluster=C node=N[ replaces=R]" (C "-" when not
// joined).
std::string hello_tokens(const Identity& me);
// A server's answer to a peer's HELLO line: error CLUSTER when the peer names a cluster other
// than this node's (a node not joined yet accepts any), else hello_tokens(me).
Result<std::string> answer_hello(const Identity& me, const std::string& hello_line);
// Error CLUSTER when the HELLO reply of the server at `addr` names a cluster other than
// `expected` (empty: any cluster will do).
Status check_cluster(const std::string& expected, const std::string& hello_reply,
                     const std::string& addr);

// A UUID as written by new_uuid(): 36 characters of lower-case hex and dashes.
bool is_uuid(const std::string& s);

}  // namespace tpc::node

namespace tpc::node {

// The cluster as a leader describes it to a participant when admitting it:
//   JOIN CLUSTER SLOT REPLICAS N {ADDR ID NODE} [store=etcd/NAME]
// (ID, NODE "-" for one not admitted yet; store= only with an etcd decision store, NAME its
// --cluster-name). The participant keeps it (DIR/membership); a replacement restored from it
// needs the placement (addresses and replica count) and the node id it replaces.
struct Member {
  std::string addr, id, node;
};
struct Membership {
  std::string cluster;
  size_t slot = 0;      // the receiving participant's place in --peers
  size_t replicas = 0;  // 0: every participant holds every key
  std::vector<Member> members;
  std::string store;  // the decision store's cluster: "etcd/NAME"; "": the leader's own log
  uint64_t epoch = 0;  // the leader's membership epoch ("epoch=N"; 0: unsaid)
  // "members=": the leader's membership line (tpcm1), sent when placement is not the one of
  // the addresses (a slot moved to another address, or members changing); "": by addresses.
  std::string placement;
};
//   JOIN ... [store=etcd/NAME] [members=TPCM1-LINE] [epoch=N]
std::string encode_join(const Membership& m);
// Takes the split tokens of a JOIN line; error PROTO names what is wrong.
Result<Membership> decode_join(std::vector<std::string_view> t);

// How the view of the cluster in `offered` (a leader's JOIN) differs from the one this
// participant was admitted with (`admitted`): the cluster, its own place, the participants'
// addresses and --ids (in order), the effective replica count, the decision store. Node ids
// are not compared: they are pinned as participants are admitted or replaced. "" when the
// views agree; else each difference, "; "-separated, in words an operator can act on.
std::string view_difference(const Membership& admitted, const Membership& offered);

// The placement a JOIN gives: its membership line when it has one, else every slot in-sync
// and named by its address. Error CORRUPT for a membership line that does not decode, or of
// another slot count.
Result<membership::Membership> placement_of(const Membership& join);

// A participant's rule for a leader's JOIN (docs/identity.md), with no I/O: Status OK to
// accept it, else the error to answer. CLUSTER: this participant belongs to another cluster;
// VIEW: it was admitted (`admitted`) to another view of the cluster; DENIED: over TLS, the
// leader's certificate (`cert_hosts`) does not name the host it advertises (`advertise`);
// EPOCH: the leader's membership is older than the newest this participant was given
// (`epoch`); IDENTITY: the JOIN admits another node at this participant's place. `cert`:
// the leader certificate's name (empty: no TLS).
Status judge_join(const Identity& me, const Membership* admitted, uint64_t epoch,
                  const Membership& offered, const std::string& cert,
                  const std::vector<std::string>& cert_hosts, const std::string& advertise);

}  // namespace tpc::node
