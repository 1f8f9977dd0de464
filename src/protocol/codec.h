// Framing and byte escaping of the tpc wire protocol (spec: docs/protocol.md).
//
// A message is a line of tokens separated by spaces, then one data block per `#N` token of the
// line: N raw bytes and an LF each (as memcached's data blocks). Values travel as data blocks,
// so a value costs no escaping and no inflation. A token carries any byte string:
//   - bytes 0x00-0x20, 0x7F, '%', '"' and '#' are written as %XX (two upper-case hex digits);
//   - every other byte (letters, digits, punctuation, UTF-8) stands for itself;
//   - the empty string is written as "" (two double quotes);
//   - `#N` (N decimal digits) stands for the next data block of the message.
// So ordinary words stay readable and a person can type requests into `nc`.
//
// In memory a message is one string, its frame: the line, then for each data block an LF and
// its bytes (the wire form without its last LF). split() gives a data block's token as a view
// of its LF and bytes; unescape() takes such a token as the raw bytes after the LF (an LF is
// never in a token of the line).
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/text.h"

namespace tpc::protocol {

inline constexpr std::string_view k_version = "tpc/2";
// The default --max-message: a 1 MiB value and its request's line fit.
inline constexpr size_t k_default_max_message = 2 << 20;  // 2 MiB
// The largest --max-message: a PREPARE of that size must fit in one log record (64 MiB) with room
// to spare, or a participant could vote on what it cannot log.
inline constexpr size_t k_max_message_limit = 32 << 20;  // 32 MiB
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
// Decodes one token: a data block's bytes, or the %-escapes undone. Error PROTO on a bad
// %-escape, or a `#N` token without its data block.
Result<std::string> unescape(std::string_view token);
// Splits a frame (a line without its LF, a trailing CR dropped, then its data blocks) into raw
// tokens. Runs of spaces or tabs count as one separator. A `#N` token becomes the view of its
// data block (its LF and bytes), when the frame holds it.
std::vector<std::string_view> split(std::string_view frame);
// The line of a frame (without its data blocks).
inline std::string_view head(std::string_view frame) { return frame.substr(0, frame.find('\n')); }
// N when `token` is a data block's length `#N`.
std::optional<size_t> block_length(std::string_view token);

// Builds a line from tokens, escaping the arguments (the verb is written raw).
class LineBuilder {
 public:
  explicit LineBuilder(std::string_view verb) : m_line(verb) {}
  LineBuilder& raw(std::string_view token);  // written as is (verbs, numbers, codes)
  LineBuilder& arg(std::string_view bytes);  // escaped
  // A value: `#N` on the line, its bytes as a data block after it.
  LineBuilder& value(std::string_view bytes);
  LineBuilder& num(long long v);
  // Appends the rest of the line as free text (spaces kept, control bytes and % escaped as
  // %XX); unescape_text reads it back.
  LineBuilder& text(std::string_view text);
  std::string str() const { return m_blocks.empty() ? m_line : m_line + m_blocks; }

 private:
  std::string m_line;
  std::string m_blocks;  // "\nBYTES" per value
};

// Accumulates bytes from a stream and cuts them into messages of at most `max_message` bytes
// (the line and its data blocks). Not thread-safe; one per connection.
class LineBuffer {
 public:
  explicit LineBuffer(size_t max_message = k_default_max_message) : m_max(max_message) {}
  void append(const char* data, size_t n) { m_buf.append(data, n); }
  enum class Next { line, need_more, too_long, broken };
  // On `line`, *out is the next message's frame: its line without LF (and without a trailing
  // CR), then LF and the bytes of each data block.
  // `too_long` and `broken` (a data block not followed by LF or CR LF: the stream cannot be
  // cut any more) are permanent: the caller must report them and close the connection.
  Next next(std::string* out);

 private:
  void compact();
  size_t m_max;
  std::string m_buf;
  size_t m_pos = 0;
  size_t m_scanned = 0;  // bytes after m_pos already known to hold no LF
};

}  // namespace tpc::protocol
