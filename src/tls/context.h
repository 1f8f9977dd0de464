// What a node or a client loads from its certificates directory to speak TLS (docs/security.md).
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "common/status.h"
#include "tls/certs.h"

namespace tpc::tls {

// A TLS 1.3 context holding DIR/ca.crt as the only trusted roots and DIR/BASE.crt with its
// key as this process's certificate; it asks every peer for a certificate and refuses a peer
// without one. Shared by the streams made from it: a stream keeps its context alive.
struct Context {
  std::shared_ptr<boost::asio::ssl::context> ssl;
  CertInfo own;      // this process's certificate
  std::string dir;   // where it came from
  std::string base;  // "leader", "participant", "client.NAME"
};

// Loads DIR/ca.crt, DIR/BASE.crt and DIR/BASE.key. Errors (BADCERT), each saying which file
// and what to do: a file missing or unreadable, a key readable by others than its owner (like
// PostgreSQL and CockroachDB: the key must be 0600 or less), a key that is not the
// certificate's, a certificate that has expired or is not valid yet (unless `check_dates` is
// false: for tests that need an expired certificate on the wire), a certificate of another
// role than `role` (empty: any client role, client or admin).
Result<std::shared_ptr<const Context>> load(const std::string& dir, const std::string& base,
                                            const std::string& role, bool check_dates = true);

// True when DIR holds a CA certificate (so a command can tell "no certificates here").
bool has_certs(const std::string& dir);

}  // namespace tpc::tls
