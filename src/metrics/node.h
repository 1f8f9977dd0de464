// What every tpc server exposes (docs/monitoring.md): process, connections, its log; each role
// adds its own families to `registry`, then calls serve().
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <functional>
#include <memory>
#include <string>

#include "metrics/http.h"
#include "metrics/metrics.h"
#include "txlog/log.h"

namespace tpc::metrics {

struct NodeMetrics : txlog::Log::SyncObserver {
  // `role`, `id`: for tpc_node_info.
  NodeMetrics(const std::string& role, const std::string& id);
  Registry registry;
  Counter& accepted;
  Counter& refused;
  Histogram& log_force;
  Histogram& log_batch;
  // Log size, syncs and rewrites read from `log` when scraped; its syncs observed.
  void watch(txlog::Log& log);
  void synced(double seconds, size_t records) override;
  // Connections open now, read when scraped.
  void connections(std::function<double()> open);
  // Starts the endpoint on HOST:PORT (throws tpc::Error, exit 2).
  void serve(boost::asio::io_context& io, const std::string& host_port,
             std::function<std::string()> health);
  uint16_t port() const { return http ? http->port() : 0; }
  void stop() {
    if (http) http->stop();
  }
  std::unique_ptr<HttpServer> http;
};

}  // namespace tpc::metrics
