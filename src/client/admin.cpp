// tpc client status, in-doubt and resolve: operator tools that talk to the leader and, where
// needed, to the participants directly.
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "client/client.h"
#include "client/connection.h"
#include "common/util.h"
#include "node/stats.h"
#include "protocol/codec.h"
#include "protocol/messages.h"

namespace tpc::client {

namespace {

std::optional<std::string> ask(const std::string& addr, const std::string& line,
                               int timeout_ms = 2000) {
  auto c = Connection::open(addr, timeout_ms, "admin");
  if (!c) return std::nullopt;
  auto r = c->call(line, timeout_ms);
  if (!r) return std::nullopt;
  return *r;
}

std::string human_bytes(const std::string& s) {
  auto n = parse_int(s);
  if (!n) return "-";
  double b = static_cast<double>(*n);
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  int u = 0;
  while (b >= 1024 && u < 3) b /= 1024, ++u;
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.1f} {}", b, units[u]);
}
std::string human_ms(const std::string& s) {
  auto n = parse_int(s);
  if (!n) return "-";
  long long ms = *n;
  if (ms < 1000) return fmt::format("{}ms", ms);
  long long sec = ms / 1000;
  if (sec < 60) return fmt::format("{:.1f}s", ms / 1000.0);
  if (sec < 3600) return fmt::format("{}m{:02}s", sec / 60, sec % 60);
  return fmt::format("{}h{:02}m", sec / 3600, (sec / 60) % 60);
}
// A JSON string of data (a key): its display escaping (docs/protocol.md), which reads back.
std::string json_key(const std::string& k) {
  return protocol::json_string(protocol::escape_display(k));
}

// Participant addresses: from the leader, else from --peers.
std::vector<std::string> participants(const Options& o, bool* leader_up, std::ostream& err) {
  std::vector<std::string> out;
  auto r = ask(o.leader, "PEERS");
  *leader_up = r.has_value();
  if (r) {
    for (auto& p : protocol::parse_peers(*r)) out.push_back(p.addr);
    return out;
  }
  if (o.peers.empty()) {
    err << "leader " << o.leader
        << " is unreachable; name the participants with --peers HOST:PORT[,HOST:PORT...]\n";
    return out;
  }
  return split_list(o.peers, ',');
}

struct InDoubt {
  std::string txid, rid, leader, leader_addr;
  long long age_ms = 0;
  std::set<std::string> keys;
  std::vector<std::string> holders;
};

// Collects INDOUBT from every participant; `down` gets the unreachable ones.
std::map<std::string, InDoubt> collect(const std::vector<std::string>& parts,
                                       std::vector<std::string>* down) {
  std::map<std::string, InDoubt> all;
  for (auto& p : parts) {
    auto r = ask(p, "INDOUBT");
    if (!r) {
      down->push_back(p);
      continue;
    }
    std::string line = *r;
    auto t = protocol::split(line);
    size_t i = 2;
    while (i + 5 < t.size()) {
      InDoubt d;
      d.txid = std::string(t[i]);
      d.rid = t[i + 1] == "-" ? std::string() : std::string(t[i + 1]);
      d.leader = std::string(t[i + 2]);
      d.leader_addr = std::string(t[i + 3]);
      auto age = parse_int(t[i + 4]);
      auto count = parse_int(t[i + 5]);
      if (!age || !count || *count < 0) break;  // a malformed reply: keep what was read
      d.age_ms = *age;
      size_t nk = static_cast<size_t>(*count);
      i += 6;
      auto& e = all[d.txid];
      if (e.txid.empty()) e = d;
      e.age_ms = std::max(e.age_ms, d.age_ms);
      for (size_t k = 0; k < nk && i < t.size(); ++k, ++i) {
        auto key = protocol::unescape(t[i]);
        if (key) e.keys.insert(*key);
      }
      e.holders.push_back(p);
    }
  }
  return all;
}
}  // namespace

namespace {
// The leader's MEMBERS line: (id, address, state) of each participant; empty when no leader
// answers or the line is malformed.
struct Member {
  std::string id, addr, state;
};
std::vector<Member> parse_members(const std::string& line, uint64_t* epoch) {
  auto t = protocol::split(line);
  std::vector<Member> out;
  if (t.size() < 2 || t[0] != "MEMBERS" || (t.size() - 2) % 3 != 0) return out;
  auto e = parse_int(t[1]);
  if (!e) return out;
  if (epoch) *epoch = static_cast<uint64_t>(*e);
  for (size_t i = 2; i + 2 < t.size(); i += 3)
    out.push_back({std::string(t[i]), std::string(t[i + 1]), std::string(t[i + 2])});
  return out;
}
// The first leader of --leader that answers MEMBERS.
std::optional<std::string> ask_members(const Options& o) {
  for (const auto& addr : split_list(o.leader, ','))
    if (auto m = ask(addr, "MEMBERS")) return m;
  return std::nullopt;
}
}  // namespace

int run_member_list(const Options& o, bool json, std::ostream& out, std::ostream& err) {
  auto line = ask_members(o);
  uint64_t epoch = 0;
  auto members = line ? parse_members(*line, &epoch) : std::vector<Member>{};
  if (members.empty()) {
    err << "leader " << o.leader << " is unreachable (or too old to list members)\n";
    return k_unknown;
  }
  std::vector<std::string> keys;  // "" when its STATS did not come
  for (auto& m : members) {
    auto st = ask(m.addr, "STATS");
    auto s = st ? node::decode_stats(*st) : Result<node::Stats>(Status::error("DOWN", ""));
    keys.push_back(s ? std::to_string(s->keys) : std::string());
  }
  if (json) {
    std::string s = fmt::format("{{\"epoch\":{},\"members\":[", epoch);
    for (size_t i = 0; i < members.size(); ++i)
      s += fmt::format("{}{{\"id\":{},\"address\":{},\"state\":{},\"keys\":{}}}", i ? "," : "",
                       members[i].id == "-" ? "null" : protocol::json_string(members[i].id),
                       protocol::json_string(members[i].addr),
                       protocol::json_string(members[i].state), keys[i].empty() ? "null" : keys[i]);
    out << s << "]}\n";
    return k_ok;
  }
  out << fmt::format("{:<4} {:<22} {:<12} {:>8}\n", "ID", "ADDRESS", "STATE", "KEYS");
  for (size_t i = 0; i < members.size(); ++i)
    out << fmt::format("{:<4} {:<22} {:<12} {:>8}\n", members[i].id, members[i].addr,
                       members[i].state, keys[i].empty() ? "-" : keys[i]);
  out << fmt::format("epoch {}\n", epoch);
  return k_ok;
}

int run_member_change(const Options& o, const std::string& request, std::ostream& out,
                      std::ostream& err) {
  constexpr int64_t k_wait_ms = 30 * 60 * 1000;
  int64_t deadline = now_ms() + std::max<int64_t>(k_wait_ms, o.timeout_ms);
  auto leaders = split_list(o.leader, ',');
  std::string last_error = "no leader answered";
  for (size_t attempt = 0; now_ms() < deadline; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));  // backoff
    const std::string& addr = leaders[attempt % leaders.size()];
    auto c = Connection::open(addr, 2000, "admin");
    if (!c) {
      last_error = fmt::format("leader {}: {}", addr, c.status().message());
      continue;
    }
    auto r = c->call(request, static_cast<int>(std::max<int64_t>(1, deadline - now_ms())));
    if (!r) {  // the leader went away (restarted?): the change goes on; ask again
      last_error = fmt::format("leader {}: {}", addr, r.status().message());
      continue;
    }
    auto t = protocol::split(*r);
    if (!t.empty() && t[0] == "OK") {
      out << (r->size() > 3 ? protocol::unescape_text(r->substr(3)) : std::string("done")) << "\n";
      return k_ok;
    }
    err << "member: " << protocol::escape_display(*r) << "\n";
    if (t.size() >= 2 && t[1] == "NOTFOUND") return k_not_found;
    if (t.size() >= 2 && (t[1] == "DENIED" || t[1] == "PROTO")) return k_usage;
    // Refused, or an add rolled back (the new participant unreachable): nothing changed.
    if (t.size() >= 2 && (t[1] == "STATE" || t[1] == "UNAVAILABLE")) return k_aborted;
    return k_unknown;
  }
  err << "member: " << last_error
      << "; the change may still finish (tpc client member list shows it)\n";
  return k_unknown;
}

namespace {
// One node's row of `tpc client status`, from its STATS line.
struct StatusRow {
  std::string role, addr;
  bool up = false;      // its STATS came
  node::Stats s;        // decoded from it
  std::string refused;  // why the leader refuses this participant
  std::string member;   // a participant's state in the membership ("": not known)
};
// What `status` shows: a snapshot of every node, taken once; the table and --json are two
// renderings of it.
struct StatusSnapshot {
  std::vector<StatusRow> rows;
  std::optional<node::Stats> leader;  // the first leader that answered
  int down = 0;                       // nodes down or refused
};

// A node's STATS, decoded; nullopt when it did not answer or answered something else.
std::optional<node::Stats> ask_stats(const std::string& addr) {
  auto st = ask(addr, "STATS");
  if (!st) return std::nullopt;
  auto s = node::decode_stats(*st);
  if (!s) return std::nullopt;
  return *s;
}

// Asks every leader listed, then the participants (from the first leader that answers, else
// from --peers). Empty when no leader answers and no --peers was given.
std::optional<StatusSnapshot> take_status(const Options& o, bool json, std::ostream& err) {
  StatusSnapshot snap;
  std::optional<std::string> peers;
  for (const auto& addr : split_list(o.leader, ',')) {
    auto st = ask_stats(addr);
    if (st && !snap.leader) {
      snap.leader = st;
      peers = ask(addr, "PEERS");
    }
    snap.rows.push_back({"leader", addr, st.has_value(), st.value_or(node::Stats{}), "", ""});
    snap.down += !st;
  }
  std::vector<protocol::PeerState> parts;
  if (peers) parts = protocol::parse_peers(*peers);
  std::vector<Member> members;
  if (snap.leader)
    if (auto m = ask_members(o)) members = parse_members(*m, nullptr);
  if (!snap.leader || !peers) {
    // The leader is down: the participants named by --peers are asked directly.
    if (o.peers.empty()) {
      err << "leader " << o.leader
          << " is unreachable (--peers HOST:PORT,... reports the participants directly)\n";
      if (!json) return std::nullopt;
    } else {
      err << "leader " << o.leader << " is unreachable; the participants of --peers:\n";
      for (const auto& a : split_list(o.peers, ',')) parts.push_back({a, "", ""});
    }
  }
  for (auto& p : parts) {
    auto st = ask_stats(p.addr);
    std::string member;
    for (auto& m : members)
      if (m.addr == p.addr) member = m.state;
    snap.rows.push_back({"participant", p.addr, st.has_value(), st.value_or(node::Stats{}),
                         p.state == "refused" ? p.reason : "", member});
    snap.down += !st || p.state == "refused";
  }
  return snap;
}

void status_json(const StatusSnapshot& snap, std::ostream& out) {
  std::string s = "{\"nodes\":[";
  for (size_t i = 0; i < snap.rows.size(); ++i) {
    auto& r = snap.rows[i];
    bool leader = r.role == "leader";
    // null for what a node down did not say, and for what its role has not.
    auto num = [&](int64_t v, bool has = true) {
      return r.up && has ? std::to_string(v) : std::string("null");
    };
    s += fmt::format(
        "{}{{\"role\":\"{}\",\"id\":{},\"address\":{},\"up\":{},\"refused\":{},"
        "\"keys\":{},\"committed\":{},"
        "\"aborted\":{},\"in_doubt\":{},\"heuristic\":{},\"log_bytes\":{},"
        "\"uptime_ms\":{}{}{}}}",
        i ? "," : "", r.role, r.up ? protocol::json_string(r.s.id) : "null",
        protocol::json_string(r.addr), r.up ? "true" : "false",
        r.refused.empty() ? "null" : protocol::json_string(r.refused), num(r.s.keys, !leader),
        num(r.s.committed), num(r.s.aborted), num(leader ? r.s.active : r.s.in_doubt()),
        num(r.s.heuristic), num(r.s.log_bytes), num(r.s.uptime_ms),
        r.up && leader
            ? fmt::format(",\"decisions\":{},\"store_up\":{}", protocol::json_string(r.s.decisions),
                          r.s.store == "up" ? "true" : "false")
            : std::string(),
        r.member.empty() ? std::string() : ",\"member\":" + protocol::json_string(r.member));
  }
  s += "]";
  if (snap.leader) s += ",\"cluster\":" + protocol::json_string(snap.leader->cluster);
  s += "}";
  out << s << "\n";
}

void status_table(const StatusSnapshot& snap, std::ostream& out) {
  out << fmt::format("{:<12} {:<4} {:<22} {:<5} {:<11} {:>8} {:>10} {:>8} {:>8} {:>10} {:>8}\n",
                     "ROLE", "ID", "ADDRESS", "STATE", "MEMBER", "KEYS", "COMMITTED", "ABORTED",
                     "IN-DOUBT", "LOG", "UPTIME");
  for (auto& r : snap.rows) {
    bool leader = r.role == "leader";
    auto num = [&](int64_t v) { return r.up ? std::to_string(v) : std::string("-"); };
    out << fmt::format("{:<12} {:<4} {:<22} {:<5} {:<11} {:>8} {:>10} {:>8} {:>8} {:>10} {:>8}\n",
                       r.role, r.up ? protocol::escape_display(r.s.id) : "-", r.addr,
                       !r.refused.empty() ? "REFUSED"
                       : r.up             ? "up"
                                          : "DOWN",
                       r.member.empty() ? "-" : r.member, leader ? "-" : num(r.s.keys),
                       num(r.s.committed), num(r.s.aborted),
                       num(leader ? r.s.active : r.s.in_doubt()),
                       r.up ? human_bytes(std::to_string(r.s.log_bytes)) : "-",
                       r.up ? human_ms(std::to_string(r.s.uptime_ms)) : "-");
  }
  if (snap.leader) {
    out << "(leader IN-DOUBT counts transactions it is still deciding or finishing)\n";
    out << "cluster " << (snap.leader->cluster.empty() ? "-" : snap.leader->cluster) << "\n";
  }
  for (auto& r : snap.rows)
    if (r.up && r.role == "leader" && r.s.decisions == "etcd")
      out << fmt::format(
          "leader {} keeps its decisions in etcd: {}\n", protocol::escape_display(r.s.id),
          r.s.store == "up" ? "reachable, lease held" : "UNREACHABLE (new transactions refused)");
  for (auto& r : snap.rows)
    if (!r.refused.empty())
      out << fmt::format("participant {} REFUSED by the leader: {}\n", r.addr,
                         protocol::display_text(r.refused));
  for (auto& r : snap.rows)
    if (r.up && r.s.heuristic != 0)
      out << (r.role == "leader"
                  ? fmt::format("leader {} records {} HEURISTIC MISMATCH(es): participants "
                                "finished transactions against its decision (tpc client "
                                "heuristics)\n",
                                protocol::escape_display(r.s.id), r.s.heuristic)
                  : fmt::format(
                        "participant {} holds {} heuristic decision(s) made with resolve --force\n",
                        protocol::escape_display(r.s.id), r.s.heuristic));
}
}  // namespace

int run_status(const Options& o, bool json, std::ostream& out, std::ostream& err) {
  auto snap = take_status(o, json, err);
  if (!snap) return k_unknown;
  if (json)
    status_json(*snap, out);
  else
    status_table(*snap, out);
  return snap->down ? k_unknown : k_ok;
}

int run_in_doubt(const Options& o, bool json, std::ostream& out, std::ostream& err) {
  bool leader_up;
  auto parts = participants(o, &leader_up, err);
  if (parts.empty()) return k_unknown;
  std::vector<std::string> down;
  auto all = collect(parts, &down);
  for (auto& d : down)
    err << "participant " << d << " is unreachable; its in-doubt list is unknown\n";
  if (json) {
    std::string s = "{\"in_doubt\":[";
    bool first = true;
    for (auto& [txid, d] : all) {
      std::string keys, holders;
      for (auto& k : d.keys) keys += (keys.empty() ? "" : ",") + json_key(k);
      for (auto& h : d.holders) holders += (holders.empty() ? "" : ",") + protocol::json_string(h);
      s += fmt::format(
          "{}{{\"txid\":{},\"request\":{},\"leader\":{},\"leader_address\":{},"
          "\"participants\":[{}],\"age_ms\":{},\"keys\":[{}]}}",
          first ? "" : ",", protocol::json_string(txid),
          d.rid.empty() ? "null" : protocol::json_string(d.rid), protocol::json_string(d.leader),
          protocol::json_string(d.leader_addr), holders, d.age_ms, keys);
      first = false;
    }
    out << s << "]}\n";
    return down.empty() ? k_ok : k_unknown;
  }
  if (all.empty()) {
    out << "no transactions in doubt\n";
    return down.empty() ? k_ok : k_unknown;
  }
  out << fmt::format("{:<16} {:<7} {:<22} {:<40} {:>8}  {:<32}  {}\n", "TXID", "LEADER",
                     "LEADER-ADDRESS", "PARTICIPANTS", "AGE", "REQUEST", "KEYS");
  for (auto& [txid, d] : all) {
    std::string holders, keys;
    for (auto& h : d.holders) holders += (holders.empty() ? "" : ",") + h;
    for (auto& k : d.keys) keys += (keys.empty() ? "" : " ") + protocol::escape_display(k);
    // What participants sent reaches a terminal escaped: no control sequence gets through.
    auto show = [](const std::string& s) { return protocol::escape_display(s); };
    out << fmt::format("{:<16} {:<7} {:<22} {:<40} {:>8}  {:<32}  {}\n", show(txid), show(d.leader),
                       show(d.leader_addr), holders, human_ms(std::to_string(d.age_ms)),
                       d.rid.empty() ? "-" : show(d.rid), keys);
  }
  return down.empty() ? k_ok : k_unknown;
}

int run_resolve(const Options& o, const std::string& txid, bool commit, bool force,
                std::ostream& out, std::ostream& err) {
  bool leader_up;
  auto parts = participants(o, &leader_up, err);
  if (parts.empty()) return k_unknown;
  std::vector<std::string> down;
  auto all = collect(parts, &down);
  auto it = all.find(txid);
  if (it == all.end()) {
    err << txid << " is not in doubt on any reachable participant\n";
    return down.empty() ? k_not_found : k_unknown;
  }
  const InDoubt& d = it->second;
  const char* want = commit ? "commit" : "abort";
  // The leader's durable decision wins, whatever the operator asked.
  auto outcome =
      ask(d.leader_addr, protocol::encode(protocol::OutcomeQuery{txid, -1, std::nullopt, ""}));
  if (outcome) {
    auto decision = protocol::parse_decision(*outcome);
    if (!decision) {
      err << "leader " << d.leader_addr << ": " << decision.status().message() << "\n";
      return k_unknown;
    }
    if (*decision == protocol::Decision::pending) {
      err << "leader " << d.leader_addr << " is still deciding " << txid << "; try again\n";
      return k_unknown;
    }
    bool decided_commit = *decision == protocol::Decision::committed;
    if (decided_commit != commit) {
      err << "refused: the leader's durable decision for " << txid << " is "
          << (decided_commit ? "commit" : "abort (no commit record: presumed abort)")
          << "; resolving it as " << want << " would contradict it\n";
      return k_aborted;
    }
    // Relayed as a recorded operator's decision (RESOLVE ... relayed): each participant
    // reports it to the leader, which would record a mismatch had it decided otherwise.
    int done = 0;
    for (auto& h : d.holders)
      done += protocol::parse_ack(
          ask(h, fmt::format("RESOLVE {} {} relayed", txid, decided_commit ? "commit" : "abort"))
              .value_or(""));
    out << fmt::format("{} {} on {} participant(s), following leader {}'s decision\n",
                       decided_commit ? "committed" : "aborted", txid, done, d.leader);
    return done == static_cast<int>(d.holders.size()) ? k_ok : k_unknown;
  }
  if (!force) {
    err << "leader " << d.leader_addr << " of " << txid
        << " is unreachable: its decision is unknown. Deciding without it is a heuristic "
           "decision that may contradict it; add --force to do so\n";
    return k_unknown;
  }
  err << "WARNING: heuristic decision: " << want << " " << txid << " without its leader ("
      << d.leader_addr << "). If the leader decided otherwise, the participants will disagree; "
      << "the decision is recorded in each participant's log.\n";
  int done = 0;
  for (auto& h : d.holders)
    done += protocol::parse_ack(ask(h, "RESOLVE " + txid + " " + want).value_or(""));
  for (auto& x : down)
    err << "participant " << x << " is unreachable; if it holds " << txid
        << ", it will ask the leader when it returns\n";
  out << fmt::format("{} {} on {} participant(s) (heuristic)\n", commit ? "committed" : "aborted",
                     txid, done);
  return done == static_cast<int>(d.holders.size()) ? k_ok : k_unknown;
}

}  // namespace tpc::client

namespace tpc::client {

int run_heuristics(const Options& o, bool json, std::ostream& out, std::ostream& err) {
  auto r = ask(o.leader, "HEURISTICS", o.timeout_ms);
  if (!r) {
    err << "leader " << o.leader << " is unreachable\n";
    return k_unknown;
  }
  auto t = protocol::split(*r);
  auto n = t.size() >= 2 && t[0] == "HEURISTICS" ? parse_int(t[1]) : std::nullopt;
  if (!n || *n < 0 || t.size() != 2 + 5 * static_cast<size_t>(*n)) {
    err << "leader " << o.leader
        << ": unexpected reply to HEURISTICS: " << protocol::escape_display(*r) << "\n";
    return k_unknown;
  }
  if (json) {
    std::string s = "[";
    for (size_t i = 2; i < t.size(); i += 5)
      s += fmt::format(
          "{}{{\"txid\":{},\"request\":{},\"participant\":{},\"decided\":\"{}\",\"outcome\":"
          "\"{}\"}}",
          i > 2 ? "," : "", protocol::json_string(std::string(t[i])),
          t[i + 1] == "-" ? "null" : protocol::json_string(std::string(t[i + 1])),
          protocol::json_string(std::string(t[i + 2])), t[i + 3] == "commit" ? "commit" : "abort",
          t[i + 4] == "commit" ? "commit" : "abort");
    out << s << "]\n";
    return k_ok;
  }
  if (*n == 0) {
    out << "no heuristic mismatches\n";
    return k_ok;
  }
  auto show = [](std::string_view s) { return protocol::escape_display(std::string(s)); };
  out << fmt::format("{:<16} {:<32}  {:<22} {:<8} {}\n", "TXID", "REQUEST", "PARTICIPANT",
                     "DECIDED", "PARTICIPANT'S OUTCOME (operator's order)");
  for (size_t i = 2; i < t.size(); i += 5)
    out << fmt::format("{:<16} {:<32}  {:<22} {:<8} {}\n", show(t[i]), show(t[i + 1]),
                       show(t[i + 2]), show(t[i + 3]), show(t[i + 4]));
  out << "the participants' data disagrees with the decision for these keys: repair it, then "
         "tpc client forget TXID\n";
  return k_ok;
}

int run_forget(const Options& o, const std::string& txid, std::ostream& out, std::ostream& err) {
  if (Status s = protocol::check_txid(txid); !s) {
    err << "forget: " << s.message() << "\n";
    return k_usage;
  }
  auto r = ask(o.leader, "FORGET " + txid, o.timeout_ms);
  if (!r) {
    err << "leader " << o.leader << " is unreachable\n";
    return k_unknown;
  }
  if (*r == "OK") {
    out << "forgot the heuristic mismatch(es) of " << txid << "\n";
    return k_ok;
  }
  auto t = protocol::split(*r);
  err << "forget: " << protocol::escape_display(*r) << "\n";
  if (t.size() >= 2 && t[1] == "NOTFOUND") return k_not_found;
  if (t.size() >= 2 && t[1] == "DENIED") return k_usage;
  return k_unknown;
}

}  // namespace tpc::client
