// tpc cluster: a leader and N participants on this machine as child processes.
// Children get PR_SET_PDEATHSIG so none outlives the cluster process, even after kill -9.
// A child that exits is reported, never restarted silently.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.h"
#include "client/client.h"
#include "client/connection.h"
#include "common/logging.h"
#include "common/status.h"
#include "common/util.h"
#include "etcd/client.h"
#include "node/stats.h"
#include "protocol/messages.h"
#include "tls/context.h"
#include "txlog/file.h"

namespace tpc::cli {

namespace {
volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

struct Child {
  std::string name;
  pid_t pid = -1;
  bool running = false;
};

// How the user invoked tpc (argv[0]), so the printed client command works as pasted.
std::string invoked_as() {
  std::string cmd;
  FILE* f = std::fopen("/proc/self/cmdline", "rb");
  if (f) {
    int c;
    while ((c = std::fgetc(f)) != EOF && c != 0) cmd += static_cast<char>(c);
    std::fclose(f);
  }
  return cmd.empty() ? std::string("tpc") : cmd;
}

std::string self_exe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw Error("cannot find the tpc executable (/proc/self/exe)");
  return std::string(buf, static_cast<size_t>(n));
}

// A CA and the certificates of a one-machine cluster: the leader's and the participants' for
// localhost and 127.0.0.1, and client.root with the admin role (for the operator).
void make_cluster_certs(const std::string& dir) {
  tls::CreateOptions co{dir, "", 10 * 365 * 86400LL, false};
  auto check = [&](const Result<std::vector<std::string>>& r) {
    if (!r) throw Error("cannot create certificates in " + dir + ": " + r.status().message());
  };
  check(tls::create_ca(co));
  co.lifetime_s = 5 * 365 * 86400LL;
  check(tls::create_node(co, "leader", {"localhost", "127.0.0.1"}));
  check(tls::create_node(co, "participant", {"localhost", "127.0.0.1"}));
  check(tls::create_client(co, "root", "admin"));
  std::cout << fmt::format("created a CA and certificates in {} (tpc cert list --certs-dir {})\n",
                           dir, dir);
}

pid_t start_child(const std::vector<std::string>& args) {
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw Error(fmt::format("fork failed: {}", std::strerror(errno)));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);
    signal(SIGINT, SIG_IGN);  // Ctrl-C reaches the whole group; the cluster stops us in order
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

// The control socket of a running `tpc cluster` (DATA_DIR/cluster.sock), through which
// `tpc cluster add` and `tpc cluster remove ID` ask it to change its participants.
std::string control_path(const std::string& data_dir) {
  return std::filesystem::absolute(data_dir).lexically_normal().string() + "/cluster.sock";
}

bool fill_addr(const std::string& path, sockaddr_un& a) {
  a = {};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) return false;
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return true;
}

// Writes all of `text` to `fd` (false: the peer went away).
bool write_all(int fd, const std::string& text) {
  size_t at = 0;
  while (at < text.size()) {
    ssize_t n = ::send(fd, text.data() + at, text.size() - at, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    at += static_cast<size_t>(n);
  }
  return true;
}

// `tpc cluster add|remove ID`: the request to the running cluster, its answer's lines echoed;
// the exit code its last line ("EXIT N") gives.
int ask_cluster(const std::string& data_dir, const std::string& request) {
  std::string path = control_path(data_dir);
  sockaddr_un a;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || !fill_addr(path, a) ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (fd >= 0) ::close(fd);
    std::cerr << fmt::format(
        "no tpc cluster runs with --data-dir {} (it listens on {} while it runs)\n", data_dir,
        path);
    return 4;
  }
  if (!write_all(fd, request + "\n")) {
    ::close(fd);
    std::cerr << "the cluster closed the connection\n";
    return 4;
  }
  std::string got;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  int code = 4;
  std::istringstream in(got);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("EXIT ", 0) == 0)
      code = std::atoi(line.c_str() + 5);
    else if (line.rfind("ERR ", 0) == 0)
      std::cerr << line.substr(4) << "\n";
    else
      std::cout << line << "\n";
  }
  return code;
}
}  // namespace

namespace {
struct ClusterOpts {
  int participants = 2;
  uint16_t port = 5000;
  std::string data_dir = "./tpc-data";
  int replicas = 0;
  std::string log_level = "info";
  bool insecure = false;
  std::string certs_dir;
  int leaders = 1;
  std::string decision_store = "local";
  int etcd_members = 1;
  bool no_metrics = false;
};

// The participants a running cluster added or removed (tpc cluster add, remove), kept in
// DATA_DIR/cluster-members so that a restart starts the ones it has and not the removed ones:
// "added ID PORT" and "removed ID" lines.
struct Changes {
  std::map<int, uint16_t> added;  // id -> port
  std::set<int> removed;
};

// One run of `tpc cluster`: its children and ports, and the steps of its life in order:
// certificates, etcd, participants, leaders, the banner, supervision until a signal, stop.
class LocalCluster {
 public:
  explicit LocalCluster(const ClusterOpts& o) : o(o) {}
  int run();

 private:
  void prepare();  // every check, certificates, ports: before anything starts
  void start_etcd();
  void start_participants();
  bool wait_participants();
  bool wait_etcd();
  void start_leader(int k, const std::string& cluster);
  // Ready when a leader sees every participant: its cluster id, or "" (not ready in 15 s).
  std::string wait_leader(const std::string& addr);
  void print_ready(const std::string& leaders, const std::string& cluster_id) const;
  void supervise();
  void stop_all();
  // The control socket (DATA_DIR/cluster.sock): opened once ready; each request served in
  // turn by supervise().
  void open_control();
  void serve_control();
  void add_participant(std::ostream& out, std::ostream& err, int& code);
  void remove_participant(int id, std::ostream& out, std::ostream& err, int& code);
  void load_changes();
  void save_changes() const;
  void start_participant(int id, uint16_t port, int metrics_index);
  // True once `addr` takes connections, within 10 s; false when `child` exits first (null:
  // any child, which fails the cluster's startup).
  bool wait_listening(const std::string& addr, Child* child = nullptr);
  void stop_child(Child& ch);
  // The participants that run, by id: those of --participants not removed, then the added
  // ones; each with its port.
  std::vector<std::pair<int, uint16_t>> live() const {
    std::vector<std::pair<int, uint16_t>> out;
    for (int i = 1; i <= o.participants; ++i)
      if (!changes.removed.count(i)) out.emplace_back(i, static_cast<uint16_t>(o.port + i));
    out.insert(out.end(), changes.added.begin(), changes.added.end());
    return out;
  }
  int live_participants() const { return static_cast<int>(live().size()); }
  // A child that died during startup (a port in use, say) fails the whole cluster at once.
  bool child_died();
  // Every node gets the same certificates directory: each loads its role's certificate.
  std::vector<std::string> with_certs(std::vector<std::string> args) const;
  std::vector<std::string> metrics_args(int index) const;
  // Ports: leader 1 on --port, participants on the next ones, then the other leaders, then
  // etcd's client and peer ports, then metrics (participants', then leaders').
  uint16_t leader_port(int k) const {
    return static_cast<uint16_t>(k == 1 ? o.port : o.port + o.participants + k - 1);
  }

  const ClusterOpts& o;
  std::string exe, certs, peers, store = "local", leaders;
  std::vector<Child> children;
  std::map<int, size_t> part_child;  // participant id -> its entry in children
  int etcd_base = 0, metrics_base = 0, last_port = 0;
  bool failed = false;
  Changes changes;
  int control_fd = -1;
};

void LocalCluster::prepare() {
  if (o.leaders > 1 && o.decision_store != "etcd")
    throw Error(
        "--leaders above 1 needs --decision-store etcd (leaders share their decisions "
        "there)",
        2);
  exe = self_exe();
  if (o.insecure) {
    ::unsetenv("TPC_CERTS_DIR");  // the nodes must not find certificates there either
  } else {
    certs = o.certs_dir.empty() ? o.data_dir + "/certs" : o.certs_dir;
    if (!tls::has_certs(certs)) make_cluster_certs(certs);
    auto tls = tls::load(certs, "client.root", "");
    if (!tls) throw Error("certificates in " + certs + ": " + tls.status().message(), 2);
    client::Connection::use_tls(*tls);
  }
  etcd_base = o.port + o.participants + o.leaders;
  metrics_base = etcd_base + (o.decision_store == "etcd" ? 2 * o.etcd_members : 0);
  last_port = o.no_metrics ? metrics_base - 1 : metrics_base + o.participants + o.leaders - 1;
  if (last_port > 65535) throw Error("--port: too high for the cluster", 2);
}

std::vector<std::string> LocalCluster::with_certs(std::vector<std::string> args) const {
  if (!certs.empty()) {
    args.push_back("--certs-dir");
    args.push_back(certs);
  }
  return args;
}

std::vector<std::string> LocalCluster::metrics_args(int index) const {
  if (o.no_metrics) return {};
  return {"--metrics-addr", fmt::format("127.0.0.1:{}", metrics_base + index)};
}

void LocalCluster::start_etcd() {
  if (o.decision_store != "etcd") return;
  std::string initial;
  for (int m = 0; m < o.etcd_members; ++m)
    initial +=
        fmt::format("{}e{}=http://127.0.0.1:{}", m ? "," : "", m, etcd_base + o.etcd_members + m);
  store = "etcd://";
  for (int m = 0; m < o.etcd_members; ++m) {
    std::string client = fmt::format("http://127.0.0.1:{}", etcd_base + m);
    std::string peer = fmt::format("http://127.0.0.1:{}", etcd_base + o.etcd_members + m);
    store += fmt::format("{}127.0.0.1:{}", m ? "," : "", etcd_base + m);
    children.push_back(
        {fmt::format("etcd member {}", m),
         start_child({"/usr/bin/etcd", "--name", fmt::format("e{}", m), "--data-dir",
                      fmt::format("{}/etcd-{}", o.data_dir, m), "--listen-client-urls", client,
                      "--advertise-client-urls", client, "--listen-peer-urls", peer,
                      "--initial-advertise-peer-urls", peer, "--initial-cluster", initial,
                      "--log-level", "warn", "--logger", "zap"}),
         true});
  }
}

void LocalCluster::start_participant(int id, uint16_t port, int metrics_index) {
  std::vector<std::string> a = {exe,           "participant",
                                "--port",      std::to_string(port),
                                "--id",        std::to_string(id),
                                "--data-dir",  fmt::format("{}/participant-{}", o.data_dir, id),
                                "--log-level", o.log_level};
  if (metrics_index >= 0) {
    auto m = metrics_args(metrics_index);
    a.insert(a.end(), m.begin(), m.end());
  } else if (!o.no_metrics) {  // an added participant: its metrics on the port after its own
    a.insert(a.end(), {"--metrics-addr", fmt::format("127.0.0.1:{}", port + 1)});
  }
  part_child[id] = children.size();
  children.push_back({fmt::format("participant {}", id), start_child(with_certs(a)), true});
}

void LocalCluster::start_participants() {
  // --peers names the participants the cluster was made with, removed ones too (the leader
  // checks it against its creation set; the membership says who is in the cluster now).
  for (int i = 1; i <= o.participants; ++i)
    peers += (i > 1 ? "," : "") + fmt::format("127.0.0.1:{}", o.port + i);
  for (auto [id, port] : live()) start_participant(id, port, id <= o.participants ? id - 1 : -1);
}

void LocalCluster::load_changes() {
  std::ifstream in(o.data_dir + "/cluster-members");
  for (std::string line; std::getline(in, line);) {
    auto t = split_list(line, ' ');
    if (t.size() == 3 && t[0] == "added")
      changes.added[std::atoi(t[1].c_str())] = static_cast<uint16_t>(std::atoi(t[2].c_str()));
    else if (t.size() == 2 && t[0] == "removed")
      changes.removed.insert(std::atoi(t[1].c_str()));
  }
  for (int id : changes.removed) changes.added.erase(id);
}

void LocalCluster::save_changes() const {
  std::string text = "# tpc cluster: participants added and removed since the cluster was made\n";
  for (auto [id, port] : changes.added) text += fmt::format("added {} {}\n", id, port);
  for (int id : changes.removed) text += fmt::format("removed {}\n", id);
  txlog::write_file_atomic(o.data_dir + "/cluster-members", text);
}

bool LocalCluster::child_died() {
  int st;
  pid_t pid = ::waitpid(-1, &st, WNOHANG);
  if (pid <= 0) return false;
  for (auto& ch : children)
    if (ch.pid == pid) {
      ch.running = false;
      std::cerr << fmt::format("{} exited during startup; stopping the cluster\n", ch.name);
    }
  return true;
}

// The leader starts once the participants listen, so it finds them at once.
bool LocalCluster::wait_participants() {
  for (auto [id, port] : live())
    if (g_stop || failed || !wait_listening(fmt::format("127.0.0.1:{}", port))) break;
  return !failed;
}

bool LocalCluster::wait_listening(const std::string& addr, Child* child) {
  int64_t until = now_ms() + 10000;
  while (!g_stop && now_ms() < until) {
    if (client::Connection::open(addr, 200)) return true;
    if (child) {
      if (::waitpid(child->pid, nullptr, WNOHANG) == child->pid) {
        child->running = false;
        return false;
      }
    } else if ((failed = child_died())) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void LocalCluster::stop_child(Child& ch) {
  if (!ch.running) return;
  ::kill(ch.pid, SIGTERM);
  ::waitpid(ch.pid, nullptr, 0);
  ch.running = false;
}

// With etcd: it answers before any leader starts (a leader refuses to start without it).
bool LocalCluster::wait_etcd() {
  if (store == "local" || failed) return !failed;
  auto eps = split_list(store.substr(7), ',');
  int64_t until = now_ms() + 20000;
  bool up = false;
  while (!g_stop && !up && now_ms() < until) {
    if ((failed = child_died())) break;
    boost::asio::io_context io;
    auto c = std::make_shared<etcd::Client>(io, std::vector<std::string>{eps[0]}, 300);
    c->range("health", "", [&](auto r) { up = r.is_ok(); });
    io.run();
    c->stop();
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!up && !failed) {
    std::cerr << "etcd did not answer within 20 s; stopping the cluster\n";
    failed = true;
  }
  return !failed;
}

// Leader k; the others join leader 1's cluster.
void LocalCluster::start_leader(int k, const std::string& cluster) {
  std::vector<std::string> largs = {exe,           "leader",
                                    "--port",      std::to_string(leader_port(k)),
                                    "--id",        std::to_string(k),
                                    "--peers",     peers,
                                    "--data-dir",  fmt::format("{}/leader-{}", o.data_dir, k),
                                    "--log-level", o.log_level};
  if (o.replicas) {
    largs.push_back("--replicas");
    largs.push_back(std::to_string(o.replicas));
  }
  if (store != "local") largs.insert(largs.end(), {"--decision-store", store});
  if (!cluster.empty()) largs.insert(largs.end(), {"--cluster-id", cluster});
  auto m = metrics_args(o.participants + k - 1);
  largs.insert(largs.end(), m.begin(), m.end());
  children.push_back({k == 1 ? std::string("leader") : fmt::format("leader {}", k),
                      start_child(with_certs(largs)), true});
}

std::string LocalCluster::wait_leader(const std::string& addr) {
  int64_t deadline = now_ms() + 15000;
  while (!g_stop && !failed && now_ms() < deadline) {
    if ((failed = child_died())) break;
    if (auto c = client::Connection::open(addr, 300)) {
      auto r = c->call("STATS", 1000);
      auto s = r ? node::decode_stats(*r) : Result<node::Stats>(r.status());
      if (s && s->peers_up == live_participants() && s->peers == live_participants())
        return s->cluster;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return std::string();
}

void LocalCluster::print_ready(const std::string& leaders, const std::string& cluster_id) const {
  std::cout << fmt::format("tpc cluster is up: leader on 127.0.0.1:{}, {} participants\n", o.port,
                           live_participants());
  for (auto [id, port] : live())
    std::cout << fmt::format("  participant {} on 127.0.0.1:{}  data {}/participant-{}{}\n", id,
                             port, o.data_dir, id, id > o.participants ? " (added)" : "");
  for (int k = 1; k <= o.leaders; ++k)
    std::cout << fmt::format("  leader {}      on 127.0.0.1:{}  data {}/leader-{}\n", k,
                             leader_port(k), o.data_dir, k);
  if (store != "local")
    std::cout << fmt::format("  decisions     in etcd at {}  (etcd data in {}/etcd-N)\n",
                             store.substr(7), o.data_dir);
  if (!o.no_metrics)
    std::cout << fmt::format(
        "  metrics       http://127.0.0.1:{}/metrics to :{} (participants 1-{}, then leaders "
        "1-{}); /healthz on each\n",
        metrics_base, last_port, o.participants, o.leaders);
  std::cout << fmt::format(
      "  cluster id    {}  (clients with --cluster-id {} refuse any other cluster)\n", cluster_id,
      cluster_id);
  if (certs.empty()) {
    std::cout << "  insecure      plaintext, no certificates (loopback only)\n";
  } else {
    auto abs = std::filesystem::absolute(certs).lexically_normal();
    std::cout << fmt::format(
        "  certificates  {}  (TLS 1.3; {}export TPC_CERTS_DIR={})\n", certs,
        abs == std::filesystem::absolute("./tpc-data/certs").lexically_normal()
            ? "a client run from this directory finds them there; from elsewhere: "
            : "for clients: ",
        abs.string());
  }
  std::cout << fmt::format("try:  {} client --leader {} put hello world\n", invoked_as(), leaders);
  if (control_fd >= 0)
    std::cout << fmt::format(
        "      {} cluster add --data-dir {}  (or remove ID): participants join and leave\n",
        invoked_as(), o.data_dir);
  std::cout << "Ctrl-C stops the cluster.\n" << std::flush;
}

void LocalCluster::open_control() {
  std::string path = control_path(o.data_dir);
  sockaddr_un a;
  if (!fill_addr(path, a)) {
    std::cerr << fmt::format(
        "{}: too long a path for a socket; tpc cluster add and remove "
        "cannot reach this cluster\n",
        path);
    return;
  }
  ::unlink(path.c_str());  // one left by a cluster that was killed
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(fd, 4) != 0) {
    std::cerr << fmt::format("{}: {}; tpc cluster add and remove cannot reach this cluster\n", path,
                             std::strerror(errno));
    if (fd >= 0) ::close(fd);
    return;
  }
  control_fd = fd;
}

// One request of `tpc cluster add|remove` at a time; the participants' exits are reported
// once it is answered.
void LocalCluster::serve_control() {
  if (control_fd < 0) return;
  int fd = ::accept4(control_fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string line;
  char c;
  while (line.size() < 256 && ::recv(fd, &c, 1, 0) == 1 && c != '\n') line += c;
  std::ostringstream out, err;
  int code = 2;
  auto t = split_list(line, ' ');
  if (t.size() == 1 && t[0] == "ADD") {
    add_participant(out, err, code);
  } else if (t.size() == 2 && t[0] == "REMOVE") {
    int id = std::atoi(t[1].c_str());
    if (id <= 0 || std::to_string(id) != t[1])
      err << "remove ID: ID is a participant's number (tpc client member list)\n";
    else
      remove_participant(id, out, err, code);
  } else {
    err << "unknown request: " << line << "\n";
  }
  std::string reply = out.str();
  std::istringstream e(err.str());
  for (std::string l; std::getline(e, l);) reply += "ERR " + l + "\n";
  write_all(fd, reply + fmt::format("EXIT {}\n", code));
  ::close(fd);
}

void LocalCluster::add_participant(std::ostream& out, std::ostream& err, int& code) {
  int id = o.participants;
  for (auto [i, port] : changes.added) id = std::max(id, i);
  for (int i : changes.removed) id = std::max(id, i);
  ++id;
  // Its port, and its metrics' port, after every other port of the cluster.
  int port = last_port + 1;
  for (auto [i, p] : changes.added) port = std::max(port, p + 2);
  if (port + 1 > 65535) {
    err << "no port left for another participant\n";
    return;
  }
  std::string dir = fmt::format("{}/participant-{}", o.data_dir, id);
  std::error_code ec;
  if (std::filesystem::exists(dir, ec) && !std::filesystem::is_empty(dir, ec)) {
    err << dir << " is not empty: a participant that is added starts empty\n";
    return;
  }
  std::string addr = fmt::format("127.0.0.1:{}", port);
  start_participant(id, static_cast<uint16_t>(port), -1);
  auto& ch = children[part_child[id]];
  // It listens, then the leader adds it (its keys copied while writes go on).
  if (!wait_listening(addr, &ch)) {
    err << fmt::format("participant {} did not start on {}; see the log lines above\n", id, addr);
    stop_child(ch);
    code = 4;
    return;
  }
  client::Options co;
  co.leader = leaders;
  code = client::run_member_change(co, "MEMBER ADD " + addr, out, err);
  if (code != 0) {
    stop_child(ch);
    return;
  }
  changes.added[id] = static_cast<uint16_t>(port);
  save_changes();
  out << fmt::format("participant {} on {}  data {}\n", id, addr, dir);
}

void LocalCluster::remove_participant(int id, std::ostream& out, std::ostream& err, int& code) {
  if (changes.removed.count(id)) {
    out << fmt::format("participant {} is removed already\n", id);
    code = 0;
    return;
  }
  if (id > o.participants && !changes.added.count(id)) {
    err << fmt::format("participant {} is not one of this cluster's (tpc client member list)\n",
                       id);
    code = 1;
    return;
  }
  client::Options co;
  co.leader = leaders;
  code = client::run_member_change(co, fmt::format("MEMBER REMOVE {}", id), out, err);
  if (code != 0) return;
  // Removed: nothing depends on it any more. Its data directory stays.
  changes.removed.insert(id);
  changes.added.erase(id);
  save_changes();
  if (auto it = part_child.find(id); it != part_child.end()) stop_child(children[it->second]);
  out << fmt::format("participant {} stopped; its data stays in {}/participant-{}\n", id,
                     o.data_dir, id);
}

// Until a signal: a child that exits is reported, never restarted silently.
void LocalCluster::supervise() {
  while (!g_stop) {
    serve_control();
    int st;
    pid_t pid = ::waitpid(-1, &st, WNOHANG);
    if (pid > 0) {
      for (auto& ch : children)
        if (ch.pid == pid && ch.running) {
          ch.running = false;
          std::cerr << fmt::format("{} (pid {}) exited ({}); not restarting it\n", ch.name, pid,
                                   WIFEXITED(st) ? fmt::format("status {}", WEXITSTATUS(st))
                                                 : fmt::format("signal {}", WTERMSIG(st)));
        }
      continue;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// Stop in order: leaders first, then participants, then etcd; SIGKILL what does not stop in
// 5 s.
void LocalCluster::stop_all() {
  for (auto it = children.rbegin(); it != children.rend(); ++it)
    if (it->running) ::kill(it->pid, SIGTERM);
  int64_t stop_deadline = now_ms() + 5000;
  for (auto& ch : children) {
    while (ch.running) {
      int st;
      pid_t r = ::waitpid(ch.pid, &st, WNOHANG);
      if (r == ch.pid || r < 0) {
        ch.running = false;
        break;
      }
      if (now_ms() > stop_deadline) {
        ::kill(ch.pid, SIGKILL);
        ::waitpid(ch.pid, &st, 0);
        ch.running = false;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (control_fd >= 0) {
    ::close(control_fd);
    ::unlink(control_path(o.data_dir).c_str());
  }
  std::cerr << "cluster stopped\n";
}

int LocalCluster::run() {
  prepare();  // every check before anything is written or started
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  load_changes();
  start_etcd();
  start_participants();
  bool ready = wait_participants() && wait_etcd();
  leaders = fmt::format("127.0.0.1:{}", o.port);
  std::string cluster_id;
  if (ready) {
    start_leader(1, "");
    cluster_id = wait_leader(leaders);
    ready = !cluster_id.empty();
  }
  for (int k = 2; k <= o.leaders && ready; ++k) {
    std::string addr = fmt::format("127.0.0.1:{}", leader_port(k));
    leaders += "," + addr;
    start_leader(k, cluster_id);
    ready = !wait_leader(addr).empty();
  }
  if (ready) {
    open_control();
    print_ready(leaders, cluster_id);
    supervise();
  } else if (!g_stop && !failed) {
    std::cerr << "cluster did not become ready within 15 s; see the log lines above\n";
  }
  stop_all();
  return ready ? 0 : 1;
}
}  // namespace

std::function<int()> setup_cluster(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "cluster", "start a local cluster (leader + participants) as child processes");
  auto o = std::make_shared<ClusterOpts>();
  sub->add_option("--participants", o->participants, "number of participants")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  sub->add_option("--port", o->port, "leader port; participants use the following ports")
      ->capture_default_str();
  sub->add_option("--data-dir", o->data_dir, "parent of every node's data directory")
      ->capture_default_str();
  sub->add_option("--replicas", o->replicas, "participants that hold each key (0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--log-level", o->log_level, "log level of every node")->capture_default_str();
  sub->add_option("--leaders", o->leaders,
                  "leaders over the same participants (more than one needs --decision-store "
                  "etcd)")
      ->capture_default_str()
      ->check(CLI::Range(1, 9));
  sub->add_option("--decision-store", o->decision_store,
                  "local (each leader's log) or etcd: a local etcd from the etcd-server package, "
                  "started and stopped with the cluster")
      ->capture_default_str()
      ->check(CLI::IsMember({"local", "etcd"}));
  sub->add_option("--etcd-members", o->etcd_members, "members of that etcd: 1 or 3")
      ->capture_default_str()
      ->check(CLI::IsMember({1, 3}));
  sub->add_option("--certs-dir", o->certs_dir,
                  "the cluster's CA and certificates, made there if missing [DATA_DIR/certs] "
                  "(env TPC_CERTS_DIR)")
      ->envname("TPC_CERTS_DIR");
  sub->add_flag("--insecure", o->insecure,
                "run without certificates: plaintext on loopback (default: TLS, with a CA and "
                "certificates made in DATA_DIR/certs)");
  sub->add_flag("--no-metrics", o->no_metrics,
                "serve no metrics (default: every node serves /metrics and /healthz on a port of "
                "its own, after the cluster's other ports)");
  // Requests to the cluster that runs with that --data-dir (through its control socket).
  auto dir = std::make_shared<std::string>("./tpc-data");
  auto id = std::make_shared<std::string>();
  auto* add = sub->add_subcommand(
      "add",
      "add a participant to the running cluster: started on the next free port, then "
      "`tpc client member add` (its share of the keys copied under load)");
  add->add_option("--data-dir", *dir, "the running cluster's --data-dir")->capture_default_str();
  auto* remove = sub->add_subcommand(
      "remove",
      "remove participant ID from the running cluster (`tpc client member remove`), then stop "
      "it");
  remove->add_option("ID", *id, "the participant's number")->required();
  remove->add_option("--data-dir", *dir, "the running cluster's --data-dir")->capture_default_str();
  sub->require_subcommand(0, 1);
  return [sub, o, add, remove, dir, id]() -> int {
    if (!sub->parsed()) return -1;
    if (add->parsed()) return ask_cluster(*dir, "ADD");
    if (remove->parsed()) return ask_cluster(*dir, "REMOVE " + *id);
    log::set_role("cluster");
    return LocalCluster(*o).run();
  };
}

}  // namespace tpc::cli
