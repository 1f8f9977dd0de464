// Metrics in Prometheus' text exposition format (docs/monitoring.md): counters and histograms
// updated without locks (relaxed atomics, so also from the log's writer thread), gauges read
// when scraped. A Registry owns them and renders /metrics.
#pragma once
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tpc::metrics {

class Counter {
 public:
  void inc(uint64_t n = 1) { m_v.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return m_v.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> m_v{0};
};

class Histogram {
 public:
  // `bounds`: the buckets' upper bounds, increasing; +Inf is added.
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  const std::vector<double>& bounds() const { return m_bounds; }
  // Per bucket (not cumulative), the last one +Inf.
  std::vector<uint64_t> counts() const;
  uint64_t count() const { return m_count.load(std::memory_order_relaxed); }
  double sum() const { return m_sum.load(std::memory_order_relaxed); }

 private:
  std::vector<double> m_bounds;
  std::unique_ptr<std::atomic<uint64_t>[]> m_buckets;
  std::atomic<uint64_t> m_count{0};
  std::atomic<double> m_sum{0};
};

// Seconds: 100 us to 10 s, about three per decade.
std::vector<double> latency_buckets();
// Counts: 1 to 1024, powers of two.
std::vector<double> size_buckets();

class Registry {
 public:
  // `labels`: "" or `name="value",...` (values escaped by the caller: tpc's are fixed words).
  // The references stay valid as long as the registry.
  Counter& counter(const std::string& name, const std::string& help,
                   const std::string& labels = "");
  Histogram& histogram(const std::string& name, const std::string& help,
                       std::vector<double> bounds, const std::string& labels = "");
  // Read when scraped, on the thread that renders (the server's own).
  void gauge(const std::string& name, const std::string& help, std::function<double()> read,
             const std::string& labels = "");
  void counter_fn(const std::string& name, const std::string& help,
                  std::function<double()> read, const std::string& labels = "");
  // Runs first at each render: a server takes the one snapshot its gauges read.
  void before_render(std::function<void()> f) { m_before_render = std::move(f); }
  // Text exposition format 0.0.4: each family's HELP and TYPE once, then its samples.
  std::string render() const;

 private:
  struct Entry {
    std::string name, help, type, labels;
    Counter* counter = nullptr;
    Histogram* histogram = nullptr;
    std::function<double()> read;
  };
  std::vector<Entry> m_entries;
  std::function<void()> m_before_render;
  std::deque<Counter> m_counters;
  std::deque<Histogram> m_histograms;
};

// Escapes a label value (backslash, double quote, newline).
std::string label_value(const std::string& v);

}  // namespace tpc::metrics
