// libFuzzer target: every verb's decoder and every reply parser, on one line of any bytes.
// Decoders may refuse; they must never crash, and what they accept must encode back to a
// line they accept again.
#include <cstdint>
#include <string>

#include "node/identity.h"
#include "protocol/codec.h"
#include "protocol/messages.h"
#include "protocol/ops.h"

using namespace tpc::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string line(reinterpret_cast<const char*>(data), size);
  auto t = split(line);
  if (!t.empty()) {
    if (auto p = decode_prepare(t)) {
      auto again = decode_prepare(split(encode(*p)));
      if (!again || again->txid != p->txid || again->ops != p->ops || again->rid != p->rid ||
          again->learner != p->learner)
        __builtin_trap();
    }
    (void)decode_txid_arg(t);
    if (auto r = decode_read(t)) {
      auto again = decode_read(split(encode(*r)));
      if (!again || again->key != r->key) __builtin_trap();
    }
    if (auto sc = decode_scan(t)) {
      auto again = decode_scan(split(encode(*sc)));
      if (!again || again->prefix != sc->prefix || again->after != sc->after ||
          again->limit != sc->limit || again->max_bytes != sc->max_bytes ||
          again->watch != sc->watch)
        __builtin_trap();
    }
    if (auto sb = decode_sync_begin(t)) {
      auto again = decode_sync_begin(split(encode(*sb)));
      if (!again || again->pass != sb->pass || again->sources != sb->sources) __builtin_trap();
    }
    if (auto sy = decode_sync(t)) {
      auto again = decode_sync(split(encode(*sy)));
      if (!again || again->pass != sy->pass || again->source != sy->source ||
          again->after != sy->after || again->more != sy->more || again->upto != sy->upto ||
          again->kvs != sy->kvs || again->last != sy->last)
        __builtin_trap();
    }
    if (auto ck = decode_scan_check(t)) {
      auto again = decode_scan_check(split(encode(*ck)));
      if (!again || again->watch != ck->watch) __builtin_trap();
    }
    (void)parse_ops(t, 1);
    if (auto j = tpc::node::decode_join(t)) {
      auto again = tpc::node::decode_join(split(tpc::node::encode_join(*j)));
      if (!again || again->members.size() != j->members.size()) __builtin_trap();
    }
    (void)check_txid(t[0]);
    (void)check_request_id(t[0]);
  }
  tpc::Result<std::string> r(line);
  (void)parse_vote(r);
  (void)parse_ack(r);
  (void)parse_decision(r);
  (void)parse_read_reply(r);
  (void)parse_txn_reply(r);
  auto keys = parse_scan_reply(r);
  if (keys.kind == ScanReply::keys) {  // what it accepts encodes back to the same page
    auto again = parse_scan_reply(tpc::Result<std::string>(encode(keys)));
    if (again.kind != ScanReply::keys || again.more != keys.more || again.kvs != keys.kvs)
      __builtin_trap();
  }
  (void)parse_scan_checked(r);
  (void)parse_fields(line);
  (void)rest_after(line, 2);
  return 0;
}
