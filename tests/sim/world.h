// The simulated world: the scheduler, the PRNG, the network, and the simulated disk (log
// and store) of each node. Everything here is deterministic given the seed.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/store.h"
#include "txlog/record.h"

namespace tpc::sim {

// splitmix64: tiny, fast, and the same sequence on every platform (the standard library's
// distributions are not).
class Rng {
 public:
  explicit Rng(uint64_t seed) : m_s(seed) {}
  uint64_t next() {
    uint64_t z = (m_s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return n ? next() % n : 0; }
  int64_t range(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(below(hi - lo + 1)); }
  bool chance(double p) { return static_cast<double>(below(1000000)) < p * 1e6; }

 private:
  uint64_t m_s;
};

// Events in time order; among equal times, in the order they were scheduled.
class Scheduler {
 public:
  int64_t now_us() const { return m_now; }
  void at(int64_t t_us, std::function<void()> f) {
    m_q.push(Item{std::max(t_us, m_now), m_seq++, std::move(f)});
  }
  void after(int64_t d_us, std::function<void()> f) { at(m_now + d_us, std::move(f)); }
  // Runs the next event; false when none is left or the next is past `until_us`.
  bool run_one(int64_t until_us) {
    if (m_q.empty() || m_q.top().t > until_us) return false;
    Item it = m_q.top();
    m_q.pop();
    m_now = it.t;
    it.f();
    return true;
  }
  bool empty() const { return m_q.empty(); }

 private:
  struct Item {
    int64_t t;
    uint64_t seq;
    std::function<void()> f;
    bool operator<(const Item& o) const { return t != o.t ? t > o.t : seq > o.seq; }
  };
  std::priority_queue<Item> m_q;
  int64_t m_now = 0;
  uint64_t m_seq = 0;
};

// A node's log file. Appends are written at once (into the page cache) and become durable at
// the next sync; a crash keeps what is durable plus, maybe, a torn prefix of the rest.
struct SimLog {
  struct Pending {
    std::string bytes;  // framed record
    uint8_t type = 0;
    std::string txid;
    std::function<void()> done;  // forced or lazy: durability report
    bool is_rewrite = false;
    std::string image;  // rewrite: the whole new log
  };
  std::string durable;
  std::vector<Pending> pending;
  bool sync_scheduled = false;
  // Damage in the middle of `durable` (bit rot): where, and the byte that was there.
  std::optional<std::pair<size_t, char>> damage;
  uint64_t bytes() const;
  // Crash: drop unsynced appends, keeping a prefix of `keep` bytes of them.
  void crash(uint64_t keep);
  uint64_t unsynced_bytes() const;
};

// A participant's store: SQLite in WAL mode with synchronous=NORMAL, modelled as a current
// state and the state at the last durable point. A crash (power loss) may return to the
// durable state; make_durable() and random checkpoints move the durable point.
class SimStore : public store::Store {
 public:
  struct State {
    std::map<std::string, std::string> data;
    std::map<std::string, uint64_t> marks;  // applied marks (pruned)
    std::set<std::string> history;          // every txid ever applied (never pruned)
    uint64_t seq = 0;
  };
  Result<std::optional<std::string>> get(const std::string& key) override;
  std::set<std::string> applied_txids() override;
  Status apply(const std::string& txid, const std::vector<Op>& ops) override;
  uint64_t key_count() override { return m_cur.data.size(); }
  uint64_t applied_seq() override { return m_cur.seq; }
  Status prune_applied(uint64_t upto) override;
  Result<KeyValues> scan(const std::string& after, size_t limit, size_t max_bytes) override {
    return store::scan_map(m_cur.data, after, limit, max_bytes);
  }
  Status make_durable() override {
    m_durable = m_cur;
    return Status::ok();
  }
  void crash(bool lose_unsynced) {
    if (lose_unsynced) m_cur = m_durable;
  }
  const State& current() const { return m_cur; }
  const State& durable() const { return m_durable; }

 private:
  State m_cur, m_durable;
};

}  // namespace tpc::sim
