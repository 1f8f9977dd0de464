#include "leader/core.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/crc32c.h"
#include "common/status.h"

namespace tpc::leader {
namespace {
// Enough for the client's resolve window (a few seconds) at tens of thousands of txn/s.
constexpr size_t k_rid_memory = 65536;

uint64_t mix(uint64_t x) {  // splitmix64 finalizer
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
}  // namespace

std::string encode_commit(const std::string& txid, const std::string& rid,
                          const std::vector<size_t>& parts) {
  txlog::Encoder e;
  e.str(txid).str(rid).u64(parts.size());
  for (auto p : parts) e.u64(p);
  return e.data();
}

bool decode_commit(const std::string& payload, std::string* txid, std::string* rid,
                   std::vector<size_t>* parts) {
  txlog::Decoder d(payload);
  uint64_t n;
  if (!d.str(txid) || !d.str(rid) || !d.u64(&n) || n > 1u << 20) return false;
  parts->clear();
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t p;
    if (!d.u64(&p)) return false;
    parts->push_back(p);
  }
  return d.done();
}

Core::Core(std::string leader_id, uint64_t incarnation, std::vector<std::string> peers,
           size_t replicas)
    : m_id(std::move(leader_id)),
      m_incarnation(incarnation),
      m_peers(std::move(peers)),
      m_replicas(replicas == 0 || replicas > m_peers.size() ? m_peers.size() : replicas) {}

void Core::recover(const txlog::Record& rec) {
  if (rec.type == k_rec_commit) {
    Txn t;
    TPC_CHECK(decode_commit(rec.payload, &t.txid, &t.rid, &t.parts), "undecodable COMMIT record");
    t.phase = Txn::committed;
    for (auto p : t.parts) TPC_CHECK(p < m_peers.size(), "COMMIT record names unknown peer");
    t.unacked = std::set<size_t>(t.parts.begin(), t.parts.end());
    if (!t.rid.empty()) remember(t.rid, Outcome::committed, t.txid);
    m_decided_commit.insert(t.txid);
    m_txns[t.txid] = std::move(t);
  } else if (rec.type == k_rec_rid) {
    txlog::Decoder d(rec.payload);
    std::string rid, txid;
    TPC_CHECK(d.str(&rid) && d.str(&txid), "undecodable RID record");
    remember(rid, Outcome::committed, txid);
  } else if (rec.type == k_rec_end) {
    txlog::Decoder d(rec.payload);
    std::string txid;
    TPC_CHECK(d.str(&txid), "undecodable END record");
    m_txns.erase(txid);
    m_decided_commit.erase(txid);
  }
}

std::vector<std::string> Core::finish_recovery() {
  return {m_decided_commit.begin(), m_decided_commit.end()};
}

std::vector<size_t> Core::owners(const std::string& key) const {
  std::vector<size_t> all(m_peers.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  if (m_replicas >= m_peers.size()) return all;
  uint32_t kh = crc32c(key);
  std::vector<std::pair<uint64_t, size_t>> scored;
  for (size_t i = 0; i < m_peers.size(); ++i)
    scored.emplace_back(mix((static_cast<uint64_t>(crc32c(m_peers[i])) << 32) | kh), i);
  std::sort(scored.rbegin(), scored.rend());
  std::vector<size_t> out;
  for (size_t i = 0; i < m_replicas; ++i) out.push_back(scored[i].second);
  std::sort(out.begin(), out.end());
  return out;
}

void Core::remember(const std::string& rid, Outcome o, const std::string& txid) {
  auto [it, fresh] = m_rids.insert_or_assign(rid, RidOutcome{o, txid});
  (void)it;
  if (fresh) {
    m_rid_order.push_back(rid);
    if (m_rid_order.size() > k_rid_memory) {
      m_rids.erase(m_rid_order.front());
      m_rid_order.pop_front();
    }
  }
}

Core::Begin Core::begin(const std::string& rid, std::vector<Op> ops, int64_t now_ms,
                        int64_t timeout_ms) {
  Begin b;
  if (!rid.empty()) {
    auto it = m_rids.find(rid);
    if (it != m_rids.end()) {
      b.kind = Begin::known;
      b.outcome = it->second.outcome;
      b.txid = it->second.txid;
      return b;
    }
  }
  Txn t;
  t.txid = fmt::format("{}.{}.{}", m_id, m_incarnation, m_next_seq++);
  t.rid = rid;
  // Each participant is sent only the ops on keys it owns: it locks, checks and stores those.
  std::map<size_t, std::vector<Op>> by_part;
  for (auto& op : ops)
    for (auto p : owners(op.key)) by_part[p].push_back(op);
  for (auto& [p, mine] : by_part) t.parts.push_back(p);
  t.deadline_ms = now_ms + timeout_ms;
  b.kind = Begin::started;
  b.txid = t.txid;
  b.targets.assign(std::make_move_iterator(by_part.begin()),
                   std::make_move_iterator(by_part.end()));
  if (!rid.empty()) remember(rid, Outcome::pending, t.txid);
  m_txns[t.txid] = std::move(t);
  return b;
}

Core::Step Core::abort_txn(Txn& t, std::string code, std::string detail) {
  Step s;
  s.kind = Step::abort;
  s.code = std::move(code);
  s.detail = std::move(detail);
  // Tell every participant that may hold a prepare (voted YES, or not answered yet).
  for (auto p : t.parts) {
    auto v = t.votes.find(p);
    if (v == t.votes.end() || v->second) s.send_abort.push_back(p);
  }
  t.phase = Txn::aborted;
  t.abort_code = s.code;
  t.abort_detail = s.detail;
  if (!t.rid.empty()) remember(t.rid, Outcome::aborted, t.txid);
  ++m_aborted;
  m_txns.erase(t.txid);  // presumed abort: nothing to remember durably
  return s;
}

Core::Step Core::on_vote(const std::string& txid, size_t part, bool yes, const std::string& code,
                         const std::string& detail) {
  auto* t = find(txid);
  if (!t || t->phase != Txn::preparing) return {};
  if (std::find(t->parts.begin(), t->parts.end(), part) == t->parts.end()) return {};
  if (t->votes.count(part)) return {};
  t->votes[part] = yes;
  if (!yes) return abort_txn(*t, code, detail);
  if (t->votes.size() < t->parts.size()) return {};
  t->phase = Txn::deciding;
  Step s;
  s.kind = Step::log_commit;
  s.record = encode_commit(t->txid, t->rid, t->parts);
  return s;
}

Core::Step Core::on_timeout(const std::string& txid) {
  auto* t = find(txid);
  if (!t || t->phase != Txn::preparing) return {};
  std::string missing;
  for (auto p : t->parts)
    if (!t->votes.count(p)) missing += (missing.empty() ? "" : ",") + m_peers[p];
  return abort_txn(*t, "TIMEOUT", "no vote from " + missing + " within the prepare timeout");
}

std::vector<size_t> Core::on_decision_durable(const std::string& txid) {
  auto* t = find(txid);
  TPC_CHECK(t && t->phase == Txn::deciding, "decision durable for unknown txn " + txid);
  t->phase = Txn::committed;
  t->unacked = std::set<size_t>(t->parts.begin(), t->parts.end());
  m_decided_commit.insert(txid);
  if (!t->rid.empty()) remember(t->rid, Outcome::committed, txid);
  ++m_committed;
  return t->parts;
}

bool Core::on_ack(const std::string& txid, size_t part) {
  auto* t = find(txid);
  if (!t || t->phase != Txn::committed) return false;
  if (!t->unacked.erase(part)) return false;
  return t->unacked.empty();
}

void Core::on_end(const std::string& txid) {
  m_txns.erase(txid);
  m_decided_commit.erase(txid);
}

Outcome Core::outcome(const std::string& txid) const {
  auto it = m_txns.find(txid);
  if (it != m_txns.end()) {
    if (it->second.phase == Txn::committed) return Outcome::committed;
    return Outcome::pending;  // still collecting votes or forcing the decision
  }
  return Outcome::aborted;  // presumed abort
}

Outcome Core::result(const std::string& rid, std::string* txid) {
  auto it = m_rids.find(rid);
  if (it == m_rids.end()) {
    remember(rid, Outcome::aborted, "");
    return Outcome::aborted;
  }
  *txid = it->second.txid;
  return it->second.outcome;
}

std::vector<std::pair<std::string, std::string>> Core::recent_commits() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& rid : m_rid_order) {
    auto it = m_rids.find(rid);
    if (it != m_rids.end() && it->second.outcome == Outcome::committed)
      out.emplace_back(rid, it->second.txid);
  }
  return out;
}

Txn* Core::find(const std::string& txid) {
  auto it = m_txns.find(txid);
  return it == m_txns.end() ? nullptr : &it->second;
}

std::vector<std::pair<std::string, size_t>> Core::unacked() const {
  std::vector<std::pair<std::string, size_t>> out;
  for (auto& txid : m_decided_commit) {
    auto it = m_txns.find(txid);
    if (it == m_txns.end()) continue;
    for (auto p : it->second.unacked) out.emplace_back(txid, p);
  }
  return out;
}

}  // namespace tpc::leader
