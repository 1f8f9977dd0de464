// The etcd decision store (docs/decision-store.md): where a leader started with
// --decision-store etcd://... puts its commit points instead of its local log.
//
// Keys, under the prefix P = "/tpc/CLUSTER-NAME/":
//   P/cluster           "tpcc1\nCLUSTER-ID\nVIEW": the cluster's identity and view (--peers,
//                       --replicas), created once by compare-and-swap; every leader adopts it
//   P/members           the membership (membership::encode), created with the cluster (its
//                       first epoch), changed only by compare-and-swap on its whole value; a
//                       batch is created only while it holds the membership its decisions
//                       were taken under
//   P/leaders/ID        this leader's advertise address, held by its lease (liveness)
//   P/incarnation/ID    the leader's incarnation counter, bumped by compare-and-swap at start
//   P/b/ID/INC.SEQ      a batch of this leader's COMMIT decisions (encode_batch): created only
//                       if absent, only while the leader's key is held by its lease (fencing)
//                       and only while no P/d/TXID of its transactions exists; deleted once
//                       every participant acknowledged each of them (the END)
//   P/d/TXID            "abort": written by a leader settling the transaction of a leader
//                       that is gone (or that held it past --takeover-after), only if absent;
//                       from then on no batch holding TXID can be created
//   P/h/TXID/PART       a HEURISTIC MISMATCH of this leader's TXID at participant PART (the
//                       leader's HEURISTIC record), until an operator forgets it
//   P/r/RID             a committed request's txid, for RESULT at any leader; held by a lease
//                       of an hour taken anew every half hour, so kept 30 to 60 minutes
// A transaction is committed if and only if some batch holds it: a batch that holds it is
// older than any abort key of it (the batch's create compares the abort key absent).
//
// Single-threaded on the leader's io_context; callbacks run there.
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "etcd/client.h"
#include "leader/core.h"
#include "leader/executor.h"
#include "protocol/messages.h"

namespace tpc::leader {

// The creation claim's rule (docs/decision-store.md): a leader starting over a shared
// decision store proposes a cluster (its data directory's, else --cluster-id, else a new
// one) with its view ("peers A,B\nreplicas R|all\n"); the store keeps the first proposal
// it got, and every leader runs under what it holds (`held`, `held_view`). Returns the
// cluster to run under, or an error whose code says what differs: DIR (`local`, this data
// directory's cluster), ID (`requested`, --cluster-id) or VIEW (the view). Empty `local` or
// `requested`: none.
Result<std::string> adopt_claim(const std::string& local, const std::string& requested,
                                const std::string& view, const std::string& held,
                                const std::string& held_view);

struct DecisionStoreOptions {
  std::vector<std::string> endpoints;  // etcd members, HOST:PORT
  std::string prefix;                  // "/tpc/NAME/"
  std::string leader_id;
  std::string advertise;
  int64_t lease_ttl_s = 3;
  int timeout_ms = 2000;
  // While other transactions collect votes, a batch waits up to this long for them.
  int64_t batch_wait_us = 3000;
};

// A batch key's value: "tpcb1 N\n" and, per decision, "TXIDLEN PAYLOADLEN\n" TXID PAYLOAD.
std::string encode_batch(const std::vector<std::pair<std::string, std::string>>& decisions);
// Error CORRUPT unless `value` is exactly one whole batch.
Result<std::vector<std::pair<std::string, std::string>>> decode_batch(std::string_view value);

// Parses "etcd://HOST:PORT[,HOST:PORT...]"; error USAGE otherwise.
Result<std::vector<std::string>> parse_decision_store(const std::string& url);

class EtcdDecisions : public Decisions {
 public:
  struct Startup {
    uint64_t incarnation = 0;
    int64_t lease = 0;
    // Decisions this leader took that are not ended: txid -> COMMIT record payload.
    std::vector<std::pair<std::string, std::string>> decisions;
    // The endpoints, etcd's raft leader first.
    std::vector<std::string> endpoints;
    // The batch keys that hold them, with the txids of each.
    std::vector<std::pair<std::string, std::vector<std::string>>> batches;
    // This leader's heuristic mismatches not forgotten: HEURISTIC record payloads.
    std::vector<std::string> mismatches;
  };
  // The cluster of the store: at start, blocking, before open(). Creates P/cluster with
  // `cluster` and `view` only if absent (one compare-and-swap: of leaders started at once,
  // one wins and the others adopt its cluster), and returns what P/cluster holds then: the
  // cluster id and view every leader must have. Throws tpc::Error (exit 4) when etcd cannot
  // be reached, (exit 1) when the key is damaged.
  static std::pair<std::string, std::string> claim_cluster(const DecisionStoreOptions& o,
                                                           const std::string& cluster,
                                                           const std::string& view);
  // The membership of the store: at start, blocking, after claim_cluster. Creates P/members
  // with `first` only if absent (a cluster created by a version without it, or the claim's
  // creator died between the two), and returns what it holds. Throws as claim_cluster.
  static std::string claim_members(const DecisionStoreOptions& o, const std::string& first);
  // At start, blocking (a private io_context, bounded by the timeouts): takes a lease and
  // this leader's key (refused if another process holds it: the same --id runs elsewhere),
  // bumps the incarnation, and reads this leader's unfinished decisions. Throws tpc::Error
  // (exit 4) when etcd cannot be reached, (exit 2) when the leader id is taken.
  static Startup open(const DecisionStoreOptions& o);

  // `st`: what open() found (its batches are ended as their transactions end).
  EtcdDecisions(boost::asio::io_context& io, DecisionStoreOptions o, const Startup& st);
  ~EtcdDecisions();
  // How many transactions are collecting votes (a batch waits a little for them).
  void set_preparing(std::function<size_t()> f) { m_preparing = std::move(f); }
  // Starts renewing the lease.
  void start();
  void stop();

  // The commit point of `txid`: puts it in a batch key (see above), created while this
  // leader's lease holds and no abort key of the batch's transactions exists. cb(true): a
  // batch holds this decision (also when an earlier, unanswered attempt had created it);
  // cb(false): a settler's abort key exists: the transaction is aborted; error UNAVAILABLE:
  // this leader lost its lease, the transaction stays undecided: try again later. While etcd
  // does not answer, the same batch is sent again every 200 ms (so it lands once at most).
  // Decisions asked for while a batch is in flight go together in the next one.
  // `members`: the batch is created only while P/members holds it (else error EPOCH, whose
  // message is what P/members holds).
  void decide(const std::string& txid, std::string payload, const std::string& members,
              std::function<void(Result<bool>)> cb) override;
  // What the store holds of `txid`, a transaction of another leader `owner` (one read): a
  // batch of `owner` holding it (committed), its abort key, `owner`'s key. Error
  // UNAVAILABLE when etcd cannot say. (Whether to settle is the core's rule: ev::Looked.)
  void lookup(const std::string& txid, const std::string& owner,
              std::function<void(Result<StoreFacts>)> cb) override;
  // Settles `txid` of `owner` as aborted: creates its abort key, only if absent and, when
  // `fenced`, only while `owner`'s key is still gone; reads `owner`'s batches in the same
  // etcd transaction (one created before holds it; none can be created after, as its create
  // compares the abort key absent). Error UNAVAILABLE when etcd cannot say.
  void settle(const std::string& txid, const std::string& owner, bool fenced,
              std::function<void(Result<SettleResult>)> cb) override;
  // The txid of request `rid` if some leader committed it in the last half hour or more;
  // "" when none did (it may still be deciding at its leader); error UNAVAILABLE.
  void find_rid(const std::string& rid, std::function<void(Result<std::string>)> cb) override;
  // Records a heuristic mismatch of `txid` at participant `part` (its HEURISTIC record's
  // payload) as P/h/TXID/PART. cb(OK) once etcd has it; an error: try again.
  void record_mismatch(const std::string& txid, size_t part, std::string payload,
                       std::function<void(Status)> cb) override;
  // An operator forgot the mismatches of `txid`: P/h/TXID/ goes (best effort: a key left
  // behind only shows them again after a restart).
  void forget_mismatches(const std::string& txid) override;
  // The transaction ended: its batch key goes once all of its transactions ended (batched,
  // best effort: a key left behind is re-driven harmlessly after a restart).
  void end(const std::string& txid) override;
  // P/members becomes `next` only if it holds `expect` and this leader's lease holds; cb:
  // what P/members holds after it. Error UNAVAILABLE when etcd cannot say.
  void put_members(const std::string& expect, const std::string& next,
                   std::function<void(Result<std::string>)> cb) override;
  // P/members and the ids of the leaders whose keys are held, in one read.
  void read_members(std::function<void(Result<MembersView>)> cb) override;
  // The last call to etcd succeeded and the lease is held.
  bool healthy() const { return m_healthy; }
  // Called (on the io_context) whenever healthy() changes.
  void on_health(std::function<void(bool)> f) { m_on_health = std::move(f); }
  const std::string& endpoint() const { return m_client->endpoint(); }

 private:
  struct Pending {
    std::string txid, payload, members;
    std::function<void(Result<bool>)> cb;
    int64_t since_us = 0;
  };
  struct Batch {
    std::string key;
    std::string members;  // the membership its decisions were taken under
    std::vector<Pending> items;
    std::vector<std::string> ends;  // batch keys deleted along with it
    etcd::Txn txn;
  };
  void flush();
  void send(std::shared_ptr<Batch> b);
  void landed(Batch& b);
  void flush_ends();
  void keepalive();
  void relet();
  std::string abort_key(const std::string& txid) const { return m_o.prefix + "d/" + txid; }
  std::string batches_of(const std::string& leader) const {
    return m_o.prefix + "b/" + leader + "/";
  }
  std::string leader_key(const std::string& id) const { return m_o.prefix + "leaders/" + id; }
  std::string rid_key(const std::string& rid) const { return m_o.prefix + "r/" + rid; }
  std::string members_key() const { return m_o.prefix + "members"; }
  void renew_rid_lease();
  void set_healthy(bool up);
  std::function<void(bool)> m_on_health;

  DecisionStoreOptions m_o;
  std::shared_ptr<etcd::Client> m_client;   // leases, settling, ends, request ids
  std::shared_ptr<etcd::Client> m_decider;  // batches, one at a time
  int64_t m_lease;
  int64_t m_rid_lease = 0;  // the request-id keys' lease (0: none yet: no key is written)
  boost::asio::steady_timer m_rid_timer;
  boost::asio::steady_timer m_end_timer;
  boost::asio::steady_timer m_retry_timer;  // re-sends a batch etcd did not answer
  bool m_end_timer_set = false;
  bool m_healthy = true;
  bool m_stopped = false;
  bool m_in_flight = false;  // a batch, on m_decider
  bool m_ends_in_flight = false;
  bool m_reletting = false;
  uint64_t m_incarnation;
  uint64_t m_batch_seq = 0;
  std::deque<Pending> m_queue;
  std::unordered_map<std::string, std::string> m_batch_of;  // txid -> its batch key
  std::unordered_map<std::string, size_t> m_open;           // batch key -> txns not ended
  std::vector<std::string> m_ends;                          // batch keys to delete
  boost::asio::steady_timer m_timer;
  boost::asio::steady_timer m_linger;
  bool m_lingering = false;
  bool m_settled_seen = false;  // another leader settled one of this incarnation's
  std::function<size_t()> m_preparing;
  std::shared_ptr<bool> m_alive = std::make_shared<bool>(true);
};

}  // namespace tpc::leader
