// tpc cluster: a leader and N participants on this machine as child processes.
// Children get PR_SET_PDEATHSIG so none outlives the cluster process, even after kill -9.
// A child that exits is reported, never restarted silently.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.h"
#include "client/connection.h"
#include "common/logging.h"
#include "common/status.h"
#include "common/util.h"
#include "etcd/client.h"
#include "node/stats.h"
#include "protocol/messages.h"
#include "tls/context.h"

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
  std::string exe, certs, peers, store = "local";
  std::vector<Child> children;
  int etcd_base = 0, metrics_base = 0, last_port = 0;
  bool failed = false;
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

void LocalCluster::start_participants() {
  for (int i = 1; i <= o.participants; ++i) {
    uint16_t port = static_cast<uint16_t>(o.port + i);
    peers += (i > 1 ? "," : "") + fmt::format("127.0.0.1:{}", port);
    std::vector<std::string> a = {exe,           "participant",
                                  "--port",      std::to_string(port),
                                  "--id",        std::to_string(i),
                                  "--data-dir",  fmt::format("{}/participant-{}", o.data_dir, i),
                                  "--log-level", o.log_level};
    auto m = metrics_args(i - 1);
    a.insert(a.end(), m.begin(), m.end());
    children.push_back({fmt::format("participant {}", i), start_child(with_certs(a)), true});
  }
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
  for (int i = 1; i <= o.participants && !g_stop && !failed; ++i) {
    std::string addr = fmt::format("127.0.0.1:{}", o.port + i);
    int64_t until = now_ms() + 10000;
    while (!g_stop && now_ms() < until && !client::Connection::open(addr, 200)) {
      if ((failed = child_died())) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return !failed;
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
      if (s && s->peers_up == o.participants && s->peers == o.participants) return s->cluster;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return std::string();
}

void LocalCluster::print_ready(const std::string& leaders, const std::string& cluster_id) const {
  std::cout << fmt::format("tpc cluster is up: leader on 127.0.0.1:{}, {} participants\n", o.port,
                           o.participants);
  for (int i = 1; i <= o.participants; ++i)
    std::cout << fmt::format("  participant {} on 127.0.0.1:{}  data {}/participant-{}\n", i,
                             o.port + i, o.data_dir, i);
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
  std::cout << fmt::format("try:  {} client --leader {} put hello world\n", invoked_as(), leaders)
            << "Ctrl-C stops the cluster.\n"
            << std::flush;
}

// Until a signal: a child that exits is reported, never restarted silently.
void LocalCluster::supervise() {
  while (!g_stop) {
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
  std::cerr << "cluster stopped\n";
}

int LocalCluster::run() {
  prepare();  // every check before anything is written or started
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  start_etcd();
  start_participants();
  bool ready = wait_participants() && wait_etcd();
  std::string leaders = fmt::format("127.0.0.1:{}", o.port);
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
  return [sub, o]() -> int {
    if (!sub->parsed()) return -1;
    log::set_role("cluster");
    return LocalCluster(*o).run();
  };
}

}  // namespace tpc::cli
