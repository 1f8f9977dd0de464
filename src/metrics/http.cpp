#include "metrics/http.h"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <optional>

#include "common/logging.h"
#include "common/status.h"
#include "common/util.h"

namespace tpc::metrics {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {
constexpr size_t k_max_connections = 64;  // scrapers are few
constexpr int k_idle_seconds = 60;
}  // namespace

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(asio::io_context& io, const Registry& r, std::function<std::string()> h)
      : acceptor(io), registry(r), health(std::move(h)) {}
  tcp::acceptor acceptor;
  const Registry& registry;
  std::function<std::string()> health;
  size_t open = 0;
  bool stopped = false;

  void accept() {
    acceptor.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket s) {
      if (self->stopped) return;
      if (!ec && self->open < k_max_connections) serve(self, std::move(s));
      self->accept();
    });
  }

  struct Conn {
    explicit Conn(tcp::socket s) : stream(std::move(s)) {}
    beast::tcp_stream stream;
    beast::flat_buffer buf;
    std::optional<http::request_parser<http::empty_body>> parser;
    http::response<http::string_body> res;
  };

  static void serve(std::shared_ptr<Impl> self, tcp::socket s) {
    ++self->open;
    auto c = std::make_shared<Conn>(std::move(s));
    read(self, c);
  }

  static void read(std::shared_ptr<Impl> self, std::shared_ptr<Conn> c) {
    c->parser.emplace();
    c->parser->header_limit(8192);
    c->stream.expires_after(std::chrono::seconds(k_idle_seconds));
    http::async_read(c->stream, c->buf, *c->parser, [self, c](beast::error_code ec, size_t) {
      if (ec || self->stopped) return done(self, c);
      const auto& req = c->parser->get();
      c->res = {};
      c->res.version(req.version());
      c->res.keep_alive(req.keep_alive());
      c->res.set(http::field::server, "tpc");
      std::string target(req.target());
      if (req.method() != http::verb::get && req.method() != http::verb::head) {
        c->res.result(http::status::method_not_allowed);
        c->res.body() = "GET only\n";
      } else if (target == "/metrics") {
        c->res.result(http::status::ok);
        c->res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
        c->res.body() = self->registry.render();
      } else if (target == "/healthz") {
        std::string why = self->health ? self->health() : "";
        c->res.result(why.empty() ? http::status::ok : http::status::service_unavailable);
        c->res.set(http::field::content_type, "text/plain; charset=utf-8");
        c->res.body() = why.empty() ? "ok\n" : why + "\n";
      } else {
        c->res.result(http::status::not_found);
        c->res.body() = "not found: /metrics and /healthz are served here\n";
      }
      if (req.method() == http::verb::head) {
        c->res.content_length(c->res.body().size());
        c->res.body().clear();
      } else {
        c->res.prepare_payload();
      }
      http::async_write(c->stream, c->res, [self, c](beast::error_code ec2, size_t) {
        if (ec2 || self->stopped || !c->res.keep_alive()) return done(self, c);
        read(self, c);
      });
    });
  }

  static void done(std::shared_ptr<Impl> self, std::shared_ptr<Conn> c) {
    beast::error_code ignored;
    c->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    c->stream.close();
    --self->open;
  }
};

HttpServer::HttpServer(asio::io_context& io, const std::string& host_port,
                       const Registry& registry, std::function<std::string()> health)
    : m(std::make_shared<Impl>(io, registry, std::move(health))) {
  std::string host;
  uint16_t port;
  if (!parse_host_port(host_port, &host, &port))
    throw Error("--metrics-addr: '" + host_port + "' is not HOST:PORT", 2);
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) throw Error("--metrics-addr: '" + host + "' is not an IP address", 2);
  tcp::endpoint ep(addr, port);
  m->acceptor.open(ep.protocol(), ec);
  if (!ec) m->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) m->acceptor.bind(ep, ec);
  if (!ec) m->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw Error("--metrics-addr " + host_port + ": " + ec.message(), 2);
  m->accept();
}

HttpServer::~HttpServer() { stop(); }

uint16_t HttpServer::port() const {
  boost::system::error_code ec;
  auto ep = m->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

void HttpServer::stop() {
  if (m->stopped) return;
  m->stopped = true;
  boost::system::error_code ignored;
  m->acceptor.close(ignored);
}

}  // namespace tpc::metrics
