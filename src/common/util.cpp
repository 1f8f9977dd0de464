#include "common/util.h"

#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>

#include <algorithm>
#include <charconv>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <set>

#include <fmt/format.h>

#include "common/status.h"

namespace tpc {
int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
std::vector<std::string> split_list(const std::string& text, char sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find(sep, pos);
    if (end == std::string::npos) end = text.size();
    if (end > pos) out.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

bool parse_host_port(const std::string& text, std::string* host, uint16_t* port) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 >= text.size()) return false;
  std::string p = text.substr(colon + 1);
  if (p.size() > 5) return false;
  for (char c : p)
    if (c < '0' || c > '9') return false;
  long v = std::stol(p);
  if (v <= 0 || v > 65535) return false;
  *host = text.substr(0, colon);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']')
    *host = host->substr(1, host->size() - 2);
  *port = static_cast<uint16_t>(v);
  return true;
}
std::string host_port(const std::string& host, uint16_t port) {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                             : fmt::format("{}:{}", host, port);
}

Result<std::string> bind_address(const std::string& bind) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(bind, ec);
  if (!ec) return bind;
  boost::asio::io_context io;
  boost::asio::ip::tcp::resolver r(io);
  auto res = r.resolve(bind, "0", ec);
  if (ec || res.empty())
    return Status::error(
        "USAGE", fmt::format("--bind {}: not an address, and it does not resolve ({})", bind,
                             ec ? ec.message() : "no address"));
  for (auto& e : res)
    if (e.endpoint().address().is_v4()) return e.endpoint().address().to_string();
  return res.begin()->endpoint().address().to_string();
}

void lock_data_dir(const std::string& dir) {
  // Once per process: a second flock on another descriptor of the same file would conflict
  // with our own (a restore locks the directory before the server that follows it).
  static std::set<std::string> held;
  if (held.count(dir)) return;
  std::string path = dir + "/LOCK";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw Error(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0)
    throw Error(fmt::format("data directory {} is in use by another tpc process", dir));
  // The descriptor stays open (and locked) until the process exits.
  held.insert(dir);
}
}  // namespace tpc

namespace tpc {
std::string random_hex(size_t n) {
  std::string bytes(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::getrandom(bytes.data() + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw Error(fmt::format("getrandom: {}", std::strerror(errno)));
    got += static_cast<size_t>(r);
  }
  static const char* k_hex = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (unsigned char c : bytes) {
    out += k_hex[c >> 4];
    out += k_hex[c & 15];
  }
  return out;
}

std::string new_uuid() {
  std::string h = random_hex(16);
  h[12] = '4';                                                      // version 4
  h[16] = "89ab"[std::string("0123456789abcdef").find(h[16]) & 3];  // variant 10xx
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
         "-" + h.substr(20);
}

std::optional<int64_t> parse_int(std::string_view text) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return v;
}
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      size_t diag = row[0];
      row[0] = i;
      for (size_t j = 1; j <= b.size(); ++j) {
        size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diag = up;
      }
    }
    return row[b.size()];
  };
  std::string best;
  size_t best_d = 3;
  for (const auto& c : candidates) {
    size_t d = distance(word, c);
    if (d < best_d && d * 2 < std::max<size_t>(word.size(), 2)) {
      best = c;
      best_d = d;
    }
  }
  if (best.empty() && word.size() >= 2)
    for (const auto& c : candidates)
      if (c.rfind(word, 0) == 0) return c;
  return best;
}

}  // namespace tpc
