// Framing of log records (spec: docs/log-format.md).
//
//   +----------+----------+--------+----------------------+
//   | crc32c   | length   | type   | payload              |
//   | 4 B, LE  | 4 B, LE  | 1 B    | `length` bytes       |
//   +----------+----------+--------+----------------------+
//   crc32c covers length, type and payload.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tpc::txlog {

inline constexpr size_t k_header = 9;
inline constexpr uint32_t k_max_payload = 64u << 20;

struct Record {
  uint8_t type = 0;
  std::string payload;
  bool operator==(const Record&) const = default;
};

std::string frame(uint8_t type, std::string_view payload);

struct ScanResult {
  std::vector<Record> records;
  std::vector<size_t> offsets;  // byte offset of each record
  size_t valid_end = 0;         // bytes of the file that hold whole, valid records
  bool torn_tail = false;       // bytes after valid_end are a half-written or damaged tail
  bool corrupt = false;         // a damaged record is followed by valid ones: refuse to open
  size_t corrupt_offset = 0;
};

// Scans a whole log image. The rule (as LevelDB's reader, LogCabin's segments):
//  - a record whose header is cut short or whose claimed length runs past the end of the
//    file is a torn tail: the writer died mid-append; drop it.
//  - a damaged record (bad checksum) is skipped by its claimed length (resynchronising
//    there, as LevelDB's reader does); if a valid record follows it, the damage is in the
//    middle: refuse; if only zeros or further damage follow, it is a torn tail.
// Linear in the size of the image: a damaged tail is never searched byte by byte, so a value
// that happens to hold a valid frame cannot pass for a record.
ScanResult scan(std::string_view image);

// What a node recovers from its log image at startup (the rule of docs/log-format.md).
struct Recovery {
  std::vector<Record> records;                    // whole, valid records, in order
  std::vector<size_t> offsets;                    // byte offset of each
  size_t end = 0;                                 // where the next append goes
  enum Tail { clean, zeros, torn } tail = clean;  // zeros: preallocated space after `end`
  size_t dropped = 0;  // torn: bytes of the torn tail, to be truncated with a warning
  Status status;       // CORRUPT: damage in the middle, the node must refuse to start
};
Recovery recover_image(std::string_view image);

// Payload helpers: little-endian fixed ints and length-prefixed strings.
class Encoder {
 public:
  Encoder& u8(uint8_t v);
  Encoder& u64(uint64_t v);
  Encoder& str(std::string_view s);  // u32 length + bytes
  const std::string& data() const { return m_out; }

 private:
  std::string m_out;
};

class Decoder {
 public:
  explicit Decoder(std::string_view in) : m_in(in) {}
  bool u8(uint8_t* v);
  bool u64(uint64_t* v);
  bool str(std::string* s);
  bool done() const { return m_in.empty(); }

 private:
  std::string_view m_in;
};

}  // namespace tpc::txlog
