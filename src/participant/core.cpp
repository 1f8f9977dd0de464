#include "participant/core.h"

#include <fmt/format.h>

#include "protocol/codec.h"
#include "txlog/record.h"

namespace tpc::participant {

using protocol::OpKind;
namespace {
constexpr size_t k_recent_aborted = 10000;
}

std::string encode_prepared(const Prepared& p) {
  txlog::Encoder e;
  e.str(p.txid).str(p.leader).str(p.leader_addr).u64(static_cast<uint64_t>(p.prepared_at_ms));
  e.u64(p.ops.size());
  for (auto& op : p.ops) e.u8(static_cast<uint8_t>(op.kind)).str(op.key).str(op.value);
  return e.data();
}

bool decode_prepared(const std::string& payload, Prepared* p) {
  txlog::Decoder d(payload);
  uint64_t at, n;
  if (!d.str(&p->txid) || !d.str(&p->leader) || !d.str(&p->leader_addr) || !d.u64(&at) ||
      !d.u64(&n))
    return false;
  p->prepared_at_ms = static_cast<int64_t>(at);
  p->ops.clear();
  for (uint64_t i = 0; i < n; ++i) {
    uint8_t k;
    Op op;
    if (!d.u8(&k) || k > 3 || !d.str(&op.key) || !d.str(&op.value)) return false;
    op.kind = static_cast<OpKind>(k);
    p->ops.push_back(std::move(op));
  }
  return d.done();
}

void Core::recover(const txlog::Record& rec) {
  if (rec.type == k_rec_prepared) {
    Prepared p;
    TPC_CHECK(decode_prepared(rec.payload, &p), "undecodable PREPARED record");
    p.durable = true;
    p.recovered = true;
    m_prepared[p.txid] = std::move(p);
  } else if (rec.type == k_rec_heuristic) {
    txlog::Decoder d(rec.payload);
    std::string txid;
    uint8_t commit;
    TPC_CHECK(d.str(&txid) && d.u8(&commit), "undecodable HEURISTIC record");
    m_heuristic[txid] = commit != 0;
  } else if (rec.type == k_rec_committed || rec.type == k_rec_aborted) {
    txlog::Decoder d(rec.payload);
    std::string txid;
    TPC_CHECK(d.str(&txid), "undecodable outcome record");
    auto it = m_prepared.find(txid);
    if (rec.type == k_rec_committed && it != m_prepared.end())
      m_redo.push_back(std::move(it->second));
    if (it != m_prepared.end()) m_prepared.erase(it);
    if (rec.type == k_rec_aborted) remember_aborted(txid);
  }
}

std::vector<std::string> Core::finish_recovery(int64_t, Status* st) {
  // Redo committed transactions the store may have lost (it is not forced at commit).
  // apply() skips those whose applied mark survived, so this is idempotent.
  std::set<std::string> applied = m_store.applied_txids();
  if (!m_redo.empty()) {
    Status s = m_store.begin_batch();
    for (auto& p : m_redo) {
      if (!s) break;
      if (applied.count(p.txid)) continue;
      s = m_store.apply(p.txid, p.ops);
      ++m_redone;
    }
    if (s) s = m_store.end_batch();
    if (!s && st) *st = s;
    m_redo.clear();
  }
  std::vector<std::string> in_doubt;
  for (auto it = m_prepared.begin(); it != m_prepared.end();) {
    // Crash after the store applied the commit but before the COMMITTED record: done.
    if (applied.count(it->first)) {
      it = m_prepared.erase(it);
      continue;
    }
    for (auto& op : it->second.ops) m_locks[op.key] = it->first;
    in_doubt.push_back(it->first);
    ++it;
  }
  return in_doubt;
}

void Core::remember_aborted(const std::string& txid) {
  if (!m_recent_aborted.insert(txid).second) return;
  m_recent_aborted_order.push_back(txid);
  if (m_recent_aborted_order.size() > k_recent_aborted) {
    m_recent_aborted.erase(m_recent_aborted_order.front());
    m_recent_aborted_order.pop_front();
  }
}

Core::PrepareResult Core::prepare(const std::string& txid, const std::string& leader,
                                  const std::string& leader_addr, std::vector<Op> ops,
                                  int64_t now_ms) {
  if (auto* p = find(txid))
    return {p->durable ? PrepareResult::vote_yes : PrepareResult::wait_durable, {}, {}, {}};
  if (m_recent_aborted.count(txid))
    return {PrepareResult::vote_no, "ABORTED", "transaction was already aborted here", {}};
  // Locks first: a held lock is an immediate NO (no waiting, so no deadlock).
  for (auto& op : ops) {
    auto it = m_locks.find(op.key);
    if (it != m_locks.end() && it->second != txid)
      return {PrepareResult::vote_no,
              "CONFLICT",
              fmt::format("key {} is locked by {}", protocol::escape(op.key), it->second),
              {}};
  }
  // Conditions are evaluated against committed data; the locks taken below keep them true
  // until the decision.
  for (auto& op : ops) {
    if (op.kind != OpKind::check && op.kind != OpKind::absent) continue;
    auto v = m_store.get(op.key);
    if (!v) return {PrepareResult::vote_no, "STORAGE", v.status().message(), {}};
    if (op.kind == OpKind::absent && v->has_value())
      return {PrepareResult::vote_no,
              "CHECK",
              fmt::format("absent {} failed: found {}", protocol::escape(op.key),
                          protocol::escape(**v)),
              {}};
    if (op.kind == OpKind::check && (!v->has_value() || **v != op.value))
      return {PrepareResult::vote_no,
              "CHECK",
              fmt::format("check {} {} failed: found {}", protocol::escape(op.key),
                          protocol::escape(op.value),
                          v->has_value() ? protocol::escape(**v) : std::string("(absent)")),
              {}};
  }
  Prepared p;
  p.txid = txid;
  p.leader = leader;
  p.leader_addr = leader_addr;
  p.ops = std::move(ops);
  p.prepared_at_ms = now_ms;
  for (auto& op : p.ops) m_locks[op.key] = txid;
  std::string record = encode_prepared(p);
  m_prepared[txid] = std::move(p);
  return {PrepareResult::log_then_vote, {}, {}, std::move(record)};
}

bool Core::prepare_durable(const std::string& txid) {
  auto* p = find(txid);
  if (!p) return false;
  p->durable = true;
  return true;
}

void Core::record_heuristic(const std::string& txid, bool commit) { m_heuristic[txid] = commit; }

std::optional<bool> Core::heuristic(const std::string& txid) const {
  auto it = m_heuristic.find(txid);
  if (it == m_heuristic.end()) return std::nullopt;
  return it->second;
}

Prepared* Core::find(const std::string& txid) {
  auto it = m_prepared.find(txid);
  return it == m_prepared.end() ? nullptr : &it->second;
}

void Core::release(const Prepared& p, std::vector<std::string>* released) {
  for (auto& op : p.ops) {
    auto it = m_locks.find(op.key);
    if (it != m_locks.end() && it->second == p.txid) {
      m_locks.erase(it);
      released->push_back(op.key);
    }
  }
}

Core::Finish Core::apply_commit(const std::string& txid) {
  Finish f;
  auto it = m_prepared.find(txid);
  if (it == m_prepared.end() || it->second.applied) return f;
  f.known = true;
  TPC_CHECK(it->second.durable, "COMMIT for " + txid + " before its prepare was durable");
  f.status = m_store.apply(txid, it->second.ops);
  if (f.status) it->second.applied = true;
  return f;
}

Core::Finish Core::finish_commit(const std::string& txid) {
  Finish f;
  auto it = m_prepared.find(txid);
  if (it == m_prepared.end()) return f;
  TPC_CHECK(it->second.applied, "finish_commit of " + txid + " before it was applied");
  f.known = true;
  // Locks are released only after the store's commit returned and the outcome is durable.
  release(it->second, &f.released);
  m_prepared.erase(it);
  ++m_committed;
  return f;
}

Core::Finish Core::abort(const std::string& txid) {
  Finish f;
  auto it = m_prepared.find(txid);
  // An applied transaction was decided COMMIT: an ABORT for it contradicts the leader.
  TPC_CHECK(it == m_prepared.end() || !it->second.applied,
            "ABORT for " + txid + " after its COMMIT was applied");
  remember_aborted(txid);
  if (it == m_prepared.end()) return f;
  f.known = true;
  release(it->second, &f.released);
  m_prepared.erase(it);
  ++m_aborted;
  return f;
}

Core::ReadResult Core::read(const std::string& key) {
  auto lk = m_locks.find(key);
  if (lk != m_locks.end()) {
    auto* p = find(lk->second);
    if (p) {
      for (auto& op : p->ops)
        if (op.key == key && op.is_write()) return {ReadResult::blocked, {}, p->txid, {}};
    }
  }
  auto v = m_store.get(key);
  if (!v) return {ReadResult::error, {}, {}, v.status()};
  if (!v->has_value()) return {ReadResult::absent, {}, {}, {}};
  return {ReadResult::found, std::move(**v), {}, {}};
}

std::string Core::check_invariants() const {
  for (auto& [key, txid] : m_locks) {
    auto it = m_prepared.find(txid);
    if (it == m_prepared.end()) return "lock on " + key + " held by unknown " + txid;
  }
  for (auto& [txid, p] : m_prepared)
    for (auto& op : p.ops) {
      auto it = m_locks.find(op.key);
      if (it == m_locks.end() || it->second != txid)
        return "prepared " + txid + " does not hold lock on " + op.key;
    }
  return {};
}

}  // namespace tpc::participant
