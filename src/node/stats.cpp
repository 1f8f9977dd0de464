#include "node/stats.h"

#include <variant>

#include <fmt/format.h>

#include "common/util.h"
#include "protocol/messages.h"

namespace tpc::node {

namespace {
enum Who { both, leader, participant };
struct Field {
  const char* name;
  Who who;
  std::variant<std::string Stats::*, int64_t Stats::*> member;
};
// The STATS line's fields, in its order. peers_up is written "UP/ALL" (see encode).
const Field k_fields[] = {
    {"id", both, &Stats::id},
    {"cluster", both, &Stats::cluster},
    {"node", both, &Stats::node},
    {"incarnation", leader, &Stats::incarnation},
    {"replicas", leader, &Stats::replicas},
    {"keys", participant, &Stats::keys},
    {"committed", both, &Stats::committed},
    {"aborted", both, &Stats::aborted},
    {"active", leader, &Stats::active},
    {"in_doubt", participant, &Stats::prepared},
    {"applying", participant, &Stats::applying},
    {"oldest_in_doubt_ms", participant, &Stats::oldest_in_doubt_ms},
    {"heuristic", both, &Stats::heuristic},
    {"peers_up", leader, &Stats::peers_up},
    {"epoch", both, &Stats::epoch},
    {"in_sync", leader, &Stats::in_sync},
    {"catching_up", leader, &Stats::catching_up},
    {"out", leader, &Stats::out},
    {"exclusions", leader, &Stats::exclusions},
    {"rejoins", leader, &Stats::rejoins},
    {"caught_up_keys", leader, &Stats::caught_up_keys},
    {"caught_up_bytes", leader, &Stats::caught_up_bytes},
    {"copying_keys", leader, &Stats::copying_keys},
    {"copying_bytes", leader, &Stats::copying_bytes},
    {"catchup_ms", leader, &Stats::catchup_ms},
    {"last_catchup_ms", leader, &Stats::last_catchup_ms},
    {"log_bytes", both, &Stats::log_bytes},
    {"log_syncs", both, &Stats::log_syncs},
    {"uptime_ms", both, &Stats::uptime_ms},
    {"decisions", leader, &Stats::decisions},
    {"store", leader, &Stats::store},
};

bool reports(const Field& f, const std::string& role) {
  return f.who == both || (f.who == leader) == (role == "leader");
}
}  // namespace

std::string encode(const Stats& s) {
  std::string line = "STATS";
  for (const auto& f : k_fields) {
    if (!reports(f, s.role)) continue;
    std::string value;
    if (auto* str = std::get_if<std::string Stats::*>(&f.member)) {
      value = s.*(*str);
      if (value.empty()) {
        if (std::string_view(f.name) != "cluster") continue;  // store= only with etcd
        value = "-";                                          // a participant not joined yet
      }
    } else {
      value = std::string_view(f.name) == "peers_up"
                  ? fmt::format("{}/{}", s.peers_up, s.peers)
                  : std::to_string(s.*std::get<int64_t Stats::*>(f.member));
    }
    line += fmt::format(" {}={}", f.name, value);
  }
  return line;
}

Result<Stats> decode_stats(std::string_view line) {
  if (line.substr(0, 6) != "STATS " && line != "STATS")
    return Status::error("PROTO", "not a STATS line");
  auto fields = protocol::parse_fields(line);
  Stats s;
  s.role = fields.count("decisions") || fields.count("incarnation") ? "leader" : "participant";
  for (const auto& f : k_fields) {
    auto it = fields.find(f.name);
    if (it == fields.end() || !reports(f, s.role)) continue;
    const std::string& v = it->second;
    if (auto* str = std::get_if<std::string Stats::*>(&f.member)) {
      s.*(*str) = v == "-" && std::string_view(f.name) == "cluster" ? std::string() : v;
      continue;
    }
    std::string number = v;
    if (std::string_view(f.name) == "peers_up") {
      auto slash = v.find('/');
      auto all = slash == std::string::npos ? std::nullopt : parse_int(v.substr(slash + 1));
      if (!all) return Status::error("PROTO", "STATS: peers_up=" + v + " is not UP/ALL");
      s.peers = *all;
      number = v.substr(0, slash);
    }
    auto n = parse_int(number);
    if (!n) return Status::error("PROTO", fmt::format("STATS: {}={} is not a number", f.name, v));
    s.*std::get<int64_t Stats::*>(f.member) = *n;
  }
  return s;
}

}  // namespace tpc::node
