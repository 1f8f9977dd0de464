#include "protocol/session.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/logging.h"
#include "common/util.h"
#include "protocol/messages.h"

namespace tpc::protocol {

namespace asio = boost::asio;
using asio::ip::tcp;

void Reply::send(std::string line) const {
  if (auto s = m_session.lock()) s->deliver(m_slot, m_tag, std::move(line));
}
PeerInfo& Reply::peer() const {
  static thread_local PeerInfo nobody;
  if (m_peer) return *m_peer;
  nobody = PeerInfo{};
  return nobody;
}

bool Reply::connected() const {
  auto s = m_session.lock();
  return s && s->is_open();
}

Session::Session(tcp::socket socket, const SessionConfig& cfg, Handler handler)
    : m_stream(std::move(socket), cfg.tls),
      m_cfg(cfg),
      m_handler(std::move(handler)),
      m_in(cfg.max_message) {
  boost::system::error_code ec;
  m_stream.socket().set_option(tcp::no_delay(true), ec);
  auto ep = m_stream.socket().remote_endpoint(ec);
  m_peer = ec ? "?" : host_port(ep.address().to_string(), ep.port());
  m_last_active_ms = now_ms();
  m_peer_info = std::make_shared<PeerInfo>();
  m_peer_info->address = m_peer;
}

std::string Session::describe() const {
  if (m_peer_info->cert.empty()) return m_peer;
  return fmt::format("{} ({} {})", m_peer, m_peer_info->role, escape_display(m_peer_info->cert));
}

void Session::handshake(std::function<void()> then) {
  auto self = shared_from_this();
  m_stream.async_handshake(true, "", [this, self, then = std::move(then)](Status s) {
    if (!m_open) return;
    if (!s) {
      log::warn("connection {}: {}", m_peer, s.message());
      close();
      return;
    }
    if (const tls::CertInfo* c = m_stream.peer()) {
      // Over TLS the certificate says who the peer is; a certificate granting no tpc role
      // (a CA's, another system's) is refused here.
      if (!tls::is_role(c->role)) {
        log::warn("connection {}: refused certificate '{}': it grants no tpc role ({})", m_peer,
                  escape_display(c->name), escape_display(c->role));
        close();
        return;
      }
      m_peer_info->role = c->role;
      m_peer_info->cert = c->name;
      m_peer_info->cert_hosts = c->hosts;
    }
    then();
  });
}

void Session::start() { handshake([this] { read_more(); }); }

void Session::refuse(std::string line) {
  if (m_cfg.refused) m_cfg.refused->inc();
  if (!m_stream.secure()) {
    boost::system::error_code ig;
    line += '\n';
    m_stream.socket().non_blocking(true, ig);
    m_stream.socket().write_some(asio::buffer(line), ig);
    close();
    return;
  }
  // Over TLS the refusal must be said inside TLS, or the client reads it as a broken
  // handshake; the handshake costs little next to a client that cannot tell why. Bounded:
  // this connection is not in the table, so it gets 2 s.
  m_deadline = std::make_unique<asio::steady_timer>(m_stream.socket().get_executor());
  m_deadline->expires_after(std::chrono::seconds(2));
  m_deadline->async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (!ec) self->close();
  });
  handshake([this, line = std::move(line)] {
    write(line);
    m_close_after_write = true;
    flush();
  });
}

void Session::close() {
  if (!m_open) return;
  m_open = false;
  if (m_deadline) m_deadline->cancel();
  m_stream.close();
}

void Session::read_more() {
  auto self = shared_from_this();
  m_stream.async_read_some(asio::buffer(m_read_buf), [this, self](boost::system::error_code ec,
                                                                  size_t n) {
    if (ec || !m_open) {
      close();
      return;
    }
    m_in.append(m_read_buf, n);
    m_last_active_ms = now_ms();
    std::string line;
    while (m_open && !m_close_after_write) {
      auto r = m_in.next(&line);
      if (r == LineBuffer::Next::need_more) break;
      if (r == LineBuffer::Next::too_long || r == LineBuffer::Next::broken) {
        std::string why = r == LineBuffer::Next::broken
                              ? "PROTO a value's data block was not followed by LF"
                              : fmt::format("TOOLONG request longer than {} bytes (--max-message)",
                                            m_cfg.max_message);
        log::warn("connection {}: {}; closing it", describe(), why);
        write(fmt::format("ERR {}; closing connection", why));
        m_close_after_write = true;
        flush();
        return;
      }
      on_line(std::move(line));
    }
    if (m_open && !m_close_after_write) read_more();
  });
}

void Session::on_line(std::string line) {
  std::string tag;
  std::string_view body = line;
  bool bad_tag = false;
  if (!body.empty() && body[0] == '@') {
    auto sp = body.find(' ');
    tag = std::string(body.substr(0, sp));
    body = sp == std::string_view::npos ? std::string_view() : body.substr(sp + 1);
    // "@" and an id (a number, or a client's request id).
    bad_tag = !is_id(std::string_view(tag).substr(1));
    if (bad_tag) tag.clear();  // answered untagged, in order
  }
  uint64_t slot = m_next_slot++;
  ++m_outstanding;
  if (tag.empty()) m_ordered.emplace_back(slot, std::nullopt);
  Reply reply(weak_from_this(), slot, tag, m_peer_info);
  if (bad_tag) {
    reply.send("ERR PROTO bad tag (@ and 1 to 64 letters, digits, - or _)");
    return;
  }
  auto tokens = split(body);
  if (tokens.empty()) {
    reply.send("ERR PROTO empty request");
    return;
  }
  if (tokens[0] == "HELLO") {
    if (tokens.size() < 2 || tokens[1] != k_version) {
      reply.send(
          fmt::format("ERR VERSION this server speaks {}, peer sent {}; upgrade the older "
                      "binary",
                      k_version, tokens.size() < 2 ? "nothing" : std::string(tokens[1])));
      m_close_after_write = true;
      return;
    }
    // Only the roles there are: an unknown one is refused (it matches no verb's roles, but
    // would be logged and listed as if it meant something).
    if (tokens.size() > 2 && tokens[2] != "client" && tokens[2] != "admin" &&
        tokens[2] != "leader" && tokens[2] != "participant") {
      reply.send("ERR PROTO unknown role " + escape(tokens[2]) +
                 " (client, admin, leader or participant)");
      m_close_after_write = true;
      return;
    }
    std::string extra;
    if (m_cfg.hello) {
      auto r = m_cfg.hello(std::string(body));
      if (!r) {
        log::warn("connection {}: handshake refused: {}", describe(), r.status().message());
        reply.send(fmt::format("ERR {} {}", r.status().code(), r.status().message()));
        m_close_after_write = true;
        return;
      }
      extra = " " + *r;
    }
    // How long this server keeps an idle connection, and its longest line: a peer that keeps
    // a connection open pings sooner, and never sends a line this server would refuse.
    auto f = parse_fields(body);
    auto info = std::make_shared<PeerInfo>(*m_peer_info);
    if (info->cert.empty()) info->role = tokens.size() > 2 ? std::string(tokens[2]) : "client";
    info->id = tokens.size() > 3 && tokens[3].find('=') == std::string_view::npos
                   ? std::string(tokens[3])
                   : "";
    info->node = f["node"];
    info->advertise = f["advertise"];
    info->joined = false;
    m_peer_info = std::move(info);
    reply.send(fmt::format("HELLO {} {} {}{} idle_ms={} max_message={}", k_version, m_cfg.role,
                           m_cfg.id, extra, m_cfg.idle_timeout_ms, m_cfg.max_message));
    return;
  }
  if (tokens[0] == "PING") {
    reply.send("PONG");
    return;
  }
  m_handler(std::string(body), reply);
}

void Session::deliver(uint64_t slot, const std::string& tag, std::string line) {
  if (m_outstanding > 0) --m_outstanding;
  m_last_active_ms = now_ms();
  if (!m_open) return;
  if (!tag.empty()) {
    write(tag + " " + line);
  } else {
    for (auto& [s, text] : m_ordered)
      if (s == slot) text = std::move(line);
    while (!m_ordered.empty() && m_ordered.front().second) {
      write(*m_ordered.front().second);
      m_ordered.pop_front();
    }
  }
  schedule_flush();
}

void Session::schedule_flush() {
  // Replies produced by the handlers of this turn of the event loop share one send.
  if (m_flush_posted) return;
  m_flush_posted = true;
  auto self = shared_from_this();
  boost::asio::post(m_stream.socket().get_executor(), [this, self] {
    m_flush_posted = false;
    flush();
  });
}

void Session::write(const std::string& line) {
  m_out += line;
  m_out += '\n';
}

void Session::flush() {
  if (m_write_in_flight || !m_open) return;
  if (m_out.empty()) {
    if (m_close_after_write) close();
    return;
  }
  m_writing.swap(m_out);
  m_out.clear();
  m_write_in_flight = true;
  ++m_writes;
  auto self = shared_from_this();
  m_stream.async_write(asio::buffer(m_writing),
                       [this, self](boost::system::error_code ec, size_t) {
                      m_write_in_flight = false;
                      m_writing.clear();
                      if (ec) {
                        close();
                        return;
                      }
                      flush();
                    });
}

Server::Server(asio::io_context& io, const std::string& bind, uint16_t port, SessionConfig cfg,
               Handler handler)
    : m_acceptor(io),
      m_sweep(io),
      m_retry(io),
      m_cfg(std::move(cfg)),
      m_handler(std::move(handler)) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(bind, ec);
  if (ec) throw tpc::Error(fmt::format("bad bind address '{}': {}", bind, ec.message()), 2);
  tcp::endpoint ep(addr, port);
  m_acceptor.open(ep.protocol(), ec);
  if (!ec) m_acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) m_acceptor.bind(ep, ec);
  if (!ec) m_acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw tpc::Error(fmt::format("cannot listen on {}:{}: {}", bind, port, ec.message()));
  accept();
  sweep();
}

size_t Server::open_sessions() {
  std::erase_if(m_sessions, [](auto& w) {
    auto s = w.lock();
    return !s || !s->is_open();
  });
  return m_sessions.size();
}

void Server::sweep() {
  int64_t now = now_ms();
  for (auto& w : m_sessions)
    if (auto s = w.lock(); s && s->idle() && now - s->last_active_ms() >= m_cfg.idle_timeout_ms) {
      log::debug("closing connection {}: idle for {} ms", s->peer(), now - s->last_active_ms());
      s->close();
    }
  int64_t every = std::clamp<int64_t>(m_cfg.idle_timeout_ms / 4, 50, 5000);
  m_sweep.expires_after(std::chrono::milliseconds(every));
  m_sweep.async_wait([this](boost::system::error_code ec) {
    if (!ec) sweep();
  });
}

bool Server::close_oldest_idle() {
  std::shared_ptr<Session> oldest;
  for (auto& w : m_sessions)
    if (auto s = w.lock();
        s && s->idle() && (!oldest || s->last_active_ms() < oldest->last_active_ms()))
      oldest = s;
  if (!oldest) return false;
  log::info("connection table full ({}): closing the longest idle one, {}", m_cfg.max_connections,
            oldest->peer());
  oldest->close();
  return true;
}

uint16_t Server::port() const { return m_acceptor.local_endpoint().port(); }

uint64_t Server::writes() const {
  uint64_t n = 0;
  for (auto& w : m_sessions)
    if (auto s = w.lock()) n += s->writes();
  return n;
}

void Server::stop() {
  boost::system::error_code ec;
  m_acceptor.close(ec);
  m_retry.cancel();
  m_sweep.cancel();
  for (auto& w : m_sessions)
    if (auto s = w.lock()) s->close();
}

void Server::accept() {
  m_acceptor.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      if (open_sessions() >= m_cfg.max_connections && close_oldest_idle()) open_sessions();
      if (m_sessions.size() >= m_cfg.max_connections) {
        // Bounded: refuse clearly rather than run out of descriptors or memory.
        log::warn("refused a connection: {} already open", m_sessions.size());
        std::make_shared<Session>(std::move(socket), m_cfg, m_handler)
            ->refuse(fmt::format("ERR BUSY too many connections ({}); try again later",
                                 m_cfg.max_connections));
      } else {
        auto s = std::make_shared<Session>(std::move(socket), m_cfg, m_handler);
        if (m_cfg.accepted) m_cfg.accepted->inc();
        m_sessions.push_back(s);
        s->start();
      }
    } else {
      // Out of descriptors, say: wait a little instead of spinning on the failure.
      log::warn("accept failed: {}; retrying in 100 ms", ec.message());
      m_retry.expires_after(std::chrono::milliseconds(100));
      m_retry.async_wait([this](boost::system::error_code e) {
        if (!e) accept();
      });
      return;
    }
    accept();
  });
}

}  // namespace tpc::protocol
