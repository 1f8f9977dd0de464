// The wire form of a transaction's operations (the ops themselves: common/op.h).
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "common/op.h"
#include "common/status.h"
#include "protocol/codec.h"

namespace tpc::protocol {

using tpc::Op;
using tpc::OpKind;

const char* op_name(OpKind kind);
// Parses ops from raw tokens [begin, end). Error PROTO names the first bad op.
// A key token: unescaped, 1 to k_max_key bytes. Error PROTO ("empty key", "key longer
// than ...") otherwise.
Result<std::string> decode_key(std::string_view token);
Result<std::vector<Op>> parse_ops(const std::vector<std::string_view>& tokens, size_t begin);
void append_ops(LineBuilder& line, const std::vector<Op>& ops);

}  // namespace tpc::protocol
