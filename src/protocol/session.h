// Server side of a line connection (Boost.Asio, single-threaded io_context).
//
// Framing (docs/protocol.md): one request per line. A request may start with a tag "@N"; its
// reply carries the same tag and may be sent as soon as it is ready (out of order). Untagged
// requests are answered in the order they arrived, so a person typing into `nc` sees replies
// in order. Writes are batched: replies produced while a write is in flight, or by the same
// turn of the event loop, go out together in one send.
//
// The session answers HELLO itself (version handshake), PING, and oversized lines
// (ERR TOOLONG, then close). Everything else goes to the handler.
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "protocol/codec.h"
#include "metrics/metrics.h"
#include "protocol/stream.h"

namespace tpc::protocol {

class Session;

// Who is at the other end (docs/security.md). Over TLS the role is the one its certificate
// grants, whatever its HELLO says; without certificates the role rules apply to what its HELLO
// declared. Empty role: no HELLO yet.
struct PeerInfo {
  std::string role;  // client, admin, leader, participant
  std::string cert;  // the certificate's name (CN); empty without TLS
  std::vector<std::string> cert_hosts;  // the certificate's subjectAltName hosts (TLS)
  std::string id;    // its --id
  std::string node;  // its node id (leaders and participants)
  std::string address;
  std::string advertise;  // a leader's: where it answers outcomes (its HELLO's advertise=)
  bool joined = false;  // a leader's JOIN was accepted on this connection (participants)
};

// Where to send the one reply of a request. Copyable; outlives its session harmlessly
// (a reply to a closed session is dropped).
class Reply {
 public:
  Reply() = default;
  Reply(std::weak_ptr<Session> s, uint64_t slot, std::string tag,
        std::shared_ptr<PeerInfo> peer)
      : m_session(std::move(s)), m_slot(slot), m_tag(std::move(tag)), m_peer(std::move(peer)) {}
  void send(std::string line) const;
  bool connected() const;
  // The peer that sent the request, as of the request; its connection's state.
  PeerInfo& peer() const;

 private:
  std::weak_ptr<Session> m_session;
  uint64_t m_slot = 0;
  std::string m_tag;
  std::shared_ptr<PeerInfo> m_peer;
};

// Checks a peer's HELLO line (after the version) and returns the tokens to append to this
// server's HELLO reply (its identity), or an error: sent as "ERR CODE text", then the
// connection is closed.
using HelloCheck = std::function<Result<std::string>(const std::string& hello_line)>;

struct SessionConfig {
  std::string role;  // "leader" or "participant": sent in the HELLO reply
  std::string id;
  size_t max_message = k_default_max_message;
  size_t max_connections = 4096;  // past this, the oldest idle one is closed, else ERR BUSY
  HelloCheck hello;               // unset: any peer, no identity in the reply
  int64_t idle_timeout_ms = 300000;  // a connection with nothing in flight this long is closed
  std::shared_ptr<const tls::Context> tls;  // null: plaintext
  metrics::Counter* accepted = nullptr;     // counts here, when set (metrics)
  metrics::Counter* refused = nullptr;
};

using Handler = std::function<void(const std::string& line, Reply reply)>;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(boost::asio::ip::tcp::socket socket, const SessionConfig& cfg, Handler handler);
  void start();
  // Instead of serving: says `line` and closes. On a TLS port the line goes after the TLS
  // handshake, which gets 2 s; in plaintext it goes at once.
  void refuse(std::string line);
  void close();
  bool is_open() const { return m_open; }
  uint64_t writes() const { return m_writes; }
  std::string peer() const { return m_peer; }
  // "ADDR" or, over TLS, "ADDR (ROLE NAME)": for log lines.
  std::string describe() const;
  // Idle: open, no request waiting for its reply, nothing being written.
  bool idle() const { return m_open && m_outstanding == 0 && !m_write_in_flight; }
  int64_t last_active_ms() const { return m_last_active_ms; }

 private:
  friend class Reply;
  void read_more();
  void on_line(std::string line);
  void handshake(std::function<void()> then);
  void deliver(uint64_t slot, const std::string& tag, std::string line);
  void write(const std::string& line);
  void flush();
  void schedule_flush();
  Stream m_stream;
  const SessionConfig& m_cfg;
  Handler m_handler;
  LineBuffer m_in;
  char m_read_buf[16384];
  std::deque<std::pair<uint64_t, std::optional<std::string>>> m_ordered;  // untagged slots
  uint64_t m_next_slot = 1;
  std::string m_out;
  std::string m_writing;
  bool m_write_in_flight = false;
  bool m_flush_posted = false;
  bool m_close_after_write = false;
  bool m_open = true;
  std::string m_peer;
  uint64_t m_writes = 0;
  size_t m_outstanding = 0;  // requests read, not yet answered
  std::shared_ptr<PeerInfo> m_peer_info;
  int64_t m_last_active_ms = 0;
  std::unique_ptr<boost::asio::steady_timer> m_deadline;  // a refusal's
};

// Accepts connections on addr:port and runs a Session for each.
class Server {
 public:
  // Throws tpc::Error when the address cannot be bound.
  Server(boost::asio::io_context& io, const std::string& bind, uint16_t port, SessionConfig cfg,
         Handler handler);
  uint16_t port() const;
  void stop();
  // Certificates for connections accepted from now on (a reload: SIGHUP); open ones keep theirs.
  void set_tls(std::shared_ptr<const tls::Context> tls) { m_cfg.tls = std::move(tls); }
  // Socket writes so far of the sessions still open.
  uint64_t writes() const;
  // Connections open now.
  size_t connections() { return open_sessions(); }

 private:
  void accept();
  void sweep();  // closes connections idle longer than idle_timeout_ms
  bool close_oldest_idle();
  size_t open_sessions();
  boost::asio::ip::tcp::acceptor m_acceptor;
  boost::asio::steady_timer m_sweep;
  boost::asio::steady_timer m_retry;  // after a failed accept (e.g. out of descriptors)
  SessionConfig m_cfg;
  Handler m_handler;
  std::vector<std::weak_ptr<Session>> m_sessions;
};

}  // namespace tpc::protocol
