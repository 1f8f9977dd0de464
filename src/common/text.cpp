#include "common/text.h"

#include <cstdint>

#include <fmt/format.h>

namespace tpc {

size_t utf8_sequence(std::string_view s) {
  if (s.empty()) return 0;
  auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char c = b(0);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || n > s.size()) return 0;
  for (size_t i = 1; i < n; ++i)
    if ((b(i) & 0xC0) != 0x80) return 0;
  // No overlong forms, no surrogates, nothing past U+10FFFF.
  uint32_t cp = n == 1   ? c
                : n == 2 ? ((c & 0x1Fu) << 6) | (b(1) & 0x3F)
                : n == 3 ? ((c & 0x0Fu) << 12) | ((b(1) & 0x3Fu) << 6) | (b(2) & 0x3F)
                         : ((c & 0x07u) << 18) | ((b(1) & 0x3Fu) << 12) | ((b(2) & 0x3Fu) << 6) |
                               (b(3) & 0x3F);
  static const uint32_t k_min[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < k_min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

std::string json_string(std::string_view s) {
  std::string o = "\"";
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_sequence(s.substr(i));
    auto c = static_cast<unsigned char>(s[i]);
    if (n == 0) {
      o += "\\ufffd";
      ++i;
      continue;
    }
    if (c == '"' || c == '\\')
      o += '\\', o += static_cast<char>(c);
    else if (n == 1 && (c < 0x20 || c == 0x7f))
      o += fmt::format("\\u{:04x}", c);
    else
      o.append(s.substr(i, n));
    i += n;
  }
  return o + "\"";
}

}  // namespace tpc
