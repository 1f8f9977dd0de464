// libFuzzer target: the line codec (framing, splitting, escaping). Any bytes in; no crash, no
// unbounded buffer, and every escaping reads back to the same bytes.
#include <cstdint>
#include <string>

#include "protocol/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  // Framing: the input fed in two chunks, with a small line limit.
  tpc::protocol::LineBuffer buf(64);
  size_t cut = size ? data[0] % (size + 1) : 0;
  buf.append(in.data(), cut);
  buf.append(in.data() + cut, size - cut);
  std::string line;
  for (int i = 0; i < 10000; ++i) {
    auto r = buf.next(&line);
    if (r != tpc::protocol::LineBuffer::Next::line) break;
    if (line.size() > 64) __builtin_trap();
    for (auto tok : tpc::protocol::split(line)) (void)tpc::protocol::unescape(tok);
  }
  // Escapings read back.
  auto wire = tpc::protocol::escape(in);
  auto back = tpc::protocol::unescape(wire);
  if (!back || *back != in) __builtin_trap();
  auto shown = tpc::protocol::escape_display(in);
  back = tpc::protocol::unescape(shown);
  if (!back || *back != in) __builtin_trap();
  for (size_t i = 0; i < shown.size();) {
    size_t n = tpc::protocol::utf8_sequence(std::string_view(shown).substr(i));
    if (n == 0 || static_cast<unsigned char>(shown[i]) <= 0x20) __builtin_trap();
    i += n;
  }
  return 0;
}
