// libFuzzer target: the log reader and the record decoders. Any image in: recovery finds the
// records, a torn tail or corruption, and never crashes; every record's payload goes through
// the decoder of each role (which may refuse it, never crash).
#include <cstdint>
#include <string>

#include "leader/core.h"
#include "participant/core.h"
#include "txlog/record.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view image(reinterpret_cast<const char*>(data), size);
  auto rec = tpc::txlog::recover_image(image);
  if (rec.end > size || rec.records.size() != rec.offsets.size()) __builtin_trap();
  // Payloads as records of either role, also when the image is not a valid log.
  std::string payload(image);
  (void)tpc::participant::decode_prepared(payload);
  (void)tpc::leader::decode_commit(payload);
  for (auto& r : rec.records) {
    if (auto p = tpc::participant::decode_prepared(r.payload)) {
      auto again = tpc::participant::decode_prepared(tpc::participant::encode_prepared(*p));
      if (!again || again->ops != p->ops || again->txid != p->txid) __builtin_trap();
    }
    (void)tpc::leader::decode_commit(r.payload);
  }
  return 0;
}
