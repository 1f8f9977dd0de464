// The operations of a transaction, shared by client, leader and participant.
//   put KEY VALUE   write VALUE
//   del KEY         remove KEY (no error when absent)
//   check KEY VALUE condition: KEY's committed value equals VALUE
//   absent KEY      condition: KEY does not exist
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "protocol/codec.h"

namespace tpc::protocol {

enum class OpKind { put, del, check, absent };

struct Op {
  OpKind kind;
  std::string key;
  std::string value;  // put and check only
  bool is_write() const { return kind == OpKind::put || kind == OpKind::del; }
  bool operator==(const Op&) const = default;
};

const char* op_name(OpKind kind);
// Parses ops from raw tokens [begin, end). Error PROTO names the first bad op.
Result<std::vector<Op>> parse_ops(const std::vector<std::string_view>& tokens, size_t begin);
void append_ops(LineBuilder& line, const std::vector<Op>& ops);

}  // namespace tpc::protocol
