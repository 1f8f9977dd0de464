// A blocking line connection to a tpc server, for the client and the tests.
// Every call has a deadline; nothing blocks forever.
//
// It runs on the same transport as the servers (protocol::Stream): plaintext, or TLS when
// this process has certificates (use_tls).
#pragma once
#include <memory>
#include <string>

#include "common/status.h"
#include "protocol/codec.h"
#include "tls/context.h"

namespace tpc::protocol {
class Stream;
}

namespace tpc::client {

class Connection {
 public:
  Connection();
  ~Connection();
  Connection(Connection&& o) noexcept;
  Connection& operator=(Connection&& o) noexcept;
  Connection(const Connection&) = delete;

  // Connects, runs the TLS handshake when this process has certificates, and performs the
  // HELLO handshake. Errors: UNAVAILABLE (cannot connect), TLS (the handshake failed: the
  // message says why, e.g. an expired certificate or another CA), SECURE (the server speaks
  // TLS only and this process has no certificates), VERSION (the server speaks another
  // protocol version), CLUSTER (the server belongs to another cluster than the one set with
  // expect_cluster).
  // `host_port` may list several servers, "A:P,B:P": the first that answers, in order.
  static Result<Connection> open(const std::string& host_port, int timeout_ms,
                                 const std::string& role = "client");
  // The cluster id every connection of this process must reach (--cluster-id,
  // TPC_CLUSTER_ID); empty: any. Set once, before the first open.
  static void expect_cluster(std::string cluster_id);
  static const std::string& expected_cluster();
  // The certificates every connection of this process presents (null: plaintext). `implicit`:
  // found in the default place rather than asked for (--certs-dir, TPC_CERTS_DIR); then a
  // server on this machine that runs without certificates is spoken to in plaintext.
  static void use_tls(std::shared_ptr<const tls::Context> tls, bool implicit = false);
  static std::shared_ptr<const tls::Context> tls();
  // Sends one request line tagged "@TAG" and reads its reply line, which must carry the same
  // tag (returned without it): a reply meant for another request is never taken for this
  // one's. TAG: the given one (a TXN's request id), else 64 fresh random bits. Error LOST when
  // the connection broke, the deadline passed after the request was sent, or the reply
  // carried another tag (the outcome is unknown). An untagged "ERR ..." (TOOLONG, BUSY: sent
  // by the server before it reads a request) is returned as is.
  Result<std::string> call(const std::string& line, int timeout_ms, const std::string& tag = "");
  Status send_raw(const std::string& bytes);
  Result<std::string> read_line(int timeout_ms);
  bool is_open() const;
  // Over TLS (false: plaintext, also after the implicit certificates gave way).
  bool secure() const;
  // The longest request the server takes, its line and its values (its HELLO's max_message=,
  // its --max-message); 0 when it did not say.
  size_t server_max_message() const { return m_server_max_message; }
  // Accept replies up to `n` bytes (default 4 MiB), for bulk replies (snapshots).
  void set_max_message(size_t n) { m_in = protocol::LineBuffer(n); }
  void close();

 private:
  struct Impl;
  // Runs the io until `done` or the deadline; false (and the connection closed) on timeout.
  bool run(int64_t deadline_ms, const bool& done);
  std::unique_ptr<Impl> m;
  protocol::LineBuffer m_in{protocol::k_default_max_message * 2};
  size_t m_server_max_message = 0;
};

}  // namespace tpc::client
