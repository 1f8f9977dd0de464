#include "client/connection.h"

#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>

#include <fmt/format.h>

#include "common/util.h"
#include "node/identity.h"
#include "protocol/stream.h"

namespace tpc::client {

namespace asio = boost::asio;
using asio::ip::tcp;

struct Connection::Impl {
  asio::io_context io;
  std::shared_ptr<protocol::Stream> stream;
};

Connection::Connection() = default;
Connection::~Connection() { close(); }
Connection::Connection(Connection&& o) noexcept
    : m(std::move(o.m)), m_in(std::move(o.m_in)), m_server_max_message(o.m_server_max_message) {}
Connection& Connection::operator=(Connection&& o) noexcept {
  if (this != &o) {
    close();
    m = std::move(o.m);
    m_in = std::move(o.m_in);
    m_server_max_message = o.m_server_max_message;
  }
  return *this;
}
bool Connection::is_open() const { return m && m->stream; }
bool Connection::secure() const { return m && m->stream && m->stream->secure(); }
void Connection::close() {
  if (!m || !m->stream) return;
  m->stream->close();
  // Let the aborted operations finish before the stream goes.
  m->io.restart();
  m->io.run();
  m->stream.reset();
}

bool Connection::run(int64_t deadline_ms, const bool& done) {
  while (!done) {
    int64_t left = deadline_ms - now_ms();
    if (left <= 0) break;
    m->io.restart();
    m->io.run_for(std::chrono::milliseconds(left));
  }
  if (done) return true;
  close();
  return false;
}

namespace {
std::string& cluster_slot() {
  static std::string c;
  return c;
}
struct TlsSlot {
  std::shared_ptr<const tls::Context> ctx;
  bool implicit = false;
};
TlsSlot& tls_slot() {
  static TlsSlot t;
  return t;
}
}  // namespace
void Connection::expect_cluster(std::string cluster_id) { cluster_slot() = std::move(cluster_id); }
const std::string& Connection::expected_cluster() { return cluster_slot(); }
void Connection::use_tls(std::shared_ptr<const tls::Context> tls, bool implicit) {
  tls_slot() = {std::move(tls), implicit};
}
std::shared_ptr<const tls::Context> Connection::tls() { return tls_slot().ctx; }

Result<Connection> Connection::open(const std::string& host_port, int timeout_ms,
                                    const std::string& role) {
  if (host_port.find(',') != std::string::npos) {
    // Several servers (leaders over one decision store): the first that answers, in order,
    // each within the deadline that is left.
    int64_t deadline = now_ms() + timeout_ms;
    Status last = Status::error("USAGE", "no address in '" + host_port + "'");
    for (const auto& one : split_list(host_port, ',')) {
      int left = static_cast<int>(std::max<int64_t>(deadline - now_ms(), 1));
      auto c = open(one, left, role);
      if (c) return c;
      last = c.status();
      // A problem of ours (certificates, a bad address, another cluster) is the same
      // everywhere: said now, not hidden behind the next server's.
      if (last.code() != "UNAVAILABLE") return last;
    }
    return last;
  }
  std::string host;
  uint16_t port;
  if (!parse_host_port(host_port, &host, &port))
    return Status::error("USAGE", "bad address '" + host_port + "', expected HOST:PORT");
  int64_t deadline = now_ms() + timeout_ms;
  auto tls = tls_slot().ctx;
  for (int attempt = 0; attempt < 2; ++attempt) {
    Connection c;
    c.m = std::make_unique<Impl>();
    boost::system::error_code ec;
    tcp::resolver resolver(c.m->io);
    auto eps = resolver.resolve(host, std::to_string(port), ec);
    if (ec || eps.empty())
      return Status::error("UNAVAILABLE", fmt::format("cannot resolve {}: {}", host,
                                                      ec ? ec.message() : "no address"));
    tcp::endpoint ep = eps.begin()->endpoint();
    c.m->stream = std::make_shared<protocol::Stream>(tcp::socket(c.m->io), tls);
    bool done = false;
    c.m->stream->socket().async_connect(ep, [&](boost::system::error_code e) {
      ec = e;
      done = true;
    });
    if (!c.run(deadline, done))
      return Status::error("UNAVAILABLE", fmt::format("cannot connect to {}: timed out",
                                                      host_port));
    if (ec)
      return Status::error("UNAVAILABLE",
                           fmt::format("cannot connect to {}: {}", host_port, ec.message()));
    c.m->stream->socket().set_option(tcp::no_delay(true), ec);
    Status hs;
    done = false;
    c.m->stream->async_handshake(false, host, [&](Status s) {
      hs = std::move(s);
      done = true;
    });
    if (!c.run(deadline, done))
      return Status::error("UNAVAILABLE", fmt::format("TLS handshake with {}: timed out", host_port));
    if (!hs) {
      // Certificates found in the default place, not asked for: a server on this machine
      // that runs without them (it closes a TLS client at once) is spoken to in plaintext.
      if (tls && tls_slot().implicit && ep.address().is_loopback() &&
          hs.message().find("closed the connection") != std::string::npos) {
        tls = nullptr;
        continue;
      }
      return Status::error("TLS", fmt::format("TLS handshake with {} failed: {}", host_port,
                                              hs.message()));
    }
    const std::string& cluster = expected_cluster();
    auto hello = c.call(fmt::format("HELLO {} {}{}", protocol::k_version, role,
                                    cluster.empty() ? "" : " cluster=" + cluster),
                        static_cast<int>(std::max<int64_t>(deadline - now_ms(), 1)));
    if (!hello && tls)  // TLS 1.3: the server checks our certificate after our handshake ends
      return Status::error("TLS", fmt::format("TLS with {} failed: {}", host_port,
                                              hello.status().message()));
    if (!hello)
      return Status::error("UNAVAILABLE",
                           "handshake with " + host_port + " failed: " + hello.status().message());
    if (hello->rfind("ERR SECURE", 0) == 0)
      return Status::error("SECURE", fmt::format("{} speaks TLS only: give the cluster's "
                                                 "certificates with --certs-dir or "
                                                 "TPC_CERTS_DIR (tpc cluster prints where they are)",
                                                 host_port));
    if (Status s = node::check_cluster(cluster, *hello, host_port); !s) return s;
    if (hello->rfind("HELLO ", 0) != 0)
      return Status::error("VERSION",
                           "server at " + host_port + " refused the handshake: " + *hello);
    if (auto n = parse_int(protocol::parse_fields(*hello)["max_message"]); n && *n > 0)
      c.m_server_max_message = static_cast<size_t>(*n);
    return c;
  }
  return Status::error("UNAVAILABLE", "cannot connect to " + host_port);
}

Status Connection::send_raw(const std::string& bytes) {
  if (!is_open()) return Status::error("LOST", "not connected");
  boost::system::error_code ec;
  bool done = false;
  m->stream->async_write(asio::buffer(bytes), [&](boost::system::error_code e, size_t) {
    ec = e;
    done = true;
  });
  if (!run(now_ms() + 30000, done)) return Status::error("LOST", "the server does not read");
  if (ec) return Status::error("LOST", ec.message());
  return Status::ok();
}

Result<std::string> Connection::read_line(int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  std::string line;
  char buf[65536];
  while (true) {
    auto r = m_in.next(&line);
    if (r == protocol::LineBuffer::Next::line) return line;
    if (r == protocol::LineBuffer::Next::too_long)
      return Status::error("LOST", "reply line too long");
    if (!is_open()) return Status::error("LOST", "not connected");
    boost::system::error_code ec;
    size_t got = 0;
    bool done = false;
    m->stream->async_read_some(asio::buffer(buf), [&](boost::system::error_code e, size_t n) {
      ec = e;
      got = n;
      done = true;
    });
    if (!run(deadline, done)) return Status::error("LOST", "no reply before the deadline");
    if (ec)
      return Status::error("LOST", ec == asio::error::eof || ec == asio::ssl::error::stream_truncated
                                       ? std::string("connection closed by server")
                                       : protocol::describe_error(ec, true));
    m_in.append(buf, got);
  }
}

Result<std::string> Connection::call(const std::string& line, int timeout_ms,
                                     const std::string& tag) {
  if (!is_open()) return Status::error("LOST", "not connected");
  std::string prefix = "@" + (tag.empty() ? random_hex(8) : tag) + " ";
  if (auto s = send_raw(prefix + line + "\n"); !s) return s;
  auto r = read_line(timeout_ms);
  if (!r) return r;
  if (r->compare(0, prefix.size(), prefix) == 0) return r->substr(prefix.size());
  if (r->rfind("ERR ", 0) == 0) return r;
  close();  // the stream is out of step with our requests: nothing more on it can be trusted
  return Status::error("LOST", "the server answered another request (" + r->substr(0, 100) +
                                   "); outcome of this one unknown");
}

}  // namespace tpc::client
