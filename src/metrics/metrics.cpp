#include "metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

namespace tpc::metrics {

Histogram::Histogram(std::vector<double> bounds)
    : m_bounds(std::move(bounds)), m_buckets(new std::atomic<uint64_t>[m_bounds.size() + 1]) {
  for (size_t i = 0; i <= m_bounds.size(); ++i) m_buckets[i].store(0);
}

void Histogram::observe(double v) {
  size_t i = static_cast<size_t>(std::lower_bound(m_bounds.begin(), m_bounds.end(), v) -
                                 m_bounds.begin());
  m_buckets[i].fetch_add(1, std::memory_order_relaxed);
  m_count.fetch_add(1, std::memory_order_relaxed);
  m_sum.fetch_add(v, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::counts() const {
  std::vector<uint64_t> out(m_bounds.size() + 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] = m_buckets[i].load(std::memory_order_relaxed);
  return out;
}

std::vector<double> latency_buckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
          0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5, 5, 10};
}

std::vector<double> size_buckets() {
  std::vector<double> b;
  for (double v = 1; v <= 1024; v *= 2) b.push_back(v);
  return b;
}

Counter& Registry::counter(const std::string& name, const std::string& help,
                           const std::string& labels) {
  Counter& c = m_counters.emplace_back();
  m_entries.push_back({name, help, "counter", labels, &c, nullptr, {}});
  return c;
}

Histogram& Registry::histogram(const std::string& name, const std::string& help,
                               std::vector<double> bounds, const std::string& labels) {
  Histogram& h = m_histograms.emplace_back(std::move(bounds));
  m_entries.push_back({name, help, "histogram", labels, nullptr, &h, {}});
  return h;
}

void Registry::gauge(const std::string& name, const std::string& help,
                     std::function<double()> read, const std::string& labels) {
  m_entries.push_back({name, help, "gauge", labels, nullptr, nullptr, std::move(read)});
}

void Registry::counter_fn(const std::string& name, const std::string& help,
                          std::function<double()> read, const std::string& labels) {
  m_entries.push_back({name, help, "counter", labels, nullptr, nullptr, std::move(read)});
}

namespace {
std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{:.0f}", v);
  return fmt::format("{}", v);
}
std::string with(const std::string& labels, const std::string& more) {
  if (labels.empty() && more.empty()) return "";
  if (labels.empty()) return "{" + more + "}";
  if (more.empty()) return "{" + labels + "}";
  return "{" + labels + "," + more + "}";
}
}  // namespace

std::string Registry::render() const {
  if (m_before_render) m_before_render();
  // Families in the order they were first registered, all samples of a family together.
  std::vector<std::string> order;
  std::map<std::string, std::vector<const Entry*>> families;
  for (const auto& e : m_entries) {
    auto& f = families[e.name];
    if (f.empty()) order.push_back(e.name);
    f.push_back(&e);
  }
  std::string out;
  for (const auto& name : order) {
    const auto& f = families[name];
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, f[0]->help, name, f[0]->type);
    for (const Entry* e : f) {
      if (e->histogram) {
        auto counts = e->histogram->counts();
        uint64_t cum = 0;
        const auto& b = e->histogram->bounds();
        for (size_t i = 0; i < counts.size(); ++i) {
          cum += counts[i];
          std::string le = i < b.size() ? number(b[i]) : "+Inf";
          out += fmt::format("{}_bucket{} {}\n", name, with(e->labels, "le=\"" + le + "\""), cum);
        }
        out += fmt::format("{}_sum{} {}\n", name, with(e->labels, ""), number(e->histogram->sum()));
        out += fmt::format("{}_count{} {}\n", name, with(e->labels, ""), cum);
      } else {
        double v = e->counter ? static_cast<double>(e->counter->value()) : e->read();
        out += fmt::format("{}{} {}\n", name, with(e->labels, ""), number(v));
      }
    }
  }
  return out;
}

std::string label_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace tpc::metrics
