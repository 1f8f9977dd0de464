#include "metrics/node.h"

#include "common/util.h"
#include "txlog/log.h"

namespace tpc::metrics {

NodeMetrics::NodeMetrics(const std::string& role, const std::string& id)
    : accepted(registry.counter("tpc_connections_accepted_total",
                                "Connections accepted on the protocol port.")),
      refused(registry.counter("tpc_connections_refused_total",
                               "Connections refused: over --max-connections, or their handshake "
                               "(version, cluster, role, certificate).")),
      log_force(registry.histogram("tpc_log_force_seconds",
                                   "Duration of each fdatasync of the transaction log.",
                                   latency_buckets())),
      log_batch(registry.histogram("tpc_log_force_batch_records",
                                   "Records made durable by one fdatasync (group commit).",
                                   size_buckets())) {
  double start = static_cast<double>(wall_ms()) / 1000.0;
  registry.gauge("tpc_process_start_time_seconds", "Start time of the process, Unix seconds.",
                 [start] { return start; });
  registry.gauge("tpc_node_info", "This node: its role and id.", [] { return 1.0; },
                 "role=\"" + label_value(role) + "\",id=\"" + label_value(id) + "\"");
}

void NodeMetrics::watch(txlog::Log& log) {
  log.set_observer(this);
  registry.gauge("tpc_log_bytes", "Size of the transaction log file.",
                 [&log] { return static_cast<double>(log.stats().bytes); });
  registry.counter_fn("tpc_log_syncs_total", "fdatasyncs of the transaction log.",
                      [&log] { return static_cast<double>(log.stats().syncs); });
  registry.counter_fn("tpc_log_rewrites_total",
                      "Rewrites of the transaction log down to its live records.",
                      [&log] { return static_cast<double>(log.stats().rewrites); });
}

void NodeMetrics::synced(double seconds, size_t records) {
  log_force.observe(seconds);
  if (records) log_batch.observe(static_cast<double>(records));
}

void NodeMetrics::connections(std::function<double()> open) {
  registry.gauge("tpc_connections_open", "Connections open on the protocol port.",
                 std::move(open));
}

void NodeMetrics::serve(boost::asio::io_context& io, const std::string& host_port,
                        std::function<std::string()> health) {
  http = std::make_unique<HttpServer>(io, host_port, registry, std::move(health));
}

}  // namespace tpc::metrics
