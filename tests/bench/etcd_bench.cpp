// etcd's own rate for the bench's comparison row: closed-loop clients, each with its own
// connection to etcd's HTTP/JSON gateway, each request one etcd transaction putting two
// distinct random keys of 100-byte values (the shape of tpc's W2 transaction). Prints one JSON
// line.
//
// Usage: etcd_bench HOST:PORT[,HOST:PORT...] CLIENTS SECONDS [KEYS]
// Of several members, the load goes to etcd's raft leader (its best rate, as a client that
// knows where the leader is gets).
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "etcd/client.h"

namespace {
using Clock = std::chrono::steady_clock;

struct Totals {
  std::vector<double> lat_ms;
  uint64_t done = 0, errors = 0;
  bool stop = false;
};

struct Worker : std::enable_shared_from_this<Worker> {
  Worker(boost::asio::io_context& io, const std::string& ep, int keys, unsigned seed, Totals& t)
      : client(std::make_shared<tpc::etcd::Client>(io, std::vector<std::string>{ep}, 5000)),
        keys(keys),
        rng(seed),
        totals(t) {}
  void next() {
    if (totals.stop) return;
    std::uniform_int_distribution<int> pick(0, keys - 1);
    int a = pick(rng), b = pick(rng);
    while (b == a) b = pick(rng);
    std::string value(100, 'v');
    for (auto& c : value) c = static_cast<char>('a' + rng() % 26);
    tpc::etcd::Txn t;
    t.success.push_back(tpc::etcd::Op::put("bench/k" + std::to_string(a), value));
    t.success.push_back(tpc::etcd::Op::put("bench/k" + std::to_string(b), value));
    auto start = Clock::now();
    client->txn(t, [self = shared_from_this(), start](tpc::Result<tpc::etcd::TxnResult> r) {
      if (self->totals.stop) return;
      if (r && r->succeeded) {
        ++self->totals.done;
        self->totals.lat_ms.push_back(
            std::chrono::duration<double, std::milli>(Clock::now() - start).count());
      } else {
        ++self->totals.errors;
      }
      self->next();
    });
  }
  std::shared_ptr<tpc::etcd::Client> client;
  int keys;
  std::mt19937 rng;
  Totals& totals;
};
}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: etcd_bench HOST:PORT[,HOST:PORT...] CLIENTS SECONDS [KEYS]\n");
    return 2;
  }
  std::vector<std::string> eps;
  for (std::string rest = argv[1]; !rest.empty();) {
    size_t comma = rest.find(',');
    eps.push_back(rest.substr(0, comma));
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
  }
  std::string ep = eps.at(0);
  for (const auto& e : eps) {
    boost::asio::io_context probe;
    auto c = std::make_shared<tpc::etcd::Client>(probe, std::vector<std::string>{e}, 2000);
    bool lead = false;
    c->is_leader([&](tpc::Result<bool> r) { lead = r && *r; });
    probe.run();
    c->stop();
    if (lead) {
      ep = e;
      break;
    }
  }
  int clients = std::atoi(argv[2]);
  double seconds = std::atof(argv[3]);
  int keys = argc > 4 ? std::atoi(argv[4]) : 100000;
  if (clients < 1 || seconds <= 0 || keys < 2) {
    std::fprintf(stderr, "etcd_bench: CLIENTS >= 1, SECONDS > 0, KEYS >= 2\n");
    return 2;
  }
  boost::asio::io_context io(1);
  Totals totals;
  std::vector<std::shared_ptr<Worker>> workers;
  for (int i = 0; i < clients; ++i) {
    workers.push_back(std::make_shared<Worker>(io, ep, keys, 7919u * (i + 1), totals));
    workers.back()->next();
  }
  auto start = Clock::now();
  boost::asio::steady_timer stop(io);
  stop.expires_after(std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  stop.async_wait([&](boost::system::error_code) {
    totals.stop = true;
    io.stop();
  });
  io.run();
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  auto& l = totals.lat_ms;
  std::sort(l.begin(), l.end());
  auto pct = [&](double p) { return l.empty() ? 0.0 : l[static_cast<size_t>(p / 100 * (l.size() - 1))]; };
  std::printf(
      "{\"endpoint\":\"%s\",\"clients\":%d,\"seconds\":%.2f,\"txns\":%llu,\"txn_per_s\":%.1f,\"errors\":%llu,"
      "\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
      ep.c_str(), clients, secs, static_cast<unsigned long long>(totals.done), totals.done / secs,
      static_cast<unsigned long long>(totals.errors), pct(50), pct(99));
  for (auto& w : workers) w->client->stop();
  return totals.done > 0 ? 0 : 1;
}
