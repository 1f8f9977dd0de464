#include "protocol/ops.h"

namespace tpc::protocol {

const char* op_name(OpKind k) {
  switch (k) {
    case OpKind::put:
      return "put";
    case OpKind::del:
      return "del";
    case OpKind::check:
      return "check";
    case OpKind::absent:
      return "absent";
  }
  return "?";
}

Result<std::string> decode_key(std::string_view token) {
  auto key = unescape(token);
  if (!key) return key.status();
  if (key->empty()) return Status::error("PROTO", "empty key");
  if (key->size() > k_max_key)
    return Status::error("PROTO", "key longer than " + std::to_string(k_max_key) + " bytes");
  return key;
}

Result<std::vector<Op>> parse_ops(const std::vector<std::string_view>& t, size_t i) {
  std::vector<Op> ops;
  if (i >= t.size()) return Status::error("PROTO", "a transaction needs at least one op");
  while (i < t.size()) {
    std::string_view name = t[i];
    Op op;
    int nargs;
    if (name == "put")
      op.kind = OpKind::put, nargs = 2;
    else if (name == "del")
      op.kind = OpKind::del, nargs = 1;
    else if (name == "check")
      op.kind = OpKind::check, nargs = 2;
    else if (name == "absent")
      op.kind = OpKind::absent, nargs = 1;
    else
      return Status::error(
          "PROTO", "unknown op '" + escape(name) + "' (expected put, del, check or absent)");
    if (i + nargs >= t.size())
      return Status::error("PROTO",
                           std::string(name) + " needs " + (nargs == 2 ? "KEY VALUE" : "KEY"));
    auto key = decode_key(t[i + 1]);
    if (!key) return key.status();
    op.key = std::move(*key);
    if (nargs == 2) {
      auto v = unescape(t[i + 2]);
      if (!v) return v.status();
      op.value = std::move(*v);
    }
    ops.push_back(std::move(op));
    i += 1 + nargs;
  }
  return ops;
}

void append_ops(LineBuilder& line, const std::vector<Op>& ops) {
  for (auto& op : ops) {
    line.raw(op_name(op.kind)).arg(op.key);
    if (op.kind == OpKind::put || op.kind == OpKind::check) line.value(op.value);
  }
}

}  // namespace tpc::protocol
