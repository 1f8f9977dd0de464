// tpc client bench: a closed-loop load generator. Many clients in one process, each with its
// own persistent connection to the leader, one request in flight per client.
#include <utility>  // before asio: boost 1.74 needs it

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/asio.hpp>
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "client/client.h"
#include "common/util.h"
#include "client/connection.h"
#include "protocol/codec.h"
#include "protocol/stream.h"

namespace tpc::client {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

struct BenchConfig {
  int clients = 64;
  std::string duration = "10s";
  int keys = 100000;
  int ops = 2;
  int value_size = 100;
  double read_ratio = 0;
  bool json = false;
  std::string key_prefix = "bench:";
  bool fill = false;  // write keys 0..keys-1 once, in order, then stop
  int next_fill = 0;  // (single io thread: no atomics needed)
  int in_flight = 0;
  bool keep = false;           // leave the keys written in place
  std::vector<bool> written;   // which of the --keys were written (to remove them after)
};

// "10s", "500ms", "1m", "2.5s" (a bare number: seconds); 0 when it is not one.
int64_t parse_duration_ms(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0 || i > 12) return 0;
  char* end = nullptr;
  std::string num = s.substr(0, i);
  double v = std::strtod(num.c_str(), &end);
  if (end != num.c_str() + num.size() || !(v > 0)) return 0;
  std::string unit = s.substr(i);
  double ms = unit.empty() || unit == "s" ? v * 1000 : unit == "ms" ? v : unit == "m" ? v * 60000 : -1;
  return ms >= 1 ? static_cast<int64_t>(ms) : 0;
}

struct Stats {
  uint64_t committed = 0, reads = 0, errors = 0;
  std::map<std::string, uint64_t> aborts;
  std::vector<uint32_t> lat_us;  // committed writes and reads
  std::vector<uint64_t> per_second;  // committed writes and reads in each second of the run
};

class Worker : public std::enable_shared_from_this<Worker> {
 public:
  // Over TLS with `tls`, else plaintext.
  Worker(asio::io_context& io, tcp::endpoint ep, std::string host,
         std::shared_ptr<const tls::Context> tls, BenchConfig& cfg, Stats& st, int seed,
         const bool& stop)
      : m_stream(tcp::socket(io), std::move(tls)),
        m_ep(ep),
        m_host(std::move(host)),
        m_cfg(cfg),
        m_st(st),
        m_rng(seed),
        m_stop(stop) {}
  void start() {
    auto self = shared_from_this();
    m_stream.socket().async_connect(m_ep, [this, self](boost::system::error_code ec) {
      if (ec) {
        ++m_st.errors;
        return;
      }
      m_stream.socket().set_option(tcp::no_delay(true));
      m_stream.async_handshake(false, m_host, [this, self](Status s) {
        if (!s) {
          if (m_st.errors++ == 0) std::cerr << "bench: " << s.message() << "\n";
          return;
        }
        m_handshake = true;
        send(fmt::format("HELLO {} client", protocol::k_version));
      });
    });
  }

 private:
  void next() {
    if (m_stop) return;
    std::uniform_int_distribution<int> key(0, m_cfg.keys - 1);
    m_is_read =
        m_cfg.read_ratio > 0 && std::uniform_real_distribution<>(0, 1)(m_rng) < m_cfg.read_ratio;
    if (m_is_read) {
      send(fmt::format("GET {}{}", m_cfg.key_prefix, key(m_rng)));
      return;
    }
    protocol::LineBuilder b("TXN");
    b.raw("-");
    // Distinct keys in one transaction.
    std::vector<int> ks;
    if (m_cfg.fill) {
      if (m_cfg.next_fill >= m_cfg.keys) return;
      for (int i = 0; i < m_cfg.ops && m_cfg.next_fill < m_cfg.keys; ++i)
        ks.push_back(m_cfg.next_fill++);
    }
    while (!m_cfg.fill && static_cast<int>(ks.size()) < std::min(m_cfg.ops, m_cfg.keys)) {
      int k = key(m_rng);
      if (std::find(ks.begin(), ks.end(), k) == ks.end()) ks.push_back(k);
    }
    std::string value(static_cast<size_t>(m_cfg.value_size), 'v');
    for (auto& c : value) c = static_cast<char>('a' + m_rng() % 26);
    for (int k : ks) {
      b.raw("put").raw(m_cfg.key_prefix + std::to_string(k)).value(value);
      if (!m_cfg.keep) m_cfg.written[static_cast<size_t>(k)] = true;
    }
    ++m_cfg.in_flight;
    send(b.str());
  }
  void send(std::string line) {
    m_out = std::move(line);
    m_out += '\n';
    m_sent_us = now_us();
    auto self = shared_from_this();
    m_stream.async_write(asio::buffer(m_out), [this, self](boost::system::error_code ec, size_t) {
                        if (ec) {
                          ++m_st.errors;
                          return;
                        }
                        read();
                      });
  }
  void read() {
    std::string line;
    if (m_in.next(&line) == protocol::LineBuffer::Next::line) return on_reply(line);
    auto self = shared_from_this();
    m_stream.async_read_some(asio::buffer(m_buf),
                             [this, self](boost::system::error_code ec, size_t n) {
                               if (ec) {
                                 ++m_st.errors;
                                 return;
                               }
                               m_in.append(m_buf, n);
                               read();
                             });
  }
  void on_reply(const std::string& line) {
    if (m_handshake) {
      m_handshake = false;
      if (line.rfind("HELLO", 0) != 0) {
        ++m_st.errors;
        return;
      }
      return next();
    }
    if (!m_is_read) --m_cfg.in_flight;
    uint32_t lat = static_cast<uint32_t>(std::min<int64_t>(now_us() - m_sent_us, UINT32_MAX));
    if (line.rfind("COMMITTED", 0) == 0) {
      ++m_st.committed;
      m_st.lat_us.push_back(lat);
    } else if (m_is_read && (line.rfind("VALUE", 0) == 0 || line == "NOTFOUND")) {
      ++m_st.reads;
      m_st.lat_us.push_back(lat);
    } else if (line.rfind("ABORTED", 0) == 0) {
      auto t = protocol::split(line);
      ++m_st.aborts[t.size() > 1 ? std::string(t[1]) : "?"];
    } else {
      ++m_st.errors;
    }
    next();
  }
  protocol::Stream m_stream;
  tcp::endpoint m_ep;
  std::string m_host;
  BenchConfig& m_cfg;
  Stats& m_st;
  std::mt19937_64 m_rng;
  const bool& m_stop;
  std::string m_out;
  protocol::LineBuffer m_in;
  char m_buf[8192];
  int64_t m_sent_us = 0;
  bool m_handshake = false;
  bool m_is_read = false;
};

uint32_t pct(std::vector<uint32_t>& v, double p) {
  if (v.empty()) return 0;
  size_t i = static_cast<size_t>(p / 100.0 * (v.size() - 1));
  return v[i];
}
}  // namespace

namespace {
// A leader the bench's clients connect to.
struct Target {
  tcp::endpoint ep;
  std::string host;
  std::shared_ptr<const tls::Context> tls;
};

// The bench's options into `cfg` (and `duration_ms`); an exit code when they are refused (or
// --help was asked for).
std::optional<int> parse_bench(const std::vector<std::string>& args, BenchConfig& cfg,
                               int64_t& duration_ms) {
  CLI::App app{"tpc client bench: closed-loop load against the leader", "tpc client bench"};
  app.add_option("--clients", cfg.clients, "concurrent clients (connections)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--duration", cfg.duration, "how long: 10s, 500ms, 1m")->capture_default_str();
  app.add_option("--keys", cfg.keys, "key space")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000000));
  app.add_option("--ops", cfg.ops, "writes per transaction")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--value-size", cfg.value_size, "bytes per value")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--read-ratio", cfg.read_ratio, "share of requests that are reads")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--key-prefix", cfg.key_prefix, "prefix of the keys written")
      ->capture_default_str();
  app.add_flag("--json", cfg.json, "print one JSON line");
  app.add_flag("--keep", cfg.keep,
               "leave the keys written in place (default: removed at the end; --fill keeps)");
  app.add_flag("--fill", cfg.fill,
               "write every key of --keys once, --ops per transaction, then stop (preload)");
  std::vector<std::string> rev(args.rbegin(), args.rend());
  try {
    app.parse(rev);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? k_ok : k_usage;
  }
  duration_ms = parse_duration_ms(cfg.duration);
  if (duration_ms <= 0 || duration_ms > 7 * 86400 * 1000) {
    std::cerr << "bad --duration '" << cfg.duration
              << "': a time above 0 and at most a week, like 10s, 500ms or 1m\n";
    return k_usage;
  }
  cfg.keep |= cfg.fill;  // a preload is meant to stay
  if (!cfg.keep) cfg.written.assign(static_cast<size_t>(cfg.keys), false);
  return std::nullopt;
}

// Every leader of --leader (the clients are spread over them in turn); an exit code when one
// cannot be used.
std::optional<int> resolve_targets(const Options& o, asio::io_context& io,
                                   std::vector<Target>& targets) {
  for (const auto& addr : split_list(o.leader, ',')) {
    std::string host;
    uint16_t port;
    if (!parse_host_port(addr, &host, &port)) {
      std::cerr << "bad leader address " << addr << "\n";
      return k_usage;
    }
    boost::system::error_code ec;
    tcp::resolver res(io);
    auto eps = res.resolve(host, std::to_string(port), ec);
    if (ec || eps.empty()) {
      std::cerr << "cannot resolve " << host << "\n";
      return k_unknown;
    }
    // One connection first, as every client command opens it: it says whether this leader
    // is spoken to over TLS (certificates found in the default place give way to plaintext
    // for a loopback leader without them), and any error (certificates, another cluster).
    auto probe = Connection::open(addr, 5000);
    if (!probe) {
      std::cerr << "bench: " << probe.status().message() << "\n";
      const std::string& c = probe.status().code();
      return c == "UNAVAILABLE" || c == "LOST" ? k_unknown : k_usage;
    }
    targets.push_back({*eps.begin(), host, probe->secure() ? Connection::tls() : nullptr});
  }
  if (targets.empty()) {
    std::cerr << "no leader address\n";
    return k_usage;
  }
  return std::nullopt;
}

// The closed loop: `cfg.clients` workers until the duration is up (or the fill is done, or
// Ctrl-C), with a progress line each second. Returns the seconds it ran.
double run_load(asio::io_context& io, const std::vector<Target>& targets, BenchConfig& cfg,
                int64_t duration_ms, Stats& st, std::vector<std::shared_ptr<Worker>>& workers) {
  bool stop = false;
  for (int i = 0; i < cfg.clients; ++i) {
    const auto& t = targets[static_cast<size_t>(i) % targets.size()];
    workers.push_back(
        std::make_shared<Worker>(io, t.ep, t.host, t.tls, cfg, st, 1000 + i, stop));
    workers.back()->start();
  }
  int64_t start = now_ms();
  asio::steady_timer tick(io);
  uint64_t last = 0;
  std::function<void()> on_tick = [&] {
    int64_t el = now_ms() - start;
    uint64_t done = st.committed + st.reads;
    if (!cfg.json)
      std::cerr << fmt::format(
                       "\r  {:5.1f}s  {:>8} done  {:>8.0f}/s  aborts {}  errors {}   ", el / 1000.0,
                       done, (done - last) * 1.0,
                       [&] {
                         uint64_t a = 0;
                         for (auto& [k, v] : st.aborts) a += v;
                         return a;
                       }(),
                       st.errors)
                << std::flush;
    if (!cfg.fill) st.per_second.push_back(done - last);
    last = done;
    bool filled = cfg.fill && cfg.next_fill >= cfg.keys && cfg.in_flight == 0;
    if (el >= duration_ms || filled) {
      stop = true;
      io.stop();
      return;
    }
    tick.expires_after(
        std::chrono::milliseconds(std::min<int64_t>(cfg.fill ? 100 : 1000, duration_ms - el)));
    tick.async_wait([&](boost::system::error_code e) {
      if (!e) on_tick();
    });
  };
  if (cfg.fill) duration_ms = std::max<int64_t>(duration_ms, 3600 * 1000);
  tick.expires_after(
      std::chrono::milliseconds(std::min<int64_t>(cfg.fill ? 100 : 1000, duration_ms)));
  tick.async_wait([&](boost::system::error_code e) {
    if (!e) on_tick();
  });
  // Ctrl-C (or SIGTERM) ends the run early: the summary of what was done is still printed.
  asio::signal_set interrupt(io, SIGINT, SIGTERM);
  interrupt.async_wait([&](boost::system::error_code e, int) {
    if (e) return;
    stop = true;
    io.stop();
  });
  io.run();
  double secs = std::max(0.001, (now_ms() - start) / 1000.0);
  if (!cfg.json) std::cerr << "\n";
  return secs;
}

// The summary: one JSON line, or three lines for a person.
void print_summary(const BenchConfig& cfg, Stats& st, double secs) {
  std::sort(st.lat_us.begin(), st.lat_us.end());
  uint64_t aborts = 0;
  std::string abort_list, abort_json;
  for (auto& [k, v] : st.aborts) {
    aborts += v;
    abort_list += fmt::format("{}{}={}", abort_list.empty() ? "" : " ", k, v);
    abort_json += fmt::format("{}\"{}\":{}", abort_json.empty() ? "" : ",", k, v);
  }
  double tps = st.committed / secs, rps = st.reads / secs;
  auto ms = [](uint32_t us) { return us / 1000.0; };
  if (cfg.json) {
    std::cout << fmt::format(
        "{{\"clients\":{},\"seconds\":{:.2f},\"ops\":{},\"keys\":{},\"value_size\":{},"
        "\"read_ratio\":{},\"committed\":{},\"committed_per_s\":{:.1f},\"reads\":{},"
        "\"reads_per_s\":{:.1f},\"aborts\":{{{}}},\"errors\":{},\"p50_ms\":{:.3f},"
        "\"p90_ms\":{:.3f},\"p99_ms\":{:.3f},\"p999_ms\":{:.3f},\"max_ms\":{:.3f},"
        "\"per_second\":[{}]}}\n",
        cfg.clients, secs, cfg.ops, cfg.keys, cfg.value_size, cfg.read_ratio, st.committed, tps,
        st.reads, rps, abort_json, st.errors, ms(pct(st.lat_us, 50)), ms(pct(st.lat_us, 90)),
        ms(pct(st.lat_us, 99)), ms(pct(st.lat_us, 99.9)),
        ms(st.lat_us.empty() ? 0 : st.lat_us.back()), fmt::join(st.per_second, ","));
  } else {
    std::cout << fmt::format(
        "clients {}  duration {:.1f}s  ops/txn {}  keys {}  value {} B  read ratio {}\n"
        "committed {} ({:.0f} txn/s)  reads {} ({:.0f}/s)  aborts {} {}  errors {}\n"
        "latency ms  p50 {:.3f}  p90 {:.3f}  p99 {:.3f}  p99.9 {:.3f}  max {:.3f}\n",
        cfg.clients, secs, cfg.ops, cfg.keys, cfg.value_size, cfg.read_ratio, st.committed, tps,
        st.reads, rps, aborts, abort_list.empty() ? "" : "(" + abort_list + ")", st.errors,
        ms(pct(st.lat_us, 50)), ms(pct(st.lat_us, 90)), ms(pct(st.lat_us, 99)),
        ms(pct(st.lat_us, 99.9)), ms(st.lat_us.empty() ? 0 : st.lat_us.back()));
  }
}

// The keys the run wrote go, in transactions of 100 deletes (a bounded effort: a minute at
// most).
void remove_written(const Options& o, const BenchConfig& cfg) {
  size_t removed = 0;
  int64_t until = now_ms() + 60000;
  if (auto c = Connection::open(o.leader, 3000)) {
    protocol::LineBuilder b("TXN");
    b.raw("-");
    size_t n = 0;
    auto flush = [&] {
      // A conflict with a write still in flight when the run stopped: again, a little later.
      for (int attempt = 0; n && attempt < 20 && now_ms() < until; ++attempt) {
        auto r = c->call(b.str(), 10000);
        if (r && r->rfind("COMMITTED", 0) == 0) {
          removed += n;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      b = protocol::LineBuilder("TXN");
      b.raw("-");
      n = 0;
    };
    for (size_t k = 0; k < cfg.written.size() && now_ms() < until; ++k) {
      if (!cfg.written[k]) continue;
      b.raw("del").raw(cfg.key_prefix + std::to_string(k));
      if (++n == 100) flush();
    }
    flush();
  }
  size_t total = static_cast<size_t>(std::count(cfg.written.begin(), cfg.written.end(), true));
  if (removed < total)
    std::cerr << fmt::format("bench: {} of its {} keys removed; the rest remain under '{}'\n",
                             removed, total, cfg.key_prefix);
}
}  // namespace

int run_bench_cli(const Options& o, const std::vector<std::string>& args) {
  BenchConfig cfg;
  int64_t duration_ms = 0;
  if (auto rc = parse_bench(args, cfg, duration_ms)) return *rc;
  asio::io_context io(1);
  std::vector<Target> targets;
  if (auto rc = resolve_targets(o, io, targets)) return *rc;
  Stats st;
  st.lat_us.reserve(1 << 20);
  std::vector<std::shared_ptr<Worker>> workers;
  double secs = run_load(io, targets, cfg, duration_ms, st, workers);
  print_summary(cfg, st, secs);
  if (!cfg.keep) {
    workers.clear();
    remove_written(o, cfg);
  }
  return st.errors > 0 && st.committed == 0 && st.reads == 0 ? k_unknown : k_ok;
}

}  // namespace tpc::client
