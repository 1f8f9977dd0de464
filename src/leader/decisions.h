// The etcd decision store (docs/decision-store.md): where a leader started with
// --decision-store etcd://... puts its commit points instead of its local log.
//
// Keys, under the prefix P = "/tpc/CLUSTER-NAME/":
//   P/leaders/ID        this leader's advertise address, held by its lease (liveness)
//   P/incarnation/ID    the leader's incarnation counter, bumped by compare-and-swap at start
//   P/r/RID             a committed request's txid, for RESULT at any leader; held by a lease
//                       of an hour taken anew every half hour, so kept 30 to 60 minutes
//   P/d/TXID            the decision: the COMMIT record's payload, created only if absent and
//                       only while the leader's key is held by its lease (fencing); deleted
//                       once every participant acknowledged (the END); or "abort", created by
//                       another leader settling the transaction of a leader that is gone
//
// Single-threaded on the leader's io_context; callbacks run there.
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "etcd/client.h"
#include "protocol/messages.h"

namespace tpc::leader {

struct DecisionStoreOptions {
  std::vector<std::string> endpoints;  // etcd members, HOST:PORT
  std::string prefix;                  // "/tpc/NAME/"
  std::string leader_id;
  std::string advertise;
  int64_t lease_ttl_s = 3;
  int timeout_ms = 2000;
};

// Parses "etcd://HOST:PORT[,HOST:PORT...]"; error USAGE otherwise.
Result<std::vector<std::string>> parse_decision_store(const std::string& url);

class EtcdDecisions {
 public:
  struct Startup {
    uint64_t incarnation = 0;
    int64_t lease = 0;
    // Decisions this leader took that are not ended: txid -> COMMIT record payload.
    std::vector<std::pair<std::string, std::string>> decisions;
  };
  // At start, blocking (a private io_context, bounded by the timeouts): takes a lease and
  // this leader's key (refused if another process holds it: the same --id runs elsewhere),
  // bumps the incarnation, and reads this leader's unfinished decisions. Throws tpc::Error
  // (exit 4) when etcd cannot be reached, (exit 2) when the leader id is taken.
  static Startup open(const DecisionStoreOptions& o);

  EtcdDecisions(boost::asio::io_context& io, DecisionStoreOptions o, int64_t lease);
  ~EtcdDecisions();
  // Starts renewing the lease.
  void start();
  void stop();

  // The commit point of `txid`: creates P/d/TXID = payload unless it exists, while this
  // leader's lease holds. cb(true): the key holds this decision (also when an earlier,
  // unanswered attempt had created it); cb(false): it holds another decision (a settler's
  // abort): the transaction is aborted; error UNAVAILABLE: etcd could not say (unreachable,
  // or this leader's lease was lost): try again later, the transaction stays undecided.
  // Decisions asked for together go to etcd as one transaction.
  void decide(const std::string& txid, std::string payload, std::function<void(Result<bool>)> cb);
  // The outcome of `txid`, a transaction of another leader `owner`, for a participant in
  // doubt. Its decision key, when there is one; none and `owner`'s key gone (its lease
  // expired: it is dead, or was paused past its lease): settles it, creating the key as
  // ABORT only if still absent and only while the owner's key is absent (the owner's late
  // COMMIT then fails); none and the owner alive: pending (the owner decides). Error
  // UNAVAILABLE when etcd cannot say.
  void settle(const std::string& txid, const std::string& owner,
              std::function<void(Result<protocol::Decision>)> cb);
  // The txid of request `rid` if some leader committed it in the last half hour or more;
  // "" when none did (it may still be deciding at its leader); error UNAVAILABLE.
  void find_rid(const std::string& rid, std::function<void(Result<std::string>)> cb);
  // The transaction ended: its key goes (batched, best effort: a key left behind is re-driven
  // harmlessly after a restart).
  void end(const std::string& txid);
  // The last call to etcd succeeded and the lease is held.
  bool healthy() const { return m_healthy; }
  const std::string& endpoint() const { return m_client->endpoint(); }

 private:
  struct Pending {
    std::string txid, payload;
    std::function<void(Result<bool>)> cb;
  };
  void flush();
  void decide_one(Pending p);
  void flush_ends();
  void keepalive();
  void relet();
  std::string decision_key(const std::string& txid) const { return m_o.prefix + "d/" + txid; }
  std::string leader_key() const { return m_o.prefix + "leaders/" + m_o.leader_id; }
  std::string rid_key(const std::string& rid) const { return m_o.prefix + "r/" + rid; }
  void renew_rid_lease();

  DecisionStoreOptions m_o;
  std::shared_ptr<etcd::Client> m_client;
  int64_t m_lease;
  int64_t m_rid_lease = 0;  // the request-id keys' lease (0: none yet: no key is written)
  boost::asio::steady_timer m_rid_timer;
  bool m_healthy = true;
  bool m_stopped = false;
  bool m_in_flight = false;
  bool m_ends_in_flight = false;
  bool m_reletting = false;
  std::deque<Pending> m_queue;
  std::vector<std::string> m_ends;
  boost::asio::steady_timer m_timer;
  std::shared_ptr<bool> m_alive = std::make_shared<bool>(true);
};

}  // namespace tpc::leader
