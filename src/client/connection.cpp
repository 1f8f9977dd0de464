#include "client/connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/util.h"
#include "node/identity.h"

namespace tpc::client {

Connection::~Connection() { close(); }
Connection::Connection(Connection&& o) noexcept : m_fd(o.m_fd), m_in(std::move(o.m_in)) {
  o.m_fd = -1;
}
Connection& Connection::operator=(Connection&& o) noexcept {
  if (this != &o) {
    close();
    m_fd = o.m_fd;
    m_in = std::move(o.m_in);
    o.m_fd = -1;
  }
  return *this;
}
void Connection::close() {
  if (m_fd >= 0) ::close(m_fd);
  m_fd = -1;
}

namespace {
std::string& cluster_slot() {
  static std::string c;
  return c;
}
}  // namespace
void Connection::expect_cluster(std::string cluster_id) { cluster_slot() = std::move(cluster_id); }
const std::string& Connection::expected_cluster() { return cluster_slot(); }

Result<Connection> Connection::open(const std::string& host_port, int timeout_ms,
                                    const std::string& role) {
  std::string host;
  uint16_t port;
  if (!parse_host_port(host_port, &host, &port))
    return Status::error("USAGE", "bad address '" + host_port + "', expected HOST:PORT");
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0)
    return Status::error("UNAVAILABLE",
                         fmt::format("cannot resolve {}: {}", host, gai_strerror(rc)));
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    return Status::error("UNAVAILABLE", std::strerror(errno));
  }
  int rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0 && errno != EINPROGRESS) {
    int e = errno;
    ::close(fd);
    return Status::error("UNAVAILABLE",
                         fmt::format("cannot connect to {}: {}", host_port, std::strerror(e)));
  }
  if (rc != 0) {
    pollfd p{fd, POLLOUT, 0};
    int n = ::poll(&p, 1, timeout_ms);
    int err = 0;
    socklen_t len = sizeof err;
    if (n <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      ::close(fd);
      return Status::error("UNAVAILABLE", fmt::format("cannot connect to {}: {}", host_port,
                                                      n <= 0 ? "timed out" : std::strerror(err)));
    }
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  Connection c;
  c.m_fd = fd;
  const std::string& cluster = expected_cluster();
  auto hello = c.call(fmt::format("HELLO {} {}{}", protocol::k_version, role,
                                  cluster.empty() ? "" : " cluster=" + cluster),
                      timeout_ms);
  if (!hello)
    return Status::error("UNAVAILABLE",
                         "handshake with " + host_port + " failed: " + hello.status().message());
  if (Status s = node::check_cluster(cluster, *hello, host_port); !s) return s;
  if (hello->rfind("HELLO ", 0) != 0)
    return Status::error("VERSION", "server at " + host_port + " refused the handshake: " + *hello);
  return c;
}

Status Connection::send_raw(const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t w = ::send(m_fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EAGAIN) {
      pollfd p{m_fd, POLLOUT, 0};
      ::poll(&p, 1, 1000);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return Status::error("LOST", std::strerror(errno));
    off += static_cast<size_t>(w);
  }
  return Status::ok();
}

Result<std::string> Connection::read_line(int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  std::string line;
  while (true) {
    auto r = m_in.next(&line);
    if (r == protocol::LineBuffer::Next::line) return line;
    if (r == protocol::LineBuffer::Next::too_long)
      return Status::error("LOST", "reply line too long");
    int64_t left = deadline - now_ms();
    if (left <= 0) return Status::error("LOST", "no reply before the deadline");
    pollfd p{m_fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[65536];
    ssize_t got = ::recv(m_fd, buf, sizeof buf, 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (got <= 0)
      return Status::error(
          "LOST", got == 0 ? "connection closed by server" : std::string(std::strerror(errno)));
    m_in.append(buf, static_cast<size_t>(got));
  }
}

Result<std::string> Connection::call(const std::string& line, int timeout_ms,
                                     const std::string& tag) {
  if (m_fd < 0) return Status::error("LOST", "not connected");
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
