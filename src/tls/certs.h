// Certificates: the CA, node and client certificates `tpc cert` writes, and what a node or a
// client loads from its certificates directory (docs/security.md).
//
// Layout of a certificates directory (all PEM; keys are written 0600):
//   ca.crt              the CA certificates this node trusts (one or more: a rotation adds the
//                       new CA here before any node uses a certificate it signed)
//   ca.key              the CA's key, needed only to sign; keep it elsewhere (--ca-key)
//   leader.crt/.key     a leader's certificate          (OU=leader, SAN = its hosts)
//   participant.crt/.key  a participant's certificate   (OU=participant, SAN = its hosts)
//   client.NAME.crt/.key  a client's certificate        (CN=NAME, OU=client or admin)
//
// The role a certificate grants is its subject's organizational unit (OU); the name is its
// common name (CN). Every certificate is ECDSA P-256, signed with SHA-256.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

struct x509_st;  // OpenSSL's X509

namespace tpc::tls {

// The roles a certificate can grant.
inline constexpr const char* k_roles[] = {"leader", "participant", "client", "admin"};
bool is_role(std::string_view role);

// What tpc reads from a certificate.
struct CertInfo {
  std::string role;  // OU: leader, participant, client, admin, ca
  std::string name;  // CN
  std::vector<std::string> hosts;  // subjectAltName DNS names and IP addresses
  int64_t not_before = 0;          // seconds since the epoch
  int64_t not_after = 0;
  bool is_ca = false;
};

// Parses the first certificate of a PEM text. Error BADCERT: not a certificate, or one whose
// fields cannot be read. Never throws, for any input (fuzzed: tests/fuzz/fuzz_certs.cpp).
Result<CertInfo> parse_cert(std::string_view pem);

// The same, of a certificate OpenSSL already holds (a TLS peer's).
Result<CertInfo> cert_info(const x509_st* cert);

// Whether a certificate whose subjectAltName holds `hosts` names `host`: a DNS name equal to
// it (case-insensitive; "*.example" matches one label), or the same IP address (any textual
// form of it).
bool names_host(const std::vector<std::string>& hosts, const std::string& host);

// "2031-11-25 21:30:00 UTC".
std::string format_time(int64_t epoch_s);

// A new certificate's request.
struct CertSpec {
  std::string role;  // as above; "ca" for a CA
  std::string name;
  std::vector<std::string> hosts;  // nodes: names and addresses it answers on
  int64_t not_before = 0;          // seconds since the epoch
  int64_t not_after = 0;
};

struct KeyPair {
  std::string cert_pem;
  std::string key_pem;
};

// Makes a key and a certificate for `spec`, signed by the CA (ca_cert_pem, ca_key_pem), or
// self-signed when spec.role is "ca" (the CA arguments are then ignored). Error BADCERT
// when the CA's certificate or key cannot be read or do not belong together.
Result<KeyPair> make_cert(const CertSpec& spec, const std::string& ca_cert_pem,
                          const std::string& ca_key_pem);

// The `tpc cert` commands. Each writes into `dir` (created 0700 if missing), refuses to
// replace an existing file unless `overwrite`, and returns the paths written, or an error
// (USAGE: bad argument; EXISTS: a file is already there; BADCERT: the CA cannot be read).
// `ca_key`: the CA key's path (empty: DIR/ca.key). Lifetimes in seconds.
struct CreateOptions {
  std::string dir;
  std::string ca_key;
  int64_t lifetime_s = 0;
  bool overwrite = false;
};
Result<std::vector<std::string>> create_ca(const CreateOptions& o);
Result<std::vector<std::string>> create_node(const CreateOptions& o, const std::string& role,
                                             const std::vector<std::string>& hosts);
Result<std::vector<std::string>> create_client(const CreateOptions& o, const std::string& name,
                                               const std::string& role);

// The file names of a role's certificate in a certificates directory: "leader" ->
// {DIR/leader.crt, DIR/leader.key}; a client NAME -> {DIR/client.NAME.crt, ...}.
std::string cert_path(const std::string& dir, const std::string& base);
std::string key_path(const std::string& dir, const std::string& base);

}  // namespace tpc::tls
