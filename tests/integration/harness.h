// Test harness: real tpc processes on 127.0.0.1 and free ports, always stopped (kill -9 in
// destructors, also when a test fails). Waiting is by deadline-bounded polling, never sleep.
#pragma once
#include <signal.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "client/connection.h"
#include "tls/context.h"

namespace tpc::it {

// A scratch directory, removed at destruction unless TPC_KEEP_SCRATCH is set.
class Scratch {
 public:
  Scratch();
  ~Scratch();
  const std::string& path() const { return m_path; }

 private:
  std::string m_path;
};

// True when nothing listens on 127.0.0.1:port (a bind succeeds).
bool port_free(uint16_t port);
// A TCP socket connected to 127.0.0.1:port (close-on-exec), or -1.
int connect_loopback(uint16_t port);
// A TCP socket bound to 127.0.0.1:port and listening, or -1.
int listen_loopback(uint16_t port);
uint16_t free_port();
// One HTTP/1.0 GET to 127.0.0.1:port; "" when nothing answers. Status line and body.
std::pair<std::string, std::string> http_get(uint16_t port, const std::string& path);

// Polls `cond` every few milliseconds until it holds or `timeout_ms` passes.
bool wait_for(const std::function<bool()>& cond, int timeout_ms);
// Polls until the file at `path` contains `text`.
bool wait_for_text(const std::string& path, const std::string& text, int timeout_ms);

class Process {
 public:
  Process(std::vector<std::string> args, std::string log_path,
          std::map<std::string, std::string> env = {});
  ~Process();  // SIGKILL if still running
  bool alive();
  void kill9();
  // SIGTERM, then waits; returns the exit status or -1 on timeout (then SIGKILL).
  int terminate(int timeout_ms = 5000);
  // Waits for exit; returns the wait status code (exit code, or 128+signal), -1 on timeout.
  int wait_exit(int timeout_ms);
  pid_t pid() const { return m_pid; }

 private:
  pid_t m_pid = -1;
  int m_status = -1;
};

struct RunResult {
  int code = -1;
  std::string out;
  std::string err;
};
// Runs the tpc binary with `args` to completion (bounded by timeout_ms, then killed).
// TPC_FAILPOINTS for a process that crashes at the `nth` hit of failpoint `fp`.
std::map<std::string, std::string> crash_at(const std::string& fp, int nth);

RunResult run_tpc(const std::vector<std::string>& args, int timeout_ms = 30000,
                  const std::string& stdin_data = "", std::map<std::string, std::string> env = {});

std::string read_file(const std::string& path);

// Makes DIR/ca.crt (a new CA) and the certificates of a one-machine cluster in DIR, like
// tpc cluster: leader, participant (localhost, 127.0.0.1), client.root (admin).
void make_certs(const std::string& dir);
// Makes this process's connections present DIR/client.NAME.crt (empty dir: plaintext), until
// the object goes.
class UseCerts {
 public:
  UseCerts(const std::string& dir, const std::string& name = "root",
           const std::string& role = "", bool check_dates = true);
  ~UseCerts();

 private:
  std::shared_ptr<const tls::Context> m_old;
};

// A one-member etcd (Debian's etcd-server) in a scratch directory on free loopback ports;
// killed at destruction. start() again after kill() reuses the directory and ports.
// A real etcd of 1 or 3 members on loopback (Debian's etcd-server), stopped with the object.
class EtcdServer {
 public:
  explicit EtcdServer(int members = 1);
  // Every member that is not running (again, on its data: a restart).
  void start();
  void kill() {  // every member, SIGKILL
    for (auto& p : m_procs) p.reset();
  }
  void start_member(int i);
  void kill_member(int i) { m_procs.at(static_cast<size_t>(i)).reset(); }
  bool member_alive(int i);
  int members() const { return static_cast<int>(m_procs.size()); }
  std::string endpoint() const;  // the first member's HOST:PORT
  std::string endpoints() const;  // every member's, comma-separated
  std::string url() const { return "etcd://" + endpoints(); }
  // True once etcd answers a (linearizable, so quorum) range read, within `timeout_ms`.
  bool wait_healthy(int timeout_ms = 15000) const;

 private:
  Scratch m_dir;
  std::vector<uint16_t> m_client_ports, m_peer_ports;
  std::vector<std::unique_ptr<Process>> m_procs;
};

// A base port with `n` free ports after it (below the kernel's ephemeral ports).
uint16_t free_port_run(int n);

// Whether `text` holds `part`.
inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The permission bits of a file or directory (fails the test if it cannot be read).
unsigned mode_of(const std::string& path);

class Cluster;
// A put under request id `rid` that kills the leader (started with a crash failpoint) mid
// transaction: `put` is the client's process (kill it once done with it), `txid` the
// transaction its participants hold in doubt ("" if none shows up within 10 s).
struct InDoubtPut {
  std::unique_ptr<Process> put;
  std::string txid;
};
InDoubtPut put_until_leader_dies(Cluster& c, const std::string& rid, const std::string& key,
                                 const std::string& value, const std::string& scratch_dir);

// Leader 2 of `c`'s cluster (its participants and replicas) over the etcd decision store `e`,
// under --cluster-name `name`, on `port`; logs to DIR/leader2.log. Not waited for.
std::unique_ptr<Process> start_second_leader(Cluster& c, const EtcdServer& e,
                                             const std::string& name, uint16_t port,
                                             const std::vector<std::string>& extra = {});
// A numeric field of the STATS line of the node at `addr` (-1: no answer, no such field, or
// not a number). Cluster::stat asks one of its own nodes.
long stat_at(const std::string& addr, const std::string& field);
// A reply that is ERR DENIED (a role refused).
inline bool denied(const Result<std::string>& r) { return r && r->rfind("ERR DENIED", 0) == 0; }
// The leader at `addr` answers STATS and sees `n` participants up.
bool leader_ready(const std::string& addr, int n = 2);

class Cluster {
 public:
  struct Options {
    int participants = 2;
    int replicas = 0;
    std::map<std::string, std::string> leader_env;
    std::map<int, std::map<std::string, std::string>> participant_env;
    std::vector<std::string> leader_args;
    std::vector<std::string> participant_args;
    // TLS: a CA and leader, participant and client.root (admin) certificates in DIR/certs;
    // every node gets --certs-dir, and this process's connections present client.root.
    bool secure = false;
  };
  explicit Cluster(Options o);
  Cluster() : Cluster(Options{}) {}
  ~Cluster();

  void start_participant(int i, std::map<std::string, std::string> env = {},
                         std::vector<std::string> extra_args = {});
  void start_leader(std::map<std::string, std::string> env = {});
  // Starts one more participant (id size()+1, a free port, an empty data directory), outside
  // the --peers the cluster was made with: for member add and replace. Returns its index.
  int add_participant();
  void kill_participant(int i) { m_parts[i].reset(); }
  void kill_leader() { m_leader.reset(); }
  Process* participant(int i) { return m_parts[i].get(); }
  Process* leader() { return m_leader.get(); }
  // True once the leader answers and sees every participant.
  bool wait_ready(int timeout_ms = 10000);
  // True once nothing is in doubt at any participant and the leader has no transaction left.
  bool wait_settled(int timeout_ms = 20000);
  std::string leader_addr() const { return "127.0.0.1:" + std::to_string(m_leader_port); }
  std::string participant_addr(int i) const {
    return "127.0.0.1:" + std::to_string(m_part_ports[i]);
  }
  // tpc client against this cluster.
  RunResult client(const std::vector<std::string>& args, int timeout_ms = 30000);
  // Reads a key straight from participant i (READ), nullopt when absent; throws on error.
  std::optional<std::string> read_at(int i, const std::string& key);
  // The cluster id, from the leader's identity file ("" before the leader first started).
  std::string cluster_id() const;
  // STATS line field of participant i, or of the leader for i < 0 (-1 on failure: stat_at).
  long stat(int i, const std::string& field);
  const std::string& dir() const { return m_scratch.path(); }
  // The certificates directory of a secure cluster ("" otherwise).
  std::string certs_dir() const { return m_opt.secure ? dir() + "/certs" : ""; }
  std::string data_dir(int i) const { return dir() + "/p" + std::to_string(i + 1); }
  int size() const { return static_cast<int>(m_part_ports.size()); }
  int replicas() const { return m_opt.replicas; }
  std::string log_of_leader() const;
  std::string log_of_participant(int i) const;

 private:
  Options m_opt;
  Scratch m_scratch;
  uint16_t m_leader_port;
  std::vector<uint16_t> m_part_ports;
  std::vector<std::unique_ptr<Process>> m_parts;
  std::unique_ptr<Process> m_leader;
  int m_leader_starts = 0;
  std::vector<int> m_part_starts;
  std::unique_ptr<UseCerts> m_certs;
};

// One client connection writing keys av0..av(N-1) in turn, remembering what each key may hold:
// its last acknowledged value, and any later value whose outcome it did not learn.
class Cluster;
struct Writer {
  Writer(Cluster& cluster, int key_count) : c(cluster), keys(key_count) {}
  Cluster& c;
  int keys;
  std::optional<client::Connection> conn;
  std::map<std::string, std::set<std::string>> may_hold;
  int seq = 0;
  std::map<std::string, int> failures;  // the first words of each reply that was not COMMITTED
  // One PUT: true when COMMITTED.
  bool put();
};

}  // namespace tpc::it
