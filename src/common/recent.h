// A set that remembers only its most recent `capacity` members (the oldest is forgotten
// first). For memories that must stay bounded, such as recently finished transactions.
#pragma once
#include <cstddef>
#include <deque>
#include <set>

namespace tpc {

template <typename K>
class RecentSet {
 public:
  explicit RecentSet(size_t capacity) : m_capacity(capacity) {}
  void insert(const K& k) {
    if (!m_set.insert(k).second) return;
    m_order.push_back(k);
    if (m_order.size() > m_capacity) {
      m_set.erase(m_order.front());
      m_order.pop_front();
    }
  }
  bool contains(const K& k) const { return m_set.count(k) > 0; }

 private:
  size_t m_capacity;
  std::set<K> m_set;
  std::deque<K> m_order;
};

}  // namespace tpc
