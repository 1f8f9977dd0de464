#include "protocol/link.h"

#include <fmt/format.h>

#include "common/logging.h"
#include "common/util.h"
#include "protocol/messages.h"

namespace tpc::protocol {

namespace asio = boost::asio;
using asio::ip::tcp;

Link::Link(asio::io_context& io, std::string host, uint16_t port, std::string hello,
           size_t max_message)
    : m_io(io),
      m_host(std::move(host)),
      m_port(port),
      m_hello(std::move(hello)),
      m_timer(io),
      m_max_message(max_message),
      m_in(max_message),
      m_keepalive(io) {}

void Link::start() { connect(); }

void Link::stop() {
  m_stopped = true;
  m_timer.cancel();
  m_keepalive.cancel();
  close_socket();
  m_up = false;
  fail_all();
}

void Link::close_socket() {
  if (m_stream) m_stream->close();
}

void Link::connect() {
  if (m_stopped) return;
  auto self = shared_from_this();
  uint64_t gen = ++m_generation;
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(m_host, ec);
  if (ec) {
    // Resolve names synchronously: only at (re)connect, never on the request path.
    tcp::resolver r(m_io);
    auto res = r.resolve(m_host, std::to_string(m_port), ec);
    if (ec || res.empty()) {
      if (!m_warned) log::warn("cannot resolve {}: {}", m_host, ec.message());
      m_warned = true;
      schedule_reconnect();
      return;
    }
    addr = res.begin()->endpoint().address();
  }
  m_stream = std::make_shared<Stream>(tcp::socket(m_io), m_tls);
  m_stream->socket().async_connect(
      tcp::endpoint(addr, m_port), [this, self, gen, st = m_stream](boost::system::error_code ec) {
        if (gen != m_generation || m_stopped) return;
        if (ec) {
          if (!m_warned) log::warn("peer {} unreachable: {}; retrying", address(), ec.message());
          m_warned = true;
          schedule_reconnect();
          return;
        }
        boost::system::error_code ig;
        m_stream->socket().set_option(tcp::no_delay(true), ig);
        st->async_handshake(false, m_host, [this, self, gen, st](Status s) {
          if (gen != m_generation || m_stopped) return;
          if (s && m_stream->peer() && m_stream->peer()->role != m_tls_role)
            s = Status::error("TLS", fmt::format("its certificate grants role '{}', not {}",
                                                 escape_display(m_stream->peer()->role),
                                                 m_tls_role));
          if (!s) return refuse("TLS", "TLS: " + s.message());
          on_connected(gen);
        });
      });
}

void Link::on_connected(uint64_t) {
  m_in = LineBuffer(m_max_message);
  m_handshaken = false;
  m_out = m_hello + "\n";
  m_write_in_flight = false;
  flush();
  read_more();
}

void Link::schedule_reconnect() {
  if (m_stopped) return;
  m_timer.expires_after(std::chrono::milliseconds(m_backoff_ms));
  m_backoff_ms = std::min(m_backoff_ms * 2, 1000);
  auto self = shared_from_this();
  m_timer.async_wait([this, self](boost::system::error_code ec) {
    if (!ec) connect();
  });
}

void Link::fail_all() {
  auto pending = std::move(m_pending);
  m_pending.clear();
  for (auto& [tag, cb] : pending)
    asio::post(m_io, [cb = std::move(cb), a = address()] {
      cb(Status::error("UNAVAILABLE", "connection to " + a + " lost"));
    });
}

void Link::read_more() {
  auto self = shared_from_this();
  uint64_t gen = m_generation;
  m_stream->async_read_some(asio::buffer(m_read_buf),
                           [this, self, gen, st = m_stream](boost::system::error_code ec,
                                                            size_t n) {
                             if (gen != m_generation || m_stopped) return;
                             if (ec) {
                               bool was_up = m_up;
                               if (m_up)
                                 log::warn("connection to {} lost: {}", address(), ec.message());
                               m_up = false;
                               if (was_up && m_on_down) m_on_down();
                               close_socket();
                               fail_all();
                               schedule_reconnect();
                               return;
                             }
                             m_in.append(m_read_buf, n);
                             std::string line;
                             while (true) {
                               auto r = m_in.next(&line);
                               if (r != LineBuffer::Next::line) break;
                               on_line(line);
                               if (gen != m_generation) return;
                             }
                             read_more();
                           });
}

void Link::on_line(const std::string& line) {
  if (!m_handshaken) {
    auto t = split(line);
    if (t.size() >= 4 && t[0] == "HELLO" && t[1] == k_version) {
      m_handshaken = true;
      auto f = parse_fields(line);
      auto idle = parse_int(f["idle_ms"]);
      m_keepalive_ms = idle && *idle > 0 ? std::max<int64_t>(*idle / 3, 20) : 0;
      auto ml = parse_int(f["max_message"]);
      m_peer_max_message = ml && *ml > 0 ? static_cast<size_t>(*ml) : 0;
      Result<std::string> first = std::string();
      if (m_on_hello) first = m_on_hello(line);
      if (!first) return refuse(first.status().code(), first.status().message());
      if (first->empty()) return go_up();
      // The first request (JOIN) must be acknowledged before anything else is sent.
      uint64_t tag = m_next_tag++;
      m_pending.emplace(tag, [this, gen = m_generation](Result<std::string> r) {
        if (gen != m_generation || m_stopped || !r) return;  // lost: the reader reconnects
        if (*r == "ACK") return go_up();
        refuse_reply(*r, *r);
      });
      m_out += fmt::format("@{} {}\n", tag, *first);
      schedule_flush();
      return;
    }
    return refuse_reply(line, "handshake failed: " + line);
  }
  if (line.empty() || line[0] != '@') {
    log::warn("peer {} sent an untagged line: {}", address(), line.substr(0, 200));
    return;
  }
  auto sp = line.find(' ');
  uint64_t tag = std::strtoull(line.c_str() + 1, nullptr, 10);
  auto it = m_pending.find(tag);
  if (it == m_pending.end()) return;
  auto cb = std::move(it->second);
  m_pending.erase(it);
  cb(sp == std::string::npos ? std::string() : line.substr(sp + 1));
}

void Link::keepalive(uint64_t gen) {
  if (m_keepalive_ms <= 0) return;
  int64_t due = m_last_write_ms + m_keepalive_ms - now_ms();
  if (due <= 0) {
    request("PING", [](Result<std::string>) {});
    due = m_keepalive_ms;
  }
  m_keepalive.expires_after(std::chrono::milliseconds(due));
  auto self = shared_from_this();
  m_keepalive.async_wait([this, self, gen](boost::system::error_code ec) {
    if (!ec && gen == m_generation && m_up && !m_stopped) keepalive(gen);
  });
}

void Link::go_up() {
  m_up = true;
  m_last_write_ms = now_ms();
  keepalive(m_generation);
  m_backoff_ms = 20;
  if (m_warned || !m_refused.empty()) log::info("peer {} is up", address());
  m_warned = false;
  m_refused.clear();
  m_refused_code.clear();
  if (m_on_up) m_on_up();
}

void Link::refuse_reply(const std::string& line, const std::string& why) {
  auto t = split(line);
  refuse(t.size() >= 2 && t[0] == "ERR" ? std::string(t[1]) : std::string("PROTO"), why);
}

void Link::refuse(const std::string& code, const std::string& why) {
  if (why != m_refused) log::error("peer {} refused: {}", address(), why);
  m_refused = why;
  m_refused_code = code;
  m_warned = true;
  close_socket();
  ++m_generation;
  fail_all();
  m_backoff_ms = 3000;
  schedule_reconnect();
}

void Link::request(const std::string& line, Callback cb) {
  if (!m_up) {
    asio::post(m_io, [cb = std::move(cb), a = address(), refused = !m_refused.empty()] {
      cb(Status::error(
          "UNAVAILABLE",
          "peer " + a + (refused ? " is refused (see tpc client status)" : " is down")));
    });
    return;
  }
  uint64_t tag = m_next_tag++;
  m_pending.emplace(tag, std::move(cb));
  m_out += '@';
  m_out += std::to_string(tag);
  m_out += ' ';
  m_out += line;
  m_out += '\n';
  schedule_flush();
}

void Link::schedule_flush() {
  // Requests issued by the handlers of this turn of the event loop share one send.
  if (m_flush_posted) return;
  m_flush_posted = true;
  auto self = shared_from_this();
  asio::post(m_io, [this, self] {
    m_flush_posted = false;
    flush();
  });
}

void Link::flush() {
  if (m_write_in_flight || m_out.empty()) return;
  m_writing.swap(m_out);
  m_out.clear();
  m_write_in_flight = true;
  m_last_write_ms = now_ms();
  ++m_writes;
  auto self = shared_from_this();
  uint64_t gen = m_generation;
  m_stream->async_write(asio::buffer(m_writing),
                        [this, self, gen, st = m_stream](boost::system::error_code ec, size_t) {
                      if (gen != m_generation) return;
                      m_write_in_flight = false;
                      m_writing.clear();
                      if (ec) return;  // the read side notices and reconnects
                      flush();
                    });
}

}  // namespace tpc::protocol
