#include "client/client.h"

#include <chrono>
#include <iostream>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "client/connection.h"
#include "common/util.h"
#include "protocol/codec.h"
#include "protocol/messages.h"

namespace tpc::client {

namespace {
std::mt19937_64& rng() {
  static thread_local std::mt19937_64 r{std::random_device{}() ^ static_cast<uint64_t>(now_us())};
  return r;
}

// Connecting failed: nothing was sent. A wrong address or cluster is the caller's to fix.
int open_failed(const Status& s, std::ostream& err) {
  if (s.code() == "CLUSTER") {
    err << "wrong cluster: " << s.message() << "\n";
    return k_usage;
  }
  if (s.code() == "TLS" || s.code() == "SECURE") {
    // Certificates are the caller's to fix: nothing was sent.
    err << "not connected: " << s.message() << "\n";
    return k_usage;
  }
  err << "unavailable: " << s.message() << "\n";
  return s.code() == "USAGE" ? k_usage : k_unknown;
}

// A read (GET, SCAN) answered with an error: says why, returns the exit code. A reply the
// parser did not understand is the leader's fault (4); a request it refused, the caller's (2).
int read_failed(const std::string& code, const std::string& detail, const std::string& line,
                std::ostream& err) {
  if (code == "PROTO" && detail.rfind("unexpected reply", 0) == 0) {
    err << "bad reply from leader: " << line.substr(0, 200) << "\n";
    return k_unknown;
  }
  if (code == "PROTO") {
    err << "bad request: " << protocol::display_text(detail) << "\n";
    return k_usage;
  }
  if (code == "VIEW") {
    err << "refused: " << protocol::display_text(detail) << "\n";
    return k_usage;
  }
  err << (code == "INDOUBT" ? "in doubt: " : "unavailable: ") << protocol::display_text(detail)
      << "\n";
  return k_unknown;
}

// The connection was lost after the request was sent: ask the leader what became of `rid`
// (bounded), never run it again under a new id.
// What is left of the call's deadline, at least 1 ms.
int left(int64_t deadline) { return static_cast<int>(std::max<int64_t>(deadline - now_ms(), 1)); }

int resolve_lost(const Options& o, const std::string& rid, const std::string& why,
                 int64_t deadline, std::ostream& out, std::ostream& err) {
  std::string last = "no time left";
  while (now_ms() < deadline) {
    auto c = Connection::open(o.leader, std::min(left(deadline), 1000));
    if (c) {
      auto r = c->call("RESULT " + rid, std::min(left(deadline), 2000));
      if (r) {
        auto res = protocol::parse_txn_reply(r);
        if (res.kind == protocol::TxnReply::committed) {
          out << "OK\n";
          return k_ok;
        }
        if (res.kind == protocol::TxnReply::aborted) {
          err << "aborted: connection lost and the leader has no commit decision for the "
                 "request (not applied)\n";
          return k_aborted;
        }
        last = "still pending at the leader";
      } else {
        last = r.status().message();
      }
    } else {
      last = c.status().message();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(left(deadline), 100)));
  }
  err << "outcome unknown: " << why << "; could not learn the outcome of request " << rid << " ("
      << last << "); `tpc client result " << rid << "` asks again\n";
  return k_unknown;
}
}  // namespace

int run_result(const Options& o, const std::string& rid, std::ostream& out, std::ostream& err) {
  if (Status s = protocol::check_request_id(rid); !s) {
    err << "result: " << s.message() << "\n";
    return k_usage;
  }
  auto c = Connection::open(o.leader, o.timeout_ms);
  if (!c) return open_failed(c.status(), err);
  auto r = c->call("RESULT " + rid, o.timeout_ms);
  if (!r) {
    err << "outcome unknown: " << r.status().message() << "\n";
    return k_unknown;
  }
  auto res = protocol::parse_txn_reply(r);
  switch (res.kind) {
    case protocol::TxnReply::committed:
      out << "committed " << res.txid << "\n";
      return k_ok;
    case protocol::TxnReply::aborted:
      // A request id the leader never saw is answered aborted, and from then on refused
      // (DUPLICATE): a request still on its way can no longer commit behind our back.
      err << "aborted (" << protocol::display_text(res.code)
          << "): " << protocol::display_text(res.detail) << " (not applied)\n";
      return k_aborted;
    case protocol::TxnReply::pending:
      err << "pending: transaction " << res.txid << " is still being decided; ask again\n";
      return k_unknown;
    case protocol::TxnReply::heuristic:
      out << "heuristic mismatch " << res.txid << "\n";
      err << "HEURISTIC MISMATCH: the leader decided " << res.decision << " of " << res.txid
          << ", but " << protocol::display_text(res.detail) << "\n";
      return k_heuristic;
    default:
      err << "outcome unknown: " << protocol::display_text(res.code) << " "
          << protocol::display_text(res.detail) << "\n";
      return k_unknown;
  }
}

std::string new_request_id() { return random_hex(16); }

namespace {
void print_trace(Connection& c, const std::string& rid, std::ostream& out) {
  auto r = c.call("TRACE " + rid, 5000);
  if (!r) return;
  auto t = protocol::split(*r);
  if (t.size() < 2 || t[0] != "TRACE") {
    out << "(no trace: " << *r << ")\n";
    return;
  }
  out << "     time  event\n";
  for (size_t i = 2; i < t.size(); ++i) {
    auto ev = protocol::unescape(t[i]);
    if (!ev) continue;
    auto sp = ev->find(' ');
    out << fmt::format("{:>7} us  {}\n", ev->substr(0, sp), ev->substr(sp + 1));
  }
}
}  // namespace

std::string printable(const std::string& v) {
  // Plain when it is one word of printable UTF-8; else double-quoted with the shell's own
  // escapes (\" \\ \n \t \r \xHH), which its input reads back: pasteable, unambiguous.
  bool plain = !v.empty();
  for (size_t i = 0; i < v.size() && plain;) {
    size_t n = protocol::utf8_sequence(std::string_view(v).substr(i));
    auto c = static_cast<unsigned char>(v[i]);
    plain = n > 0 && !(n == 1 && (c <= 0x20 || c == 0x7f || c == '"' || c == '\'' || c == '\\'));
    i += n ? n : 1;
  }
  if (plain) return v;
  std::string o = "\"";
  for (size_t i = 0; i < v.size();) {
    size_t n = protocol::utf8_sequence(std::string_view(v).substr(i));
    auto c = static_cast<unsigned char>(v[i]);
    if (n > 1) {
      o.append(v, i, n);
      i += n;
      continue;
    }
    ++i;
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\t': o += "\\t"; break;
      case '\r': o += "\\r"; break;
      default:
        if (n == 0 || c < 0x20 || c == 0x7f)
          o += fmt::format("\\x{:02x}", c);
        else
          o += static_cast<char>(c);
    }
  }
  return o + "\"";
}

int run_txn(const Options& o, const std::vector<protocol::Op>& ops, std::ostream& out,
            std::ostream& err) {
  if (!o.request_id.empty())
    if (Status s = protocol::check_request_id(o.request_id); !s) {
      err << "--request-id: " << s.message() << "\n";
      return k_usage;
    }
  // --timeout bounds the whole call: connecting, waiting, retrying, learning the outcome.
  int64_t deadline = now_ms() + o.timeout_ms;
  for (int attempt = 0;; ++attempt) {
    std::string rid = o.request_id.empty() ? new_request_id() : o.request_id;
    protocol::LineBuilder line("TXN");
    line.raw(rid);
    if (o.trace) line.raw("trace");
    protocol::append_ops(line, ops);
    auto c = Connection::open(o.leader, std::min(left(deadline), 3000));
    if (!c) {
      return open_failed(c.status(), err);
    }
    // A request the leader would refuse for its length is a usage error, and is not sent
    // ("@TAG " and the newline count too).
    std::string request = line.str();
    size_t len = request.size() + rid.size() + 3;
    if (c->server_max_message() > 0 && len > c->server_max_message()) {
      size_t largest = 0;
      for (auto& op : ops) largest = std::max(largest, op.value.size());
      err << "too large: the request is " << len << " bytes (its largest value " << largest
          << " bytes), over the leader's limit of " << c->server_max_message()
          << " bytes; --max-message on the leader and the participants raises it (at most "
          << protocol::k_max_message_limit << ")\n";
      return k_usage;
    }
    auto r = c->call(request, left(deadline), rid);
    if (!r) return resolve_lost(o, rid, r.status().message(), deadline, out, err);
    auto res = protocol::parse_txn_reply(r);
    using K = protocol::TxnReply;
    if (o.trace && (res.kind == K::committed || res.kind == K::aborted)) print_trace(*c, rid, out);
    if (res.kind == K::committed) {
      out << "OK\n";
      return k_ok;
    }
    if (res.kind == K::aborted) {
      const std::string& code = res.code;
      int base_ms = 5 << std::min(attempt, 6);
      if (code == "CONFLICT" && attempt < o.retries && o.request_id.empty() &&
          now_ms() + 2 * base_ms < deadline) {
        // A definite abort: safe to run again. Jittered exponential backoff.
        std::this_thread::sleep_for(
            std::chrono::milliseconds(base_ms + static_cast<int>(rng()() % (base_ms + 1))));
        continue;
      }
      if (code == "CONFLICT")
        err << "aborted: conflict: " << protocol::display_text(res.detail) << " (gave up after "
            << attempt + 1 << " attempts)\n";
      else if (code == "CHECK")
        err << "aborted: condition failed: " << protocol::display_text(res.detail) << "\n";
      else
        err << "aborted: " << protocol::display_text(code) << ": "
            << protocol::display_text(res.detail) << "\n";
      return k_aborted;
    }
    if (res.kind == K::error &&
        (res.code == "RIDREUSE" || res.code == "DENIED" || res.code == "VIEW")) {
      err << "refused: " << protocol::display_text(res.detail) << "\n";
      return k_usage;
    }
    if (res.kind == K::error && (res.code == "PROTO" || res.code == "TOOLONG")) {
      err << (res.code == "TOOLONG" ? "too large: " : "bad request: ")
          << protocol::display_text(res.detail) << "\n";
      return k_usage;
    }
    if (res.kind == K::error && res.code == "PENDING")
      return resolve_lost(o, rid, *r, deadline, out, err);
    err << "error: " << *r << "\n";
    return k_unknown;
  }
}

int run_get(const Options& o, const std::string& key, std::ostream& out, std::ostream& err) {
  int64_t deadline = now_ms() + o.timeout_ms;
  auto c = Connection::open(o.leader, std::min(o.timeout_ms, 3000));
  if (!c) {
    return open_failed(c.status(), err);
  }
  c->set_max_message(protocol::k_max_message_limit + 1024);  // a value as large as any node takes
  auto r = c->call(protocol::LineBuilder("GET").arg(key).str(), left(deadline));
  if (!r) {
    err << "unavailable: " << r.status().message() << "\n";
    return k_unknown;
  }
  auto res = protocol::parse_read_reply(r);
  if (res.kind == protocol::ReadReply::found) {
    if (o.raw)
      out << res.value << std::flush;
    else
      out << (o.shell ? printable(res.value) : res.value) << "\n";
    return k_ok;
  }
  if (res.kind == protocol::ReadReply::absent) {
    err << "not found\n";
    return k_not_found;
  }
  return read_failed(res.code, res.detail, *r, err);
}

int run_scan(const Options& o, const std::string& prefix, uint64_t limit, bool keys_only,
             std::ostream& out, std::ostream& err) {
  int64_t deadline = now_ms() + o.timeout_ms;
  auto c = Connection::open(o.leader, std::min(o.timeout_ms, 3000));
  if (!c) return open_failed(c.status(), err);
  c->set_max_message(protocol::k_max_message_limit + 1024);
  constexpr uint64_t k_page = 1000;  // keys per request (the leader also bounds its bytes)
  std::string after;
  uint64_t shown = 0;
  int conflicts = 0;
  while (limit == 0 || shown < limit) {
    uint64_t want = limit == 0 ? k_page : std::min(k_page, limit - shown);
    auto r = c->call(protocol::LineBuilder("SCAN")
                         .arg(prefix)
                         .arg(after)
                         .num(static_cast<long long>(want))
                         .str(),
                     left(deadline));
    if (!r) {
      err << "unavailable: " << r.status().message() << "\n";
      return k_unknown;
    }
    auto page = protocol::parse_scan_reply(r);
    if (page.kind == protocol::ScanReply::error) {
      if (page.code == "CONFLICT" && conflicts++ < o.retries && now_ms() < deadline) continue;
      return read_failed(page.code, page.detail, *r, err);
    }
    for (auto& [k, v] : page.kvs) {
      if (keys_only)
        out << printable(k) << "\n";
      else
        out << printable(k) << " " << printable(v) << "\n";
    }
    out << std::flush;
    shown += page.kvs.size();
    if (!page.more || page.kvs.empty()) break;
    after = page.kvs.back().first;
  }
  return k_ok;
}

}  // namespace tpc::client
