#include "protocol/waker.h"

#include "common/util.h"

namespace tpc::protocol {

void Waker::arm(int64_t at_ms) {
  if (at_ms == 0 || m_stopped || (m_at != 0 && m_at <= at_ms)) return;
  m_at = at_ms;
  m_timer.expires_after(std::chrono::milliseconds(std::max<int64_t>(0, at_ms - now_ms())));
  m_timer.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    m_at = 0;
    m_on_fire();
  });
}

}  // namespace tpc::protocol
