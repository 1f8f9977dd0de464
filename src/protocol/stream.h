// The one transport under every socket user (server sessions, peer links, the client's
// connection, the benchmark's workers): a TCP connection, plain or TLS 1.3 with certificates
// checked on both sides. After the handshake, peer() is the authenticated identity of the
// other end (TLS) or nothing (plaintext: the peer's HELLO is all there is).
//
// Single-threaded like its io_context: at most one read and one write in flight at a time.
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/status.h"
#include "tls/context.h"

namespace tpc::protocol {

// A transport error as a person can act on it: a TLS alert from the peer (it refused our
// certificate: expired, unknown CA), a plaintext peer, a peer that hung up. `client`: we
// connected (the peer is a server).
std::string describe_error(const boost::system::error_code& ec, bool client);

class Stream {
 public:
  using tcp = boost::asio::ip::tcp;
  // tls null: plaintext.
  Stream(tcp::socket socket, std::shared_ptr<const tls::Context> tls);
  Stream(const Stream&) = delete;

  bool secure() const { return m_tls != nullptr; }
  tcp::socket& socket() { return m_ssl ? m_ssl->next_layer() : *m_plain; }

  // TLS: runs the handshake as the server, or as the client checking that the peer's
  // certificate names `host` (a DNS name or an address in its subjectAltName). Then calls
  // done(OK), or done(error TLS) with a message a person can act on (expired, another CA,
  // wrong host, plaintext peer). Plaintext: done(OK) at once (posted).
  void async_handshake(bool server, const std::string& host, std::function<void(Status)> done);
  // The verified certificate of the peer, after a successful TLS handshake; null otherwise.
  const tls::CertInfo* peer() const { return m_peer ? &*m_peer : nullptr; }

  template <typename Buffers, typename Handler>
  void async_read_some(const Buffers& b, Handler&& h) {
    if (m_ssl)
      m_ssl->async_read_some(b, std::forward<Handler>(h));
    else
      m_plain->async_read_some(b, std::forward<Handler>(h));
  }
  template <typename Buffers, typename Handler>
  void async_write(const Buffers& b, Handler&& h) {
    if (m_ssl)
      boost::asio::async_write(*m_ssl, b, std::forward<Handler>(h));
    else
      boost::asio::async_write(*m_plain, b, std::forward<Handler>(h));
  }
  // Closes the socket (no TLS close_notify: the protocol's own framing ends conversations).
  void close();

 private:
  // Sets the certificate check: the CA chain, and the host name when `host` is not empty.
  void verify_peer(const std::string& host);
  void finish(const boost::system::error_code& ec, const std::string& host,
              const std::function<void(Status)>& done);
  std::shared_ptr<const tls::Context> m_tls;
  std::optional<tcp::socket> m_plain;
  std::unique_ptr<boost::asio::ssl::stream<tcp::socket>> m_ssl;
  std::optional<tls::CertInfo> m_peer;
  std::string m_verify_error;  // why the peer's certificate was refused, by our check
};

}  // namespace tpc::protocol
