// The metrics endpoint (docs/monitoring.md): valid Prometheus text exposition on every node of
// `tpc cluster`, counters that move under load, /healthz.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "harness.h"

using namespace tpc;
using namespace tpc::it;

namespace {
// Checks `text` against the text exposition format 0.0.4 (as Prometheus parses it): HELP and
// TYPE before a family's samples, metric and label names, label quoting, values; counters end
// in _total; histogram buckets cumulative, ending at +Inf equal to _count. Returns the problems
// (none: valid) and fills `values`: "name{labels}" -> value.
std::vector<std::string> check_exposition(const std::string& text,
                                          std::map<std::string, double>& values) {
  std::vector<std::string> bad;
  static const std::regex help(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$)");
  static const std::regex type(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$)");
  static const std::regex sample(
      R"re(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*")*\})? ([-+0-9.eE]+|\+Inf|-Inf|NaN)$)re");
  std::map<std::string, std::string> types;
  std::set<std::string> helped;
  std::map<std::string, double> last_bucket;  // histogram series -> last cumulative count
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    std::smatch m;
    if (line.empty()) continue;
    if (std::regex_match(line, m, help)) {
      if (!helped.insert(m[1]).second) bad.push_back("HELP twice: " + line);
    } else if (std::regex_match(line, m, type)) {
      if (types.count(m[1])) bad.push_back("TYPE twice: " + line);
      if (!helped.count(m[1])) bad.push_back("TYPE before HELP: " + line);
      types[m[1]] = m[2];
      if (m[2] == "counter" && !std::regex_search(std::string(m[1]), std::regex("_total$")))
        bad.push_back("a counter not named _total: " + line);
    } else if (std::regex_match(line, m, sample)) {
      std::string name = m[1];
      std::string family = std::regex_replace(name, std::regex("_(bucket|sum|count)$"), "");
      if (!types.count(name) && !(types.count(family) && types[family] == "histogram"))
        bad.push_back(fmt::format("line {}: a sample before its TYPE: {}", n, line));
      double v = m[7] == "+Inf" ? 1e308 : std::stod(m[7]);
      values[name + std::string(m[2])] = v;
      if (name.size() > 7 && name.substr(name.size() - 7) == "_bucket") {
        std::string series =
            std::regex_replace(std::string(m[2]), std::regex(R"(,?le="[^"]*")"), "");
        if (series == "{}") series.clear();
        if (v < last_bucket[family + series]) bad.push_back("buckets not cumulative: " + line);
        last_bucket[family + series] = v;
      }
      if (name.size() > 6 && name.substr(name.size() - 6) == "_count" &&
          types[family] == "histogram" && last_bucket[family + std::string(m[2])] != v)
        bad.push_back("+Inf bucket differs from _count: " + line);
    } else {
      bad.push_back(fmt::format("line {} is not exposition format: {}", n, line));
    }
  }
  return bad;
}

double sum_of(const std::map<std::string, double>& v, const std::string& prefix) {
  double s = 0;
  for (auto& [k, x] : v)
    if (k.rfind(prefix, 0) == 0) s += x;
  return s;
}
}  // namespace

TEST_SUITE("metrics") {
  TEST_CASE("the exposition checker refuses what Prometheus would") {
    std::map<std::string, double> v;
    CHECK(check_exposition("# HELP a_total x\n# TYPE a_total counter\na_total 3\n", v).empty());
    CHECK(v["a_total"] == 3);
    CHECK_FALSE(check_exposition("a_total 3\n", v).empty());  // no TYPE
    CHECK_FALSE(check_exposition("# HELP a x\n# TYPE a counter\na 1\n", v).empty());  // _total
    CHECK_FALSE(check_exposition("# HELP g x\n# TYPE g gauge\ng{l=\"x} 1\n", v).empty());
    CHECK_FALSE(check_exposition("# HELP g x\n# TYPE g gauge\ng one\n", v).empty());
    CHECK_FALSE(check_exposition(
                    "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} "
                    "1\nh_sum 1\nh_count 1\n",
                    v)
                    .empty());  // not cumulative
  }

  TEST_CASE("tpc cluster: every node serves valid /metrics whose counters move, and /healthz") {
    Scratch s;
    uint16_t base = free_port_run(2 + 1 + 3);  // 2 participants, a leader, their metrics
    Process cluster({TPC_BINARY, "cluster", "--port", std::to_string(base), "--data-dir",
                     s.path() + "/data", "--log-level", "warn", "--insecure"},
                    s.path() + "/cluster.log");
    REQUIRE(wait_for_text(s.path() + "/cluster.log", "tpc cluster is up", 20000));
    std::string banner = read_file(s.path() + "/cluster.log");
    // Participants 1, 2 on base+3, base+4, the leader on base+5.
    CHECK(banner.find(fmt::format("http://127.0.0.1:{}/metrics", base + 3)) != std::string::npos);
    uint16_t p1 = static_cast<uint16_t>(base + 3), leader = static_cast<uint16_t>(base + 5);
    std::map<std::string, double> before_l, before_p;
    auto [st0, body0] = http_get(leader, "/metrics");
    CHECK(st0 == "HTTP/1.0 200 OK");
    CHECK(check_exposition(body0, before_l).empty());
    CHECK(check_exposition(http_get(p1, "/metrics").second, before_p).empty());
    std::string leader_addr = fmt::format("127.0.0.1:{}", base);
    for (int i = 0; i < 20; ++i)
      REQUIRE(run_tpc({"client", "--leader", leader_addr, "put", fmt::format("k{}", i), "v"}).code ==
              0);
    auto conflict = run_tpc({"client", "--leader", leader_addr, "txn", "check", "k0", "other"});
    CHECK(conflict.code == 3);
    std::map<std::string, double> after_l, after_p;
    auto body_l = http_get(leader, "/metrics").second;
    auto body_p = http_get(p1, "/metrics").second;
    auto problems = check_exposition(body_l, after_l);
    for (auto& p : check_exposition(body_p, after_p)) problems.push_back(p);
    for (auto& p : problems) MESSAGE(p);
    CHECK(problems.empty());
    // The leader: 20 more commits, one CHECK abort, as many commit latencies observed.
    CHECK(after_l["tpc_transactions_total{outcome=\"committed\"}"] -
              before_l["tpc_transactions_total{outcome=\"committed\"}"] ==
          20);
    CHECK(after_l["tpc_transaction_aborts_total{reason=\"CHECK\"}"] -
              before_l["tpc_transaction_aborts_total{reason=\"CHECK\"}"] ==
          1);
    CHECK(after_l["tpc_commit_seconds_count"] - before_l["tpc_commit_seconds_count"] == 20);
    CHECK(after_l["tpc_log_syncs_total"] > before_l["tpc_log_syncs_total"]);
    CHECK(after_l["tpc_log_force_seconds_count"] >= 20);
    CHECK(after_l["tpc_connections_accepted_total"] > before_l["tpc_connections_accepted_total"]);
    CHECK(after_l["tpc_node_info{role=\"leader\",id=\"1\"}"] == 1);
    // A participant: its votes, commits and keys (full replication: all 20 keys here).
    CHECK(after_p["tpc_prepares_total{vote=\"yes\"}"] - before_p["tpc_prepares_total{vote=\"yes\"}"] >=
          20);
    CHECK(after_p["tpc_commits_total"] - before_p["tpc_commits_total"] == 20);
    CHECK(after_p["tpc_keys"] == 20);
    CHECK(after_p["tpc_in_doubt"] == 0);
    CHECK(after_p["tpc_prepare_seconds_count"] > before_p["tpc_prepare_seconds_count"]);
    CHECK(sum_of(after_p, "tpc_log_force_batch_records_count") > 0);
    // Health, and what is not served.
    auto [hs, hb] = http_get(leader, "/healthz");
    CHECK(hs == "HTTP/1.0 200 OK");
    CHECK(hb == "ok\n");
    CHECK(http_get(leader, "/nothing").first == "HTTP/1.0 404 Not Found");
    CHECK(cluster.terminate(10000) == 0);
  }
}
