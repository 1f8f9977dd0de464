// The executor of the leader core's actions, for the server and the simulator alike (as
// participant::Executor): the order of the commit point against the replies, the decision
// store's retries, and how a participant's reply becomes the event the core expects.
//  - COMMIT: with the local log, a forced append (ev::Durable once the fdatasync returned);
//    with a shared decision store, Decisions::decide instead, tried again every 200 ms while
//    the store cannot say (ev::Durable, or ev::Refused when a settler's abort is there).
//  - END: a lazy log append; with a shared store, Decisions::end instead.
//  - HEURISTIC: forced in the log and, with a shared store, recorded there too before
//    ev::Durable (retried until it is).
//  - Lookup, Settle, FindRid: executed by the shared store, answered by ev::Looked,
//    ev::Settled, ev::RidFound.
// It holds no protocol state.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "leader/core.h"

namespace tpc::leader {

// A decision store shared with other leaders (etcd): EtcdDecisions, or the simulator's.
// Without one, the leader's own log holds its commit points.
class Decisions {
 public:
  virtual ~Decisions() = default;
  // The commit point of txid (its COMMIT record's payload): true once held, false when a
  // settler's abort was there first; an error: the store could not say (try again).
  // `members`: the membership the decision was taken under (as the store holds it): the
  // decision is taken only while the store holds it, else error EPOCH whose message is the
  // store's membership.
  virtual void decide(const std::string& txid, std::string payload, const std::string& members,
                      std::function<void(Result<bool>)> cb) = 0;
  virtual void end(const std::string& txid) = 0;
  virtual void lookup(const std::string& txid, const std::string& owner,
                      std::function<void(Result<StoreFacts>)> cb) = 0;
  virtual void settle(const std::string& txid, const std::string& owner, bool fenced,
                      std::function<void(Result<SettleResult>)> cb) = 0;
  virtual void find_rid(const std::string& rid, std::function<void(Result<std::string>)> cb) = 0;
  virtual void record_mismatch(const std::string& txid, size_t part, std::string payload,
                               std::function<void(Status)> cb) = 0;
  virtual void forget_mismatches(const std::string& txid) = 0;
  // The membership (docs/membership.md): `next` replaces `expect` only if the store holds
  // `expect`; cb gets the store's membership after the attempt (`next`: stored).
  virtual void put_members(const std::string& expect, const std::string& next,
                           std::function<void(Result<std::string>)> cb) = 0;
  struct MembersView {
    std::string members;               // the store's membership
    std::vector<std::string> leaders;  // ids of the leaders whose keys are held
  };
  virtual void read_members(std::function<void(Result<MembersView>)> cb) = 0;
};

// What the executor needs of the world. Completions and timers run later on the same event
// loop, never from inside the call that schedules them.
class Io {
 public:
  virtual ~Io() = default;
  virtual int64_t now_ms() = 0;
  virtual int64_t now_us() = 0;
  // Appends a record to the leader's log; `done` (forced only) runs once it is durable.
  virtual void append(uint8_t type, std::string payload, const std::string& txid, bool force,
                      std::function<void()> done) = 0;
  virtual void rewrite(std::vector<txlog::Record> live) = 0;
  // Whether the log should be compacted now (`ended`: a transaction ended this turn).
  virtual bool wants_rewrite(bool ended) = 0;
  // Sends `msg` to participant `part` as a request; `cb` gets its reply or its loss.
  virtual void request(size_t part, const protocol::PeerRequest& msg,
                       std::function<void(Result<std::string>)> cb) = 0;
  virtual void reply(ClientId client, const ClientReply& reply) = 0;
  virtual void trace(const act::Trace&) {}
  virtual void note_error(const std::string& text) = 0;
  virtual void warn(const std::string& text) = 0;
  virtual void after(int64_t ms, std::function<void()> f) = 0;  // a timer on the loop
  virtual void wake_at(int64_t at_ms) = 0;                      // step ev::Tick then
  // Around every step (the simulator traces and checks there).
  virtual void before_step(const Event&) {}
  virtual void after_step() {}
};

class Executor {
 public:
  // `store`: the shared decision store, or null (the local log).
  Executor(Core& core, Io& io, Decisions* store) : m_core(core), m_io(io), m_store(store) {}
  void step(Event e);
  void execute(Actions& a);
  // Shared store: reads the membership and the live leaders every `every_ms` (ev::MembersSeen).
  void poll_members(int64_t every_ms);
  void stop() { m_stopped = true; }

 private:
  void append(act::Append& ap);
  void send(act::Send& s, bool after_commit_send);
  void decide(const std::string& txid, std::string payload, const std::string& members,
              int64_t since_us);
  void put_members(act::PutMembers p);
  void store_mismatch(const std::string& txid, const std::string& payload, int64_t took);

  Core& m_core;
  Io& m_io;
  Decisions* m_store;
  bool m_stopped = false;
};

}  // namespace tpc::leader
