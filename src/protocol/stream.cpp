#include "protocol/stream.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <fmt/format.h>

namespace tpc::protocol {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;

namespace {
constexpr unsigned char k_tls_record_handshake = 0x16;  // first byte of every ClientHello

bool is_address(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

// Why a certificate chain failed, with what to do about the common cases.
std::string verify_failure(X509_STORE_CTX* sc) {
  int err = X509_STORE_CTX_get_error(sc);
  std::string hint;
  switch (err) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      hint = " (signed by a CA this node does not trust: another cluster's?)";
      break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
      hint = " (make a new one with tpc cert)";
      break;
    default:
      break;
  }
  return X509_verify_cert_error_string(err) + hint;
}

std::string subject_of(X509* cert) {
  if (!cert) return "?";
  auto info = tls::cert_info(cert);
  if (!info) return "?";
  return fmt::format("{} '{}'", info->role.empty() ? "certificate" : info->role, info->name);
}
}  // namespace

Stream::Stream(tcp::socket socket, std::shared_ptr<const tls::Context> tls)
    : m_tls(std::move(tls)) {
  if (m_tls)
    m_ssl = std::make_unique<ssl::stream<tcp::socket>>(std::move(socket), *m_tls->ssl);
  else
    m_plain.emplace(std::move(socket));
}

void Stream::close() {
  boost::system::error_code ec;
  socket().shutdown(tcp::socket::shutdown_both, ec);
  socket().close(ec);
}

void Stream::async_handshake(bool server, const std::string& host,
                             std::function<void(Status)> done) {
  if (server) {
    // Look at the first byte before anything else: a TLS client on a plaintext server, or a
    // plaintext client (nc, an older binary) on a TLS server, is told so and closed, instead
    // of waiting for a line or a handshake that never comes.
    auto byte = std::make_shared<unsigned char>(0);
    socket().async_receive(
        asio::buffer(byte.get(), 1), tcp::socket::message_peek,
        [this, byte, done = std::move(done)](boost::system::error_code ec, size_t n) mutable {
          if (ec || n == 0) return done(Status::error("TLS", "connection closed"));
          bool tls_hello = *byte == k_tls_record_handshake;
          if (!m_ssl) {
            if (tls_hello)
              return done(Status::error("TLS", "a TLS client connected, but this node runs "
                                               "without certificates"));
            return done(Status::ok());
          }
          if (!tls_hello) {
            boost::system::error_code ig;
            const char msg[] =
                "ERR SECURE this server speaks TLS only; connect with certificates "
                "(--certs-dir or TPC_CERTS_DIR)\n";
            socket().non_blocking(true, ig);
            socket().write_some(asio::buffer(msg, sizeof msg - 1), ig);
            return done(Status::error("TLS", "a plaintext client connected to a TLS port"));
          }
          verify_peer("");
          m_ssl->async_handshake(ssl::stream_base::server,
                                 [this, done = std::move(done)](boost::system::error_code e) {
                                   finish(e, "", done);
                                 });
        });
    return;
  }
  if (!m_ssl) {
    asio::post(socket().get_executor(), [done = std::move(done)] { done(Status::ok()); });
    return;
  }
  if (!is_address(host)) SSL_set_tlsext_host_name(m_ssl->native_handle(), host.c_str());
  verify_peer(host);
  m_ssl->async_handshake(ssl::stream_base::client,
                         [this, host, done = std::move(done)](boost::system::error_code e) {
                           finish(e, host, done);
                         });
}

void Stream::verify_peer(const std::string& host) {
  // OpenSSL's chain check, plus (connecting side) that the certificate names `host`; the
  // first failure is kept for the message.
  m_ssl->set_verify_callback([this, host](bool pre, ssl::verify_context& vc) {
    X509_STORE_CTX* sc = vc.native_handle();
    X509* cert = X509_STORE_CTX_get_current_cert(sc);
    if (!pre) {
      if (m_verify_error.empty())
        m_verify_error = fmt::format("{}: {}", subject_of(cert), verify_failure(sc));
      return false;
    }
    if (host.empty() || X509_STORE_CTX_get_error_depth(sc) != 0) return true;
    bool named = is_address(host) ? X509_check_ip_asc(cert, host.c_str(), 0) == 1
                                  : X509_check_host(cert, host.c_str(), host.size(), 0,
                                                    nullptr) == 1;
    if (!named && m_verify_error.empty())
      m_verify_error = fmt::format("{} is not a certificate for host {}", subject_of(cert), host);
    // Said to the peer as a certificate it must fix (alert bad_certificate), not as an
    // "internal error" it could not explain.
    if (!named)
      X509_STORE_CTX_set_error(
          sc, is_address(host) ? X509_V_ERR_IP_ADDRESS_MISMATCH : X509_V_ERR_HOSTNAME_MISMATCH);
    return named;
  });
}

void Stream::finish(const boost::system::error_code& ec, const std::string& host,
                    const std::function<void(Status)>& done) {
  if (!ec) {
    X509* cert = SSL_get0_peer_certificate(m_ssl->native_handle());
    auto info = cert ? tls::cert_info(cert) : Result<tls::CertInfo>(Status::error("TLS", ""));
    if (!info) return done(Status::error("TLS", "the peer presented no readable certificate"));
    m_peer = std::move(*info);
    return done(Status::ok());
  }
  std::string why = !m_verify_error.empty() ? "refused the peer's certificate: " + m_verify_error
                                             : describe_error(ec, !host.empty());
  ERR_clear_error();
  done(Status::error("TLS", why));
}

std::string describe_error(const boost::system::error_code& ec, bool client) {
  if (ec.category() == asio::error::get_ssl_category()) {
    switch (ERR_GET_REASON(static_cast<unsigned long>(ec.value()))) {
      case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
        return "the peer refused our certificate: it has expired";
      case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        return "the peer refused our certificate: signed by a CA it does not trust";
      case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
        // What tpc's own check sends when our certificate does not name the host it dialled
        // (a CA it does not trust is "unknown CA" above).
        return "the peer refused our certificate: it does not name the host the peer connected "
               "to (a node's certificate must name every host and address it is reached at)";
      case SSL_R_TLSV1_ALERT_INTERNAL_ERROR:
        return "the peer refused the TLS handshake (alert internal error: its log says why)";
      case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        return "the peer requires a certificate";
      case SSL_R_WRONG_VERSION_NUMBER:
      case SSL_R_PACKET_LENGTH_TOO_LONG:
        return "the peer does not speak TLS (does it run without certificates?)";
      default:
        return ec.message();
    }
  }
  if (ec == asio::error::eof || ec == ssl::error::stream_truncated ||
      ec == asio::error::connection_reset)
    return client ? "the server closed the connection during the TLS handshake (does it run "
                    "without certificates, or did it refuse ours? its log says)"
                  : "the peer closed the connection during the TLS handshake";
  return ec.message();
}

}  // namespace tpc::protocol
