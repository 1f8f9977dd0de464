// The operations of a transaction, shared by client, leader, participant and store. The
// wire form (put KEY VALUE, ...) lives in protocol/ops.h; the log form in each role's core.
//   put KEY VALUE   write VALUE
//   del KEY         remove KEY (no error when absent)
//   check KEY VALUE condition: KEY's committed value equals VALUE
//   absent KEY      condition: KEY does not exist
#pragma once
#include <string>

namespace tpc {

enum class OpKind { put, del, check, absent };

struct Op {
  OpKind kind;
  std::string key;
  std::string value;  // put and check only
  bool is_write() const { return kind == OpKind::put || kind == OpKind::del; }
  bool operator==(const Op&) const = default;
};

}  // namespace tpc
