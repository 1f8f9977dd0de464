#include "txlog/record.h"

#include <cstring>

#include <fmt/format.h>

#include "common/crc32c.h"

namespace tpc::txlog {
namespace {
void put32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t get32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
// The size (header and payload) the header at `off` claims, or 0 when no whole header is
// there, or it claims more than the limit or than the image holds.
size_t claimed_size(std::string_view img, size_t off) {
  if (img.size() - off < k_header) return 0;
  uint32_t len = get32(img.data() + off + 4);
  if (len > k_max_payload || img.size() - off - k_header < len) return 0;
  return k_header + len;
}

// Checks the record at `off`. Returns its total size, or 0 when it is not a whole valid record.
size_t valid_at(std::string_view img, size_t off) {
  size_t n = claimed_size(img, off);
  if (n == 0) return 0;
  const char* p = img.data() + off;
  if (crc32c(0, p + 4, 5 + (n - k_header)) != get32(p)) return 0;
  return n;
}

// Nine zero bytes: with a zero seed, their checksum is zero too, so they would pass for a record.
bool zero_header(std::string_view img, size_t off) {
  return get32(img.data() + off) == 0 && get32(img.data() + off + 4) == 0 && img[off + 8] == 0;
}

// Damage at `off`: resynchronises at the end its header claims, again and again (as LevelDB's
// reader); a valid record there means the damage is in the middle. It stops at a header cut
// short or claiming past the end, and at zeros.
bool resync_finds_record(std::string_view img, size_t off) {
  for (size_t probe = off;;) {
    size_t n = claimed_size(img, probe);
    if (n == 0 || zero_header(img, probe)) return false;
    probe += n;
    if (valid_at(img, probe) != 0) return true;
  }
}

// Damage at `off` that resynchronising at claimed ends took for a torn tail: do whole, valid
// records follow it, two in a row, or one that ends where the data ends (the end of the file,
// or the zeros after it)? That is what a flipped bit in the length field of a record in the
// middle looks like, also when the log has a torn tail of its own after them. A torn write
// leaves no such pair: what follows the cut is the preallocated zeros or the broken rest of
// its batch; a value that holds one valid frame does not make one either. Headers are looked
// at first (cheap), checksums computed only for a plausible pair. The checksummed bytes are
// bounded (crafted values could make every byte a plausible header): past the bound the
// reader cannot tell, and refuses, as for corruption.
bool hides_records(std::string_view img, size_t off) {
  size_t last = img.find_last_not_of('\0');
  size_t data_end = last == std::string_view::npos ? 0 : last + 1;
  uint64_t checked = 0;
  const uint64_t k_max_checked = uint64_t{256} << 20;
  auto plausible = [&](size_t p) -> size_t {  // the size a header at p claims, or 0
    size_t n = claimed_size(img, p);
    return n == 0 || zero_header(img, p) ? 0 : n;
  };
  for (size_t q = off + 1; q < data_end && data_end - q >= k_header; ++q) {
    size_t a = plausible(q);
    if (a == 0) continue;
    bool at_end = q + a >= data_end;
    size_t b = at_end ? 0 : plausible(q + a);
    if (!at_end && b == 0) continue;
    checked += a + b;
    if (checked > k_max_checked) return true;
    if (valid_at(img, q) != 0 && (at_end || valid_at(img, q + a) != 0)) return true;
  }
  return false;
}
}  // namespace

std::string frame(uint8_t type, std::string_view payload) {
  // Callers check sizes where requests enter (a participant votes NO on what it cannot log):
  // a record past the limit would be written, acknowledged, then dropped as torn at restart.
  TPC_CHECK(payload.size() <= k_max_payload,
            fmt::format("log record of {} bytes exceeds the {}-byte limit", payload.size(),
                        k_max_payload));
  std::string out;
  out.reserve(k_header + payload.size());
  put32(out, 0);
  put32(out, static_cast<uint32_t>(payload.size()));
  out += static_cast<char>(type);
  out += payload;
  uint32_t crc = crc32c(0, out.data() + 4, 5 + payload.size());
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((crc >> (8 * i)) & 0xff);
  return out;
}

ScanResult scan(std::string_view img) {
  ScanResult r;
  size_t off = 0;
  while (off < img.size()) {
    size_t n = valid_at(img, off);
    if (n == 0) break;
    r.records.push_back(Record{static_cast<uint8_t>(img[off + 8]),
                               std::string(img.substr(off + k_header, n - k_header))});
    r.offsets.push_back(off);
    off += n;
  }
  r.valid_end = off;
  if (off == img.size()) return r;
  // Something damaged at `off`: in the middle, or a torn tail.
  if (resync_finds_record(img, off) || hides_records(img, off)) {
    r.corrupt = true;
    r.corrupt_offset = off;
  } else {
    r.torn_tail = true;
  }
  return r;
}

Recovery recover_image(std::string_view image) {
  Recovery out;
  ScanResult r = scan(image);
  if (r.corrupt) {
    out.status = Status::error(
        "CORRUPT", fmt::format("corrupt at byte offset {} (valid records follow the damage)",
                               r.corrupt_offset));
    return out;
  }
  out.records = std::move(r.records);
  out.offsets = std::move(r.offsets);
  out.end = r.valid_end;
  if (r.torn_tail) {
    bool zeros = image.find_first_not_of('\0', r.valid_end) == std::string_view::npos;
    out.tail = zeros ? Recovery::zeros : Recovery::torn;
    if (!zeros) out.dropped = image.size() - r.valid_end;
  }
  return out;
}

Encoder& Encoder::u8(uint8_t v) {
  m_out += static_cast<char>(v);
  return *this;
}
Encoder& Encoder::u64(uint64_t v) {
  for (int i = 0; i < 8; ++i) m_out += static_cast<char>((v >> (8 * i)) & 0xff);
  return *this;
}
Encoder& Encoder::str(std::string_view s) {
  put32(m_out, static_cast<uint32_t>(s.size()));
  m_out += s;
  return *this;
}

bool Decoder::u8(uint8_t* v) {
  if (m_in.empty()) return false;
  *v = static_cast<uint8_t>(m_in[0]);
  m_in.remove_prefix(1);
  return true;
}
bool Decoder::u64(uint64_t* v) {
  if (m_in.size() < 8) return false;
  *v = 0;
  for (int i = 7; i >= 0; --i) *v = (*v << 8) | static_cast<unsigned char>(m_in[i]);
  m_in.remove_prefix(8);
  return true;
}
bool Decoder::str(std::string* s) {
  if (m_in.size() < 4) return false;
  uint32_t n = get32(m_in.data());
  if (m_in.size() - 4 < n) return false;
  s->assign(m_in.data() + 4, n);
  m_in.remove_prefix(4 + n);
  return true;
}

}  // namespace tpc::txlog
