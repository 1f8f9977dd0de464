// An etcd v3 client over etcd's HTTP/JSON gateway (Boost.Beast), for the leader's decision
// store (docs/decision-store.md).
//
// Why the gateway and not gRPC: Debian packages neither etcd's API definitions nor a gRPC
// C++ stack that builds them, and the gateway is the same v3 API (same transactions, same
// leases) with one HTTP request per call; the decision batching makes the per-call cost small.
//
// Single-threaded like its io_context: call everything on its thread; callbacks run there.
// One persistent HTTP/1.1 connection, one request in flight, the rest queued in order. A
// request that fails on one endpoint (connection refused, reset, timeout) is not retried by
// the client: the caller learns UNAVAILABLE and decides (a decision CAS is safe to re-send;
// its compare makes a second try harmless). The next request goes to the next endpoint.
#pragma once
#include <utility>  // before asio: boost 1.74 needs it

#include <boost/asio.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "etcd/messages.h"

namespace tpc::etcd {

class Client : public std::enable_shared_from_this<Client> {
 public:
  using Callback = std::function<void(Result<std::string>)>;  // the reply body
  // endpoints: "HOST:PORT" each (at least one). timeout_ms bounds each request, connection
  // included.
  Client(boost::asio::io_context& io, std::vector<std::string> endpoints, int timeout_ms = 2000);
  ~Client();

  // POSTs `body` to `path` (e.g. "/v3/kv/txn"). Errors: UNAVAILABLE (no connection, timeout,
  // broken connection: the request may or may not have been applied), HTTP (a status other
  // than 200, with etcd's message).
  void call(const std::string& path, std::string body, Callback cb);

  void txn(const Txn& t, std::function<void(Result<TxnResult>)> cb);
  void range(const std::string& key, const std::string& range_end,
             std::function<void(Result<std::vector<KeyValue>>)> cb);
  void lease_grant(int64_t ttl_s, std::function<void(Result<std::pair<int64_t, int64_t>>)> cb);
  void lease_keepalive(int64_t id, std::function<void(Result<int64_t>)> cb);
  void lease_revoke(int64_t id, std::function<void(Status)> cb);
  // Whether the member this client talks to now is etcd's raft leader.
  void is_leader(std::function<void(Result<bool>)> cb);

  // Fails every queued request (UNAVAILABLE) and closes the connection.
  void stop();
  const std::string& endpoint() const { return m_endpoints[m_current]; }

  struct Impl;  // the connection and the queue (client.cpp)

 private:
  std::unique_ptr<Impl> m;
  std::vector<std::string> m_endpoints;
  size_t m_current = 0;
};

}  // namespace tpc::etcd
