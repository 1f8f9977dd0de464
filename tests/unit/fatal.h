// Turns tpc::fatal() into an exception for the duration of one call, so a test can check that
// a broken invariant stops the node (and with which message) without ending the test run.
#pragma once
#include <stdexcept>
#include <string>

#include "common/status.h"

namespace tpc::test {
struct FatalThrown : std::runtime_error {
  using std::runtime_error::runtime_error;
};
[[noreturn]] inline void throw_fatal(const std::string& m) { throw FatalThrown(m); }
// Runs `f`; returns the message of the fatal() it hit, empty if none.
template <typename F>
std::string fatal_of(F f) {
  set_fatal_hook(throw_fatal);
  std::string msg;
  try {
    f();
  } catch (const FatalThrown& e) {
    msg = e.what();
  }
  set_fatal_hook(nullptr);
  return msg;
}
}  // namespace tpc::test
