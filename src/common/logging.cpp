#include "common/logging.h"

#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include <atomic>
#include <ctime>
#include <mutex>

#include "common/status.h"
#include "common/text.h"

namespace tpc::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::info)};
std::mutex g_role_mutex;
std::string g_role = "tpc";
std::atomic<int> g_format{static_cast<int>(Format::text)};
std::mutex g_file_mutex;  // the path and swapping the descriptor
std::string g_path;
std::atomic<int> g_fd{2};
std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}
const char* name(Level l) {
  switch (l) {
    case Level::debug:
      return "DEBUG";
    case Level::info:
      return "INFO";
    case Level::warn:
      return "WARN";
    case Level::error:
      return "ERROR";
    case Level::fatal:
      return "FATAL";
    default:
      return "?";
  }
}
}  // namespace

void set_role(std::string role) {
  std::lock_guard<std::mutex> g(g_role_mutex);
  g_role = std::move(role);
}
void set_level(Level l) { g_level = static_cast<int>(l); }
Level level() { return static_cast<Level>(g_level.load(std::memory_order_relaxed)); }

bool parse_level(const std::string& text, Level* out) {
  std::string t = lower(text);
  if (t == "debug")
    *out = Level::debug;
  else if (t == "info")
    *out = Level::info;
  else if (t == "warn")
    *out = Level::warn;
  else if (t == "error")
    *out = Level::error;
  else if (t == "off")
    *out = Level::off;
  else
    return false;
  return true;
}

void set_format(Format f) { g_format = static_cast<int>(f); }

bool parse_format(const std::string& text, Format* out) {
  std::string t = lower(text);
  if (t == "text")
    *out = Format::text;
  else if (t == "json")
    *out = Format::json;
  else
    return false;
  return true;
}

bool set_file(const std::string& path, std::string* error) {
  std::lock_guard<std::mutex> g(g_file_mutex);
  if (path.empty()) return true;
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    *error = path + ": " + std::strerror(errno);
    return false;
  }
  if (g_fd != 2) {  // a file already: the same descriptor number, now the new file
    ::dup2(fd, g_fd);
    ::close(fd);
  } else {
    g_fd = fd;
  }
  g_path = path;
  return true;
}

bool reopen(std::string* error) {
  std::string path;
  {
    std::lock_guard<std::mutex> g(g_file_mutex);
    path = g_path;
  }
  // dup2 swaps the file under the descriptor number atomically: a concurrent write goes to
  // the old file or the new one, never to a closed or reused descriptor.
  return path.empty() || set_file(path, error);
}

void write(Level l, const std::string& message) {
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm t;
  gmtime_r(&tv.tv_sec, &t);
  char ts[32];
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &t);
  std::string role;
  {
    std::lock_guard<std::mutex> g(g_role_mutex);
    role = g_role;
  }
  std::string line;
  if (g_format.load(std::memory_order_relaxed) == static_cast<int>(Format::json)) {
    std::string lv = lower(name(l));
    line = fmt::format("{{\"ts\":\"{}.{:06d}Z\",\"level\":\"{}\",\"node\":{},\"msg\":{}}}\n", ts,
                       tv.tv_usec, lv, json_string(role), json_string(message));
  } else {
    line = fmt::format("{}.{:06d}Z {} {} {}\n", ts, tv.tv_usec, name(l), role, message);
  }
  ssize_t ignored = ::write(g_fd.load(std::memory_order_relaxed), line.data(), line.size());
  (void)ignored;
}

}  // namespace tpc::log

namespace tpc {
namespace {
FatalHook g_fatal_hook = nullptr;
}
void set_fatal_hook(FatalHook hook) { g_fatal_hook = hook; }

void fatal(const std::string& message) {
  if (g_fatal_hook) g_fatal_hook(message);
  log::write(log::Level::fatal, message + "; stopping");
  ::_exit(k_exit_storage_failure);
}
}  // namespace tpc
