// etcd v3 requests and replies as tpc uses them, and their JSON form for etcd's HTTP/JSON
// gateway (docs/decision-store.md). Pure: no I/O, so every encoding is a unit test.
//
// The gateway speaks the v3 gRPC messages as JSON (protobuf's JSON mapping): keys and values
// are base64, 64-bit integers are strings, fields at their default value are left out.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tpc::etcd {

std::string base64(std::string_view bytes);
// Error PROTO on anything that is not base64.
Result<std::string> unbase64(std::string_view text);
// The first key after every key that starts with `prefix` (etcd's range_end for a prefix).
std::string prefix_end(std::string_view prefix);

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
};

// One comparison of a transaction: KEY's TARGET is RESULT to the number (or value).
struct Compare {
  enum class Target { version, create, mod, value, lease };
  enum class Result { equal, greater, less, not_equal };
  std::string key;
  Target target = Target::create;
  Result result = Result::equal;
  int64_t number = 0;  // version, create or mod revision, lease id
  std::string value;   // Target::value
  std::string range_end;  // non-empty: every key in [KEY, RANGE_END) (none: as if absent)
  // "KEY does not exist": its create revision is 0.
  static Compare absent(std::string key) { return {std::move(key), Target::create, Result::equal, 0, {}, {}}; }
  // "No key starts with PREFIX".
  static Compare none_under(const std::string& prefix) {
    return {prefix, Target::create, Result::equal, 0, {}, prefix_end(prefix)};
  }
  // "KEY is held by lease ID": a lease that expired took its keys with it.
  static Compare leased(std::string key, int64_t lease) {
    return {std::move(key), Target::lease, Result::equal, lease, {}, {}};
  }
};

// One operation of a transaction's branch.
struct Op {
  enum class Kind { put, range, del };
  Kind kind = Kind::range;
  std::string key;
  std::string value;      // put
  std::string range_end;  // range, del: empty for one key
  int64_t lease = 0;      // put: attach the key to this lease
  int64_t limit = 0;      // range: at most this many (0: all)
  static Op put(std::string k, std::string v, int64_t lease = 0) {
    return {Kind::put, std::move(k), std::move(v), {}, lease, 0};
  }
  static Op get(std::string k) { return {Kind::range, std::move(k), {}, {}, 0, 0}; }
  static Op range(std::string k, std::string end) {
    return {Kind::range, std::move(k), {}, std::move(end), 0, 0};
  }
  static Op del(std::string k) { return {Kind::del, std::move(k), {}, {}, 0, 0}; }
};

struct Txn {
  std::vector<Compare> compare;
  std::vector<Op> success;
  std::vector<Op> failure;
};

struct TxnResult {
  bool succeeded = false;
  int64_t revision = 0;  // the store's revision after it
  // One entry per op of the branch that ran: the keys a range found (empty for puts, dels).
  std::vector<std::vector<KeyValue>> results;
};

std::string encode_txn(const Txn& t);
// Error PROTO: not a TxnResponse; error ETCD: etcd's own error reply (its message kept).
Result<TxnResult> decode_txn(std::string_view body);

std::string encode_range(const std::string& key, const std::string& range_end, int64_t limit);
Result<std::vector<KeyValue>> decode_range(std::string_view body);

std::string encode_lease_grant(int64_t ttl_s);
// The lease id and its granted TTL in seconds.
Result<std::pair<int64_t, int64_t>> decode_lease_grant(std::string_view body);
std::string encode_lease_id(int64_t id);
// A keepalive's reply: the TTL left; 0 when the lease is gone.
Result<int64_t> decode_lease_keepalive(std::string_view body);
// /v3/maintenance/status: whether the member that answered is the raft leader.
Result<bool> decode_status_is_leader(std::string_view body);

}  // namespace tpc::etcd
