#include "protocol/codec.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace tpc::protocol {
namespace {
constexpr char k_hex[] = "0123456789ABCDEF";
bool needs_escape(unsigned char c) {
  return c <= 0x20 || c == 0x7f || c == '%' || c == '"' || c == '#';
}
int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}
}  // namespace

void escape_to(std::string& out, std::string_view bytes) {
  if (bytes.empty()) {
    out += "\"\"";
    return;
  }
  for (unsigned char c : bytes) {
    if (needs_escape(c)) {
      out += '%';
      out += k_hex[c >> 4];
      out += k_hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
}

std::string escape(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() + 2);
  escape_to(out, bytes);
  return out;
}

std::string escape_display(std::string_view bytes) {
  if (bytes.empty()) return "\"\"";
  std::string out;
  out.reserve(bytes.size() + 2);
  for (size_t i = 0; i < bytes.size();) {
    size_t n = utf8_sequence(bytes.substr(i));
    auto c = static_cast<unsigned char>(bytes[i]);
    if (n == 0 || (n == 1 && needs_escape(c))) {
      out += '%';
      out += k_hex[c >> 4];
      out += k_hex[c & 15];
      ++i;
    } else {
      out.append(bytes.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::optional<size_t> block_length(std::string_view token) {
  if (token.size() < 2 || token[0] != '#' || token.size() > 12) return std::nullopt;
  size_t n = 0;
  for (char c : token.substr(1)) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<size_t>(c - '0');
  }
  return n;
}

namespace {
// The length of the next `#N` token of `line` from *pos on (and *pos moved past it); nullopt
// when no other follows.
std::optional<size_t> next_block(std::string_view line, size_t* pos) {
  while (*pos < line.size()) {
    size_t start = line.find_first_not_of(" \t", *pos);
    if (start == std::string_view::npos) break;
    size_t stop = std::min(line.find_first_of(" \t", start), line.size());
    *pos = stop;
    if (auto n = block_length(line.substr(start, stop - start))) return n;
  }
  *pos = line.size();
  return std::nullopt;
}
}  // namespace

Result<std::string> unescape(std::string_view token) {
  if (token == "\"\"") return std::string();
  if (!token.empty() && token[0] == '\n') return std::string(token.substr(1));  // a data block
  if (!token.empty() && token[0] == '#')
    return Status::error("PROTO", "a value #N needs its N bytes after the line");
  std::string out;
  out.reserve(token.size());
  for (size_t i = 0; i < token.size(); ++i) {
    char c = token[i];
    if (c != '%') {
      out += c;
      continue;
    }
    if (i + 2 >= token.size()) return Status::error("PROTO", "truncated %-escape");
    int hi = hexval(token[i + 1]), lo = hexval(token[i + 2]);
    if (hi < 0 || lo < 0) return Status::error("PROTO", "bad %-escape, expected %XX");
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::vector<std::string_view> split(std::string_view frame) {
  std::string_view line = head(frame);
  size_t block = line.size();  // the LF before the next data block
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i == start) continue;
    std::string_view t = line.substr(start, i - start);
    if (line[start] == '#' && block < frame.size()) {
      auto n = block_length(t);
      if (n && frame.size() - block > *n) {
        t = frame.substr(block, *n + 1);
        block += *n + 1;
      }
    }
    out.push_back(t);
  }
  return out;
}

LineBuilder& LineBuilder::raw(std::string_view token) {
  m_line += ' ';
  m_line += token;
  return *this;
}
LineBuilder& LineBuilder::arg(std::string_view bytes) {
  m_line += ' ';
  escape_to(m_line, bytes);
  return *this;
}
LineBuilder& LineBuilder::value(std::string_view bytes) {
  m_line += " #";
  m_line += std::to_string(bytes.size());
  m_blocks += '\n';
  m_blocks.append(bytes);
  return *this;
}
LineBuilder& LineBuilder::num(long long v) { return raw(fmt::format("{}", v)); }
std::string unescape_text(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    int hi = text[i] == '%' && i + 2 < text.size() ? hexval(text[i + 1]) : -1;
    int lo = hi >= 0 ? hexval(text[i + 2]) : -1;
    if (lo >= 0) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

std::string display_text(std::string_view s) {
  std::string o;
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_sequence(s.substr(i));
    auto c = static_cast<unsigned char>(s[i]);
    if (n == 0 || (n == 1 && (c < 0x20 || c == 0x7f))) {
      o += '%';
      o += k_hex[c >> 4];
      o += k_hex[c & 15];
      ++i;
    } else {
      o.append(s, i, n);
      i += n;
    }
  }
  return o;
}

LineBuilder& LineBuilder::text(std::string_view text) {
  m_line += ' ';
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f || c == '%' || c == '#') {
      m_line += '%';
      m_line += k_hex[c >> 4];
      m_line += k_hex[c & 15];
    } else {
      m_line += static_cast<char>(c);
    }
  }
  return *this;
}

LineBuffer::Next LineBuffer::next(std::string* out) {
  const char* base = m_buf.data() + m_pos;
  size_t avail = m_buf.size() - m_pos;
  const void* nl = std::memchr(base + m_scanned, '\n', avail - m_scanned);
  if (!nl) {
    m_scanned = avail;
    if (avail > m_max) return Next::too_long;
    compact();
    return Next::need_more;
  }
  size_t len = static_cast<const char*>(nl) - base;
  if (len > m_max) return Next::too_long;
  size_t take = len;
  if (take > 0 && base[take - 1] == '\r') --take;
  size_t end = len + 1;  // past the message's last LF
  std::string_view line(base, take);
  bool blocks = line.find('#') != std::string_view::npos;
  if (blocks) {
    m_scanned = len;  // the line is known, when its blocks are not all there yet
    // The data blocks: N bytes after the line's LF for each #N token, each followed by LF (or
    // CR LF). Their sizes are known from the line: too long is known before they arrive.
    size_t total = len;
    for (size_t pos = 0; auto n = next_block(line, &pos);) {
      total += *n + 1;
      if (total > m_max) return Next::too_long;
      if (avail < end + *n + 1) return (compact(), Next::need_more);
      size_t after = end + *n;
      if (base[after] == '\r') {
        if (avail < after + 2) return (compact(), Next::need_more);
        if (base[after + 1] != '\n') return Next::broken;
        end = after + 2;
      } else if (base[after] == '\n') {
        end = after + 1;
      } else {
        return Next::broken;
      }
    }
  }
  out->assign(line);
  if (blocks) {
    // The frame: each data block after an LF, without the CR some peers send after it.
    size_t p = len + 1;
    for (size_t pos = 0; auto n = next_block(line, &pos);) {
      out->push_back('\n');
      out->append(base + p, *n);
      p += *n + 1;
      if (base[p - 1] == '\r') ++p;
    }
  }
  m_pos += end;
  m_scanned = 0;
  if (m_pos == m_buf.size()) {
    m_buf.clear();
    m_pos = 0;
  }
  return Next::line;
}

void LineBuffer::compact() {
  // Once the consumed prefix dominates, so the buffer does not grow forever.
  if (m_pos > 0 && m_pos >= m_buf.size() / 2) {
    m_buf.erase(0, m_pos);
    m_pos = 0;
  }
}

}  // namespace tpc::protocol
