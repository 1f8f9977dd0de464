// A blocking line connection to a tpc server, for the client and the tests.
// Every call has a deadline; nothing blocks forever.
#pragma once
#include <string>

#include "common/status.h"
#include "protocol/codec.h"

namespace tpc::client {

class Connection {
 public:
  Connection() = default;
  ~Connection();
  Connection(Connection&& o) noexcept;
  Connection& operator=(Connection&& o) noexcept;
  Connection(const Connection&) = delete;

  // Connects and performs the HELLO handshake. Errors: UNAVAILABLE (cannot connect),
  // VERSION (the server speaks another protocol version), CLUSTER (the server belongs to
  // another cluster than the one set with expect_cluster).
  static Result<Connection> open(const std::string& host_port, int timeout_ms,
                                 const std::string& role = "client");
  // The cluster id every connection of this process must reach (--cluster-id,
  // TPC_CLUSTER_ID); empty: any. Set once, before the first open.
  static void expect_cluster(std::string cluster_id);
  static const std::string& expected_cluster();
  // Sends one request line tagged "@TAG" and reads its reply line, which must carry the same
  // tag (returned without it): a reply meant for another request is never taken for this
  // one's. TAG: the given one (a TXN's request id), else 64 fresh random bits. Error LOST when
  // the connection broke, the deadline passed after the request was sent, or the reply
  // carried another tag (the outcome is unknown). An untagged "ERR ..." (TOOLONG, BUSY: sent
  // by the server before it reads a request) is returned as is.
  Result<std::string> call(const std::string& line, int timeout_ms, const std::string& tag = "");
  Status send_raw(const std::string& bytes);
  Result<std::string> read_line(int timeout_ms);
  bool is_open() const { return m_fd >= 0; }
  // Accept reply lines up to `n` bytes (default 2 MiB), for bulk replies (snapshots).
  void set_max_line(size_t n) { m_in = protocol::LineBuffer(n); }
  void close();

 private:
  int m_fd = -1;
  protocol::LineBuffer m_in{protocol::k_default_max_line * 2};
};

}  // namespace tpc::client
