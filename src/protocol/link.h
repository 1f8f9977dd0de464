// Client side of a persistent line connection to a peer (leader -> participant, participant ->
// leader). Reconnects with backoff, performs the HELLO handshake, tags every request "@N" and
// matches replies by tag, so many requests are in flight at once. Requests issued while a write
// is in flight, or in the same turn of the event loop, go out together in one write (wire
// batching).
//
// Single-threaded: call everything on the io_context's thread. Callbacks run there too.
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/status.h"
#include "common/util.h"
#include "protocol/codec.h"
#include "protocol/stream.h"

namespace tpc::protocol {

class Link : public std::enable_shared_from_this<Link> {
 public:
  // Reply line without the tag, or error UNAVAILABLE when the connection is down or was lost
  // before the reply came (the request may or may not have been processed).
  using Callback = std::function<void(Result<std::string>)>;

  Link(boost::asio::io_context& io, std::string host, uint16_t port, std::string hello,
       size_t max_message = k_default_max_message);
  // Over TLS (call before start): the peer must present a certificate of this CA naming the
  // link's host and granting `role`; otherwise it is refused like a wrong HELLO. A reload
  // (SIGHUP) sets new certificates for the next connection.
  void set_tls(std::shared_ptr<const tls::Context> tls, std::string role) {
    m_tls = std::move(tls);
    m_tls_role = std::move(role);
  }
  void start();
  void stop();
  // Sends `line` now if the link is up; otherwise calls `cb` with UNAVAILABLE at once
  // (from the io_context, never inline).
  void request(const std::string& line, Callback cb);
  bool up() const { return m_up; }
  bool stopped() const { return m_stopped; }
  std::string address() const { return host_port(m_host, m_port); }
  // Called each time the link becomes up (after the handshake).
  void on_up(std::function<void()> f) { m_on_up = std::move(f); }
  // Called each time an up link goes down (before its pending requests fail).
  void on_down(std::function<void()> f) { m_on_down = std::move(f); }
  // Checks the peer's HELLO reply before the link goes up. Returns a request line to send
  // first (whose reply must be ACK), "" for none, or an error: the peer is refused, the link
  // stays down, says why in refused(), and tries again every few seconds.
  using HelloCheck = std::function<Result<std::string>(const std::string& hello_reply)>;
  void on_hello(HelloCheck f) { m_on_hello = std::move(f); }
  // Why the peer was refused at its last handshake; empty when it was not.
  const std::string& refused() const { return m_refused; }
  // The refusal's error code: the peer's own ("ERR CODE ..." in reply to HELLO or to the
  // first request), the HelloCheck's status code, or TLS; empty when not refused.
  const std::string& refused_code() const { return m_refused_code; }
  // The longest message the peer accepts, from its HELLO (0: not said).
  size_t peer_max_message() const { return m_peer_max_message; }
  // Number of socket writes so far (each carries every line queued since the last one).
  uint64_t writes() const { return m_writes; }

 private:
  void connect();
  void on_connected(uint64_t gen);
  void close_socket();
  void schedule_reconnect();
  void read_more();
  void on_line(const std::string& line);
  void fail_all();
  void go_up();
  void keepalive(uint64_t gen);
  void refuse(const std::string& code, const std::string& why);
  // The same, for a reply line of the peer: its code when it is "ERR CODE ...", else PROTO.
  void refuse_reply(const std::string& line, const std::string& why);
  void flush();
  void schedule_flush();
  boost::asio::io_context& m_io;
  std::string m_host;
  uint16_t m_port;
  std::string m_hello;
  // Handlers in flight hold the stream they were started on: a reconnect makes a new one
  // while the old one's aborted operations still complete.
  std::shared_ptr<Stream> m_stream;
  std::shared_ptr<const tls::Context> m_tls;
  std::string m_tls_role;
  boost::asio::steady_timer m_timer;
  size_t m_max_message;
  LineBuffer m_in;
  char m_read_buf[16384];
  std::map<uint64_t, Callback> m_pending;
  uint64_t m_next_tag = 1;
  std::string m_out, m_writing;
  bool m_write_in_flight = false;
  bool m_flush_posted = false;
  bool m_up = false;
  bool m_handshaken = false;
  bool m_stopped = false;
  int m_backoff_ms = 20;
  uint64_t m_generation = 0;  // bumps on every (re)connect, so stale handlers do nothing
  std::function<void()> m_on_up;
  std::function<void()> m_on_down;
  HelloCheck m_on_hello;
  std::string m_refused;
  std::string m_refused_code;
  // The peer closes connections idle for its idle_ms: a PING goes out well before that.
  boost::asio::steady_timer m_keepalive;
  int64_t m_keepalive_ms = 0;
  int64_t m_last_write_ms = 0;
  size_t m_peer_max_message = 0;
  bool m_warned = false;
  uint64_t m_writes = 0;
};

}  // namespace tpc::protocol
