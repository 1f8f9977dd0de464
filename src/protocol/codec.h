// Line framing and byte escaping of the tpc wire protocol (spec: docs/protocol.md).
//
// A line is tokens separated by spaces. A token carries any byte string:
//   - bytes 0x00-0x20, 0x7F, '%' and '"' are written as %XX (two upper-case hex digits);
//   - every other byte (letters, digits, punctuation, UTF-8) stands for itself;
//   - the empty string is written as "" (two double quotes).
// So ordinary words stay readable and a person can type requests into `nc`.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/text.h"

namespace tpc::protocol {

inline constexpr std::string_view k_version = "tpc/1";
inline constexpr size_t k_default_max_line = 1 << 20;  // 1 MiB
// The largest --max-line: a PREPARE of that size must fit in one log record (64 MiB) with room
// to spare, or a participant could vote on what it cannot log.
inline constexpr size_t k_max_line_limit = 32 << 20;  // 32 MiB
inline constexpr size_t k_max_key = 4096;

// Encodes `bytes` as one token.
std::string escape(std::string_view bytes);
void escape_to(std::string& out, std::string_view bytes);
// The wire escaping, and also every byte that is not part of valid UTF-8 as %XX: for a
// terminal and for JSON (always valid UTF-8, no control bytes), and still a valid token
// that unescape() reads back (so it can be pasted into a command).
std::string escape_display(std::string_view bytes);
// LineBuilder::text's escapes undone: each %XX is its byte; a '%' not followed by two hex
// digits stays as it is (free text is never refused).
std::string unescape_text(std::string_view text);
// Free text from a node (an error's or abort's reason), for a terminal: spaces kept, control
// bytes and bytes that are not valid UTF-8 as %XX.
std::string display_text(std::string_view s);
using tpc::json_string;  // common/text.h
using tpc::utf8_sequence;
// Decodes one token. Error PROTO on a bad %-escape.
Result<std::string> unescape(std::string_view token);
// Splits a line (without its LF; a trailing CR is dropped) into raw tokens. Runs of spaces or
// tabs count as one separator.
std::vector<std::string_view> split(std::string_view line);

// Builds a line from tokens, escaping the arguments (the verb is written raw).
class LineBuilder {
 public:
  explicit LineBuilder(std::string_view verb) : m_line(verb) {}
  LineBuilder& raw(std::string_view token);  // written as is (verbs, numbers, codes)
  LineBuilder& arg(std::string_view bytes);  // escaped
  LineBuilder& num(long long v);
  // Appends the rest of the line as free text (spaces kept, control bytes and % escaped as
  // %XX); unescape_text reads it back.
  LineBuilder& text(std::string_view text);
  std::string str() const { return m_line; }

 private:
  std::string m_line;
};

// Accumulates bytes from a stream and cuts them into lines of at most `max_line` bytes.
// Not thread-safe; one per connection.
class LineBuffer {
 public:
  explicit LineBuffer(size_t max_line = k_default_max_line) : m_max(max_line) {}
  void append(const char* data, size_t n) { m_buf.append(data, n); }
  enum class Next { line, need_more, too_long };
  // On `line`, *out is the next line without LF (and without a trailing CR).
  // `too_long` is permanent: the caller must report it and close the connection.
  Next next(std::string* out);

 private:
  size_t m_max;
  std::string m_buf;
  size_t m_pos = 0;
  size_t m_scanned = 0;  // bytes after m_pos already known to hold no LF
};

}  // namespace tpc::protocol
