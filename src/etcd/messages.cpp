#include "etcd/messages.h"

#include <nlohmann/json.hpp>

#include "common/util.h"

namespace tpc::etcd {

using json = nlohmann::json;

namespace {
constexpr char k_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// protobuf's JSON mapping writes int64 as a string; accept a number too.
Result<int64_t> int64_of(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return int64_t{0};
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    auto v = parse_int(it->get<std::string>());
    if (v) return *v;
  }
  return Status::error("PROTO", std::string("etcd reply: bad ") + field);
}

Result<std::string> bytes_of(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::string();
  if (!it->is_string()) return Status::error("PROTO", std::string("etcd reply: bad ") + field);
  return unbase64(it->get<std::string>());
}

Result<json> parse(std::string_view body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Status::error("PROTO", "etcd reply is not a JSON object");
  // The gateway's error form: {"error": "...", "code": N, "message": "..."}.
  if (j.contains("error") || (j.contains("code") && j.contains("message"))) {
    std::string m = j.value("message", j.value("error", std::string("error")));
    return Status::error("ETCD", m);
  }
  return j;
}

Result<KeyValue> kv_of(const json& j) {
  KeyValue kv;
  auto k = bytes_of(j, "key");
  auto v = bytes_of(j, "value");
  auto cr = int64_of(j, "create_revision");
  auto mr = int64_of(j, "mod_revision");
  auto ver = int64_of(j, "version");
  auto lease = int64_of(j, "lease");
  if (!k) return k.status();
  if (!v) return v.status();
  for (auto* r : {&cr, &mr, &ver, &lease})
    if (!*r) return r->status();
  kv.key = std::move(*k);
  kv.value = std::move(*v);
  kv.create_revision = *cr;
  kv.mod_revision = *mr;
  kv.version = *ver;
  kv.lease = *lease;
  return kv;
}

Result<std::vector<KeyValue>> kvs_of(const json& j) {
  std::vector<KeyValue> out;
  auto it = j.find("kvs");
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_array()) return Status::error("PROTO", "etcd reply: kvs is not a list");
  for (const auto& e : *it) {
    if (!e.is_object()) return Status::error("PROTO", "etcd reply: bad kv");
    auto kv = kv_of(e);
    if (!kv) return kv.status();
    out.push_back(std::move(*kv));
  }
  return out;
}

json op_json(const Op& op) {
  json j;
  switch (op.kind) {
    case Op::Kind::put: {
      json p = {{"key", base64(op.key)}, {"value", base64(op.value)}};
      if (op.lease) p["lease"] = std::to_string(op.lease);
      j["request_put"] = p;
      break;
    }
    case Op::Kind::range: {
      json r = {{"key", base64(op.key)}};
      if (!op.range_end.empty()) r["range_end"] = base64(op.range_end);
      if (op.limit) r["limit"] = std::to_string(op.limit);
      j["request_range"] = r;
      break;
    }
    case Op::Kind::del: {
      json d = {{"key", base64(op.key)}};
      if (!op.range_end.empty()) d["range_end"] = base64(op.range_end);
      j["request_delete_range"] = d;
      break;
    }
  }
  return j;
}

const char* target_name(Compare::Target t) {
  switch (t) {
    case Compare::Target::version: return "VERSION";
    case Compare::Target::create: return "CREATE";
    case Compare::Target::mod: return "MOD";
    case Compare::Target::value: return "VALUE";
    case Compare::Target::lease: return "LEASE";
  }
  return "CREATE";
}
const char* result_name(Compare::Result r) {
  switch (r) {
    case Compare::Result::equal: return "EQUAL";
    case Compare::Result::greater: return "GREATER";
    case Compare::Result::less: return "LESS";
    case Compare::Result::not_equal: return "NOT_EQUAL";
  }
  return "EQUAL";
}
}  // namespace

std::string base64(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += k_b64[(n >> s) & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t n = uint8_t(in[i]) << 16;
    out += k_b64[(n >> 18) & 63];
    out += k_b64[(n >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += k_b64[(n >> 18) & 63];
    out += k_b64[(n >> 12) & 63];
    out += k_b64[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

Result<std::string> unbase64(std::string_view in) {
  if (in.size() % 4 != 0) return Status::error("PROTO", "bad base64 length");
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      char c = in[i + k];
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad) return Status::error("PROTO", "bad base64 padding");
      v[k] = val(c);
      if (v[k] < 0) return Status::error("PROTO", "bad base64 byte");
    }
    uint32_t n = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out += static_cast<char>((n >> 16) & 255);
    if (pad < 2) out += static_cast<char>((n >> 8) & 255);
    if (pad < 1) out += static_cast<char>(n & 255);
  }
  return out;
}

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<uint8_t>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<uint8_t>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

std::string encode_txn(const Txn& t) {
  json j;
  json cmp = json::array();
  for (const auto& c : t.compare) {
    json e = {{"key", base64(c.key)}, {"target", target_name(c.target)},
              {"result", result_name(c.result)}};
    switch (c.target) {
      case Compare::Target::version: e["version"] = std::to_string(c.number); break;
      case Compare::Target::create: e["create_revision"] = std::to_string(c.number); break;
      case Compare::Target::mod: e["mod_revision"] = std::to_string(c.number); break;
      case Compare::Target::value: e["value"] = base64(c.value); break;
      case Compare::Target::lease: e["lease"] = std::to_string(c.number); break;
    }
    if (!c.range_end.empty()) e["range_end"] = base64(c.range_end);
    cmp.push_back(e);
  }
  j["compare"] = cmp;
  json s = json::array(), f = json::array();
  for (const auto& op : t.success) s.push_back(op_json(op));
  for (const auto& op : t.failure) f.push_back(op_json(op));
  j["success"] = s;
  j["failure"] = f;
  return j.dump();
}

Result<TxnResult> decode_txn(std::string_view body) {
  auto j = parse(body);
  if (!j) return j.status();
  TxnResult r;
  auto it = j->find("succeeded");
  r.succeeded = it != j->end() && it->is_boolean() && it->get<bool>();
  if (auto h = j->find("header"); h != j->end() && h->is_object()) {
    auto rev = int64_of(*h, "revision");
    if (!rev) return rev.status();
    r.revision = *rev;
  }
  if (auto rs = j->find("responses"); rs != j->end() && rs->is_array()) {
    for (const auto& e : *rs) {
      if (!e.is_object()) return Status::error("PROTO", "etcd reply: bad response");
      std::vector<KeyValue> kvs;
      if (auto rr = e.find("response_range"); rr != e.end() && rr->is_object()) {
        auto k = kvs_of(*rr);
        if (!k) return k.status();
        kvs = std::move(*k);
      }
      r.results.push_back(std::move(kvs));
    }
  }
  return r;
}

std::string encode_range(const std::string& key, const std::string& range_end, int64_t limit) {
  json j = {{"key", base64(key)}};
  if (!range_end.empty()) j["range_end"] = base64(range_end);
  if (limit) j["limit"] = std::to_string(limit);
  return j.dump();
}

Result<std::vector<KeyValue>> decode_range(std::string_view body) {
  auto j = parse(body);
  if (!j) return j.status();
  return kvs_of(*j);
}

std::string encode_lease_grant(int64_t ttl_s) {
  return json{{"TTL", std::to_string(ttl_s)}}.dump();
}

Result<std::pair<int64_t, int64_t>> decode_lease_grant(std::string_view body) {
  auto j = parse(body);
  if (!j) return j.status();
  auto id = int64_of(*j, "ID");
  auto ttl = int64_of(*j, "TTL");
  if (!id) return id.status();
  if (!ttl) return ttl.status();
  if (*id == 0) return Status::error("PROTO", "etcd granted no lease");
  return std::make_pair(*id, *ttl);
}

std::string encode_lease_id(int64_t id) { return json{{"ID", std::to_string(id)}}.dump(); }

Result<int64_t> decode_lease_keepalive(std::string_view body) {
  // The gateway streams keepalive replies: {"result": {...}} per message.
  auto j = parse(body);
  if (!j) return j.status();
  const json* r = &*j;
  if (auto it = j->find("result"); it != j->end() && it->is_object()) r = &*it;
  return int64_of(*r, "TTL");
}

Result<bool> decode_status_is_leader(std::string_view body) {
  auto j = parse(body);
  if (!j) return j.status();
  auto h = j->find("header");
  if (h == j->end() || !h->is_object()) return Status::error("PROTO", "etcd status: no header");
  // Member ids are unsigned 64-bit: compared as the gateway writes them (decimal strings).
  auto m = h->find("member_id");
  auto l = j->find("leader");
  if (m == h->end() || l == j->end() || !m->is_string() || !l->is_string())
    return Status::error("PROTO", "etcd status: no member or leader id");
  return m->get<std::string>() == l->get<std::string>();
}

}  // namespace tpc::etcd
