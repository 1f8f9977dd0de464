// The executor of the participant core's actions: the one place where their order against
// the log and the store is kept (docs/recovery.md, "Durability order"):
//  - a record is reported durable (ev::Durable) only from the log's completion of it, so a
//    vote, an acknowledgement or a lock's release never runs ahead of its fdatasync;
//  - the commits of one turn are applied to the store as one batch, then ev::Applied;
//  - a rewrite makes the store durable first (the commits the log is about to forget), and
//    prunes the store's applied marks only once the rewritten log is durable.
// The server runs it over the real log, store, sockets and timer; the simulator over its
// simulated ones (tests/sim): the same code under both, as etcd-io/raft's hosts execute one
// Ready. It holds no protocol state.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "participant/core.h"
#include "store/store.h"
#include "txlog/record.h"

namespace tpc::participant {

// What the executor needs of the world. Completions (`done`) and posted work run later on
// the same event loop, never from inside the call that schedules them.
class Io {
 public:
  virtual ~Io() = default;
  virtual int64_t now_ms() = 0;   // monotonic
  virtual int64_t wall_ms() = 0;  // wall clock (the age of a prepared transaction)
  virtual int64_t now_us() = 0;   // monotonic, for the time a force took
  // Appends a record. `done` (empty for Mode::none) runs once the record is durable.
  virtual void append(uint8_t type, std::string payload, const std::string& txid,
                      act::Append::Mode mode, std::function<void()> done) = 0;
  // Replaces the whole log with `live`, ordered after the appends before it; `done` runs
  // once the new log is durable.
  virtual void rewrite(std::vector<txlog::Record> live, std::function<void()> done) = 0;
  // Whether the log should be compacted now (`finished`: a transaction ended this turn).
  virtual bool wants_rewrite(bool finished) = 0;
  virtual store::Store& store() = 0;
  virtual void reply(ClientId client, const ReplyMsg& msg) = 0;
  virtual void ask(const act::Ask& ask) = 0;
  virtual void note(const act::Note& note) = 0;
  virtual void post(std::function<void()> f) = 0;  // run in a later turn of the loop
  virtual void wake_at(int64_t at_ms) = 0;         // step ev::Tick then (0: nothing)
  // Around every step (the simulator traces and checks there).
  virtual void before_step(const Event&) {}
  virtual void after_step() {}
};

class Executor {
 public:
  Executor(Core& core, Io& io) : m_core(core), m_io(io) {}
  // Steps the core with `e` and executes what it asks for.
  void step(Event e);
  // Executes actions the core returned outside a step (Core::start).
  void execute(Actions& a);
  // Nothing is stepped or executed any more (the node is stopping, or crashed).
  void stop() { m_stopped = true; }

 private:
  void append(act::Append& ap);
  void apply(act::Apply& ap);
  void rewrite(act::Rewrite& rw);

  Core& m_core;
  Io& m_io;
  bool m_flush_posted = false;
  bool m_stopped = false;
};

}  // namespace tpc::participant
