// libFuzzer target: a data directory's identity file, and handshake fields. Any text in: it
// is refused or read, and what is read writes back to the same identity.
#include <cstdint>
#include <string>

#include "node/identity.h"
#include "protocol/messages.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  if (auto id = tpc::node::decode(text)) {
    auto again = tpc::node::decode(tpc::node::encode(*id));
    if (!again || again->node != id->node || again->role != id->role ||
        again->format != id->format)
      __builtin_trap();
  }
  tpc::node::Identity me;
  me.role = "participant";
  me.node = "00000000-0000-4000-8000-000000000000";
  (void)tpc::node::answer_hello(me, text);
  (void)tpc::node::check_cluster(me.node, text, "fuzz");
  (void)tpc::node::is_uuid(text);
  return 0;
}
