// The error policy of tpc, in three tiers.
//  1. Expected failures (bad line, peer gone, key not found) are values: Status / Result<T>.
//  2. Environment failures at the edges (command line, SQLite open, bind) throw tpc::Error,
//     caught once in main and mapped to the documented exit codes.
//  3. Broken invariants and failed fsyncs stop the process: TPC_CHECK / fatal().
#pragma once
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace tpc {

class Status {
 public:
  Status() = default;  // OK
  static Status ok() { return {}; }
  static Status error(std::string code, std::string message) {
    Status s;
    s.m_code = std::move(code);
    s.m_message = std::move(message);
    return s;
  }
  bool is_ok() const { return m_code.empty(); }
  explicit operator bool() const { return is_ok(); }
  // Short machine-readable code such as "PROTO" or "TOOLONG"; empty when OK.
  const std::string& code() const { return m_code; }
  const std::string& message() const { return m_message; }
  std::string to_string() const { return is_ok() ? "OK" : m_code + ": " + m_message; }

 private:
  std::string m_code;
  std::string m_message;
};

// A value or the Status that explains why there is none.
template <typename T>
class Result {
 public:
  Result(T value) : m_v(std::move(value)) {}
  Result(Status status) : m_v(std::move(status)) {}
  bool is_ok() const { return m_v.index() == 0; }
  explicit operator bool() const { return is_ok(); }
  T& value() { return std::get<0>(m_v); }
  const T& value() const { return std::get<0>(m_v); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Status& status() const { return std::get<1>(m_v); }

 private:
  std::variant<T, Status> m_v;
};

// An environment failure at an edge; main maps it to an exit code.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, int exit_code = 1)
      : std::runtime_error(what), m_exit_code(exit_code) {}
  int exit_code() const { return m_exit_code; }

 private:
  int m_exit_code;
};

// Exit code of a server that stopped because its own storage cannot be trusted.
inline constexpr int k_exit_storage_failure = 70;

// Logs `message` at fatal level and ends the process with k_exit_storage_failure, without
// running destructors (a failed fsync must never be followed by more writes).
[[noreturn]] void fatal(const std::string& message);
// For the simulator only: runs instead of logging and exiting; it must not return (it throws
// to abandon the simulated run). nullptr restores the default.
using FatalHook = void (*)(const std::string& message);
void set_fatal_hook(FatalHook hook);

}  // namespace tpc

#define TPC_CHECK(cond, msg)                                                             \
  do {                                                                                   \
    if (!(cond)) ::tpc::fatal(std::string("invariant broken: ") + #cond + ": " + (msg)); \
  } while (0)
