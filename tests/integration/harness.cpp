#include "harness.h"

#include <random>
#include <regex>

#include <set>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "common/util.h"
#include "etcd/client.h"
#include "protocol/codec.h"

extern char** environ;

namespace tpc::it {

Scratch::Scratch() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "tpc-it-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  m_path = tmpl;
}
Scratch::~Scratch() {
  if (!std::getenv("TPC_KEEP_SCRATCH")) {
    std::error_code ec;
    std::filesystem::remove_all(m_path, ec);
  }
}

namespace {
sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}
}  // namespace

bool port_free(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback(port);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

int connect_loopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback(port);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
  if (fd >= 0) ::close(fd);
  return -1;
}

int listen_loopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback(port);
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::listen(fd, 16) == 0)
    return fd;
  if (fd >= 0) ::close(fd);
  return -1;
}

// Below 32768: the kernel hands out ephemeral ports above it, so a client's connection can
// never take a port a node is about to listen on. Random, checked by a bind, and never the
// same twice in one process.
// A port handed out is also claimed across the test processes ctest runs side by side: a lock
// on /tmp/tpc-test-ports/PORT held until this process ends. Without it, a port left free for a
// moment by a node a crash test killed could be given to another test's node, whose answers
// the crash test would then read as its own.
bool claim_port(uint16_t port) {
  static std::set<uint16_t> given;
  if (given.count(port)) return false;
  ::mkdir("/tmp/tpc-test-ports", 0777);
  int fd = ::open(fmt::format("/tmp/tpc-test-ports/{}", port).c_str(),
                  O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) return false;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return false;
  }
  given.insert(port);  // the descriptor stays open: the lock lasts as long as this process
  return true;
}

uint16_t free_port() {
  static std::mt19937 rng(
      static_cast<unsigned>(now_us() ^ (static_cast<int64_t>(::getpid()) << 16)));
  for (int tries = 0; tries < 1000; ++tries) {
    auto port = static_cast<uint16_t>(20000 + rng() % 12000);
    if (!port_free(port) || !claim_port(port)) continue;
    return port;
  }
  throw std::runtime_error("no free port below 32768");
}

bool wait_for(const std::function<bool()>& cond, int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  while (true) {
    if (cond()) return true;
    if (now_ms() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool wait_for_text(const std::string& path, const std::string& text, int timeout_ms) {
  return wait_for([&] { return read_file(path).find(text) != std::string::npos; }, timeout_ms);
}

namespace {
std::vector<char*> make_env(const std::map<std::string, std::string>& extra,
                            std::vector<std::string>& storage) {
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos && extra.count(kv.substr(0, eq))) continue;
    if (kv.rfind("TPC_", 0) == 0) continue;  // tests control tpc's environment fully
    storage.push_back(kv);
  }
  for (auto& [k, v] : extra) storage.push_back(k + "=" + v);
  std::vector<char*> out;
  for (auto& s : storage) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

pid_t spawn(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
            int in_fd, int out_fd, int err_fd) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (in_fd >= 0) posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
  if (out_fd >= 0) posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  if (err_fd >= 0) posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  std::vector<std::string> argv_s = args;
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_storage;
  auto envp = make_env(env, env_storage);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(rc));
  return pid;
}

int decode_status(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return -1;
}
}  // namespace

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Process::Process(std::vector<std::string> args, std::string log_path,
                 std::map<std::string, std::string> env) {
  int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  m_pid = spawn(args, env, devnull, fd, fd);
  ::close(fd);
  ::close(devnull);
}

Process::~Process() {
  if (m_pid > 0 && m_status < 0) {
    ::kill(m_pid, SIGKILL);
    int st;
    ::waitpid(m_pid, &st, 0);
  }
}

bool Process::alive() {
  if (m_status >= 0) return false;
  int st;
  pid_t r = ::waitpid(m_pid, &st, WNOHANG);
  if (r == m_pid) {
    m_status = decode_status(st);
    return false;
  }
  return true;
}

void Process::kill9() {
  if (!alive()) return;
  ::kill(m_pid, SIGKILL);
  wait_exit(10000);
}

int Process::wait_exit(int timeout_ms) {
  wait_for([&] { return !alive(); }, timeout_ms);
  return m_status;
}

int Process::terminate(int timeout_ms) {
  if (!alive()) return m_status;
  ::kill(m_pid, SIGTERM);
  int rc = wait_exit(timeout_ms);
  if (rc < 0) kill9();
  return rc;
}

std::map<std::string, std::string> crash_at(const std::string& fp, int nth) {
  return {{"TPC_FAILPOINTS",
           fmt::format("{}={}1*crash", fp, nth > 1 ? fmt::format("{}*off->", nth - 1) : "")}};
}

RunResult run_tpc(const std::vector<std::string>& args, int timeout_ms,
                  const std::string& stdin_data, std::map<std::string, std::string> env) {
  Scratch s;
  std::string in_path = s.path() + "/in", out_path = s.path() + "/out",
              err_path = s.path() + "/err";
  { std::ofstream(in_path, std::ios::binary) << stdin_data; }
  int in = ::open(in_path.c_str(), O_RDONLY | O_CLOEXEC);
  int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  std::vector<std::string> argv = {TPC_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = spawn(argv, env, in, out, err);
  ::close(in);
  ::close(out);
  ::close(err);
  RunResult r;
  int st = 0;
  bool done = wait_for([&] { return ::waitpid(pid, &st, WNOHANG) == pid; }, timeout_ms);
  if (!done) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &st, 0);
    r.code = -1;
  } else {
    r.code = decode_status(st);
  }
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  return r;
}

Cluster::Cluster(Options o) : m_opt(std::move(o)) {
  m_leader_port = free_port();
  for (int i = 0; i < m_opt.participants; ++i) m_part_ports.push_back(free_port());
  m_parts.resize(m_opt.participants);
  m_part_starts.resize(m_opt.participants);
  if (m_opt.secure) {
    make_certs(certs_dir());
    m_opt.participant_args.insert(m_opt.participant_args.begin(), {"--certs-dir", certs_dir()});
    m_opt.leader_args.insert(m_opt.leader_args.begin(), {"--certs-dir", certs_dir()});
    m_certs = std::make_unique<UseCerts>(certs_dir());
  }
  for (int i = 0; i < m_opt.participants; ++i) start_participant(i);
  start_leader();
}

Cluster::~Cluster() {
  m_leader.reset();
  m_parts.clear();
}

void Cluster::start_participant(int i, std::map<std::string, std::string> env,
                                std::vector<std::string> extra_args) {
  if (env.empty() && m_part_starts[i] == 0 && m_opt.participant_env.count(i))
    env = m_opt.participant_env[i];
  ++m_part_starts[i];
  std::vector<std::string> args = {TPC_BINARY,    "participant",
                                   "--port",      std::to_string(m_part_ports[i]),
                                   "--id",        std::to_string(i + 1),
                                   "--data-dir",  dir() + "/p" + std::to_string(i + 1),
                                   "--log-level", "debug"};
  args.insert(args.end(), m_opt.participant_args.begin(), m_opt.participant_args.end());
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  m_parts[i] = std::make_unique<Process>(args, dir() + "/p" + std::to_string(i + 1) + ".log", env);
}

int Cluster::add_participant() {
  int i = size();
  m_part_ports.push_back(free_port());
  m_parts.emplace_back();
  m_part_starts.push_back(0);
  start_participant(i);
  return i;
}

void Cluster::start_leader(std::map<std::string, std::string> env) {
  if (env.empty() && m_leader_starts == 0) env = m_opt.leader_env;
  ++m_leader_starts;
  std::string peers;  // the set the cluster was made with
  for (int i = 0; i < m_opt.participants; ++i) peers += (i ? "," : "") + participant_addr(i);
  std::vector<std::string> args = {
      TPC_BINARY,    "leader", "--port",     std::to_string(m_leader_port),
      "--peers",     peers,    "--data-dir", dir() + "/leader",
      "--log-level", "debug"};
  if (m_opt.replicas) {
    args.push_back("--replicas");
    args.push_back(std::to_string(m_opt.replicas));
  }
  args.insert(args.end(), m_opt.leader_args.begin(), m_opt.leader_args.end());
  m_leader = std::make_unique<Process>(args, dir() + "/leader.log", env);
}

bool Cluster::wait_ready(int timeout_ms) {
  std::string want = fmt::format("peers_up={}/{}", size(), size());
  return wait_for(
      [&] {
        auto c = client::Connection::open(leader_addr(), 500);
        if (!c) return false;
        auto r = c->call("STATS", 1000);
        return r && r->find(want) != std::string::npos;
      },
      timeout_ms);
}

bool Cluster::wait_settled(int timeout_ms) {
  return wait_for(
      [&] {
        for (int i = 0; i < size(); ++i)
          if (stat(i, "in_doubt") != 0) return false;
        return stat(-1, "active") == 0;
      },
      timeout_ms);
}

RunResult Cluster::client(const std::vector<std::string>& args, int timeout_ms) {
  std::vector<std::string> a = {"client", "--leader", leader_addr()};
  if (m_opt.secure) a.insert(a.end(), {"--certs-dir", certs_dir()});
  a.insert(a.end(), args.begin(), args.end());
  return run_tpc(a, timeout_ms);
}

std::optional<std::string> Cluster::read_at(int i, const std::string& key) {
  auto c = client::Connection::open(participant_addr(i), 2000);
  if (!c) throw std::runtime_error("participant down: " + c.status().message());
  c->set_max_message(protocol::k_max_message_limit + 1024);
  auto r = c->call(protocol::LineBuilder("READ").arg(key).str(), 5000);
  if (!r) throw std::runtime_error("read failed: " + r.status().message());
  if (*r == "NOTFOUND") return std::nullopt;
  auto t = protocol::split(*r);
  if (t.size() == 2 && t[0] == "VALUE") return *protocol::unescape(t[1]);
  throw std::runtime_error("read failed: " + *r);
}

long Cluster::stat(int i, const std::string& field) {
  return stat_at(i < 0 ? leader_addr() : participant_addr(i), field);
}

std::string Cluster::cluster_id() const {
  std::string text = read_file(dir() + "/leader/identity");
  auto at = text.find("\ncluster ");
  if (at == std::string::npos) return "";
  return text.substr(at + 9, 36);
}

std::string Cluster::log_of_leader() const { return read_file(dir() + "/leader.log"); }
std::string Cluster::log_of_participant(int i) const {
  return read_file(dir() + "/p" + std::to_string(i + 1) + ".log");
}

void make_certs(const std::string& dir) {
  tls::CreateOptions co{dir, "", 86400, false};
  for (auto r : {tls::create_ca(co), tls::create_node(co, "leader", {"localhost", "127.0.0.1"}),
                 tls::create_node(co, "participant", {"localhost", "127.0.0.1"}),
                 tls::create_client(co, "root", "admin")})
    if (!r) throw std::runtime_error("certificates: " + r.status().message());
}

UseCerts::UseCerts(const std::string& dir, const std::string& name, const std::string& role,
                   bool check_dates)
    : m_old(client::Connection::tls()) {
  std::shared_ptr<const tls::Context> ctx;
  if (!dir.empty()) {
    std::string base = role == "leader" || role == "participant" ? role : "client." + name;
    auto r = tls::load(dir, base, role, check_dates);
    if (!r) throw std::runtime_error("certificates: " + r.status().message());
    ctx = *r;
  }
  client::Connection::use_tls(ctx);
}
UseCerts::~UseCerts() { client::Connection::use_tls(m_old); }

EtcdServer::EtcdServer(int members) {
  for (int i = 0; i < members; ++i) {
    m_client_ports.push_back(free_port());
    m_peer_ports.push_back(free_port());
  }
  m_procs.resize(static_cast<size_t>(members));
  start();
}

void EtcdServer::start() {
  for (int i = 0; i < members(); ++i)
    if (!member_alive(i)) start_member(i);
}

void EtcdServer::start_member(int i) {
  auto u = static_cast<size_t>(i);
  std::string initial;
  for (size_t m = 0; m < m_peer_ports.size(); ++m)
    initial += fmt::format("{}e{}=http://127.0.0.1:{}", m ? "," : "", m, m_peer_ports[m]);
  std::string c = fmt::format("http://127.0.0.1:{}", m_client_ports[u]);
  std::string p = fmt::format("http://127.0.0.1:{}", m_peer_ports[u]);
  // A restart reuses the member's data directory; etcd then ignores the initial-cluster flags.
  m_procs[u] = std::make_unique<Process>(
      std::vector<std::string>{"/usr/bin/etcd", "--name", fmt::format("e{}", i), "--data-dir",
                               fmt::format("{}/e{}", m_dir.path(), i), "--listen-client-urls", c,
                               "--advertise-client-urls", c, "--listen-peer-urls", p,
                               "--initial-advertise-peer-urls", p, "--initial-cluster", initial,
                               "--initial-cluster-token", "tpc-test", "--log-level", "warn",
                               "--logger", "zap"},
      fmt::format("{}/etcd{}.log", m_dir.path(), i));
}

bool EtcdServer::member_alive(int i) {
  const auto& p = m_procs.at(static_cast<size_t>(i));
  return p && p->alive();
}

std::string EtcdServer::endpoint() const {
  return fmt::format("127.0.0.1:{}", m_client_ports.at(0));
}

std::string EtcdServer::endpoints() const {
  std::string out;
  for (size_t m = 0; m < m_client_ports.size(); ++m)
    out += fmt::format("{}127.0.0.1:{}", m ? "," : "", m_client_ports[m]);
  return out;
}

uint16_t free_port_run(int n) {
  std::mt19937 rng(static_cast<unsigned>(now_us()));
  for (int tries = 0; tries < 200; ++tries) {
    uint16_t base = static_cast<uint16_t>(20000 + rng() % 12000);  // below the ephemeral ports
    bool ok = true;
    for (int i = 0; i <= n && ok; ++i) ok = port_free(static_cast<uint16_t>(base + i));
    for (int i = 0; i <= n && ok; ++i) ok = claim_port(static_cast<uint16_t>(base + i));
    if (ok) return base;
  }
  throw std::runtime_error("no free port range");
}

std::unique_ptr<Process> start_second_leader(Cluster& c, const EtcdServer& e,
                                             const std::string& name, uint16_t port,
                                             const std::vector<std::string>& extra) {
  std::string peers;
  for (int i = 0; i < c.size(); ++i) peers += (i ? "," : "") + c.participant_addr(i);
  std::vector<std::string> args{TPC_BINARY,
                                "leader",
                                "--id",
                                "2",
                                "--port",
                                std::to_string(port),
                                "--peers",
                                peers,
                                "--data-dir",
                                c.dir() + "/leader2",
                                "--cluster-id",
                                c.cluster_id(),
                                "--log-level",
                                "debug",
                                "--decision-store",
                                e.url(),
                                "--cluster-name",
                                name};
  if (c.replicas()) args.insert(args.end(), {"--replicas", std::to_string(c.replicas())});
  args.insert(args.end(), extra.begin(), extra.end());
  return std::make_unique<Process>(args, c.dir() + "/leader2.log");
}

long stat_at(const std::string& addr, const std::string& field) {
  auto c = client::Connection::open(addr, 2000);
  if (!c) return -1;
  auto r = c->call("STATS", 2000);
  if (!r) return -1;
  for (auto t : protocol::split(*r))
    if (t.substr(0, field.size() + 1) == field + "=")
      return parse_int(t.substr(field.size() + 1)).value_or(-1);
  return -1;
}

bool leader_ready(const std::string& addr, int n) {
  auto conn = client::Connection::open(addr, 500);
  if (!conn) return false;
  auto r = conn->call("STATS", 1000);
  return r && r->find(fmt::format("peers_up={}/{}", n, n)) != std::string::npos;
}

bool EtcdServer::wait_healthy(int timeout_ms) const {
  return wait_for(
      [&] {
        for (const auto& ep : split_list(endpoints(), ',')) {
          boost::asio::io_context io;
          auto c = std::make_shared<etcd::Client>(io, std::vector<std::string>{ep}, 500);
          bool ok = false;
          c->range("health", "", [&](Result<std::vector<etcd::KeyValue>> r) { ok = r.is_ok(); });
          io.run();
          c->stop();
          if (ok) return true;
        }
        return false;
      },
      timeout_ms);
}

std::pair<std::string, std::string> http_get(uint16_t port, const std::string& path) {
  int fd = connect_loopback(port);
  if (fd < 0) return {};
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)!::write(fd, req.data(), req.size());
  std::string resp;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  size_t head = resp.find("\r\n\r\n");
  if (head == std::string::npos) return {};
  return {resp.substr(0, resp.find("\r\n")), resp.substr(head + 4)};
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("cannot stat " + path);
  return st.st_mode & 0777;
}

InDoubtPut put_until_leader_dies(Cluster& c, const std::string& rid, const std::string& key,
                                 const std::string& value, const std::string& scratch_dir) {
  InDoubtPut r;
  r.put = std::make_unique<Process>(
      std::vector<std::string>{TPC_BINARY, "client", "--leader", c.leader_addr(), "--request-id",
                               rid, "put", key, value},
      scratch_dir + "/put.out");
  if (c.leader()->wait_exit(10000) != 128 + SIGKILL) return r;
  std::string peers;
  for (int i = 0; i < c.size(); ++i) peers += (i ? "," : "") + c.participant_addr(i);
  std::regex line("\n([0-9]+\\.[0-9]+\\.[0-9]+) .* " + key + "\n");
  wait_for(
      [&] {
        auto out = c.client({"--peers", peers, "in-doubt"}).out;
        std::smatch m;
        if (!std::regex_search(out, m, line)) return false;
        r.txid = m[1];
        return true;
      },
      10000);
  return r;
}

bool Writer::put() {
  if (!conn) {
    auto o = client::Connection::open(c.leader_addr(), 1000);
    if (!o) return false;
    conn.emplace(std::move(*o));
  }
  std::string k = fmt::format("av{}", seq % keys), v = fmt::format("v{}", seq);
  ++seq;
  auto r = conn->call(fmt::format("PUT {} {}", k, v), 10000);
  if (!r) {
    conn.reset();
    may_hold[k].insert(v);  // unknown
    ++failures["(no reply)"];
    return false;
  }
  if (r->rfind("COMMITTED", 0) == 0) {
    may_hold[k] = {v};
    return true;
  }
  auto words = r->substr(0, r->find(' ', r->find(' ') + 1));
  ++failures[words];
  if (r->rfind("ABORTED", 0) != 0) may_hold[k].insert(v);  // an error: not known either
  return false;
}

}  // namespace tpc::it
