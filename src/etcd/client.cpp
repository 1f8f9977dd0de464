#include "etcd/client.h"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <fmt/format.h>

#include "common/logging.h"
#include "common/util.h"

namespace tpc::etcd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

struct Client::Impl {
  struct Request {
    std::string path;
    std::string body;
    Callback cb;
  };
  explicit Impl(asio::io_context& io, int timeout_ms) : stream(io), timeout_ms(timeout_ms) {}
  beast::tcp_stream stream;
  int timeout_ms;
  bool connected = false;
  bool busy = false;
  bool stopped = false;
  std::deque<Request> queue;
  Request current;
  http::request<http::string_body> req;
  http::response<http::string_body> res;
  beast::flat_buffer buf;
};

namespace {
void next(const std::shared_ptr<Client>& self, Client::Impl& m, std::vector<std::string>& eps,
          size_t& cur);

void fail(const std::shared_ptr<Client>& self, Client::Impl& m, std::vector<std::string>& eps,
          size_t& cur, const std::string& why) {
  beast::error_code ig;
  m.stream.socket().close(ig);
  m.connected = false;
  std::string ep = eps[cur];
  cur = (cur + 1) % eps.size();  // the next request tries the next member
  auto cb = std::move(m.current.cb);
  m.busy = false;
  cb(Status::error("UNAVAILABLE", fmt::format("etcd at {}: {}", ep, why)));
  next(self, m, eps, cur);
}

void send(const std::shared_ptr<Client>& self, Client::Impl& m, std::vector<std::string>& eps,
          size_t& cur) {
  m.req = {};
  m.req.method(http::verb::post);
  m.req.target(m.current.path);
  m.req.version(11);
  m.req.set(http::field::host, eps[cur]);
  m.req.set(http::field::content_type, "application/json");
  m.req.keep_alive(true);
  m.req.body() = std::move(m.current.body);
  m.req.prepare_payload();
  m.stream.expires_after(std::chrono::milliseconds(m.timeout_ms));
  http::async_write(m.stream, m.req, [self, &m, &eps, &cur](beast::error_code ec, size_t) {
    if (m.stopped) return;
    if (ec) return fail(self, m, eps, cur, ec.message());
    m.res = {};
    http::async_read(m.stream, m.buf, m.res, [self, &m, &eps, &cur](beast::error_code ec2, size_t) {
      if (m.stopped) return;
      if (ec2) return fail(self, m, eps, cur, ec2.message());
      m.stream.expires_never();
      auto cb = std::move(m.current.cb);
      bool keep = m.res.keep_alive();
      std::string body = std::move(m.res.body());
      unsigned code = m.res.result_int();
      if (!keep) {
        beast::error_code ig;
        m.stream.socket().close(ig);
        m.connected = false;
      }
      m.busy = false;
      if (code != 200) {
        // The gateway's error body carries etcd's message; keep it.
        auto msg = decode_range(body);
        cb(Status::error("HTTP", fmt::format("etcd answered {}: {}", code,
                                             msg ? body.substr(0, 200) : msg.status().message())));
      } else {
        cb(std::move(body));
      }
      next(self, m, eps, cur);
    });
  });
}

void next(const std::shared_ptr<Client>& self, Client::Impl& m, std::vector<std::string>& eps,
          size_t& cur) {
  if (m.busy || m.stopped || m.queue.empty()) return;
  m.busy = true;
  m.current = std::move(m.queue.front());
  m.queue.pop_front();
  if (m.connected) return send(self, m, eps, cur);
  std::string host;
  uint16_t port;
  if (!parse_host_port(eps[cur], &host, &port)) return fail(self, m, eps, cur, "bad address");
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) {
    tcp::resolver r(m.stream.get_executor());
    auto res = r.resolve(host, std::to_string(port), ec);
    if (ec || res.empty()) return fail(self, m, eps, cur, "cannot resolve " + host);
    addr = res.begin()->endpoint().address();
  }
  m.stream.expires_after(std::chrono::milliseconds(m.timeout_ms));
  m.stream.async_connect(tcp::endpoint(addr, port), [self, &m, &eps, &cur](beast::error_code e) {
    if (m.stopped) return;
    if (e) return fail(self, m, eps, cur, e.message());
    m.connected = true;
    m.stream.socket().set_option(tcp::no_delay(true));
    send(self, m, eps, cur);
  });
}
}  // namespace

Client::Client(asio::io_context& io, std::vector<std::string> endpoints, int timeout_ms)
    : m(std::make_unique<Impl>(io, timeout_ms)), m_endpoints(std::move(endpoints)) {
  TPC_CHECK(!m_endpoints.empty(), "an etcd client needs an endpoint");
}

Client::~Client() = default;

void Client::stop() {
  m->stopped = true;
  beast::error_code ig;
  m->stream.socket().close(ig);
  auto q = std::move(m->queue);
  m->queue.clear();
  if (m->busy && m->current.cb) q.push_front(std::move(m->current));
  m->busy = false;
  for (auto& r : q) r.cb(Status::error("UNAVAILABLE", "etcd client stopped"));
}

void Client::call(const std::string& path, std::string body, Callback cb) {
  if (m->stopped) {
    cb(Status::error("UNAVAILABLE", "etcd client stopped"));
    return;
  }
  m->queue.push_back({path, std::move(body), std::move(cb)});
  next(shared_from_this(), *m, m_endpoints, m_current);
}

void Client::txn(const Txn& t, std::function<void(Result<TxnResult>)> cb) {
  call("/v3/kv/txn", encode_txn(t), [cb = std::move(cb)](Result<std::string> r) {
    if (!r) return cb(r.status());
    cb(decode_txn(*r));
  });
}

void Client::range(const std::string& key, const std::string& range_end,
                   std::function<void(Result<std::vector<KeyValue>>)> cb) {
  call("/v3/kv/range", encode_range(key, range_end, 0), [cb = std::move(cb)](Result<std::string> r) {
    if (!r) return cb(r.status());
    cb(decode_range(*r));
  });
}

void Client::lease_grant(int64_t ttl_s,
                         std::function<void(Result<std::pair<int64_t, int64_t>>)> cb) {
  call("/v3/lease/grant", encode_lease_grant(ttl_s), [cb = std::move(cb)](Result<std::string> r) {
    if (!r) return cb(r.status());
    cb(decode_lease_grant(*r));
  });
}

void Client::is_leader(std::function<void(Result<bool>)> cb) {
  call("/v3/maintenance/status", "{}", [cb = std::move(cb)](Result<std::string> r) {
    if (!r) return cb(r.status());
    cb(decode_status_is_leader(*r));
  });
}

void Client::lease_keepalive(int64_t id, std::function<void(Result<int64_t>)> cb) {
  call("/v3/lease/keepalive", encode_lease_id(id), [cb = std::move(cb)](Result<std::string> r) {
    if (!r) return cb(r.status());
    cb(decode_lease_keepalive(*r));
  });
}

void Client::lease_revoke(int64_t id, std::function<void(Status)> cb) {
  call("/v3/lease/revoke", encode_lease_id(id), [cb = std::move(cb)](Result<std::string> r) {
    cb(r ? Status::ok() : r.status());
  });
}

}  // namespace tpc::etcd
