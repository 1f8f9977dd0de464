#include "common/logging.h"

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <mutex>

#include "common/status.h"

namespace tpc::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::info)};
std::mutex g_role_mutex;
std::string g_role = "tpc";
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

bool parse_level(const std::string& t, Level* out) {
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
  std::string line = fmt::format("{}.{:06d}Z {} {} {}\n", ts, tv.tv_usec, name(l), role, message);
  ssize_t ignored = ::write(2, line.data(), line.size());
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
