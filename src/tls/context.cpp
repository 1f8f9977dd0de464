#include "tls/context.h"

#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <ctime>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace tpc::tls {

namespace ssl = boost::asio::ssl;

namespace {
Result<std::string> read_pem(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::error("BADCERT", fmt::format("cannot read {}", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

bool has_certs(const std::string& dir) {
  struct stat st;
  return !dir.empty() && ::stat(cert_path(dir, "ca").c_str(), &st) == 0;
}

Result<std::shared_ptr<const Context>> load(const std::string& dir, const std::string& base,
                                            const std::string& role, bool check_dates) {
  std::string crt = cert_path(dir, base), key = key_path(dir, base), ca = cert_path(dir, "ca");
  auto pem = read_pem(crt);
  if (!pem)
    return Status::error("BADCERT", fmt::format("cannot read {}: create it with tpc cert "
                                                "create-{}",
                                                crt, base.rfind("client.", 0) == 0 ? "client"
                                                                                   : "node"));
  auto info = parse_cert(*pem);
  if (!info) return Status::error("BADCERT", fmt::format("{}: {}", crt, info.status().message()));
  bool role_ok = role.empty() ? (info->role == "client" || info->role == "admin")
                              : info->role == role;
  if (!role_ok)
    return Status::error("BADCERT", fmt::format("{} grants role '{}', not {}", crt, info->role,
                                                role.empty() ? "client or admin" : role));
  int64_t now = static_cast<int64_t>(std::time(nullptr));
  if (check_dates && now > info->not_after)
    return Status::error("BADCERT",
                         fmt::format("{} expired on {}; make a new one with tpc cert create-{}",
                                     crt, format_time(info->not_after),
                                     role.empty() ? "client" : "node"));
  if (check_dates && now < info->not_before)
    return Status::error("BADCERT", fmt::format("{} is not valid before {} (is the clock right?)",
                                                crt, format_time(info->not_before)));
  struct stat st;
  if (::stat(key.c_str(), &st) != 0)
    return Status::error("BADCERT", fmt::format("cannot read {}", key));
  if (st.st_mode & 077)
    return Status::error("BADCERT",
                         fmt::format("{} is readable by others (mode {:o}); chmod 600 it", key,
                                     st.st_mode & 0777));
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION);
  // Connections are long-lived (links, sessions): no resumption, so no session tickets.
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(native, 0);
  // AES-128-GCM first: as safe for this use and cheaper per byte than AES-256 (both run on
  // the CPU's AES instructions); the others stay for peers that prefer them.
  SSL_CTX_set_ciphersuites(native,
                           "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                           "TLS_CHACHA20_POLY1305_SHA256");
  boost::system::error_code ec;
  ctx->load_verify_file(ca, ec);
  if (ec) return Status::error("BADCERT", fmt::format("cannot load {}: {}", ca, ec.message()));
  ctx->use_certificate_chain_file(crt, ec);
  if (!ec) ctx->use_private_key_file(key, ssl::context::pem, ec);
  if (ec)
    return Status::error("BADCERT", fmt::format("cannot load {} / {}: {}", crt, key,
                                                ec.message()));
  if (SSL_CTX_check_private_key(native) != 1) {
    ERR_clear_error();
    return Status::error("BADCERT", fmt::format("{} is not the key of {}", key, crt));
  }
  ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  return std::shared_ptr<const Context>(
      new Context{std::move(ctx), std::move(*info), dir, base});
}

}  // namespace tpc::tls
