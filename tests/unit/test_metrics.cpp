// The metrics module alone: Prometheus' text exposition as a scraper reads it.
#include <doctest/doctest.h>

#include <thread>

#include "metrics/metrics.h"
#include "metrics/node.h"

using namespace tpc::metrics;

namespace {
bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}
}  // namespace

TEST_SUITE("metrics") {
  TEST_CASE("counters, gauges and families render once each, HELP and TYPE first") {
    Registry r;
    auto& yes = r.counter("tpc_votes_total", "Votes.", "vote=\"yes\"");
    auto& no = r.counter("tpc_votes_total", "Votes.", "vote=\"no\"");
    double open = 7;
    r.gauge("tpc_open", "Open things.", [&] { return open; });
    yes.inc();
    yes.inc(2);
    no.inc();
    open = 9;
    std::string t = r.render();
    CHECK(has_line(t, "# HELP tpc_votes_total Votes."));
    CHECK(has_line(t, "# TYPE tpc_votes_total counter"));
    CHECK(has_line(t, "tpc_votes_total{vote=\"yes\"} 3"));
    CHECK(has_line(t, "tpc_votes_total{vote=\"no\"} 1"));
    CHECK(has_line(t, "# TYPE tpc_open gauge"));
    CHECK(has_line(t, "tpc_open 9"));  // read when scraped, not when registered
    // One HELP per family, before its samples.
    size_t help = t.find("# HELP tpc_votes_total");
    CHECK(t.find("# HELP tpc_votes_total", help + 1) == std::string::npos);
    CHECK(help < t.find("tpc_votes_total{"));
  }

  TEST_CASE("a histogram's buckets are cumulative, +Inf equals the count, the sum adds up") {
    Registry r;
    auto& h = r.histogram("tpc_wait_seconds", "Waits.", {0.001, 0.01, 0.1});
    for (double v : {0.0005, 0.001, 0.005, 0.05, 0.5, 2.0}) h.observe(v);
    std::string t = r.render();
    CHECK(has_line(t, "# TYPE tpc_wait_seconds histogram"));
    CHECK(has_line(t, "tpc_wait_seconds_bucket{le=\"0.001\"} 2"));  // le: less or equal
    CHECK(has_line(t, "tpc_wait_seconds_bucket{le=\"0.01\"} 3"));
    CHECK(has_line(t, "tpc_wait_seconds_bucket{le=\"0.1\"} 4"));
    CHECK(has_line(t, "tpc_wait_seconds_bucket{le=\"+Inf\"} 6"));
    CHECK(has_line(t, "tpc_wait_seconds_count 6"));
    CHECK(h.count() == 6);
    CHECK(h.sum() == doctest::Approx(2.5565));
    auto c = h.counts();
    REQUIRE(c.size() == 4);
    CHECK(c[0] == 2);
    CHECK(c[3] == 2);
  }

  TEST_CASE("observations from several threads are all counted") {
    Histogram h(size_buckets());
    Counter n;
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([&] {
        for (int i = 0; i < 10000; ++i) {
          h.observe(static_cast<double>(i % 2000));
          n.inc();
        }
      });
    for (auto& t : ts) t.join();
    CHECK(h.count() == 40000);
    CHECK(n.value() == 40000);
    uint64_t total = 0;
    for (auto c : h.counts()) total += c;
    CHECK(total == 40000);
  }

  TEST_CASE("label values are escaped: backslash, quote, newline") {
    CHECK(label_value("a\\b\"c\nd") == "a\\\\b\\\"c\\nd");
    CHECK(label_value("plain-1.2") == "plain-1.2");
  }

  TEST_CASE("a node's log syncs land in its two log histograms") {
    NodeMetrics m("participant", "3");
    m.synced(0.002, 5);
    m.synced(0.004, 0);  // a sync with no record (a lazy flush) counts its time only
    CHECK(m.log_force.count() == 2);
    CHECK(m.log_batch.count() == 1);
    CHECK(m.log_batch.sum() == doctest::Approx(5));
    std::string t = m.registry.render();
    CHECK(t.find("tpc_node_info{role=\"participant\",id=\"3\"} 1") != std::string::npos);
  }
}
