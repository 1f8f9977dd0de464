// libFuzzer target: the codec (framing with data blocks, splitting, escaping). Any bytes in; no
// crash, no unbounded buffer, every escaping reads back to the same bytes, and so does a value
// sent as a data block.
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
  // A value as a data block, after a key that is the same bytes escaped: framed from the wire
  // and split, both read back.
  std::string frame = tpc::protocol::LineBuilder("PUT").arg(in).value(in).str();
  tpc::protocol::LineBuffer whole(frame.size() + 1);
  whole.append(frame.data(), frame.size());
  whole.append("\n", 1);
  std::string got;
  if (whole.next(&got) != tpc::protocol::LineBuffer::Next::line || got != frame) __builtin_trap();
  auto t = tpc::protocol::split(got);
  if (t.size() != 3) __builtin_trap();
  auto k = tpc::protocol::unescape(t[1]), v = tpc::protocol::unescape(t[2]);
  if (!k || !v || *k != in || *v != in) __builtin_trap();
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
