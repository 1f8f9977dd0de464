// The operations of a transaction, shared by client, leader, participant and store. The
// wire form (put KEY VALUE, ...) lives in protocol/ops.h; the log form in each role's core.
//   put KEY VALUE   write VALUE
//   del KEY         remove KEY (no error when absent)
//   check KEY VALUE condition: KEY's committed value equals VALUE
//   absent KEY      condition: KEY does not exist
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tpc {

enum class OpKind { put, del, check, absent };

struct Op {
  OpKind kind;
  std::string key;
  std::string value;  // put and check only
  bool is_write() const { return kind == OpKind::put || kind == OpKind::del; }
  bool operator==(const Op&) const = default;
};

// A fingerprint of a request's ops (64-bit FNV-1a over kind, lengths and bytes): the leader
// keeps it with each client request id, so a known id arriving with other ops is refused
// instead of being answered with another request's outcome. Stable across builds: it is
// written to the leader's log.
inline uint64_t ops_digest(const std::vector<Op>& ops) {
  uint64_t h = 14695981039346656037ull;
  auto mix = [&h](const void* p, size_t n) {
    auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  auto mix_str = [&](const std::string& s) {
    unsigned char len[8];  // little-endian on every host
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(uint64_t{s.size()} >> (8 * i));
    mix(len, 8);
    mix(s.data(), s.size());
  };
  for (auto& op : ops) {
    uint8_t k = static_cast<uint8_t>(op.kind);
    mix(&k, 1);
    mix_str(op.key);
    mix_str(op.value);
  }
  return h | 1;  // never 0: 0 means "no fingerprint known"
}

}  // namespace tpc
