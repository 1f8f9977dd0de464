#include "world.h"

namespace tpc::sim {

uint64_t SimLog::bytes() const { return durable.size() + unsynced_bytes(); }

uint64_t SimLog::unsynced_bytes() const {
  uint64_t n = 0;
  for (auto& p : pending) {
    if (p.is_rewrite) break;
    n += p.bytes.size();
  }
  return n;
}

void SimLog::crash(uint64_t keep) {
  std::string tail;
  for (auto& p : pending) {
    if (p.is_rewrite) break;  // a rewrite not yet in place never happened
    tail += p.bytes;
  }
  durable += tail.substr(0, std::min<uint64_t>(keep, tail.size()));
  pending.clear();
  sync_scheduled = false;
}

Result<std::optional<std::string>> SimStore::get(const std::string& key) {
  auto it = m_cur.data.find(key);
  if (it == m_cur.data.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

std::set<std::string> SimStore::applied_txids() {
  std::set<std::string> out;
  for (auto& [t, s] : m_cur.marks) out.insert(t);
  return out;
}

Status SimStore::apply(const std::string& txid, const std::vector<Op>& ops) {
  for (auto& op : ops) {
    if (op.kind == OpKind::put)
      m_cur.data[op.key] = op.value;
    else if (op.kind == OpKind::del)
      m_cur.data.erase(op.key);
  }
  m_cur.marks[txid] = ++m_cur.seq;
  m_cur.history.insert(txid);
  return Status::ok();
}

Status SimStore::prune_applied(uint64_t upto) {
  std::erase_if(m_cur.marks, [&](auto& kv) { return kv.second <= upto; });
  return Status::ok();
}

}  // namespace tpc::sim
