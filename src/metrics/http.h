// The metrics endpoint: a small HTTP/1.1 server (Boost.Beast) on --metrics-addr serving
// GET /metrics (Prometheus text exposition 0.0.4) and GET /healthz ("ok", or 503 and why).
// On the server's own io_context and thread: gauges read there need no lock.
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <functional>
#include <memory>
#include <string>

#include "metrics/metrics.h"

namespace tpc::metrics {

class HttpServer {
 public:
  // Health: "" when healthy, else why not. Throws tpc::Error (exit 2) when HOST:PORT is bad
  // or cannot be bound.
  HttpServer(boost::asio::io_context& io, const std::string& host_port, const Registry& registry,
             std::function<std::string()> health);
  ~HttpServer();
  uint16_t port() const;
  void stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> m;
};

}  // namespace tpc::metrics
