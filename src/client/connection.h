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
  // VERSION (the server speaks another protocol version).
  static Result<Connection> open(const std::string& host_port, int timeout_ms,
                                 const std::string& role = "client");
  // Sends one request line and reads one reply line. Error LOST when the connection broke or
  // the deadline passed after the request was sent (its outcome is unknown).
  Result<std::string> call(const std::string& line, int timeout_ms);
  Status send_raw(const std::string& bytes);
  Result<std::string> read_line(int timeout_ms);
  bool is_open() const { return m_fd >= 0; }
  void close();

 private:
  int m_fd = -1;
  protocol::LineBuffer m_in{protocol::k_default_max_line * 2};
};

}  // namespace tpc::client
