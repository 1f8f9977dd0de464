// Text helpers below every module: UTF-8 validity and JSON strings (logging's JSON lines use
// them, and so does the wire protocol's display of bytes).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace tpc {

// The length of the valid UTF-8 sequence at the start of `s` (1 to 4), 0 if none.
size_t utf8_sequence(std::string_view s);
// A JSON string (quoted) of any bytes: valid UTF-8 always (a byte that is not part of valid
// UTF-8 becomes U+FFFD), control bytes as \u00XX.
std::string json_string(std::string_view s);

}  // namespace tpc
