// Wire batching: requests issued in one turn of the event loop leave in one write, and the
// replies produced in one turn come back in one write.
#include <doctest/doctest.h>

#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>

#include "protocol/link.h"
#include "protocol/session.h"

using namespace tpc;
namespace asio = boost::asio;

TEST_SUITE("protocol") {
  TEST_CASE("requests and replies of one event-loop turn share one write each") {
    asio::io_context io(1);
    protocol::SessionConfig cfg;
    cfg.role = "participant";
    cfg.id = "9";
    int handled = 0;
    protocol::Server server(io, "127.0.0.1", 0, cfg,
                            [&](const std::string& line, protocol::Reply r) {
                              ++handled;
                              r.send("ECHO " + line);
                            });
    auto link =
        std::make_shared<protocol::Link>(io, "127.0.0.1", server.port(), "HELLO tpc/2 leader 1");
    constexpr int k_n = 200;
    int replies = 0;
    bool in_order_tags = true;
    link->on_up([&] {
      // All of these are issued in this one handler.
      for (int i = 0; i < k_n; ++i)
        link->request("REQ " + std::to_string(i), [&, i](Result<std::string> r) {
          in_order_tags &= r.is_ok() && *r == "ECHO REQ " + std::to_string(i);
          if (++replies == k_n) io.stop();
        });
    });
    link->start();
    asio::steady_timer guard(io, std::chrono::seconds(10));
    guard.async_wait([&](boost::system::error_code ec) {
      if (!ec) io.stop();
    });
    io.run();
    CHECK(replies == k_n);
    CHECK(handled == k_n);
    CHECK(in_order_tags);
    // One write for the handshake, one for the whole burst of requests.
    CHECK(link->writes() == 2);
    // The server read them in a few chunks and answered each chunk's requests in one write.
    CHECK(server.writes() >= 2);
    CHECK(server.writes() <= 1 + 8);
    link->stop();
    server.stop();
  }
}
