// One timer for a protocol core's ticks. The core says when it next wants a tick; the pump
// arms the waker with that time, and an earlier request re-arms it. Single-threaded: call it
// on the io_context's thread; `on_fire` runs there.
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <cstdint>
#include <functional>

namespace tpc::protocol {

class Waker {
 public:
  Waker(boost::asio::io_context& io, std::function<void()> on_fire)
      : m_timer(io), m_on_fire(std::move(on_fire)) {}
  // Fires at `at_ms` (monotonic now_ms() time) unless already armed for no later; 0: nothing.
  void arm(int64_t at_ms);
  void cancel() {
    m_stopped = true;
    m_timer.cancel();
  }

 private:
  boost::asio::steady_timer m_timer;
  std::function<void()> m_on_fire;
  int64_t m_at = 0;  // when the timer fires; 0: not armed
  bool m_stopped = false;
};

}  // namespace tpc::protocol
