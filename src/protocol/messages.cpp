#include "protocol/messages.h"

#include <cctype>
#include <charconv>

#include <fmt/format.h>

#include "common/util.h"

namespace tpc::protocol {
bool is_id(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  return true;
}

namespace {
bool is_number(std::string_view s) {
  if (s.empty() || s.size() > 20) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}
}  // namespace

// LEADER-ID.INCARNATION.SEQUENCE: a leader id (1 to 64 letters, digits, - and _) and two
// decimal numbers. Nothing else reaches a log, a lock table or an operator's terminal.
Status check_txid(std::string_view t) {
  auto a = t.find('.');
  auto b = a == std::string_view::npos ? a : t.find('.', a + 1);
  if (b == std::string_view::npos || !is_id(t.substr(0, a)) ||
      !is_number(t.substr(a + 1, b - a - 1)) || !is_number(t.substr(b + 1)))
    return Status::error("PROTO", "bad transaction id (LEADER-ID.INCARNATION.SEQUENCE)");
  return Status::ok();
}

Status check_request_id(std::string_view rid) {
  if (!is_id(rid))
    return Status::error("PROTO", "bad request id (1 to 64 letters, digits, - or _)");
  return Status::ok();
}

std::vector<PeerState> parse_peers(const std::string& line) {
  std::vector<PeerState> out;
  auto t = split(line);
  for (size_t i = 1; i + 1 < t.size(); i += 2) {
    PeerState p{std::string(t[i]), std::string(t[i + 1]), ""};
    if (p.state == "refused" && i + 2 < t.size()) {
      auto r = unescape(t[i + 2]);
      p.reason = r ? *r : std::string(t[i + 2]);
      ++i;
    }
    out.push_back(std::move(p));
  }
  return out;
}

std::map<std::string, std::string> parse_fields(std::string_view line) {
  std::map<std::string, std::string> f;
  for (auto t : split(line)) {
    auto eq = t.find('=');
    if (eq != std::string_view::npos && eq > 0)
      f[std::string(t.substr(0, eq))] = std::string(t.substr(eq + 1));
  }
  return f;
}

std::string rest_after(std::string_view frame, size_t n) {
  std::string_view line = head(frame);
  size_t i = 0;
  for (size_t k = 0; k < n; ++k) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
  }
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  // Undone once here, so that free text relayed to another node is escaped once there, not
  // once per hop.
  return unescape_text(line.substr(i));
}

Result<uint64_t> parse_epoch(std::string_view token) {
  auto n = token.substr(0, 6) == "epoch=" ? parse_int(token.substr(6)) : std::nullopt;
  if (!n || *n < 1) return Status::error("PROTO", "epoch=N: N must be a positive count");
  return static_cast<uint64_t>(*n);
}

void append_epoch(LineBuilder& b, uint64_t epoch) {
  if (epoch) b.raw(fmt::format("epoch={}", epoch));
}

std::string encode(const Prepare& m) {
  LineBuilder b("PREPARE");
  b.raw(m.txid).raw(m.leader).raw(m.leader_addr);
  if (!m.rid.empty()) b.raw("rid=" + m.rid);
  if (m.learner) b.raw("learner=1");
  append_epoch(b, m.epoch);
  append_ops(b, m.ops);
  return b.str();
}
std::string encode(const Commit& m) { return "COMMIT " + m.txid; }
std::string encode(const Abort& m) { return "ABORT " + m.txid; }
std::string encode(const Read& m) {
  LineBuilder b("READ");
  b.arg(m.key);
  append_epoch(b, m.epoch);
  return b.str();
}
std::string encode(const Scan& m) {
  LineBuilder b("SCAN");
  b.arg(m.prefix).arg(m.after).num(static_cast<long long>(m.limit));
  b.num(static_cast<long long>(m.max_bytes));
  if (!m.watch.empty())
    b.raw(m.watch);
  else if (m.committed)
    b.raw("committed");
  append_epoch(b, m.epoch);
  return b.str();
}
std::string encode(const ScanCheck& m) { return "SCANCHECK " + m.watch; }
std::string encode(const SyncBegin& m) {
  return fmt::format("SYNCBEGIN {} {}{}{}", m.pass, fmt::join(m.sources, ","),
                     m.gain ? " gain" : "", m.drained ? " drained" : "");
}
std::string encode(const Sync& m) {
  LineBuilder b("SYNC");
  b.raw(m.pass).num(static_cast<long long>(m.source)).arg(m.after);
  if (m.more)
    b.raw("MORE").arg(m.upto);
  else
    b.raw(m.last ? "LAST" : "END").raw("-");
  b.num(static_cast<long long>(m.kvs.size()));
  for (auto& [k, v] : m.kvs) b.arg(k).value(v);
  return b.str();
}
std::string encode(const ScanReply& r) {
  if (r.kind == ScanReply::error) return LineBuilder("ERR").raw(r.code).text(r.detail).str();
  LineBuilder b("KEYS");
  b.raw(r.more ? "MORE" : "END").num(static_cast<long long>(r.kvs.size()));
  for (auto& [k, v] : r.kvs) b.arg(k).value(v);
  return b.str();
}
std::string encode(const ScanChecked& r) { return r.clean ? "CLEAN" : "CHANGED"; }
std::string encode(const OutcomeQuery& m) {
  std::string s = "OUTCOME " + m.txid;
  if (m.held_ms >= 0) s += fmt::format(" {}", m.held_ms);
  if (m.heuristic) s += *m.heuristic ? " heuristic=commit" : " heuristic=abort";
  if (m.heuristic && !m.rid.empty()) s += " rid=" + m.rid;
  return s;
}
std::string encode(const PeerRequest& m) {
  return std::visit([](auto& x) { return encode(x); }, m);
}

std::string encode(const Vote& v) {
  if (v.kind == Vote::yes) return "YES " + std::to_string(v.force_us);
  return LineBuilder(v.kind == Vote::no ? "NO" : "ERR").raw(v.code).text(v.detail).str();
}

std::string encode(Decision d) {
  switch (d) {
    case Decision::committed:
      return "COMMITTED";
    case Decision::aborted:
      return "ABORTED";
    case Decision::pending:
      break;
  }
  return "PENDING";
}

std::string encode(const ReadReply& r) {
  switch (r.kind) {
    case ReadReply::found:
      return LineBuilder("VALUE").value(r.value).str();
    case ReadReply::absent:
      return "NOTFOUND";
    case ReadReply::error:
      break;
  }
  return LineBuilder("ERR").raw(r.code).text(r.detail).str();
}

std::string encode(const Ack&) { return "ACK"; }
std::string encode(const HeuristicReply& r) {
  return r.committed ? "HEURISTIC COMMITTED" : "HEURISTIC ABORTED";
}
std::string encode(const Error& e) { return LineBuilder("ERR").raw(e.code).text(e.detail).str(); }

Result<Prepare> decode_prepare(const std::vector<std::string_view>& t) {
  if (t.size() < 5)
    return Status::error("PROTO", "usage: PREPARE TXID LEADER-ID LEADER-ADDR OP [OP...]");
  if (Status s = check_txid(t[1]); !s) return s;
  Prepare m;
  m.txid = t[1];
  m.leader = t[2];
  m.leader_addr = t[3];
  if (!is_id(m.leader) || m.txid.compare(0, m.leader.size() + 1, m.leader + ".") != 0)
    return Status::error("PROTO", "bad leader id (the transaction id's first part)");
  std::string host;
  uint16_t port;
  bool host_ok = parse_host_port(m.leader_addr, &host, &port) && host.size() <= 253;
  for (char c : host)  // a name, an IPv4 or an IPv6 address: nothing else reaches a log
    host_ok = host_ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' ||
                          c == ':' || c == '_');
  if (!host_ok) return Status::error("PROTO", "bad leader address (HOST:PORT)");
  size_t first_op = 4;
  if (t[4].substr(0, 4) == "rid=") {
    m.rid = t[4].substr(4);
    if (Status s = check_request_id(m.rid); !s) return s;
    ++first_op;
  }
  if (first_op < t.size() && t[first_op] == "learner=1") {
    m.learner = true;
    ++first_op;
  }
  if (first_op < t.size() && t[first_op].substr(0, 6) == "epoch=") {
    auto e = parse_epoch(t[first_op]);
    if (!e) return e.status();
    m.epoch = *e;
    ++first_op;
  }
  auto ops = parse_ops(t, first_op);
  if (!ops) return ops.status();
  m.ops = std::move(*ops);
  return m;
}

Result<std::string> decode_txid_arg(const std::vector<std::string_view>& t) {
  if (t.size() != 2) return Status::error("PROTO", std::string(t[0]) + " needs TXID");
  if (Status s = check_txid(t[1]); !s) return s;
  return std::string(t[1]);
}

Result<OutcomeQuery> decode_outcome_query(const std::vector<std::string_view>& t) {
  const Status usage =
      Status::error("PROTO", "usage: OUTCOME TXID [HELD-MS] [heuristic=commit|abort [rid=RID]]");
  if (t.size() < 2 || t.size() > 5) return usage;
  if (Status s = check_txid(t[1]); !s) return s;
  OutcomeQuery q{std::string(t[1]), -1, std::nullopt, ""};
  size_t i = 2;
  if (i < t.size() && t[i].find('=') == std::string_view::npos) {
    auto ms = parse_int(t[i]);
    if (!ms || *ms < 0) return Status::error("PROTO", "OUTCOME: HELD-MS is not a count of ms");
    q.held_ms = *ms;
    ++i;
  }
  if (i < t.size() && (t[i] == "heuristic=commit" || t[i] == "heuristic=abort")) {
    q.heuristic = t[i] == "heuristic=commit";
    ++i;
    if (i < t.size() && t[i].substr(0, 4) == "rid=") {
      if (Status s = check_request_id(t[i].substr(4)); !s) return s;
      q.rid = std::string(t[i].substr(4));
      ++i;
    }
  }
  if (i != t.size()) return usage;
  return q;
}

Result<Read> decode_read(std::vector<std::string_view> t) {
  uint64_t epoch = 0;
  if (t.size() == 3) {
    auto e = parse_epoch(t[2]);
    if (!e) return e.status();
    epoch = *e;
    t.pop_back();
  }
  if (t.size() != 2) return Status::error("PROTO", "usage: READ KEY [epoch=N]");
  auto key = decode_key(t[1]);
  if (!key) return key.status();
  return Read{std::move(*key), epoch};
}

Result<Scan> decode_scan(std::vector<std::string_view> t) {
  uint64_t epoch = 0;
  if (t.size() > 5 && t.back().substr(0, 6) == "epoch=") {
    auto e = parse_epoch(t.back());
    if (!e) return e.status();
    epoch = *e;
    t.pop_back();
  }
  if (t.size() != 5 && t.size() != 6)
    return Status::error("PROTO",
                         "usage: SCAN PREFIX AFTER LIMIT MAX-BYTES [WATCH|committed] [epoch=N]");
  auto prefix = unescape(t[1]);
  if (!prefix) return prefix.status();
  auto after = unescape(t[2]);
  if (!after) return after.status();
  auto limit = parse_int(t[3]);
  auto bytes = parse_int(t[4]);
  if (!limit || *limit < 1 || static_cast<uint64_t>(*limit) > k_max_scan_limit)
    return Status::error("PROTO", fmt::format("SCAN: LIMIT must be 1 to {}", k_max_scan_limit));
  if (!bytes || *bytes < 1) return Status::error("PROTO", "SCAN: MAX-BYTES must be at least 1");
  Scan m{std::move(*prefix),
         std::move(*after),
         static_cast<uint64_t>(*limit),
         static_cast<uint64_t>(*bytes),
         "",
         epoch};
  if (t.size() == 6 && t[5] == "committed") {
    m.committed = true;
  } else if (t.size() == 6) {
    if (!is_id(t[5])) return Status::error("PROTO", "SCAN: WATCH must be an id");
    m.watch = t[5];
  }
  return m;
}

Result<SyncBegin> decode_sync_begin(const std::vector<std::string_view>& t) {
  auto usage = [] {
    return Status::error("PROTO", "usage: SYNCBEGIN PASS SOURCE[,SOURCE...] [gain] [drained]");
  };
  if (t.size() < 3 || t.size() > 5 || !is_id(t[1])) return usage();
  SyncBegin m{std::string(t[1]), {}};
  for (size_t i = 3; i < t.size(); ++i) {
    if (t[i] == "gain" && !m.gain && !m.drained)
      m.gain = true;
    else if (t[i] == "drained" && !m.drained)
      m.drained = true;
    else
      return usage();
  }
  for (auto& x : split_list(std::string(t[2]), ',')) {
    auto n = parse_int(x);
    if (!n || *n < 0 || *n > 1 << 20) return usage();
    m.sources.push_back(static_cast<size_t>(*n));
  }
  if (m.sources.empty()) return usage();
  return m;
}

Result<Sync> decode_sync(const std::vector<std::string_view>& t) {
  auto usage = [] {
    return Status::error("PROTO",
                         "usage: SYNC PASS SOURCE AFTER MORE|END|LAST UPTO COUNT {KEY VALUE}");
  };
  if (t.size() < 7 || !is_id(t[1])) return usage();
  Sync m;
  m.pass = t[1];
  auto source = parse_int(t[2]);
  auto after = unescape(t[3]);
  auto count = parse_int(t[6]);
  if (!source || *source < 0 || !after || !count || *count < 0 ||
      t.size() != 7 + 2 * static_cast<size_t>(*count))
    return usage();
  m.source = static_cast<size_t>(*source);
  m.after = std::move(*after);
  if (t[4] == "MORE") {
    auto upto = unescape(t[5]);
    if (!upto) return upto.status();
    m.more = true;
    m.upto = std::move(*upto);
  } else if (t[4] == "END" || t[4] == "LAST") {
    m.last = t[4] == "LAST";
  } else {
    return usage();
  }
  for (size_t i = 7; i < t.size(); i += 2) {
    auto k = unescape(t[i]);
    auto v = unescape(t[i + 1]);
    if (!k || !v) return usage();
    m.kvs.emplace_back(std::move(*k), std::move(*v));
  }
  return m;
}

Result<ScanCheck> decode_scan_check(const std::vector<std::string_view>& t) {
  if (t.size() != 2 || !is_id(t[1])) return Status::error("PROTO", "usage: SCANCHECK WATCH");
  return ScanCheck{std::string(t[1])};
}

Vote parse_vote(const Result<std::string>& line) {
  Vote v;
  if (!line) {
    v.code = "UNAVAILABLE";
    v.detail = line.status().message();
    return v;
  }
  auto t = split(*line);
  if (!t.empty() && t[0] == "YES") {
    v.kind = Vote::yes;
    if (t.size() > 1) std::from_chars(t[1].data(), t[1].data() + t[1].size(), v.force_us);
    return v;
  }
  if (t.size() >= 2 && t[0] == "NO") {
    v.kind = Vote::no;
    v.code = t[1];
    v.detail = rest_after(*line, 2);
    return v;
  }
  v.code = "ERROR";
  v.detail = *line;
  return v;
}

bool parse_ack(const Result<std::string>& line) {
  if (!line) return false;
  auto t = split(*line);
  return !t.empty() && t[0] == "ACK";
}

PhaseTwo parse_phase_two(const Result<std::string>& line) {
  if (!line) return PhaseTwo::none;
  auto t = split(*line);
  if (t.size() == 1 && t[0] == "ACK") return PhaseTwo::acked;
  if (t.size() == 2 && t[0] == "HEURISTIC" && t[1] == "COMMITTED")
    return PhaseTwo::heuristic_committed;
  if (t.size() == 2 && t[0] == "HEURISTIC" && t[1] == "ABORTED") return PhaseTwo::heuristic_aborted;
  return PhaseTwo::none;
}

Result<Decision> parse_decision(const Result<std::string>& line) {
  if (!line) return line.status();
  auto t = split(*line);
  if (!t.empty() && t[0] == "COMMITTED") return Decision::committed;
  if (!t.empty() && t[0] == "ABORTED") return Decision::aborted;
  if (!t.empty() && t[0] == "PENDING") return Decision::pending;
  return Status::error("PROTO", "unexpected reply to OUTCOME: " + escape(*line));
}

namespace {
// A request that got no reply (UNAVAILABLE: the connection was lost) or "ERR CODE TEXT":
// fills the reply's code and detail and returns true.
template <class R>
bool failed(const Result<std::string>& line, const std::vector<std::string_view>& t, R& r) {
  if (!line) {
    r.code = "UNAVAILABLE";
    r.detail = line.status().message();
    return true;
  }
  if (t.size() >= 2 && t[0] == "ERR") {
    r.code = t[1];
    r.detail = rest_after(*line, 2);
    return true;
  }
  return false;
}
}  // namespace

ReadReply parse_read_reply(const Result<std::string>& line) {
  ReadReply r;
  auto t = line ? split(*line) : std::vector<std::string_view>{};
  if (failed(line, t, r)) return r;
  if (t.size() == 2 && t[0] == "VALUE") {
    auto v = unescape(t[1]);
    if (v) {
      r.kind = ReadReply::found;
      r.value = std::move(*v);
      return r;
    }
  } else if (t.size() == 1 && t[0] == "NOTFOUND") {
    r.kind = ReadReply::absent;
    return r;
  }
  r.code = "PROTO";
  r.detail = "unexpected reply to READ: " + escape(*line);
  return r;
}

ScanReply parse_scan_reply(const Result<std::string>& line) {
  ScanReply r;
  auto t = line ? split(*line) : std::vector<std::string_view>{};
  if (failed(line, t, r)) return r;
  auto count = t.size() >= 3 ? parse_int(t[2]) : std::nullopt;
  if (t.size() >= 3 && t[0] == "KEYS" && (t[1] == "MORE" || t[1] == "END") && count &&
      *count >= 0 && t.size() == 3 + 2 * static_cast<size_t>(*count)) {
    for (size_t i = 3; i < t.size(); i += 2) {
      auto k = unescape(t[i]);
      auto v = unescape(t[i + 1]);
      if (!k || !v) break;
      r.kvs.emplace_back(std::move(*k), std::move(*v));
    }
    if (r.kvs.size() == static_cast<size_t>(*count) && (t[1] == "END" || !r.kvs.empty())) {
      r.kind = ScanReply::keys;
      r.more = t[1] == "MORE";
      return r;
    }
    r.kvs.clear();
  }
  r.code = "PROTO";
  r.detail = "unexpected reply to SCAN: " + escape(line->substr(0, 200));
  return r;
}

ScanChecked parse_scan_checked(const Result<std::string>& line) {
  return ScanChecked{line && *line == "CLEAN"};
}

Status parse_acked(const Result<std::string>& line) {
  if (!line) return line.status();
  if (*line == "ACK") return Status::ok();
  auto t = split(*line);
  if (t.size() >= 2 && t[0] == "ERR") return Status::error(std::string(t[1]), rest_after(*line, 2));
  return Status::error("PROTO", "unexpected reply: " + escape_display(*line));
}

TxnReply parse_txn_reply(const Result<std::string>& line) {
  TxnReply r;
  if (!line) {
    r.code = "UNAVAILABLE";
    r.detail = line.status().message();
    return r;
  }
  auto t = split(*line);
  std::string_view w = t.empty() ? std::string_view() : t[0];
  if (w == "COMMITTED" || w == "PENDING") {
    r.kind = w == "COMMITTED" ? TxnReply::committed : TxnReply::pending;
    if (t.size() > 1) r.txid = t[1];
  } else if (w == "HEURISTIC" && t.size() >= 3 && (t[2] == "commit" || t[2] == "abort")) {
    r.kind = TxnReply::heuristic;
    r.txid = t[1];
    r.decision = t[2];
    r.detail = rest_after(*line, 3);
  } else if (w == "ABORTED" || (w == "ERR" && t.size() > 1)) {
    r.kind = w == "ERR" ? TxnReply::error : TxnReply::aborted;
    if (t.size() > 1) r.code = t[1];
    r.detail = rest_after(*line, 2);
  } else {
    r.code = "PROTO";
    r.detail = "unexpected reply: " + escape(*line);
  }
  return r;
}

}  // namespace tpc::protocol
