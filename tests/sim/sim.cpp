// The simulated cluster: nodes running the real cores, clients, faults, and the checker.
#include "sim.h"

#include <fmt/format.h>

#include <climits>
#include <memory>
#include <stdexcept>

#include "common/failpoint.h"
#include "common/util.h"
#include "leader/core.h"
#include "leader/decisions.h"
#include "leader/executor.h"
#include "participant/core.h"
#include "participant/executor.h"
#include "protocol/messages.h"
#include "world.h"

namespace tpc::sim {
namespace {

using protocol::Decision;
using protocol::Op;
using protocol::OpKind;

struct Fatal : std::runtime_error {
  using std::runtime_error::runtime_error;
};
enum Kind { K_LEADER, K_PART, K_CLIENT };
// A node crashed at a failpoint (an I/O of its executor): thrown from there, so nothing after
// it in the node's step runs, and caught by the run's loop, which crashes the node.
struct SimCrash {
  Kind kind;
  int node;
  std::string at;
};
[[noreturn]] void throw_fatal(const std::string& m) { throw Fatal(m); }

constexpr int64_t k_ms = 1000;  // simulated time is in microseconds

// A connection from one endpoint to another, carrying requests one way and replies back.
struct Chan {
  Kind from_kind, to_kind;
  int from, to;
  bool up = false;
  bool reconnecting = false;
  uint64_t epoch = 0;
  std::map<uint64_t, std::function<void(Result<std::string>)>> pending;  // request id -> cb
};

// Where a reply goes: a request that arrived on channel `chan` during `epoch`.
struct Incoming {
  int chan = -1;
  uint64_t epoch = 0;
  uint64_t req = 0;
  std::string txid;  // PREPARE: the transaction voted on
};

struct LeaderNode {
  bool alive = true;
  uint64_t gen = 0;  // bumped at every crash: callbacks scheduled before it do nothing
  std::unique_ptr<leader::Core> core;
  std::unique_ptr<leader::Io> io;                // the simulated world, as the executor sees it
  std::unique_ptr<leader::Decisions> decisions;  // the shared store's client (shared seeds)
  std::unique_ptr<leader::Executor> exec;        // the server's own executor
  SimLog log;
  std::optional<std::string> incarnation_file;
  int64_t tick_at = 0;
  std::map<uint64_t, Incoming> waiting;
  uint64_t next_client = 1;
  // Shared store: the cluster its data directory belongs to (empty before its first start),
  // and whether its creation claim is in flight.
  std::string cluster;
  bool claiming = false;
  uint64_t join_epoch = 0;  // the membership epoch its last JOINs carried
};

struct PartNode {
  bool alive = true;
  uint64_t gen = 0;
  std::unique_ptr<participant::Core> core;
  std::unique_ptr<participant::Io> io;          // the simulated world, as the executor sees it
  std::unique_ptr<participant::Executor> exec;  // the server's own executor
  SimLog log;
  SimStore store;
  int64_t tick_at = 0;
  std::map<uint64_t, Incoming> waiting;
  uint64_t next_client = 1;
  std::set<std::string> voted_yes;  // said YES, not yet seen finished
  std::set<std::string> durable_prepared, durable_committed;
  std::string cluster;  // shared store: the cluster of the first leader's JOIN (its identity)
};

struct ClientTxn {
  std::string rid;
  std::vector<Op> ops;
  uint64_t invoked = 0, answered = 0;  // event numbers
  enum Outcome { open, committed, aborted, unknown } outcome = open;
  std::string txid;
};
struct ClientRead {
  std::string key;
  std::optional<std::string> value;
  uint64_t invoked = 0, answered = 0;
};

struct ClientScan {  // SCAN PREFIX "" LIMIT, answered whole (END)
  std::string prefix;
  std::vector<std::pair<std::string, std::string>> kvs;
  uint64_t invoked = 0, answered = 0;
};

struct ClientNode {
  int leader = 0;
  int ops_left = 0;
  int n = 0;
  bool busy = false;
  std::map<std::string, std::string> last_seen;  // key -> value, for check ops
};

struct TxnInfo {
  std::string rid;
  int leader = -1;
  uint64_t decided_at = 0;  // event number when its COMMIT record became durable; 0: never
  bool leader_aborted = false;
  std::vector<Op> ops;  // all ops, from the leader's PREPAREs
  std::set<size_t> committed_to;  // participants the leader sent its COMMIT
  std::set<size_t> voted_yes;     // participants that voted YES (prepared it)
};

class Cluster {
 public:
  explicit Cluster(const Options& opt)
      : m_opt(opt),
        m_rng(opt.seed),
        m_pause_rng(opt.seed * 0x9e3779b97f4a7c15ull + 1),
        m_op_rng(opt.seed * 0xbf58476d1ce4e5b9ull + 7),
        m_member_rng(opt.seed * 0x2545f4914f6cdd1dull + 29),
        m_long_rng(opt.seed * 0x94d049bb133111ebull + 11),
        m_read_rng(opt.seed * 0xd6e8feb86659fd93ull + 13),
        m_damage_rng(opt.seed * 0xa0761d6478bd642full + 17),
        m_io_rng(opt.seed * 0x8ebc6af09c88c6e3ull + 23),
        m_store_rng(opt.seed * 0xe7037ed1a0b428dbull + 19) {}
  Report run();

 private:
  // --- shape and setup
  void setup();
  int chan(Kind fk, int f, Kind tk, int t) const { return m_chan_index.at({fk, f, tk, t}); }
  std::string name(Kind k, int i) const {
    return fmt::format("{}{}", k == K_LEADER ? "L" : k == K_PART ? "P" : "C", i);
  }
  bool alive(Kind k, int i) const {
    return k == K_CLIENT || (k == K_LEADER ? m_leaders[i].alive : m_parts[i].alive);
  }
  void trace(const std::string& who, const std::string& what);
  void violation(const std::string& what);

  // --- network
  int64_t delay();
  void request(int c, std::string line, std::function<void(Result<std::string>)> cb);
  void deliver(int c, uint64_t id, uint64_t epoch, const std::string& line);
  void reply(const Incoming& in, std::string line);
  void reset(int c);
  void reconnect(int c);
  bool partitioned(const Chan& ch) const;

  // --- nodes
  // `claimed`: over a shared store, its creation claim (claim_leader) is done for this start.
  void start_leader(int i, bool claimed = false);
  void claim_leader(int i);
  int m_claims_in_flight = 0;
  std::string view_text() const;
  void start_part(int j);
  void crash(Kind k, int i);
  void crash_for(Kind k, int i, int64_t down_ms);  // and restart it after down_ms
  void step_leader(int i, leader::Event e);
  class LeaderIo;
  class SimDecisions;
  void step_part(int j, participant::Event e);
  class PartIo;
  class CheckedStore;
  void part_ask(int j, const participant::act::Ask& q);
  void leader_line(int i, const std::string& line, Incoming in);
  void part_line(int j, const std::string& line, Incoming in);
  // The node id of the leader at the other end of a request's channel.
  std::string from_node(const Incoming& in) const {
    return fmt::format("node-L{}", m_chans[in.chan].from);
  }
  void append(Kind k, int i, SimLog& log, uint8_t type, std::string payload, std::string txid,
              int mode, std::function<void()> done);
  void sync(Kind k, int i);
  void check_part(int j, bool restarted = false);
  template <class F>
  void at_node(Kind k, int i, int64_t t, F f);
  // A log rewrite now: at random once the log passed its threshold, none queued already.
  bool wants_rewrite(const SimLog& log) {
    if (log.bytes() <= rewrite_past() || !m_rng.chance(0.2)) return false;
    for (auto& p : log.pending)
      if (p.is_rewrite) return false;
    return true;
  }
  // Arms node (k, i)'s tick for `at` (ms) unless one is armed no later.
  void arm_tick(Kind k, int i, int64_t at);

  // --- clients and faults
  void client_next(int c);
  void client_resolve(int c, size_t txn, int attempt);
  void chaos();
  void heal();

  // --- checks at the end
  void final_checks();

  Options m_opt;
  Rng m_rng;
  // Backup pauses, in one seed of five (seed % 5 == 3), drawn from a generator of their own:
  // the other seeds keep their schedules (and the regression seeds their meaning).
  Rng m_pause_rng;
  bool pauses() const { return m_opt.seed % 5 == 3; }
  // An operator's forced outcomes (tpc client resolve --force), in one seed of seven
  // (seed % 7 == 6), from a generator of their own: at a participant, an in-doubt
  // transaction committed or aborted without its leader. Every one that contradicts the
  // leader's decision must end up recorded by that leader (docs/recovery.md); the keys such
  // transactions wrote leave the data checks (they hold what the operator chose).
  Rng m_op_rng;
  // An operator removes a participant (tpc client member remove), in one seed of six
  // (seed % 6 == 3) of three participants with one leader or a shared store, from a generator
  // of its own, at any time under load and faults.
  Rng m_member_rng;
  bool removals() const { return m_opt.seed % 6 == 3; }
  void remove_member(int slot, int tries);
  // In those seeds, one change of three kinds by (seed / 6) % 3: remove (0, the seeds that
  // removed before there were others), add (1: a fourth participant, started empty, joins),
  // replace (2: a participant's node is lost with its disk, and a new one at a new address
  // takes its slot).
  int member_change() const { return static_cast<int>((m_opt.seed / 6) % 3); }
  // Half the removals (by (seed / 18) % 2) remove a node that died just before: it stays down
  // until the healing (m_gone), so that it leaves as leaving-out.
  bool removes_dead() const { return (m_opt.seed / 18) % 2 == 1; }
  std::set<int> m_gone;
  void add_member(int tries);
  void replace_member(int slot, int tries);
  // Where each participant node is reached: "pJ:1", and "pJb:1" for a node that replaced one.
  // A leader links to node j only while its membership has slot j at that address (the
  // server's links follow the membership).
  std::vector<std::string> m_part_addr;
  bool linked(int i, size_t j) const {
    auto& l = m_leaders[i];
    if (!l.core || j >= l.core->members().size()) return false;
    return l.core->members().slots[j].addr == m_part_addr[j];
  }
  // Leaders down for 31 to 40 s, in one seed of eleven (seed % 11 == 10), from a generator
  // of their own.
  Rng m_long_rng;
  bool long_outages() const { return m_opt.seed % 11 == 10; }
  // Which keys a conditional transaction checks and which it writes (half of them check one
  // or two keys and write another), from a generator of its own.
  Rng m_read_rng;
  bool operators() const { return m_opt.seed % 7 == 6; }
  // Bytes damaged in the middle of a log at a crash, in one seed of thirteen
  // (seed % 13 == 12), from a generator of their own: the restart must refuse the log
  // (CORRUPT), never start from what precedes the damage; an operator then repairs it.
  Rng m_damage_rng;
  bool damage() const { return m_opt.seed % 13 == 12; }
  void damage_log(Kind k, int i);
  bool refuses_damaged(Kind k, int i);
  // Crashes at any I/O, in one seed of five (drawn by a generator of their own): at every
  // failpoint of the executors (before and after each fsync, apply, send), a node crashes
  // one time in a hundred, at that very point.
  Rng m_io_rng;
  bool m_io_crashes = false;
  std::pair<Kind, int> m_current{K_CLIENT, 0};  // the node whose code runs now
  template <class F>
  void as(Kind k, int i, F&& f) {
    m_current = {k, i};
    f();
  }
  bool run_one(int64_t until);
  // A decision store shared by the leaders (docs/decision-store.md), in one seed of four
  // (seed % 4 == 1): a simulated etcd holding their commit points (batches), settlers' abort
  // keys, each leader's key under a lease of 3 s kept alive every second, incarnations and
  // committed request ids. Its faults come from a generator of their own: quorum lost for a
  // while, a leader cut off from it (its lease expires past 3 s), slow answers, and answers
  // lost after the operation took effect.
  Rng m_store_rng;
  bool shared() const { return m_opt.seed % 4 == 1; }
  struct SharedStore {
    std::map<int, int64_t> lease_until;  // leader -> expiry of its key's lease (us)
    std::map<int, uint64_t> incarnation;
    std::map<std::string, std::pair<int, std::string>> batches;  // txid -> leader, COMMIT payload
    std::set<std::string> aborts;                                // settlers' abort keys
    std::map<std::string, std::string> rids;                     // rid -> txid
    std::string cluster, view;  // P/cluster: created by the first leader's claim
    std::string members;        // P/members: the membership (its first epoch at creation)
    bool down = false;                                           // quorum lost
    std::set<int> cut;                                           // leaders cut off from it
  } m_store;
  std::map<int, bool> m_store_health;  // leader -> what it was last told (ev::StoreHealth)
  static constexpr int64_t k_lease_us = 3000 * k_ms;
  bool store_reachable(int i) const { return !m_store.down && !m_store.cut.count(i); }
  bool holds_key(int i) const {
    auto it = m_store.lease_until.find(i);
    return it != m_store.lease_until.end() && it->second > m_s.now_us();
  }
  int64_t store_delay() {
    return m_store_rng.chance(0.03) ? m_store_rng.range(20 * k_ms, 200 * k_ms)
                                    : m_store_rng.range(200, 3000);
  }
  // At the store after a delay, then the answer back to `done` after another (or lost: an
  // error, as when the store cannot be reached).
  template <class Op, class Done>
  void store_call(int i, Op op, Done done);
  void store_keepalive(int i);
  void store_health(int i);
  void store_chaos();
  // Compaction under pressure, in one seed of three (seed % 3 == 1): logs are rewritten past
  // 1 KiB instead of 8 KiB, so that most transactions see a rewrite between their records.
  bool pressure() const { return m_opt.seed % 3 == 1; }
  uint64_t rewrite_past() const { return pressure() ? 1024 : 8192; }
  void operate();
  std::map<std::pair<std::string, int>, bool> m_op_intent;  // (txid, P) -> commit: being forced
  std::map<std::pair<std::string, int>, bool> m_heur;       // (txid, P) -> commit: durable
  // Forced outcomes at a participant whose node was then lost with its disk (member replace):
  // its report may or may not have reached the leader.
  std::set<std::pair<std::string, int>> m_heur_lost;
  bool heuristic_at(const std::string& txid, int j) const { return m_heur.count({txid, j}) > 0; }
  bool heuristic_txn(const std::string& txid) const {
    auto it = m_heur.lower_bound({txid, INT_MIN});
    return it != m_heur.end() && it->first.first == txid;
  }
  void client_pause(int c);
  Scheduler m_s;
  Report m_result;
  uint64_t m_stamp = 0;  // orders decisions, invocations and answers
  uint64_t m_events = 0;
  bool m_chaos = true;
  bool m_aborted_run = false;
  int m_replicas = 0;
  int m_keys = 0;
  double m_p_dup = 0, m_p_slow = 0;
  std::vector<std::string> m_peers;
  std::vector<LeaderNode> m_leaders;
  std::vector<PartNode> m_parts;
  std::vector<ClientNode> m_clients;
  std::vector<Chan> m_chans;
  std::map<std::tuple<Kind, int, Kind, int>, int> m_chan_index;
  std::set<std::pair<int, int>> m_partitions;  // (leader, participant)
  uint64_t m_next_req = 1;
  std::map<std::string, TxnInfo> m_txns;
  std::vector<ClientTxn> m_ctxns;
  std::vector<ClientRead> m_creads;
  std::vector<ClientScan> m_cscans;
  std::map<std::string, size_t> m_ctxn_by_rid;
};

void Cluster::trace(const std::string& who, const std::string& what) {
  if (!m_opt.trace) return;
  m_result.trace +=
      fmt::format("{:>12.3f} #{:<6} {:<3} {}\n", m_s.now_us() / 1000.0, m_events, who, what);
}

void Cluster::violation(const std::string& what) {
  trace("!!", "VIOLATION " + what);
  if (m_result.violations.size() < 20) m_result.violations.push_back(what);
}

// The store as the executor sees it: the simulated one, checked at every apply.
class Cluster::CheckedStore : public store::Store {
 public:
  CheckedStore(Cluster& c, int j) : m_c(c), m_j(j), m_s(c.m_parts[j].store) {}
  Result<std::optional<std::string>> get(const std::string& key) override { return m_s.get(key); }
  std::set<std::string> applied_txids() override { return m_s.applied_txids(); }
  Status apply(const std::string& txid, const std::vector<Op>& ops) override {
    m_c.trace(m_c.name(K_PART, m_j), "  apply " + txid);
    auto h = m_c.m_heur.find({txid, m_j});
    // A page copied to a participant catching up, or its keys another owns now, dropped.
    bool copy = txid.rfind("sync.", 0) == 0 || txid.rfind("prune.", 0) == 0;
    if (!copy && !m_c.m_txns[txid].decided_at && (h == m_c.m_heur.end() || !h->second))
      m_c.violation(m_c.name(K_PART, m_j) + " applied " + txid +
                    ", which its leader did not commit");
    return m_s.apply(txid, ops);
  }
  Status end_batch() override {
    if (m_c.m_rng.chance(0.3)) (void)m_s.make_durable();  // a checkpoint happened
    return Status::ok();
  }
  uint64_t key_count() override { return m_s.key_count(); }
  uint64_t applied_seq() override { return m_s.applied_seq(); }
  Status prune_applied(uint64_t upto) override { return m_s.prune_applied(upto); }
  Status make_durable() override { return m_s.make_durable(); }
  Result<KeyValues> scan(const std::string& after, size_t limit, size_t max_bytes) override {
    return m_s.scan(after, limit, max_bytes);
  }

 private:
  Cluster& m_c;
  int m_j;
  SimStore& m_s;
};

// The simulated world of participant P<j>, as its executor (the server's own) sees it; the
// checks of what a participant does sit where its actions meet the world.
class Cluster::PartIo : public participant::Io {
 public:
  PartIo(Cluster& c, int j) : m_c(c), m_j(j), m_store(c, j) {}
  int64_t now_ms() override { return m_c.m_s.now_us() / k_ms; }
  int64_t wall_ms() override { return now_ms(); }
  int64_t now_us() override { return m_c.m_s.now_us(); }
  void append(uint8_t type, std::string payload, const std::string& txid,
              participant::act::Append::Mode mode, std::function<void()> done) override {
    auto& n = node();
    m_c.trace(name(), fmt::format("  append type {} {}", type, txid));
    if (type == participant::k_rec_aborted && n.voted_yes.count(txid) &&
        !m_c.heuristic_at(txid, m_j)) {
      auto& t = m_c.m_txns[txid];
      if (t.decided_at)
        m_c.violation(name() + " aborted " + txid + ", which its leader committed");
      else if (!t.leader_aborted)
        m_c.violation(name() + " aborted " + txid +
                      " alone, after voting YES, without its leader's decision");
    }
    m_c.append(K_PART, m_j, n.log, type, std::move(payload), txid, static_cast<int>(mode),
               std::move(done));
  }
  void rewrite(std::vector<txlog::Record> live, std::function<void()> done) override {
    auto& n = node();
    m_c.trace(name(), fmt::format("  rewrite log: {} live records", live.size()));
    m_c.m_result.features.set(m_c.pressure() ? f_pressure : f_rewrites);
    SimLog::Pending p;
    p.is_rewrite = true;
    for (auto& rec : live) p.image += txlog::frame(rec.type, rec.payload);
    n.log.pending.push_back(std::move(p));
    // Its completion (the applied marks go) once the rewrite is durable, at the next sync.
    n.log.pending.push_back({});
    n.log.pending.back().done = std::move(done);
  }
  bool wants_rewrite(bool) override { return m_c.wants_rewrite(node().log); }
  store::Store& store() override { return m_store; }
  void reply(participant::ClientId client, const participant::ReplyMsg& msg) override {
    auto& n = node();
    auto it = n.waiting.find(client);
    if (it == n.waiting.end()) return;
    std::string line = participant::encode(msg);
    m_c.trace(name(), "  reply: " + line);
    if (auto* v = std::get_if<protocol::Vote>(&msg); v && v->kind == protocol::Vote::yes) {
      const std::string& txid = it->second.txid;
      if (!n.durable_prepared.count(txid))
        m_c.violation(name() + " voted YES on " + txid + " before its PREPARED record was durable");
      n.voted_yes.insert(txid);
      m_c.m_txns[txid].voted_yes.insert(static_cast<size_t>(m_j));
    }
    m_c.reply(it->second, line);
    n.waiting.erase(it);
  }
  void ask(const participant::act::Ask& q) override { m_c.part_ask(m_j, q); }
  void note(const participant::act::Note& note) override {
    m_c.trace(name(), "  note: " + note.text);
  }
  void post(std::function<void()> f) override {
    m_c.at_node(K_PART, m_j, m_c.m_s.now_us() + m_c.m_rng.range(0, 300), std::move(f));
  }
  void wake_at(int64_t at) override { m_c.arm_tick(K_PART, m_j, at); }
  void before_step(const participant::Event& e) override {
    ++m_c.m_events;
    if (m_c.m_opt.trace) m_c.trace(name(), describe(e));
  }
  void after_step() override { m_c.check_part(m_j, true); }

 private:
  PartNode& node() { return m_c.m_parts[m_j]; }
  std::string name() const { return m_c.name(K_PART, m_j); }
  static std::string describe(const participant::Event& e) {
    return std::visit(
        [](auto& x) -> std::string {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, participant::ev::Prepare>) return "PREPARE " + x.msg.txid;
          if constexpr (std::is_same_v<T, participant::ev::Commit>) return "COMMIT " + x.txid;
          if constexpr (std::is_same_v<T, participant::ev::Abort>) return "ABORT " + x.txid;
          if constexpr (std::is_same_v<T, participant::ev::Read>) return "READ " + x.key;
          if constexpr (std::is_same_v<T, participant::ev::Durable>)
            return fmt::format("durable type {} {}", x.type, x.txid);
          if constexpr (std::is_same_v<T, participant::ev::Applied>) return "applied";
          if constexpr (std::is_same_v<T, participant::ev::Flush>) return "flush";
          if constexpr (std::is_same_v<T, participant::ev::Outcome>)
            return "outcome of " + x.txid + ": " +
                   (x.decision ? protocol::encode(*x.decision) : std::string("lost"));
          if constexpr (std::is_same_v<T, participant::ev::Tick>) return "tick";
          if constexpr (std::is_same_v<T, participant::ev::Resolve>) return "resolve";
          return "log full";
        },
        e);
  }

  Cluster& m_c;
  int m_j;
  CheckedStore m_store;
};

// The simulated world of leader L<i>, as its executor (the server's own) sees it; the checks
// of what a leader does sit where its actions meet the world.
class Cluster::LeaderIo : public leader::Io {
 public:
  LeaderIo(Cluster& c, int i) : m_c(c), m_i(i) {}
  int64_t now_ms() override { return m_c.m_s.now_us() / k_ms; }
  int64_t now_us() override { return m_c.m_s.now_us(); }
  void append(uint8_t type, std::string payload, const std::string& txid, bool force,
              std::function<void()> done) override {
    m_c.trace(name(), fmt::format("  append type {} {}{}", type, txid, force ? " (forced)" : ""));
    m_c.append(K_LEADER, m_i, node().log, type, std::move(payload), txid, force ? 1 : 0,
               std::move(done));
  }
  void rewrite(std::vector<txlog::Record> live) override {
    m_c.trace(name(), fmt::format("  rewrite log: {} live records", live.size()));
    m_c.m_result.features.set(m_c.pressure() ? f_pressure : f_rewrites);
    SimLog::Pending p;
    p.is_rewrite = true;
    for (auto& rec : live) p.image += txlog::frame(rec.type, rec.payload);
    node().log.pending.push_back(std::move(p));
  }
  bool wants_rewrite(bool) override { return m_c.wants_rewrite(node().log); }
  void request(size_t p, const protocol::PeerRequest& msg,
               std::function<void(Result<std::string>)> cb) override {
    std::string line = protocol::encode(msg);
    m_c.trace(name(), fmt::format("  send P{}: {}", p, line.substr(0, 120)));
    if (auto* cm = std::get_if<protocol::Commit>(&msg)) {
      if (!m_c.m_txns[cm->txid].decided_at)
        m_c.violation("leader sent COMMIT for " + cm->txid + " with no durable decision");
      m_c.m_txns[cm->txid].committed_to.insert(p);
    } else if (auto* ab = std::get_if<protocol::Abort>(&msg)) {
      auto& t = m_c.m_txns[ab->txid];
      t.leader_aborted = true;
      if (t.decided_at) m_c.violation("leader sent ABORT for " + ab->txid + ", decided COMMIT");
    } else if (auto* pr = std::get_if<protocol::Prepare>(&msg)) {
      auto& t = m_c.m_txns[pr->txid];
      t.leader = m_i;
      if (!pr->rid.empty()) t.rid = pr->rid;
      t.ops.insert(t.ops.end(), pr->ops.begin(), pr->ops.end());
    }
    int i = m_i;
    m_c.request(m_c.chan(K_LEADER, i, K_PART, static_cast<int>(p)), line,
                [c = &m_c, i, gen = node().gen, cb = std::move(cb)](Result<std::string> r) {
                  if (c->m_leaders[i].alive && c->m_leaders[i].gen == gen) cb(std::move(r));
                });
  }
  void reply(leader::ClientId client, const leader::ClientReply& r) override {
    auto& n = node();
    auto it = n.waiting.find(client);
    if (it == n.waiting.end()) return;
    std::string line = leader::encode(r);
    m_c.trace(name(), "  reply: " + line);
    if (r.kind == leader::ClientReply::committed && !r.txid.empty() &&
        !m_c.m_txns[r.txid].decided_at)
      m_c.violation("leader told a client COMMITTED for " + r.txid +
                    " before its decision was durable");
    if (!it->second.txid.empty()) {  // an OUTCOME query
      auto& t = m_c.m_txns[it->second.txid];
      if (r.kind == leader::ClientReply::committed && !t.decided_at)
        m_c.violation("leader answered COMMITTED to OUTCOME " + it->second.txid +
                      " with no decision record");
      if (r.kind == leader::ClientReply::aborted) {
        if (t.decided_at) {
          for (auto& p : m_c.m_parts)
            if (p.alive && p.core->find(it->second.txid) &&
                !p.core->find(it->second.txid)->applying)
              m_c.violation("leader answered ABORTED to OUTCOME " + it->second.txid +
                            ", decided COMMIT and still in doubt");
        } else {
          t.leader_aborted = true;
        }
      }
    }
    m_c.reply(it->second, line);
    n.waiting.erase(it);
  }
  void note_error(const std::string& text) override { m_c.trace(name(), "  error: " + text); }
  void warn(const std::string& text) override { m_c.trace(name(), "  warn: " + text); }
  void after(int64_t ms, std::function<void()> f) override {
    m_c.at_node(K_LEADER, m_i, m_c.m_s.now_us() + ms * k_ms, std::move(f));
  }
  void wake_at(int64_t at) override { m_c.arm_tick(K_LEADER, m_i, at); }
  // A new membership epoch: the leader's JOIN again to every participant (the server's
  // after_step), with the membership line while members change.
  void after_step() override {
    auto& n = node();
    if (!n.core || n.core->members().epoch == n.join_epoch) return;
    n.join_epoch = n.core->members().epoch;
    for (size_t j = 0; j < m_c.m_parts.size(); ++j)
      m_c.at_node(K_PART, static_cast<int>(j), m_c.m_s.now_us() + m_c.m_rng.range(100, 2000),
                  [c = &m_c, j, m = n.core->members()] {
                    auto& p = c->m_parts[j];
                    if (!p.alive || m.epoch < p.core->epoch()) return;  // refused (EPOCH)
                    // Not its node (the slot has another address, or none yet): no JOIN.
                    if (j >= m.size() || m.slots[j].addr != c->m_part_addr[j]) return;
                    c->step_part(static_cast<int>(j), participant::ev::Members{j, m, m.epoch});
                  });
  }
  void before_step(const leader::Event& e) override {
    ++m_c.m_events;
    if (!m_c.m_opt.trace) return;
    std::string what = std::visit(
        [](auto& x) -> std::string {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, leader::ev::Txn>) return "client TXN rid=" + x.rid;
          if constexpr (std::is_same_v<T, leader::ev::Get>) return "client GET " + x.key;
          if constexpr (std::is_same_v<T, leader::ev::Result>) return "client RESULT " + x.rid;
          if constexpr (std::is_same_v<T, leader::ev::Outcome>)
            return "OUTCOME " + x.txid +
                   (x.heuristic ? fmt::format(" heuristic={} rid={}",
                                              *x.heuristic ? "commit" : "abort", x.rid)
                                : "");
          if constexpr (std::is_same_v<T, leader::ev::Vote>)
            return fmt::format("vote of P{} for {}: {}", x.part, x.txid, protocol::encode(x.vote));
          if constexpr (std::is_same_v<T, leader::ev::CommitReply>)
            return fmt::format("COMMIT {} reply from P{}: {}", x.txid, x.part,
                               x.acked ? "ACK" : "lost");
          if constexpr (std::is_same_v<T, leader::ev::ReadReply>)
            return fmt::format("READ reply from P{}: {}", x.part, protocol::encode(x.reply));
          if constexpr (std::is_same_v<T, leader::ev::Durable>) return "durable COMMIT " + x.txid;
          if constexpr (std::is_same_v<T, leader::ev::LinkUp>)
            return fmt::format("link to P{} up", x.part);
          if constexpr (std::is_same_v<T, leader::ev::LinkDown>)
            return fmt::format("link to P{} down", x.part);
          if constexpr (std::is_same_v<T, leader::ev::Tick>) return "tick";
          return "log full";
        },
        e);
    m_c.trace(name(), what);
  }

 private:
  LeaderNode& node() { return m_c.m_leaders[m_i]; }
  std::string name() const { return m_c.name(K_LEADER, m_i); }
  Cluster& m_c;
  int m_i;
};

// The shared decision store as leader L<i>'s client of it sees it (EtcdDecisions' part):
// every call goes to the simulated store and back, with its faults.
class Cluster::SimDecisions : public leader::Decisions {
 public:
  SimDecisions(Cluster& c, int i) : m_c(c), m_i(i) {}
  void decide(const std::string& txid, std::string payload, const std::string& members,
              std::function<void(Result<bool>)> cb) override {
    m_c.trace(m_c.name(K_LEADER, m_i), "  decide in the store " + txid);
    auto op = [c = &m_c, i = m_i, txid, payload, members]() -> Result<bool> {
      auto& st = c->m_store;
      auto b = st.batches.find(txid);
      if (b != st.batches.end() && b->second.first == i) return true;  // an earlier attempt
      if (!c->holds_key(i)) return Status::error("UNAVAILABLE", "lease lost");
      if (st.aborts.count(txid)) return false;
      if (st.members != members) return Status::error("EPOCH", st.members);
      st.batches[txid] = {i, payload};
      auto& t = c->m_txns[txid];
      if (!t.decided_at) {
        t.decided_at = ++c->m_stamp;
        // Every in-sync copy of each key it writes, in the store's membership, voted YES.
        auto m = membership::decode(st.members);
        for (auto& o : t.ops) {
          if (!o.is_write() || !m) continue;
          for (auto q : m->readers(o.key))
            if (!t.voted_yes.count(q))
              c->violation(
                  fmt::format("{} committed in the store without the YES of P{}, an "
                              "in-sync copy of {} in epoch {}",
                              txid, q, o.key, m->epoch));
        }
        if (t.leader_aborted)
          c->violation(txid +
                       " committed in the decision store after a leader answered "
                       "ABORTED for it");
      }
      if (auto d = leader::decode_commit(payload); d && !d->rid.empty()) st.rids[d->rid] = txid;
      c->trace(c->name(K_LEADER, i), "  decision store: batch of " + txid + " created");
      return true;
    };
    m_c.store_call(m_i, op, std::move(cb));
  }
  void end(const std::string& txid) override {
    m_c.m_store.batches.erase(txid);  // best effort, as the real batch deletes
  }
  void lookup(const std::string& txid, const std::string& owner,
              std::function<void(Result<leader::StoreFacts>)> cb) override {
    auto op = [c = &m_c, txid, owner]() -> Result<leader::StoreFacts> {
      int o = std::stoi(owner) - 1;
      leader::StoreFacts f;
      auto b = c->m_store.batches.find(txid);
      f.committed = b != c->m_store.batches.end() && b->second.first == o;
      f.aborted = c->m_store.aborts.count(txid) > 0;
      f.owner_alive = c->holds_key(o);
      return f;
    };
    m_c.store_call(m_i, op, std::move(cb));
  }
  void settle(const std::string& txid, const std::string& owner, bool fenced,
              std::function<void(Result<leader::SettleResult>)> cb) override {
    auto op = [c = &m_c, i = m_i, txid, owner, fenced]() -> Result<leader::SettleResult> {
      int o = std::stoi(owner) - 1;
      auto& st = c->m_store;
      bool created = false;
      if (!st.aborts.count(txid) && (!fenced || !c->holds_key(o))) {
        st.aborts.insert(txid);
        created = true;
        c->m_result.features.set(f_settles);
        c->trace(c->name(K_LEADER, i), "  decision store: " + txid + " settled as aborted");
      }
      auto b = st.batches.find(txid);
      if (b != st.batches.end() && b->second.first == o) return leader::SettleResult::committed;
      if (created) return leader::SettleResult::settled;
      if (st.aborts.count(txid)) return leader::SettleResult::aborted;
      return leader::SettleResult::owner_back;
    };
    m_c.store_call(m_i, op, std::move(cb));
  }
  void find_rid(const std::string& rid, std::function<void(Result<std::string>)> cb) override {
    auto op = [c = &m_c, rid]() -> Result<std::string> {
      auto it = c->m_store.rids.find(rid);
      return it == c->m_store.rids.end() ? std::string() : it->second;
    };
    m_c.store_call(m_i, op, std::move(cb));
  }
  void record_mismatch(const std::string&, size_t, std::string,
                       std::function<void(Status)> cb) override {
    auto op = []() -> Result<bool> { return true; };
    m_c.store_call(m_i, op,
                   [cb = std::move(cb)](Result<bool> r) { cb(r ? Status::ok() : r.status()); });
  }
  void forget_mismatches(const std::string&) override {}
  void put_members(const std::string& expect, const std::string& next,
                   std::function<void(Result<std::string>)> cb) override {
    auto op = [c = &m_c, i = m_i, expect, next]() -> Result<std::string> {
      auto& st = c->m_store;
      if (c->holds_key(i) && st.members == expect) {
        st.members = next;
        c->trace(c->name(K_LEADER, i), "  decision store: membership " + next);
      }
      return st.members;
    };
    m_c.store_call(m_i, op, std::move(cb));
  }
  void read_members(std::function<void(Result<MembersView>)> cb) override {
    auto op = [c = &m_c]() -> Result<MembersView> {
      MembersView v{c->m_store.members, {}};
      for (size_t l = 0; l < c->m_leaders.size(); ++l)
        if (c->holds_key(static_cast<int>(l))) v.leaders.push_back(fmt::format("{}", l + 1));
      return v;
    };
    m_c.store_call(m_i, op, std::move(cb));
  }

 private:
  Cluster& m_c;
  int m_i;
};

// --- setup --------------------------------------------------------------------------------

void Cluster::setup() {
  int nl = m_rng.chance(0.3) ? 2 : 1;
  // Over a shared store, two or three leaders: takeovers need another leader to ask.
  if (shared()) nl = static_cast<int>(m_store_rng.range(2, 3));
  int np = static_cast<int>(m_rng.range(2, 3));
  m_replicas = np == 3 && m_rng.chance(0.4) ? static_cast<int>(m_rng.range(1, 2)) : 0;
  int nc = static_cast<int>(m_rng.range(2, 4));
  m_keys = static_cast<int>(m_rng.range(2, 6));
  m_p_dup = m_rng.chance(0.5) ? 0.05 : 0;
  m_p_slow = m_rng.chance(0.5) ? 0.03 : 0.002;
  int ops = m_opt.ops_per_client ? m_opt.ops_per_client : static_cast<int>(m_rng.range(10, 30));
  m_result.shape = fmt::format(
      "{} leaders{}, {} participants, replicas {}, {} clients x {} ops, "
      "{} keys",
      nl, shared() ? " over a shared decision store" : "", np,
      m_replicas ? std::to_string(m_replicas) : "all", nc, ops, m_keys);
  trace("--", "cluster: " + m_result.shape);
  for (int j = 0; j < np; ++j) m_peers.push_back(fmt::format("p{}:1", j));
  bool changes = removals() && np == 3 && (nl == 1 || shared());
  int nodes = np + (changes && member_change() == 1);  // a node to add, started empty
  for (int j = 0; j < nodes; ++j) m_part_addr.push_back(fmt::format("p{}:1", j));
  m_leaders.resize(nl);
  m_parts.resize(nodes);
  m_clients.resize(nc);
  auto add = [&](Kind fk, int f, Kind tk, int t) {
    m_chan_index[{fk, f, tk, t}] = static_cast<int>(m_chans.size());
    Chan ch;
    ch.from_kind = fk;
    ch.to_kind = tk;
    ch.from = f;
    ch.to = t;
    m_chans.push_back(std::move(ch));
  };
  for (int i = 0; i < nl; ++i)
    for (int j = 0; j < nodes; ++j) {
      add(K_LEADER, i, K_PART, j);
      add(K_PART, j, K_LEADER, i);
    }
  for (int c = 0; c < nc; ++c) {
    for (int i = 0; i < nl; ++i) add(K_CLIENT, c, K_LEADER, i);
    m_clients[c].leader = c % nl;
    m_clients[c].ops_left = ops;
  }
  for (int j = 0; j < nodes; ++j) start_part(j);
  for (int i = 0; i < nl; ++i) start_leader(i);
  for (size_t c = 0; c < m_chans.size(); ++c) reconnect(static_cast<int>(c));
  for (int c = 0; c < nc; ++c) m_s.after(m_rng.range(1, 20) * k_ms, [this, c] { client_next(c); });
  m_s.after(m_rng.range(10, 300) * k_ms, [this] { chaos(); });
  if (operators()) m_s.after(m_op_rng.range(200, 2000) * k_ms, [this] { operate(); });
  if (changes) {
    int slot = static_cast<int>(m_member_rng.below(3));
    int64_t at = m_member_rng.range(100, 4000) * k_ms;
    if (member_change() == 0) m_s.after(at, [this, slot] { remove_member(slot, 0); });
    if (member_change() == 1) m_s.after(at, [this] { add_member(0); });
    if (member_change() == 2) m_s.after(at, [this, slot] { replace_member(slot, 0); });
  }
  if (shared()) m_s.after(m_store_rng.range(500, 4000) * k_ms, [this] { store_chaos(); });
}

template <class F>
void Cluster::at_node(Kind k, int i, int64_t t, F f) {
  uint64_t gen = k == K_LEADER ? m_leaders[i].gen : m_parts[i].gen;
  m_s.at(t, [this, k, i, gen, f = std::move(f)]() mutable {
    uint64_t now_gen = k == K_LEADER ? m_leaders[i].gen : m_parts[i].gen;
    if (!alive(k, i) || now_gen != gen) return;
    as(k, i, f);
  });
}

void Cluster::arm_tick(Kind k, int i, int64_t at) {
  int64_t& tick = k == K_LEADER ? m_leaders[i].tick_at : m_parts[i].tick_at;
  if (!at || (tick != 0 && at >= tick)) return;
  tick = at;
  at_node(k, i, at * k_ms, [this, k, i, at] {
    int64_t& t = k == K_LEADER ? m_leaders[i].tick_at : m_parts[i].tick_at;
    if (t != at) return;
    t = 0;
    if (k == K_LEADER)
      step_leader(i, leader::ev::Tick{});
    else
      step_part(i, participant::ev::Tick{});
  });
}

// --- network ------------------------------------------------------------------------------

int64_t Cluster::delay() {
  if (m_rng.chance(m_p_slow)) return m_rng.range(5 * k_ms, 80 * k_ms);  // reorders
  return m_rng.range(50, 1500);
}

bool Cluster::partitioned(const Chan& ch) const {
  if (ch.from_kind == K_CLIENT) return false;
  int l = ch.from_kind == K_LEADER ? ch.from : ch.to;
  int p = ch.from_kind == K_PART ? ch.from : ch.to;
  return m_partitions.count({l, p}) > 0;
}

void Cluster::request(int c, std::string line, std::function<void(Result<std::string>)> cb) {
  Chan& ch = m_chans[c];
  if (!ch.up) {
    m_s.after(0, [this, k = ch.from_kind, i = ch.from, cb = std::move(cb)] {
      as(k, i, [&] { cb(Status::error("UNAVAILABLE", "connection down")); });
    });
    return;
  }
  uint64_t id = m_next_req++;
  ch.pending[id] = std::move(cb);
  uint64_t epoch = ch.epoch;
  m_s.after(delay(), [this, c, id, epoch, line] { deliver(c, id, epoch, line); });
  // A duplicate, as an application-level re-send would make; sometimes very late, after
  // restarts, so stale COMMITs and ABORTs meet the transactions of a newer incarnation.
  // (Not a client's request: a client never sends a request again, it asks RESULT.)
  // A PREPARE is sent once (leader::Core); its copy is the network's, and it never reaches a
  // participant restarted since: the connection it travelled on died with the process. (A
  // participant that compacted its log and restarted no longer knows the commits it finished;
  // a copy of their PREPARE would make it prepare one again, which no real network can do.)
  if (ch.from_kind != K_CLIENT && m_rng.chance(m_p_dup)) {
    int64_t d = m_rng.chance(0.5) ? delay() : m_rng.range(100 * k_ms, 3000 * k_ms);
    bool once = line.rfind("PREPARE ", 0) == 0;
    uint64_t gen = ch.to_kind == K_PART ? m_parts[ch.to].gen : 0;
    m_s.after(d, [this, c, line, once, gen] {
      const Chan& now = m_chans[c];
      if (once && now.to_kind == K_PART && m_parts[now.to].gen != gen) return;
      m_result.features.set(f_duplicates);
      deliver(c, 0, now.epoch, line);
    });
  }
}

void Cluster::deliver(int c, uint64_t id, uint64_t epoch, const std::string& line) {
  Chan& ch = m_chans[c];
  if (ch.epoch != epoch || !alive(ch.to_kind, ch.to)) return;
  Incoming in{c, epoch, id, {}};
  m_current = {ch.to_kind, ch.to};
  if (ch.to_kind == K_LEADER)
    leader_line(ch.to, line, in);
  else
    part_line(ch.to, line, in);
}

void Cluster::reply(const Incoming& in, std::string line) {
  if (in.req == 0) return;  // a duplicate's reply: nobody waits for it
  int c = in.chan;
  m_s.after(delay(), [this, c, in, line] {
    Chan& ch = m_chans[c];
    if (ch.epoch != in.epoch) return;
    auto it = ch.pending.find(in.req);
    if (it == ch.pending.end()) return;
    auto cb = std::move(it->second);
    ch.pending.erase(it);
    as(ch.from_kind, ch.from, [&] { cb(line); });
  });
}

void Cluster::reset(int c) {
  Chan& ch = m_chans[c];
  ++ch.epoch;
  bool was_up = ch.up;
  ch.up = false;
  auto pending = std::move(ch.pending);
  ch.pending.clear();
  for (auto& [id, cb] : pending)
    m_s.after(0, [this, k = ch.from_kind, i = ch.from, cb = std::move(cb)] {
      as(k, i, [&] { cb(Status::error("UNAVAILABLE", "connection lost")); });
    });
  if (was_up && ch.from_kind == K_LEADER && m_leaders[ch.from].alive)
    step_leader(ch.from, leader::ev::LinkDown{static_cast<size_t>(ch.to)});
  if (!ch.reconnecting) {
    ch.reconnecting = true;
    m_s.after(m_rng.range(20, 300) * k_ms, [this, c] { reconnect(c); });
  }
}

void Cluster::reconnect(int c) {
  Chan& ch = m_chans[c];
  ch.reconnecting = false;
  if (ch.up) return;
  if (!alive(ch.from_kind, ch.from) || !alive(ch.to_kind, ch.to) || partitioned(ch) ||
      (ch.from_kind == K_LEADER && !linked(ch.from, static_cast<size_t>(ch.to)))) {
    ch.reconnecting = true;
    m_s.after(m_rng.range(50, 500) * k_ms, [this, c] { reconnect(c); });
    return;
  }
  if (shared() && ch.from_kind == K_LEADER) {
    // The JOIN: a participant not joined yet takes the leader's cluster; one of another
    // cluster refuses the leader (CLUSTER), whose link then never comes up.
    auto& p = m_parts[ch.to];
    const std::string& lc = m_leaders[ch.from].cluster;
    if (p.cluster.empty()) p.cluster = lc;
    if (p.cluster != lc) {
      violation(fmt::format("two clusters: {} joined cluster {}, {} runs cluster {}",
                            name(K_PART, ch.to), p.cluster, name(K_LEADER, ch.from), lc));
      ch.reconnecting = true;
      m_s.after(m_rng.range(50, 500) * k_ms, [this, c] { reconnect(c); });
      return;
    }
  }
  ch.up = true;
  ++ch.epoch;
  if (ch.from_kind == K_LEADER) {
    // The JOIN that opens the link: the leader's membership, as the server sends it.
    auto& l = m_leaders[ch.from];
    auto& p = m_parts[ch.to];
    if (l.core && p.core && l.core->members().epoch >= p.core->epoch())
      step_part(ch.to, participant::ev::Members{static_cast<size_t>(ch.to), l.core->members(),
                                                l.core->members().epoch});
    step_leader(ch.from, leader::ev::LinkUp{static_cast<size_t>(ch.to)});
  }
}

// --- logs ---------------------------------------------------------------------------------

// mode: 0 none, 1 force, 2 lazy.
void Cluster::append(Kind k, int i, SimLog& log, uint8_t type, std::string payload,
                     std::string txid, int mode, std::function<void()> done) {
  SimLog::Pending p;
  p.bytes = txlog::frame(type, payload);
  p.type = type;
  p.txid = std::move(txid);
  p.done = std::move(done);
  log.pending.push_back(std::move(p));
  if (mode == 0 || log.sync_scheduled) return;
  log.sync_scheduled = true;
  // fdatasync: usually fast, sometimes slow; a lazy record waits up to 1 ms for company.
  int64_t d = m_rng.chance(0.05) ? m_rng.range(2 * k_ms, 30 * k_ms) : m_rng.range(80, 600);
  at_node(k, i, m_s.now_us() + d + (mode == 2 ? k_ms : 0), [this, k, i] { sync(k, i); });
}

void Cluster::sync(Kind k, int i) {
  SimLog& log = k == K_LEADER ? m_leaders[i].log : m_parts[i].log;
  auto batch = std::move(log.pending);
  log.pending.clear();
  log.sync_scheduled = false;
  for (auto& p : batch) {
    if (p.is_rewrite) {
      log.durable = p.image;
      continue;
    }
    log.durable += p.bytes;
    if (k == K_LEADER && p.type == leader::k_rec_commit) {
      auto& t = m_txns[p.txid];
      if (!t.decided_at) {
        t.decided_at = ++m_stamp;
        if (t.leader_aborted)
          violation("leader " + name(k, i) + " committed " + p.txid + " after it had aborted it");
        // Every in-sync copy of each key it writes (the membership in effect) voted YES.
        if (m_leaders[i].core)
          for (auto& op : t.ops) {
            if (!op.is_write()) continue;
            for (auto q : m_leaders[i].core->members().readers(op.key))
              if (!t.voted_yes.count(q))
                violation(fmt::format("{} committed without the YES of P{}, an in-sync copy of {}",
                                      p.txid, q, op.key));
          }
      }
    }
    if (k == K_PART && p.type == participant::k_rec_prepared)
      m_parts[i].durable_prepared.insert(p.txid);
    if (k == K_PART && p.type == participant::k_rec_committed)
      m_parts[i].durable_committed.insert(p.txid);
    if (k == K_PART && p.type == participant::k_rec_heuristic) {
      auto it = m_op_intent.find({p.txid, i});
      if (it == m_op_intent.end())
        violation(name(k, i) + " wrote a HEURISTIC record of " + p.txid + " nobody asked for");
      else
        m_heur[{p.txid, i}] = it->second;
    }
  }
  trace(name(k, i), fmt::format("log sync: {} records durable", batch.size()));
  bool rewritten = false;
  for (auto& p : batch) {
    rewritten |= p.is_rewrite;
    bool still = k == K_LEADER ? m_leaders[i].alive : m_parts[i].alive;
    if (p.done && still) p.done();
  }
  // Under compaction pressure, a node sometimes crashes right after a rewrite (and what the
  // steps of its records' completions sent): its restart reads nothing but the new image, so
  // a live record the rewrite left out is missed at once.
  if (rewritten && pressure() && m_chaos && alive(k, i) && m_rng.chance(0.25)) {
    trace(name(k, i), "crash right after a log rewrite");
    m_result.features.set(f_rewrite_crash);
    ++m_result.faults;
    crash_for(k, i, m_rng.range(1, 2000));
  }
}

// --- leaders ------------------------------------------------------------------------------

void Cluster::damage_log(Kind k, int i) {
  SimLog& log = k == K_LEADER ? m_leaders[i].log : m_parts[i].log;
  auto rec = txlog::recover_image(log.durable);
  // Inside any record with whole records after it: two of them, or one with nothing torn
  // after it. Anything less can pass for a write cut short, and is read as a torn tail (the
  // reader's documented limit, log-format.md).
  size_t after = rec.tail == txlog::Recovery::torn ? 2 : 1;
  if (!rec.status || rec.records.size() <= after) return;
  size_t r = m_damage_rng.below(rec.records.size() - after);
  size_t at = rec.offsets[r] + m_damage_rng.below(rec.offsets[r + 1] - rec.offsets[r]);
  log.damage = {at, log.durable[at]};
  log.durable[at] = static_cast<char>(log.durable[at] ^ (1 + m_damage_rng.below(255)));
  ++m_result.damaged;
  m_result.features.set(f_damaged_log);
  trace(name(k, i), fmt::format("log damaged at byte {} of {} (in record {} of {})", at,
                                log.durable.size(), r + 1, rec.records.size()));
}

// A node whose log was damaged in the middle must refuse to start. An operator then puts the
// log back (from a mirror, as after a disk's repair), and the node starts a while later.
bool Cluster::refuses_damaged(Kind k, int i) {
  SimLog& log = k == K_LEADER ? m_leaders[i].log : m_parts[i].log;
  if (!log.damage) return false;
  auto rec = txlog::recover_image(log.durable);
  if (rec.status) {
    violation(fmt::format("{} started from a log damaged at byte {}, {} records recovered",
                          name(k, i), log.damage->first, rec.records.size()));
    log.damage.reset();
    return false;
  }
  trace(name(k, i), "refuses to start: " + rec.status.message() + "; the operator repairs the log");
  log.durable[log.damage->first] = log.damage->second;
  log.damage.reset();
  m_s.after(m_damage_rng.range(500, 3000) * k_ms, [this, k, i] {
    if (alive(k, i)) return;
    if (k == K_LEADER)
      start_leader(i);
    else
      start_part(i);
  });
  return true;
}

std::string Cluster::view_text() const {
  return fmt::format("peers {}\nreplicas {}\n", fmt::join(m_peers, ","),
                     m_replicas ? std::to_string(m_replicas) : std::string("all"));
}

// The creation claim of a leader starting over the shared store (the real leader's
// claim_cluster and claim_members, at every start): it proposes its directory's cluster, or a
// new one, with its view; the store creates P/cluster and P/members only if absent, and the
// leader runs under what they hold (leader::adopt_claim). Leaders started together race here,
// from a store that holds nothing yet.
void Cluster::claim_leader(int i) {
  auto& n = m_leaders[i];
  if (n.claiming) return;
  n.claiming = true;
  n.alive = false;
  if (++m_claims_in_flight > 1 && m_store.cluster.empty()) m_result.features.set(f_claim_race);
  std::string mine = n.cluster.empty() ? fmt::format("cluster-of-L{}-{}", i + 1, n.gen) : n.cluster;
  m_s.after(store_delay(), [this, i, mine] {
    std::optional<std::pair<std::string, std::string>> held;
    if (store_reachable(i)) {
      if (m_store.cluster.empty()) {  // compare-and-swap: only if absent
        m_store.cluster = mine;
        m_store.view = view_text();
        trace(name(K_LEADER, i), "claim: creates cluster " + mine);
      }
      if (m_store.members.empty())
        m_store.members = membership::encode(membership::Membership::initial(
            m_peers, m_replicas ? static_cast<size_t>(m_replicas) : m_peers.size()));
      held.emplace(m_store.cluster, m_store.view);
    }
    m_s.after(store_delay(), [this, i, held] {
      auto& n = m_leaders[i];
      --m_claims_in_flight;
      n.claiming = false;
      if (!held) {  // the real leader exits, and is started again
        trace(name(K_LEADER, i), "claim: the decision store cannot be reached");
        return m_s.after(300 * k_ms, [this, i] {
          if (!m_leaders[i].alive) start_leader(i);
        });
      }
      auto c = leader::adopt_claim(n.cluster, "", view_text(), held->first, held->second);
      if (!c) {
        violation(fmt::format("{} refuses to start: its cluster is {}, the store holds {} ({})",
                              name(K_LEADER, i), n.cluster, held->first, c.status().code()));
        return;
      }
      n.cluster = *c;
      start_leader(i, true);
    });
  });
}

void Cluster::start_leader(int i, bool claimed) {
  auto& n = m_leaders[i];
  if (n.claiming) return;
  if (refuses_damaged(K_LEADER, i)) return;
  if (shared() && !claimed) return claim_leader(i);
  if (shared() && (!store_reachable(i) || holds_key(i))) {
    // The store cannot be reached (the real leader exits, and is started again), or the
    // key of its previous life is still held: it waits for that lease to expire.
    trace(name(K_LEADER, i), "start: waits for the decision store");
    n.alive = false;
    m_s.after(300 * k_ms, [this, i] {
      if (!m_leaders[i].alive) start_leader(i);
    });
    return;
  }
  n.alive = true;
  auto rec = txlog::recover_image(n.log.durable);
  if (!rec.status) throw Fatal(name(K_LEADER, i) + " refuses to start: " + rec.status.message());
  n.log.durable.resize(rec.end);
  auto inc = leader::next_incarnation(n.incarnation_file);
  if (!inc) throw Fatal(name(K_LEADER, i) + " refuses to start: " + inc.status().message());
  n.incarnation_file = std::to_string(*inc);
  if (shared()) {
    *inc = ++m_store.incarnation[i];  // the store's counter, bumped at every start
    m_store.lease_until[i] = m_s.now_us() + k_lease_us;
    m_store_health[i] = true;
  }
  leader::CoreConfig cfg;
  cfg.id = fmt::format("{}", i + 1);
  cfg.incarnation = *inc;
  cfg.peers = m_peers;
  cfg.replicas = static_cast<size_t>(m_replicas);
  cfg.advertise = fmt::format("leader{}:5000", i);
  cfg.shared_store = shared();
  // Membership changes need one view of the membership: one leader, or several that keep it
  // in the shared store (docs/membership.md).
  cfg.exclude = m_leaders.size() == 1 || shared();
  n.core = std::make_unique<leader::Core>(cfg);
  n.io = std::make_unique<LeaderIo>(*this, i);
  n.decisions = shared() ? std::make_unique<SimDecisions>(*this, i) : nullptr;
  n.exec = std::make_unique<leader::Executor>(*n.core, *n.io, n.decisions.get());
  for (auto& r : rec.records) n.core->recover(r);
  if (shared()) {
    // The membership is the store's (the real leader's claim_members); then its decisions
    // not ended, from the store (the real leader's EtcdDecisions::open), which may name slots
    // it added.
    n.core->recover(txlog::Record{leader::k_rec_membership, m_store.members});
    for (auto& [txid, b] : m_store.batches)
      if (b.first == i) n.core->recover(txlog::Record{leader::k_rec_commit, b.second});
    int64_t first = m_store_rng.range(0, 1000);
    at_node(K_LEADER, i, m_s.now_us() + first * k_ms, [this, i] { store_keepalive(i); });
  }
  trace(name(K_LEADER, i),
        fmt::format("start: incarnation {}, {} records recovered{}", *inc, rec.records.size(),
                    rec.tail == txlog::Recovery::torn ? ", torn tail dropped" : ""));
  n.tick_at = 0;
  auto a = n.core->start(m_s.now_us() / k_ms);
  n.exec->execute(a);
  if (shared()) n.exec->poll_members(n.core->config().members_lease_ms / 4);
}

void Cluster::step_leader(int i, leader::Event e) { m_leaders[i].exec->step(std::move(e)); }

// --- the shared decision store ----------------------------------------------------------

template <class Op, class Done>
void Cluster::store_call(int i, Op op, Done done) {
  uint64_t gen = m_leaders[i].gen;
  m_s.after(store_delay(), [this, i, gen, op = std::move(op), done = std::move(done)]() mutable {
    Status unreachable = Status::error("UNAVAILABLE", "decision store unreachable");
    if (!store_reachable(i)) {
      return m_s.after(store_delay(), [this, i, gen, done = std::move(done), unreachable] {
        if (m_leaders[i].alive && m_leaders[i].gen == gen)
          as(K_LEADER, i, [&] { done(unreachable); });
      });
    }
    auto r = op();  // takes effect at the store, whatever becomes of the answer
    // A lost answer: it may have landed, the caller cannot tell.
    if (m_store_rng.chance(0.02)) r = unreachable;
    m_s.after(store_delay(), [this, i, gen, done = std::move(done), r] {
      if (m_leaders[i].alive && m_leaders[i].gen == gen) as(K_LEADER, i, [&] { done(r); });
    });
  });
}

// Every second: the lease kept alive, or a new one once it expired (and the key is free).
void Cluster::store_keepalive(int i) {
  if (store_reachable(i)) {
    auto it = m_store.lease_until.find(i);
    if (it != m_store.lease_until.end() && it->second > m_s.now_us()) {
      it->second = m_s.now_us() + k_lease_us;
    } else {
      trace(name(K_LEADER, i), "  decision store: lease expired; a new one");
      m_store.lease_until[i] = m_s.now_us() + k_lease_us;
    }
  }
  store_health(i);
  at_node(K_LEADER, i, m_s.now_us() + 1000 * k_ms, [this, i] { store_keepalive(i); });
}

// Tells leader i, at its keepalive (as the real one learns it), whether the store is
// reachable with its lease held.
void Cluster::store_health(int i) {
  if (!m_leaders[i].alive) return;
  bool up = store_reachable(i) && holds_key(i);
  auto& was = m_store_health[i];
  if (was == up) return;
  was = up;
  step_leader(i, leader::ev::StoreHealth{up});
}

void Cluster::store_chaos() {
  if (!m_chaos) return;
  m_result.features.set(f_store_faults);
  ++m_result.faults;
  if (m_store_rng.chance(0.3)) {
    trace("--", "decision store: quorum lost");
    m_store.down = true;
    m_s.after(m_store_rng.range(300, 5000) * k_ms, [this] {
      trace("--", "decision store: quorum back");
      m_store.down = false;
    });
  } else {
    int l = static_cast<int>(m_store_rng.below(m_leaders.size()));
    trace("--", fmt::format("decision store: L{} cut off from it", l));
    m_store.cut.insert(l);
    // Often past the lease (3 s): the leader lives on, its key is gone, others take over.
    m_s.after(m_store_rng.range(1000, 9000) * k_ms, [this, l] {
      trace("--", fmt::format("decision store: L{} reaches it again", l));
      m_store.cut.erase(l);
    });
  }
  m_s.after(m_store_rng.range(1000, 6000) * k_ms, [this] { store_chaos(); });
}

void Cluster::leader_line(int i, const std::string& line, Incoming in) {
  auto& n = m_leaders[i];
  auto t = protocol::split(line);
  uint64_t id = n.next_client++;
  if (t[0] == "TXN") {
    auto ops = protocol::parse_ops(t, 2);
    if (!ops) return violation("leader could not parse " + line);
    n.waiting[id] = in;
    step_leader(i, leader::ev::Txn{id, std::string(t[1]), std::move(*ops), false});
  } else if (t[0] == "GET") {
    auto r = protocol::decode_read(t);
    n.waiting[id] = in;
    step_leader(i, leader::ev::Get{id, r->key});
  } else if (t[0] == "SCAN") {
    n.waiting[id] = in;
    step_leader(i, leader::ev::Scan{id, *protocol::unescape(t[1]), *protocol::unescape(t[2]),
                                    static_cast<uint64_t>(*parse_int(t[3])), 1 << 20});
  } else if (t[0] == "RESULT") {
    n.waiting[id] = in;
    step_leader(i, leader::ev::Result{id, std::string(t[1])});
  } else if (t[0] == "OUTCOME") {
    auto q = protocol::decode_outcome_query(t);
    if (!q) return violation("leader could not parse " + line);
    in.txid = q->txid;
    n.waiting[id] = in;
    // The server knows the reporting participant by its node id; here, by its channel.
    size_t part = m_chans[in.chan].from_kind == K_PART ? static_cast<size_t>(m_chans[in.chan].from)
                                                       : SIZE_MAX;
    step_leader(i, leader::ev::Outcome{id, q->txid, q->heuristic, q->rid, part});
  } else if (t[0] == "PAUSE") {
    n.waiting[id] = in;
    step_leader(i, leader::ev::Pause{id, *parse_int(t[1])});
  } else if (t[0] == "RESUME") {
    n.waiting[id] = in;
    step_leader(i, leader::ev::Resume{id});
  } else {
    violation("leader got " + line);
  }
}

// --- participants -------------------------------------------------------------------------

void Cluster::start_part(int j) {
  auto& n = m_parts[j];
  if (m_chaos && m_gone.count(j)) return;
  if (refuses_damaged(K_PART, j)) return;
  n.alive = true;
  auto rec = txlog::recover_image(n.log.durable);
  if (!rec.status) throw Fatal(name(K_PART, j) + " refuses to start: " + rec.status.message());
  n.log.durable.resize(rec.end);
  participant::CoreConfig cfg;
  cfg.id = fmt::format("{}", j + 1);
  n.core = std::make_unique<participant::Core>(cfg, n.store);
  n.io = std::make_unique<PartIo>(*this, j);
  n.exec = std::make_unique<participant::Executor>(*n.core, *n.io);
  for (auto& r : rec.records) n.core->recover(r);
  trace(name(K_PART, j),
        fmt::format("start: {} records recovered{}", rec.records.size(),
                    rec.tail == txlog::Recovery::torn ? ", torn tail dropped" : ""));
  n.tick_at = 0;
  int64_t now = m_s.now_us() / k_ms;
  // With a shared store, every leader's JOIN names it: a participant in doubt asks them all.
  if (shared())
    for (size_t i = 0; i < m_leaders.size(); ++i) {
      participant::Actions none;  // LeaderSeen asks for nothing
      n.core->step(now, now, participant::ev::LeaderSeen{fmt::format("leader{}:5000", i)}, none);
    }
  // (Its membership comes with a leader's JOIN, when a link comes up: as the server, which
  // keeps the last one in DIR/membership but takes only a leader's.)
  (void)n.store.make_durable();  // as the server does before recovery counts commits done
  auto a = n.core->start(now, now, n.store.applied_txids());
  n.exec->execute(a);  // the redo of lost commits is applied here
  // A prepared participant never forgets: every YES it gave is still prepared (or applied).
  for (auto& txid : n.voted_yes)
    if (!n.core->find(txid) && !n.store.current().history.count(txid) && !heuristic_at(txid, j))
      violation(name(K_PART, j) + " forgot " + txid + " after a restart, though it voted YES");
  check_part(j, true);
}

void Cluster::step_part(int j, participant::Event e) { m_parts[j].exec->step(std::move(e)); }

void Cluster::part_ask(int j, const participant::act::Ask& q) {
  auto& n = m_parts[j];
  trace(name(K_PART, j), "  ask " + q.leader_addr + " OUTCOME " + q.txid);
  int l = -1;
  for (size_t i = 0; i < m_leaders.size(); ++i)
    if (q.leader_addr == fmt::format("leader{}:5000", i)) l = static_cast<int>(i);
  if (l < 0) return violation("unknown leader address " + q.leader_addr);
  request(chan(K_PART, j, K_LEADER, l),
          protocol::encode(protocol::OutcomeQuery{q.txid, q.held_ms, q.heuristic, q.rid}),
          [this, j, txid = q.txid, report = q.heuristic.has_value(),
           gen = n.gen](Result<std::string> r) {
            if (m_parts[j].alive && m_parts[j].gen == gen)
              step_part(j, participant::ev::Outcome{txid, protocol::parse_decision(r), report});
          });
}

void Cluster::check_part(int j, bool restarted) {
  auto& n = m_parts[j];
  if (!n.alive) return;
  if (auto s = n.core->check_invariants(); !s.empty()) violation(name(K_PART, j) + ": " + s);
  // Locks are released only after the outcome is durable.
  for (auto it = n.voted_yes.begin(); it != n.voted_yes.end();) {
    if (n.core->find(*it)) {
      ++it;
      continue;
    }
    // (A restart finds the commits that reached the store done: they survived.)
    if (!restarted && n.store.current().history.count(*it) && !n.durable_committed.count(*it) &&
        !n.store.durable().history.count(*it))
      violation(name(K_PART, j) + " released " + *it + " before its commit was durable");
    it = n.voted_yes.erase(it);
  }
}

void Cluster::part_line(int j, const std::string& line, Incoming in) {
  auto& n = m_parts[j];
  auto t = protocol::split(line);
  uint64_t id = n.next_client++;
  if (t[0] == "PREPARE") {
    auto m = protocol::decode_prepare(t);
    if (!m) return violation("participant could not parse " + line);
    in.txid = m->txid;
    n.waiting[id] = in;
    step_part(j, participant::ev::Prepare{id, std::move(*m), from_node(in)});
  } else if (t[0] == "COMMIT" || t[0] == "ABORT") {
    auto txid = protocol::decode_txid_arg(t);
    n.waiting[id] = in;
    if (t[0] == "COMMIT")
      step_part(j, participant::ev::Commit{id, *txid, from_node(in)});
    else
      step_part(j, participant::ev::Abort{id, *txid, from_node(in)});
  } else if (t[0] == "READ") {
    auto r = protocol::decode_read(t);
    n.waiting[id] = in;
    in.txid.clear();
    step_part(j, participant::ev::Read{id, r->key, r->epoch});
  } else if (t[0] == "SCAN" || t[0] == "SCANCHECK") {
    n.waiting[id] = in;
    in.txid.clear();
    if (t[0] == "SCAN")
      step_part(j, participant::ev::Scan{id, *protocol::decode_scan(t), from_node(in)});
    else
      step_part(
          j, participant::ev::ScanCheck{id, protocol::decode_scan_check(t)->watch, from_node(in)});
  } else if (t[0] == "SYNCBEGIN" || t[0] == "SYNC") {
    n.waiting[id] = in;
    in.txid.clear();
    if (t[0] == "SYNCBEGIN")
      step_part(j, participant::ev::SyncBegin{id, *protocol::decode_sync_begin(t)});
    else
      step_part(j, participant::ev::Sync{id, *protocol::decode_sync(t)});
  } else {
    violation("participant got " + line);
  }
}

// --- crashes and faults -------------------------------------------------------------------

void Cluster::crash(Kind k, int i) {
  ++m_result.crashes;
  SimLog& log = k == K_LEADER ? m_leaders[i].log : m_parts[i].log;
  uint64_t unsynced = log.unsynced_bytes();
  uint64_t keep = m_rng.chance(0.5) ? 0 : m_rng.below(unsynced + 1);
  bool power_loss = m_rng.chance(0.5);
  trace(name(k, i), fmt::format("CRASH (keeps {} of {} unsynced log bytes{})", keep, unsynced,
                                power_loss ? ", store loses its unsynced commits" : ""));
  log.crash(keep);
  bool damaged = damage() && m_damage_rng.chance(0.3);
  if (k == K_LEADER) {
    // A COMMIT record that reached the disk by luck is a decision all the same (read before
    // any damage: the operator's repair keeps the records after the damaged one).
    for (auto& r : txlog::recover_image(log.durable).records) {
      if (r.type != leader::k_rec_commit) continue;
      auto rec = leader::decode_commit(r.payload);
      if (!rec) continue;
      const std::string& txid = rec->txid;
      auto& t = m_txns[txid];
      if (!t.decided_at) {
        t.decided_at = ++m_stamp;
        trace(name(k, i), "  the unforced COMMIT record of " + txid + " survived: decided");
      }
    }
  }
  if (damaged) damage_log(k, i);
  if (k == K_LEADER) {
    auto& n = m_leaders[i];
    n.alive = false;
    ++n.gen;
    n.exec.reset();
    n.decisions.reset();
    n.io.reset();
    n.core.reset();
    n.waiting.clear();
    n.tick_at = 0;
  } else {
    auto& n = m_parts[i];
    n.alive = false;
    ++n.gen;
    n.exec.reset();
    n.io.reset();
    n.core.reset();
    n.waiting.clear();
    n.tick_at = 0;
    n.store.crash(power_loss);
    // What the log lost is no longer durable.
    n.durable_prepared.clear();
    n.durable_committed.clear();
    auto rec = txlog::recover_image(log.durable);
    for (auto& r : rec.records) {
      txlog::Decoder d(r.payload);
      std::string txid;
      if (!d.str(&txid)) continue;
      if (r.type == participant::k_rec_prepared) n.durable_prepared.insert(txid);
      if (r.type == participant::k_rec_committed) n.durable_committed.insert(txid);
    }
  }
  for (size_t c = 0; c < m_chans.size(); ++c) {
    auto& ch = m_chans[c];
    if ((ch.from_kind == k && ch.from == i) || (ch.to_kind == k && ch.to == i))
      reset(static_cast<int>(c));
  }
}

void Cluster::crash_for(Kind k, int i, int64_t down_ms) {
  crash(k, i);
  m_s.after(down_ms * k_ms, [this, k, i] {
    if (alive(k, i)) return;
    if (k == K_LEADER)
      start_leader(i);
    else
      start_part(i);
  });
}

void Cluster::chaos() {
  if (!m_chaos) return;
  ++m_result.faults;
  uint64_t what = m_rng.below(10);
  if (what < 4) {
    // Crash a node, and restart it later (sometimes much later).
    bool lead = m_rng.chance(0.4);
    Kind k = lead ? K_LEADER : K_PART;
    int i = static_cast<int>(m_rng.below(lead ? m_leaders.size() : m_parts.size()));
    if (alive(k, i)) {
      int64_t down = m_rng.chance(0.15) ? m_rng.range(10000, 15000) : m_rng.range(1, 3000);
      // Long outages: a leader down past 30 s, so that a participant holding its transactions
      // in doubt that long is seen to keep them (it never decides alone, however long).
      if (lead && long_outages() && m_long_rng.chance(0.3)) {
        down = m_long_rng.range(31000, 40000);
        m_result.features.set(f_long_outages);
      }
      crash_for(k, i, down);
    }
  } else if (what < 7) {
    int c = static_cast<int>(m_rng.below(m_chans.size()));
    trace("--", fmt::format("connection reset {}->{}", name(m_chans[c].from_kind, m_chans[c].from),
                            name(m_chans[c].to_kind, m_chans[c].to)));
    if (m_chans[c].up) reset(c);
  } else {
    int l = static_cast<int>(m_rng.below(m_leaders.size()));
    int p = static_cast<int>(m_rng.below(m_parts.size()));
    trace("--", fmt::format("partition L{} | P{}", l, p));
    m_partitions.insert({l, p});
    m_result.features.set(f_partitions);
    for (size_t c = 0; c < m_chans.size(); ++c)
      if (m_chans[c].up && partitioned(m_chans[c])) reset(static_cast<int>(c));
    // Some outlast --exclude-after: that leader marks the participant out while another
    // still reaches it.
    int64_t len = m_rng.range(100, 5000);
    if (m_long_rng.chance(0.25)) len = m_long_rng.range(5500, 12000);
    m_s.after(len * k_ms, [this, l, p] {
      trace("--", fmt::format("partition L{} | P{} healed", l, p));
      m_partitions.erase({l, p});
    });
  }
  m_s.after(m_rng.range(50, 1500) * k_ms, [this] { chaos(); });
}

void Cluster::operate() {
  if (!m_chaos) return;  // the operator stops with the faults
  int j = static_cast<int>(m_op_rng.below(m_parts.size()));
  auto& n = m_parts[j];
  if (n.alive) {
    std::vector<std::string> doubt;
    for (auto& [txid, p] : n.core->prepared())
      if (p.durable && !p.applying) doubt.push_back(txid);
    if (!doubt.empty()) {
      std::string txid = doubt[m_op_rng.below(doubt.size())];
      bool commit = m_op_rng.chance(0.5);
      m_op_intent[{txid, j}] = commit;
      m_result.features.set(f_operators);
      trace("--", fmt::format("operator: resolve --force {} {} at P{}", commit ? "commit" : "abort",
                              txid, j));
      step_part(j, participant::ev::Resolve{0, txid, commit, false});
    }
  }
  m_s.after(m_op_rng.range(50, 500) * k_ms, [this] { operate(); });
}

void Cluster::remove_member(int slot, int tries) {
  // Asked of a live leader until one takes it (refused while another change runs, or while
  // the slot is not in-sync); the change then finishes by itself, through any crash.
  bool taken = false;
  for (size_t i = 0; i < m_leaders.size(); ++i) {
    auto& l = m_leaders[i];
    if (!l.alive || !l.core) continue;
    auto st = l.core->members().slots[static_cast<size_t>(slot)].state;
    if (st == membership::State::leaving_out) m_result.features.set(f_removed_out);
    if (membership::leaves(st) || st == membership::State::removed) taken = true;
    if (st == membership::State::removed) {
      m_result.features.set(f_removals);
      return;
    }
  }
  if (taken) {  // watched until done
    if (tries < 400) m_s.after(100 * k_ms, [this, slot, tries] { remove_member(slot, tries + 1); });
    return;
  }
  if (tries > 60) return;
  if (tries == 0 && removes_dead()) {
    trace("--", fmt::format("P{}'s node dies; it stays down until the healing", slot));
    m_gone.insert(slot);
    if (m_parts[static_cast<size_t>(slot)].alive) crash(K_PART, slot);
  }
  int i = static_cast<int>(m_member_rng.below(m_leaders.size()));
  if (m_leaders[i].alive && m_leaders[i].core) {
    trace("--", fmt::format("operator: member remove P{} at L{}", slot, i));
    step_leader(i, leader::ev::Remove{0, static_cast<size_t>(slot)});
  }
  m_s.after(m_member_rng.range(200, 800) * k_ms,
            [this, slot, tries] { remove_member(slot, tries + 1); });
}

void Cluster::add_member(int tries) {
  // As remove_member: asked of a live leader until one takes it; then watched until done.
  const size_t slot = 3;
  bool asked = false;
  for (size_t i = 0; i < m_leaders.size(); ++i) {
    auto& l = m_leaders[i];
    if (!l.alive || !l.core || l.core->members().size() <= slot) continue;
    auto st = l.core->members().slots[slot].state;
    if (st == membership::State::in_sync) m_result.features.set(f_adds);
    if (st != membership::State::joining) return;  // in-sync, or rolled back
    asked = true;
  }
  if (tries > 400) return;
  int i = static_cast<int>(m_member_rng.below(m_leaders.size()));
  if (!asked && m_leaders[i].alive && m_leaders[i].core) {
    trace("--", fmt::format("operator: member add {} at L{}", m_part_addr[slot], i));
    step_leader(i, leader::ev::Add{0, m_part_addr[slot]});
  }
  m_s.after(m_member_rng.range(200, 800) * k_ms, [this, tries] { add_member(tries + 1); });
}

void Cluster::replace_member(int slot, int tries) {
  // Asked of a live leader until one takes it. Once a leader's membership has the slot at its
  // new address, the old node is never reached again: it is lost with its disk, and a new,
  // empty node at the new address stands in its place (the same index here).
  auto j = static_cast<size_t>(slot);
  std::string to = fmt::format("p{}b:1", slot);
  bool taken = false, done = true;
  for (size_t i = 0; i < m_leaders.size(); ++i) {
    auto& l = m_leaders[i];
    if (!l.alive || !l.core) continue;
    const auto& s = l.core->members().slots[j];
    taken |= s.addr == to;
    done &= s.addr == to && s.state == membership::State::in_sync;
  }
  if (taken && m_part_addr[j] != to) {
    trace("--", fmt::format("P{}'s node is lost with its disk; a new one starts at {}", slot, to));
    if (m_parts[j].alive) crash(K_PART, slot);
    auto& n = m_parts[j];
    n.log = SimLog{};
    n.store = SimStore{};
    n.voted_yes.clear();
    n.durable_prepared.clear();
    n.durable_committed.clear();
    n.cluster.clear();
    for (auto& [txid, t] : m_txns) {
      t.voted_yes.erase(j);
      t.committed_to.erase(j);
    }
    // An operator's forced outcome there went with the disk: reported or not (both may be).
    for (auto& [key, commit] : m_heur)
      if (key.second == slot) m_heur_lost.insert(key);
    std::erase_if(m_op_intent, [&](auto& kv) { return kv.first.second == slot; });
    m_part_addr[j] = to;
    start_part(slot);
  }
  if (done && taken) {
    m_result.features.set(f_replaces);
    return;
  }
  if (tries > 400) return;
  int i = static_cast<int>(m_member_rng.below(m_leaders.size()));
  if (!taken && m_leaders[i].alive && m_leaders[i].core) {
    trace("--", fmt::format("operator: member replace P{} {} at L{}", slot, to, i));
    step_leader(i, leader::ev::Replace{0, j, to});
  }
  m_s.after(m_member_rng.range(200, 800) * k_ms,
            [this, slot, tries] { replace_member(slot, tries + 1); });
}

void Cluster::heal() {
  m_chaos = false;
  m_partitions.clear();
  m_store.down = false;
  m_store.cut.clear();
  trace("--", "heal: no more faults; every node restarted, every partition healed");
  for (size_t i = 0; i < m_leaders.size(); ++i)
    if (!m_leaders[i].alive) start_leader(static_cast<int>(i));
  for (size_t j = 0; j < m_parts.size(); ++j)
    if (!m_parts[j].alive) start_part(static_cast<int>(j));
}

// --- clients ------------------------------------------------------------------------------

// A backup's pause: once the leader answers OK, every transaction it decided has been
// applied on every live owner (what makes the participants' copies agree), then RESUME, or
// sometimes nothing (the pause must end by itself).
void Cluster::client_pause(int c) {
  auto& cl = m_clients[c];
  --cl.ops_left;
  cl.busy = true;
  int l = cl.leader;
  int ch = chan(K_CLIENT, c, K_LEADER, l);
  std::string line = fmt::format("PAUSE {}", m_pause_rng.range(50, 600));
  m_result.features.set(f_pauses);
  trace(name(K_CLIENT, c), line);
  request(ch, line, [this, c, l, ch](Result<std::string> r) {
    trace(name(K_CLIENT, c), "got " + (r ? *r : r.status().message()));
    if (r && *r == "OK") {
      for (auto& [txid, info] : m_txns) {
        if (info.leader != l || !info.decided_at) continue;
        // Those that prepared it (an owner out, or a learner that dropped out of it, did not:
        // its copy brings the write, and a backup takes in-sync participants only).
        // (A removed participant is in no backup.)
        const auto* lc = m_leaders[static_cast<size_t>(l)].core.get();
        for (auto p : info.voted_yes)
          if (m_parts[p].alive && !m_parts[p].store.current().history.count(txid) &&
              !heuristic_at(txid, static_cast<int>(p)) &&
              !(lc && p < lc->members().size() &&
                lc->members().slots[p].state == membership::State::removed))
            violation(fmt::format("L{} paused (OK) while its commit {} is not applied on P{}", l,
                                  txid, p));
      }
      if (m_pause_rng.chance(0.7))
        m_s.after(m_pause_rng.range(0, 200) * k_ms, [this, c, ch] {
          trace(name(K_CLIENT, c), "RESUME");
          request(ch, "RESUME", [](Result<std::string>) {});
        });
    }
    m_clients[c].busy = false;
    m_s.after(m_rng.range(0, 30) * k_ms, [this, c] { client_next(c); });
  });
}

void Cluster::client_next(int c) {
  auto& cl = m_clients[c];
  if (cl.ops_left == 0) return;
  if (pauses() && m_pause_rng.chance(0.03)) return client_pause(c);
  --cl.ops_left;
  cl.busy = true;
  int ch = chan(K_CLIENT, c, K_LEADER, cl.leader);
  auto key = [&] { return fmt::format("k{}", m_rng.below(static_cast<uint64_t>(m_keys))); };
  auto value = [&] { return fmt::format("c{}.{}", c, cl.n); };
  ++cl.n;
  uint64_t kind = m_rng.below(100);
  auto next = [this, c] {
    m_clients[c].busy = false;
    m_s.after(m_rng.range(0, 30) * k_ms, [this, c] { client_next(c); });
  };
  if (kind < 6) {  // a scan of every key, or of those under k1
    ClientScan sc{m_rng.chance(0.5) ? "k" : "k1", {}, ++m_stamp, 0};
    std::string line = protocol::LineBuilder("SCAN").arg(sc.prefix).arg("").num(1000).str();
    trace(name(K_CLIENT, c), line);
    request(ch, line, [this, c, sc, next](Result<std::string> r) mutable {
      auto page = protocol::parse_scan_reply(r);
      trace(name(K_CLIENT, c), "got " + (r ? r->substr(0, 120) : r.status().message()));
      if (page.kind == protocol::ScanReply::keys) {
        if (page.more) violation("a scan of at most 1000 keys said MORE");
        sc.answered = ++m_stamp;
        sc.kvs = std::move(page.kvs);
        m_cscans.push_back(std::move(sc));
      }
      next();
    });
    return;
  }
  if (kind < 25) {
    ClientRead rd{key(), std::nullopt, ++m_stamp, 0};
    std::string line = protocol::LineBuilder("GET").arg(rd.key).str();
    trace(name(K_CLIENT, c), line);
    request(ch, line, [this, c, rd, next](Result<std::string> r) mutable {
      auto rr = protocol::parse_read_reply(r);
      trace(name(K_CLIENT, c), "got " + protocol::encode(rr));
      if (rr.kind != protocol::ReadReply::error) {
        rd.answered = ++m_stamp;
        if (rr.kind == protocol::ReadReply::found) {
          rd.value = rr.value;
          m_clients[c].last_seen[rd.key] = rr.value;
        }
        m_creads.push_back(rd);
      }
      next();
    });
    return;
  }
  ClientTxn t;
  t.rid = fmt::format("c{}-{}", c, cl.n);
  t.invoked = ++m_stamp;
  if (kind < 60) {
    t.ops.push_back(Op{OpKind::put, key(), value()});
  } else if (kind < 80) {
    std::string a = key(), b = key();
    t.ops.push_back(Op{OpKind::put, a, value()});
    if (b != a) t.ops.push_back(Op{OpKind::put, b, value() + "b"});
  } else if (kind < 92) {
    // A condition on the value last read, then a write: to the same key, or (half of the
    // time) to another one, after a condition on one or two keys it only checks. Those are
    // what isolation is about: a key a transaction only checks must stay as checked until the
    // decision (the checker judges every commit from what it checked and wrote).
    auto condition = [&](const std::string& k) {
      auto seen = cl.last_seen.find(k);
      if (seen != cl.last_seen.end())
        t.ops.push_back(Op{OpKind::check, k, seen->second});
      else
        t.ops.push_back(Op{OpKind::absent, k, ""});
    };
    std::string a = key();
    condition(a);
    std::string w = a;
    if (m_read_rng.chance(0.5)) {
      auto other = [&] {
        return fmt::format("k{}", m_read_rng.below(static_cast<uint64_t>(m_keys)));
      };
      std::string second = other();
      if (second != a && m_read_rng.chance(0.3)) condition(second);
      for (int tries = 0; tries < 4 && (w == a || w == second); ++tries) w = other();
    }
    t.ops.push_back(Op{OpKind::put, w, value()});
  } else {
    t.ops.push_back(Op{OpKind::del, key(), ""});
  }
  protocol::LineBuilder b("TXN");
  b.raw(t.rid);
  protocol::append_ops(b, t.ops);
  std::string line = b.str();
  size_t idx = m_ctxns.size();
  m_ctxn_by_rid[t.rid] = idx;
  m_ctxns.push_back(t);
  trace(name(K_CLIENT, c), line);
  request(ch, line, [this, c, idx, next](Result<std::string> r) {
    auto& t = m_ctxns[idx];
    if (!r) {
      trace(name(K_CLIENT, c), "lost: " + r.status().message() + "; will ask RESULT");
      return client_resolve(c, idx, 0);
    }
    trace(name(K_CLIENT, c), "got " + *r);
    auto res = protocol::parse_txn_reply(r);
    if (res.kind == protocol::TxnReply::committed) {
      t.outcome = ClientTxn::committed;
      t.txid = res.txid;
      t.answered = ++m_stamp;
      if (!m_txns[t.txid].decided_at)
        violation("client " + t.rid + " told COMMITTED for " + t.txid +
                  " with no durable decision");
    } else if (res.kind == protocol::TxnReply::aborted) {
      t.outcome = ClientTxn::aborted;
      t.answered = ++m_stamp;
    } else {
      return client_resolve(c, idx, 0);
    }
    next();
  });
}

void Cluster::client_resolve(int c, size_t idx, int attempt) {
  m_s.after(m_rng.range(50, 400) * k_ms, [this, c, idx, attempt] {
    auto& cl = m_clients[c];
    std::string line = "RESULT " + m_ctxns[idx].rid;
    trace(name(K_CLIENT, c), line);
    request(chan(K_CLIENT, c, K_LEADER, cl.leader), line,
            [this, c, idx, attempt](Result<std::string> r) {
              auto& t = m_ctxns[idx];
              auto res = protocol::parse_txn_reply(r);
              trace(name(K_CLIENT, c), "got " + (r ? *r : r.status().message()));
              if (res.kind == protocol::TxnReply::committed ||
                  (res.kind == protocol::TxnReply::heuristic && res.decision == "commit")) {
                // A heuristic mismatch names the leader's decision: the data of the keys is
                // the operator's (they leave the data checks), the decision is still checked.
                t.outcome = ClientTxn::committed;
                t.txid = res.txid;
              } else if (res.kind == protocol::TxnReply::aborted ||
                         res.kind == protocol::TxnReply::heuristic) {
                t.outcome = ClientTxn::aborted;
              } else if (shared() && res.kind == protocol::TxnReply::pending && attempt >= 60) {
                // With a shared store, a request unknown to every leader stays PENDING: its
                // leader's restart aborted it, but no leader can tell it from another's
                // request still deciding (a known gap: docs/decision-store.md). The client
                // gives up, as tpc client result does at its deadline: the outcome is unknown.
                t.outcome = ClientTxn::unknown;
                ++m_result.unknown;
              } else {
                return client_resolve(c, idx, attempt + 1);  // pending, or lost: ask again
              }
              t.answered = ++m_stamp;
              m_clients[c].busy = false;
              m_s.after(m_rng.range(0, 30) * k_ms, [this, c] { client_next(c); });
            });
  });
}

// --- the run ------------------------------------------------------------------------------

bool Cluster::run_one(int64_t until) {
  try {
    m_current = {K_CLIENT, 0};
    return m_s.run_one(until);
  } catch (const SimCrash& c) {
    trace(name(c.kind, c.node), "crash at failpoint " + c.at);
    m_result.features.set(f_io_crashes);
    ++m_result.faults;
    crash_for(c.kind, c.node, m_io_rng.range(1, 2000));
    return true;
  }
}

Report Cluster::run() {
  set_fatal_hook(throw_fatal);
  m_io_crashes = m_io_rng.chance(0.2);
  if (m_io_crashes)
    failpoint::set_hook([this](std::string_view name, std::string_view) -> int {
      auto [k, i] = m_current;
      if (!m_chaos || k == K_CLIENT || !alive(k, i) || !m_io_rng.chance(0.01)) return 0;
      throw SimCrash{k, i, std::string(name)};
    });
  try {
    setup();
    // Load with faults until every client is done (bounded), then heal and let it settle.
    const int64_t load_end = 120000 * k_ms;
    auto clients_done = [&] {
      for (auto& c : m_clients)
        if (c.ops_left > 0 || c.busy) return false;
      return true;
    };
    while (!clients_done() && run_one(load_end)) {
    }
    heal();
    const int64_t settle_end = m_s.now_us() + 60000 * k_ms;
    while (run_one(settle_end)) {
    }
    final_checks();
  } catch (const Fatal& f) {
    violation(std::string("a node stopped: ") + f.what());
  } catch (const SimCrash& c) {
    violation(fmt::format("{} crashed at failpoint {} outside the run's loop", name(c.kind, c.node),
                          c.at));
  } catch (const std::exception& e) {
    // A broken invariant inside the simulator itself (a map lookup that failed, ...): a
    // violation with its seed, never a crash of the run that would pass unnoticed.
    violation(std::string("the simulation stopped on an exception: ") + e.what());
  }
  set_fatal_hook(nullptr);
  if (m_io_crashes) failpoint::set_hook(nullptr);
  m_result.events = m_events;
  m_result.txns = m_txns.size();
  if (m_leaders.size() >= 2) m_result.features.set(f_two_leaders);
  if (shared()) m_result.features.set(f_shared_store);
  if (m_result.crashes) m_result.features.set(f_crashes);
  if (m_result.features[f_pressure]) m_result.features.set(f_rewrites);
  for (auto& l : m_leaders)
    if (l.core) {
      if (l.core->exclusions()) m_result.features.set(f_exclusions);
      if (l.core->rejoins()) m_result.features.set(f_rejoins);
      if (l.core->adopted()) m_result.features.set(f_adopted);
      if (l.core->redecided()) m_result.features.set(f_redecided);
    }
  for (auto& p : m_parts)
    if (p.core) {
      if (p.core->epoch_refusals()) m_result.features.set(f_epoch_refused);
    }
  for (auto& [txid, t] : m_txns) {
    if (!t.decided_at) continue;
    std::set<std::string> written;
    for (auto& op : t.ops)
      if (op.is_write()) written.insert(op.key);
    for (auto& op : t.ops)
      if (!op.is_write() && !written.count(op.key)) m_result.features.set(f_check_other);
  }
  return std::move(m_result);
}

void Cluster::final_checks() {
  // Liveness after healing: every client finished, nothing in doubt, nothing unacknowledged.
  for (size_t c = 0; c < m_clients.size(); ++c)
    if (m_clients[c].ops_left > 0 || m_clients[c].busy)
      violation(fmt::format("client C{} did not finish after healing", c));
  for (size_t j = 0; j < m_parts.size(); ++j)
    for (auto& [txid, p] : m_parts[j].core->prepared())
      violation(fmt::format("P{} still has {} prepared after healing", j, txid));
  for (size_t i = 0; i < m_leaders.size(); ++i)
    if (m_leaders[i].core->active() != 0)
      violation(fmt::format("L{} still has {} active transactions after healing", i,
                            m_leaders[i].core->active()));

  // Every operator's outcome that contradicts its leader's decision is recorded by that leader
  // (and no other mismatch is): an unreported contradiction is a violation.
  std::set<std::string> tainted;  // keys an operator's outcome wrote (or kept from a write)
  for (auto& [key, commit] : m_heur) {
    auto& [txid, j] = key;
    auto& t = m_txns[txid];
    for (auto& op : t.ops) tainted.insert(op.key);
    bool decided = t.decided_at != 0;
    ++m_result.heuristics;
    if (commit == decided || m_heur_lost.count(key)) continue;
    ++m_result.mismatches;
    const auto& ms = m_leaders.at(static_cast<size_t>(t.leader)).core->mismatches();
    auto it = ms.find({txid, static_cast<size_t>(j)});
    if (it == ms.end() || it->second.decided_commit != decided || it->second.their_commit != commit)
      violation(fmt::format(
          "P{} {} {} on an operator's order, its leader L{} decided {}: no "
          "HEURISTIC MISMATCH recorded",
          j, commit ? "committed" : "aborted", txid, t.leader, decided ? "commit" : "abort"));
  }
  for (size_t i = 0; i < m_leaders.size(); ++i)
    for (auto& [key, m] : m_leaders[i].core->mismatches()) {
      auto h = m_heur.find({m.txid, static_cast<int>(m.part)});
      if (h == m_heur.end() || h->second != m.their_commit ||
          m.decided_commit != (m_txns[m.txid].decided_at != 0))
        violation(fmt::format("L{} recorded a HEURISTIC MISMATCH of {} at P{} that did not happen",
                              i, m.txid, m.part));
    }

  // The committed history in decision order; it is the order of every key's writes.
  std::vector<std::pair<uint64_t, std::string>> order;
  for (auto& [txid, t] : m_txns)
    if (t.decided_at) order.emplace_back(t.decided_at, txid);
  std::sort(order.begin(), order.end());
  // Per key: the sequence of (decided_at, value or nullopt) writes, starting absent.
  std::map<std::string, std::vector<std::pair<uint64_t, std::optional<std::string>>>> writes;
  auto value_before = [&](const std::string& key, uint64_t when) -> std::optional<std::string> {
    std::optional<std::string> v;
    for (auto& [at, w] : writes[key])
      if (at < when) v = w;
    return v;
  };
  for (auto& [at, txid] : order) {
    auto& t = m_txns[txid];
    // Conditions held at the decision (the transaction's locks kept them true since).
    std::set<std::string> seen;
    for (auto& op : t.ops) {
      if (tainted.count(op.key)) continue;
      if (!seen.insert(op.key + "\x01" + op.value + std::to_string(static_cast<int>(op.kind)))
               .second)
        continue;
      if (op.kind == OpKind::check && value_before(op.key, at) != op.value)
        violation(
            fmt::format("{} committed, but its check {} {} did not hold", txid, op.key, op.value));
      if (op.kind == OpKind::absent && value_before(op.key, at))
        violation(fmt::format("{} committed, but its absent {} did not hold", txid, op.key));
    }
    std::set<std::string> written;
    for (auto& op : t.ops) {
      if (!op.is_write() || !written.insert(op.key).second) continue;
      writes[op.key].emplace_back(at,
                                  op.kind == OpKind::put ? std::optional(op.value) : std::nullopt);
    }
  }
  // Healed: every participant is in-sync again, in every leader's membership.
  for (size_t i = 0; i < m_leaders.size(); ++i) {
    auto& mem = m_leaders[i].core->members();
    for (size_t j = 0; j < mem.size(); ++j)
      if (mem.slots[j].state != membership::State::in_sync &&
          mem.slots[j].state != membership::State::removed)
        violation(fmt::format("P{} is {} in L{}'s membership after healing", j,
                              membership::name(mem.slots[j].state), i));
  }
  // Every owner holds the last committed value; non-owners hold nothing.
  for (int k = 0; k < m_keys; ++k) {
    std::string key = fmt::format("k{}", k);
    if (tainted.count(key)) continue;
    auto want = value_before(key, UINT64_MAX);
    // The owners the final membership's placement names (the first leader's: every leader
    // holds the same one after healing, checked above); a removed participant keeps what it
    // held, owning nothing.
    const auto& final_members = m_leaders[0].core->members();
    auto owners = final_members.owners(key);
    for (size_t j = 0; j < m_parts.size(); ++j) {
      // (A node never added, or whose add rolled back: in no placement.)
      if (j >= final_members.size() || final_members.slots[j].addr != m_part_addr[j] ||
          final_members.slots[j].state == membership::State::removed)
        continue;
      auto it = m_parts[j].store.current().data.find(key);
      std::optional<std::string> have;
      if (it != m_parts[j].store.current().data.end()) have = it->second;
      bool owner = std::find(owners.begin(), owners.end(), j) != owners.end();
      if (owner && have != want)
        violation(fmt::format("P{} holds {}={}, the last commit wrote {}", j, key,
                              have.value_or("(absent)"), want.value_or("(absent)")));
      if (!owner && have) violation(fmt::format("P{} holds {} but does not own it", j, key));
    }
  }
  // Acknowledged commits are on every owner; aborted ones nowhere.
  for (auto& t : m_ctxns) {
    if (t.outcome == ClientTxn::committed && !heuristic_txn(t.txid)) {
      auto& info = m_txns[t.txid];
      if (!info.decided_at) violation("acknowledged " + t.rid + " has no durable decision");
      // On every participant it was committed to (an owner out at the time, or a learner
      // that dropped out of it, got it by its copy: checked above, by the values).
      // (A participant removed since is never contacted again: it may not have applied it.)
      const auto& fm = m_leaders[0].core->members();
      for (auto p : info.committed_to)
        if (info.voted_yes.count(p) && !m_parts[p].store.current().history.count(t.txid) &&
            !(p < fm.size() && fm.slots[p].state == membership::State::removed))
          violation(fmt::format("acknowledged {} ({}) was never applied on P{}", t.rid, t.txid, p));
    } else if (t.outcome == ClientTxn::aborted) {
      for (auto& [txid, info] : m_txns)
        if (info.rid == t.rid && info.decided_at)
          violation("client told " + t.rid + " aborted, but " + txid + " committed");
    }
  }
  // Reads are linearizable: each returns the latest write decided before some point
  // between its invocation and its answer.
  for (auto& r : m_creads) {
    if (tainted.count(r.key)) continue;
    auto& ws = writes[r.key];
    bool ok = false;
    // Candidate i: the i-th write (or the initial absent state, i = -1).
    for (int i = -1; i < static_cast<int>(ws.size()) && !ok; ++i) {
      std::optional<std::string> v = i < 0 ? std::nullopt : ws[i].second;
      uint64_t from = i < 0 ? 0 : ws[i].first;
      uint64_t until = i + 1 < static_cast<int>(ws.size()) ? ws[i + 1].first : UINT64_MAX;
      ok = v == r.value && from < r.answered && until > r.invoked;
    }
    if (!ok)
      violation(fmt::format("read of {} returned {} between events {} and {}: not linearizable",
                            r.key, r.value.value_or("(absent)"), r.invoked, r.answered));
  }
  // Scans are linearizable too: their keys in order, once each, and one point between the
  // invocation and the answer at which every key under the prefix had the value shown (or
  // was absent, as not shown).
  for (auto& sc : m_cscans) {
    for (size_t i = 1; i < sc.kvs.size(); ++i)
      if (!(sc.kvs[i - 1].first < sc.kvs[i].first))
        violation("a scan's keys are not in order, once each: " + sc.kvs[i].first);
    std::map<std::string, std::string> got(sc.kvs.begin(), sc.kvs.end());
    std::set<std::string> keys;
    for (auto& [k, ws] : writes)
      if (k.rfind(sc.prefix, 0) == 0) keys.insert(k);
    for (auto& [k, v] : got) {
      if (k.rfind(sc.prefix, 0) != 0) violation("a scan of " + sc.prefix + " returned " + k);
      keys.insert(k);
    }
    for (auto& k : tainted) keys.erase(k);
    std::vector<uint64_t> points{sc.invoked};
    for (auto& k : keys)
      for (auto& [at, w] : writes[k])
        if (at > sc.invoked && at < sc.answered) points.push_back(at);
    bool ok = false;
    for (size_t i = 0; i < points.size() && !ok; ++i) {
      ok = true;
      for (auto& k : keys) {
        std::optional<std::string> want;
        for (auto& [at, w] : writes[k])
          if (at <= points[i]) want = w;
        auto g = got.find(k);
        if (want != (g == got.end() ? std::nullopt : std::optional<std::string>(g->second))) {
          ok = false;
          break;
        }
      }
    }
    if (!ok)
      violation(
          fmt::format("scan of {} ({} keys) between events {} and {}: no moment had that "
                      "state",
                      sc.prefix, sc.kvs.size(), sc.invoked, sc.answered));
  }
}

}  // namespace

Report run(const Options& opt) {
  Cluster c(opt);
  return c.run();
}

}  // namespace tpc::sim
