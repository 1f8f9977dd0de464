#include "tls/certs.h"

#include <arpa/inet.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <fmt/format.h>

#include "common/util.h"
#include "txlog/file.h"

namespace tpc::tls {

namespace {

template <auto F>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    F(p);
  }
};
using Bio = std::unique_ptr<BIO, Deleter<BIO_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using PKey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using Names = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES_free>>;

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

Bio mem_bio(std::string_view text) {
  if (text.size() > 1 << 20) return nullptr;  // no certificate is a megabyte
  return Bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

std::string bio_text(BIO* b) {
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

X509Ptr read_cert(std::string_view pem) {
  Bio b = mem_bio(pem);
  if (!b) return nullptr;
  return X509Ptr(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr));
}

PKey read_key(std::string_view pem) {
  Bio b = mem_bio(pem);
  if (!b) return nullptr;
  return PKey(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
}

std::string name_entry(const X509_NAME* name, int nid) {
  int i = X509_NAME_get_index_by_NID(name, nid, -1);
  if (i < 0) return "";
  const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  if (!s) return "";
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, s);
  if (n < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

bool to_epoch(const ASN1_TIME* t, int64_t* out) {
  std::tm tm{};
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return false;
  *out = static_cast<int64_t>(timegm(&tm));
  return true;
}

bool is_ip(const std::string& host) {
  ASN1_OCTET_STRING* a = a2i_IPADDRESS(host.c_str());
  if (!a) return false;
  ASN1_OCTET_STRING_free(a);
  return true;
}

bool add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

bool valid_host(const std::string& h) {
  if (h.empty() || h.size() > 253) return false;
  for (char c : h)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' ||
          c == '*'))
      return false;
  return true;
}

bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  return true;
}

std::string read_file(const std::string& path, bool* ok) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  *ok = static_cast<bool>(in);
  return ss.str();
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Writes the pair unless a file is there and overwrite is off.
Result<std::vector<std::string>> write_pair(const CreateOptions& o, const std::string& base,
                                            const KeyPair& kp, const std::string& key_at) {
  std::string crt = cert_path(o.dir, base);
  if (!o.overwrite)
    for (const auto& p : {crt, key_at})
      if (exists(p))
        return Status::error("EXISTS", p + " exists; pass --overwrite to replace it");
  try {
    txlog::make_dirs(o.dir);
    ::chmod(o.dir.c_str(), 0700);
    // The key's own directory (--ca-key safe/ca.key): made 0700 when new.
    auto key_dir = std::filesystem::path(key_at).parent_path();
    if (!key_dir.empty()) txlog::make_dirs(key_dir.string());
    txlog::write_file_atomic(key_at, kp.key_pem);  // 0600
    txlog::write_file_atomic(crt, kp.cert_pem);
  } catch (const Error& e) {
    return Status::error("IO", e.what());
  }
  return std::vector<std::string>{crt, key_at};
}

Result<KeyPair> signed_by_ca(const CreateOptions& o, const CertSpec& spec) {
  std::string ca_key = o.ca_key.empty() ? key_path(o.dir, "ca") : o.ca_key;
  bool ok1 = false, ok2 = false;
  std::string cert = read_file(cert_path(o.dir, "ca"), &ok1);
  std::string key = read_file(ca_key, &ok2);
  if (!ok1 || !ok2)
    return Status::error("BADCERT", fmt::format("cannot read the CA ({} and {}); create it "
                                                "with tpc cert create-ca",
                                                cert_path(o.dir, "ca"), ca_key));
  return make_cert(spec, cert, key);
}

int64_t now_s() { return static_cast<int64_t>(std::time(nullptr)); }

}  // namespace

bool is_role(std::string_view role) {
  for (auto r : k_roles)
    if (role == r) return true;
  return false;
}

std::string cert_path(const std::string& dir, const std::string& base) {
  return dir + "/" + base + ".crt";
}
std::string key_path(const std::string& dir, const std::string& base) {
  return dir + "/" + base + ".key";
}

std::string format_time(int64_t epoch_s) {
  std::time_t t = static_cast<std::time_t>(epoch_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

Result<CertInfo> parse_cert(std::string_view pem) {
  X509Ptr cert = read_cert(pem);
  if (!cert) {
    ERR_clear_error();
    return Status::error("BADCERT", "not a PEM certificate");
  }
  return cert_info(cert.get());
}

Result<CertInfo> cert_info(const X509* c) {
  X509* cert = const_cast<X509*>(c);  // OpenSSL 3's getters take non-const pointers
  CertInfo info;
  const X509_NAME* subject = X509_get_subject_name(cert);
  if (!subject) return Status::error("BADCERT", "certificate without a subject");
  info.role = name_entry(subject, NID_organizationalUnitName);
  info.name = name_entry(subject, NID_commonName);
  if (!to_epoch(X509_get0_notBefore(cert), &info.not_before) ||
      !to_epoch(X509_get0_notAfter(cert), &info.not_after)) {
    ERR_clear_error();
    return Status::error("BADCERT", "certificate with unreadable validity dates");
  }
  info.is_ca = X509_check_ca(cert) > 0;
  Names names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(names.get(), i);
    if (g->type == GEN_DNS) {
      const ASN1_IA5STRING* s = g->d.dNSName;
      info.hosts.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                              static_cast<size_t>(ASN1_STRING_length(s)));
    } else if (g->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = g->d.iPAddress;
      const unsigned char* p = ASN1_STRING_get0_data(ip);
      int n = ASN1_STRING_length(ip);
      if (n == 4) {
        info.hosts.push_back(fmt::format("{}.{}.{}.{}", p[0], p[1], p[2], p[3]));
      } else if (n == 16) {
        std::string h;
        for (int k = 0; k < 16; k += 2)
          h += fmt::format("{}{:x}", k ? ":" : "", (p[k] << 8) | p[k + 1]);
        info.hosts.push_back(h);
      }
    }
  }
  ERR_clear_error();
  return info;
}

Result<KeyPair> make_cert(const CertSpec& spec, const std::string& ca_cert_pem,
                          const std::string& ca_key_pem) {
  bool self_signed = spec.role == "ca";
  X509Ptr ca_cert;
  PKey ca_key;
  if (!self_signed) {
    ca_cert = read_cert(ca_cert_pem);
    ca_key = read_key(ca_key_pem);
    if (!ca_cert || !ca_key)
      return Status::error("BADCERT", "cannot read the CA certificate or key: " + openssl_error());
    if (X509_check_private_key(ca_cert.get(), ca_key.get()) != 1)
      return Status::error("BADCERT", "the CA key does not belong to the CA certificate");
  }
  PKey key(EVP_EC_gen("P-256"));
  if (!key) return Status::error("BADCERT", "cannot make a key: " + openssl_error());
  X509Ptr cert(X509_new());
  if (!cert) return Status::error("BADCERT", "cannot make a certificate: " + openssl_error());
  X509_set_version(cert.get(), 2);
  // A random 128-bit serial (RFC 5280: positive, unique per CA).
  {
    std::string hex = "7" + random_hex(15).substr(1);
    BIGNUM* bn = nullptr;
    BN_hex2bn(&bn, hex.c_str());
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
    BN_free(bn);
  }
  ASN1_TIME_set(X509_getm_notBefore(cert.get()), static_cast<time_t>(spec.not_before));
  ASN1_TIME_set(X509_getm_notAfter(cert.get()), static_cast<time_t>(spec.not_after));
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  auto add = [&](const char* field, const std::string& v) {
    X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(v.c_str()), -1, -1, 0);
  };
  add("O", "tpc");
  add("OU", spec.role);
  add("CN", spec.name);
  X509* issuer = self_signed ? cert.get() : ca_cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer));
  bool ok = true;
  if (self_signed) {
    ok = add_ext(cert.get(), issuer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
         add_ext(cert.get(), issuer, NID_key_usage, "critical,keyCertSign,cRLSign") &&
         add_ext(cert.get(), issuer, NID_subject_key_identifier, "hash");
  } else {
    // Nodes are servers and, toward each other, clients too.
    bool node = spec.role == "leader" || spec.role == "participant";
    ok = add_ext(cert.get(), issuer, NID_basic_constraints, "critical,CA:FALSE") &&
         add_ext(cert.get(), issuer, NID_key_usage, "critical,digitalSignature") &&
         add_ext(cert.get(), issuer, NID_ext_key_usage,
                 node ? "serverAuth,clientAuth" : "clientAuth") &&
         add_ext(cert.get(), issuer, NID_authority_key_identifier, "keyid");
    if (ok && !spec.hosts.empty()) {
      std::string san;
      for (const auto& h : spec.hosts)
        san += (san.empty() ? "" : ",") + std::string(is_ip(h) ? "IP:" : "DNS:") + h;
      ok = add_ext(cert.get(), issuer, NID_subject_alt_name, san);
    }
  }
  if (!ok) return Status::error("BADCERT", "cannot set an extension: " + openssl_error());
  EVP_PKEY* signer = self_signed ? key.get() : ca_key.get();
  if (X509_sign(cert.get(), signer, EVP_sha256()) <= 0)
    return Status::error("BADCERT", "cannot sign: " + openssl_error());
  Bio c(BIO_new(BIO_s_mem())), k(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(c.get(), cert.get()) ||
      !PEM_write_bio_PrivateKey(k.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr))
    return Status::error("BADCERT", "cannot encode: " + openssl_error());
  return KeyPair{bio_text(c.get()), bio_text(k.get())};
}

Result<std::vector<std::string>> create_ca(const CreateOptions& o) {
  int64_t now = now_s();
  auto kp = make_cert({"ca", "tpc CA", {}, now - 3600, now + o.lifetime_s}, "", "");
  if (!kp) return kp.status();
  std::string key_at = o.ca_key.empty() ? key_path(o.dir, "ca") : o.ca_key;
  return write_pair(o, "ca", *kp, key_at);
}

Result<std::vector<std::string>> create_node(const CreateOptions& o, const std::string& role,
                                             const std::vector<std::string>& hosts) {
  if (role != "leader" && role != "participant")
    return Status::error("USAGE", "--role must be leader or participant");
  if (hosts.empty())
    return Status::error("USAGE", "name at least one host the node is reached at");
  for (const auto& h : hosts)
    if (!valid_host(h)) return Status::error("USAGE", "bad host '" + h + "'");
  int64_t now = now_s();
  auto kp = signed_by_ca(o, {role, hosts[0], hosts, now - 3600, now + o.lifetime_s});
  if (!kp) return kp.status();
  return write_pair(o, role, *kp, key_path(o.dir, role));
}

Result<std::vector<std::string>> create_client(const CreateOptions& o, const std::string& name,
                                               const std::string& role) {
  if (!valid_name(name))
    return Status::error("USAGE", "a client name is 1 to 64 letters, digits, '-', '_' or '.'");
  if (role != "client" && role != "admin")
    return Status::error("USAGE", "--role must be client or admin");
  int64_t now = now_s();
  auto kp = signed_by_ca(o, {role, name, {}, now - 3600, now + o.lifetime_s});
  if (!kp) return kp.status();
  return write_pair(o, "client." + name, *kp, key_path(o.dir, "client." + name));
}

bool names_host(const std::vector<std::string>& hosts, const std::string& host) {
  auto lower = [](std::string x) {
    for (auto& ch : x) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return x;
  };
  // An address: compared as bytes, so that ::1 and 0:0::1 are the same.
  auto addr = [](const std::string& x) -> std::optional<std::string> {
    unsigned char buf[16];
    if (inet_pton(AF_INET, x.c_str(), buf) == 1)
      return std::string(reinterpret_cast<char*>(buf), 4);
    if (inet_pton(AF_INET6, x.c_str(), buf) == 1)
      return std::string(reinterpret_cast<char*>(buf), 16);
    return std::nullopt;
  };
  std::string want = lower(host);
  auto want_addr = addr(host);
  for (const auto& h : hosts) {
    if (want_addr) {
      if (addr(h) == want_addr) return true;
      continue;
    }
    std::string name = lower(h);
    if (name == want) return true;
    auto dot = want.find('.');
    if (name.rfind("*.", 0) == 0 && dot != std::string::npos && name.substr(1) == want.substr(dot))
      return true;
  }
  return false;
}

}  // namespace tpc::tls
