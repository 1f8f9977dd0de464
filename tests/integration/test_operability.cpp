// Operable by a newcomer. Drives tpc cluster, the shell, status, in-doubt tooling and
// the man page as a user would.
#include <doctest/doctest.h>

#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <regex>
#include <set>

#include <fmt/format.h>

#include "common/util.h"
#include "harness.h"

#include <filesystem>
namespace fs = std::filesystem;

using namespace tpc;
using namespace tpc::it;

namespace {
// Processes whose command line mentions `needle`.
std::vector<int> processes_with(const std::string& needle) {
  std::vector<int> out;
  DIR* d = opendir("/proc");
  while (dirent* e = readdir(d)) {
    int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::string cmd = read_file("/proc/" + std::string(e->d_name) + "/cmdline");
    for (auto& c : cmd)
      if (c == '\0') c = ' ';
    if (cmd.find(needle) != std::string::npos && cmd.find("tpc") != std::string::npos) {
      // Zombies of our own children do not count as left behind.
      std::string stat = read_file("/proc/" + std::string(e->d_name) + "/stat");
      if (stat.find(") Z") == std::string::npos) out.push_back(pid);
    }
  }
  closedir(d);
  return out;
}
}  // namespace

TEST_SUITE("operability") {
  TEST_CASE("tpc cluster: start, use, status, script, SIGTERM, nothing left behind") {
    Scratch s;
    uint16_t base = free_port_run(3 + 4);  // 3 participants, a leader, their metrics
    std::string data = s.path() + "/data";
    Process cluster({TPC_BINARY, "cluster", "--participants", "3", "--port", std::to_string(base),
                     "--data-dir", data, "--log-level", "warn"},
                    s.path() + "/cluster.log");
    REQUIRE(wait_for_text(s.path() + "/cluster.log", "tpc cluster is up", 20000));
    std::string banner = read_file(s.path() + "/cluster.log");
    std::string leader = "127.0.0.1:" + std::to_string(base);
    CHECK(banner.find("tpc client --leader " + leader) != std::string::npos);
    CHECK(processes_with(data).size() == 5);  // the cluster and its four children
    std::smatch id;
    REQUIRE(std::regex_search(banner, id, std::regex("cluster id +([0-9a-f-]{36})")));

    // Secure by default: a CA and certificates in DATA/certs, named in the banner.
    CHECK(banner.find("export TPC_CERTS_DIR=" + data + "/certs") != std::string::npos);
    auto r = run_tpc({"client", "--leader", leader, "put", "a", "1"});
    CHECK(r.code == 2);  // no certificates: told where they are, nothing sent
    CHECK(r.err.find("speaks TLS only") != std::string::npos);
    std::map<std::string, std::string> env = {{"TPC_CERTS_DIR", data + "/certs"}};
    auto run_tpc = [&](std::vector<std::string> args, int timeout_ms = 30000,
                       const std::string& in = "") {
      return it::run_tpc(args, timeout_ms, in, env);
    };
    r = run_tpc({"client", "--leader", leader, "--cluster-id", id[1], "put", "a", "1"});
    CHECK(r.code == 0);
    r = run_tpc({"client", "--leader", leader, "status"});
    CHECK(r.code == 0);
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') >= 5);
    CHECK(std::regex_search(r.out, std::regex("leader +1 +127\\.0\\.0\\.1:\\d+ +up")));
    CHECK(std::regex_search(r.out, std::regex("participant +3 +127\\.0\\.0\\.1:\\d+ +up +in-sync +1 ")));
    r = run_tpc({"client", "--leader", leader, "status", "--json"});
    CHECK(r.code == 0);
    CHECK(r.out.rfind("{\"nodes\":[", 0) == 0);
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);

    // A script piped into the shell: one result per line, worst exit status.
    r = run_tpc({"client", "--leader", leader}, 30000,
                "put b 2\nget b\nget nothing\nbogus\n\"unterminated\nput 'x y' "
                "\"two\\nlines\"\nget 'x y'\n");
    CHECK(r.code == 2);
    std::vector<std::string> lines;
    std::stringstream ss(r.out);
    for (std::string l; std::getline(ss, l);) lines.push_back(l);
    REQUIRE(lines.size() == 7);
    CHECK(lines[0] == "OK");
    CHECK(lines[1] == "2");
    CHECK(lines[2] == "(nil)");
    CHECK(lines[3].rfind("(error 2) unknown command", 0) == 0);
    CHECK(lines[4].rfind("(error 2)", 0) == 0);
    CHECK(lines[5] == "OK");
    CHECK(lines[6] == "\"two\\nlines\"");  // as it is typed: pasteable
    CHECK(run_tpc({"client", "--leader", leader, "get", "x y"}).out == "two\nlines\n");

    CHECK(cluster.terminate(10000) == 0);
    CHECK(read_file(s.path() + "/cluster.log").find("cluster stopped") != std::string::npos);
    CHECK(wait_for([&] { return processes_with(data).empty(); }, 5000));
  }

  TEST_CASE("tpc cluster with two leaders over a local etcd: both serve, SIGTERM stops all") {
    Scratch s;
    uint16_t base = free_port_run(2 + 2 + 2 + 4);  // and every node's metrics
    std::string data = s.path() + "/data";
    Process cluster({TPC_BINARY, "cluster", "--port", std::to_string(base), "--data-dir", data,
                     "--log-level", "warn", "--insecure", "--leaders", "2", "--decision-store",
                     "etcd"},
                    s.path() + "/cluster.log");
    REQUIRE(wait_for_text(s.path() + "/cluster.log", "tpc cluster is up", 40000));
    std::string banner = read_file(s.path() + "/cluster.log");
    std::string l1 = fmt::format("127.0.0.1:{}", base), l2 = fmt::format("127.0.0.1:{}", base + 3);
    CHECK(banner.find("--leader " + l1 + "," + l2) != std::string::npos);
    CHECK(banner.find("decisions     in etcd at") != std::string::npos);
    CHECK(processes_with(data).size() == 6);  // the cluster, etcd, two participants, two leaders
    CHECK(run_tpc({"client", "--leader", l1, "put", "a", "1"}).code == 0);
    CHECK(run_tpc({"client", "--leader", l2, "put", "b", "2"}).code == 0);
    CHECK(run_tpc({"client", "--leader", l2, "get", "a"}).out == "1\n");
    // Two leaders need etcd: refused before anything is written.
    auto bad = run_tpc({"cluster", "--leaders", "2", "--data-dir", s.path() + "/bad"});
    CHECK(bad.code == 2);
    CHECK_FALSE(fs::exists(s.path() + "/bad"));
    CHECK(cluster.terminate(15000) == 0);
    CHECK(wait_for([&] { return processes_with(data).empty(); }, 10000));
  }

  TEST_CASE("tpc cluster add and remove: participants join and leave, a restart keeps them") {
    Scratch s;
    uint16_t base = free_port_run(4 + 4 + 2);  // and one added participant, with its metrics
    std::string data = s.path() + "/data";
    std::vector<std::string> args = {
        TPC_BINARY,    "cluster", "--participants",     "3",          "--replicas",
        "2",           "--port",  std::to_string(base), "--data-dir", data,
        "--log-level", "warn",    "--insecure"};
    std::string leader = fmt::format("127.0.0.1:{}", base);
    {
      Process cluster(args, s.path() + "/cluster.log");
      REQUIRE(wait_for_text(s.path() + "/cluster.log", "tpc cluster is up", 20000));
      for (int i = 0; i < 60; ++i)
        REQUIRE(run_tpc({"client", "--leader", leader, "put", fmt::format("k{}", i), "v"}).code ==
                0);
      auto add = run_tpc({"cluster", "add", "--data-dir", data});
      CHECK(add.code == 0);
      std::string added = fmt::format("127.0.0.1:{}", base + 8);  // after the metrics ports
      CHECK(add.out.find("added: " + added) != std::string::npos);
      CHECK(processes_with(data + "/participant-4").size() == 1);
      auto rm = run_tpc({"cluster", "remove", "2", "--data-dir", data});
      CHECK(rm.code == 0);
      CHECK(rm.out.find("removed: ") != std::string::npos);
      CHECK(processes_with(data + "/participant-2 ").empty());  // stopped
      auto list = run_tpc({"client", "--leader", leader, "member", "list"});
      CHECK(std::regex_search(list.out, std::regex("4 +" + added + " +in-sync")));
      CHECK(std::regex_search(list.out, std::regex("2 +127\\.0\\.0\\.1:\\d+ +removed")));
      for (int i = 0; i < 60; ++i)
        CHECK(run_tpc({"client", "--leader", leader, "get", fmt::format("k{}", i)}).code == 0);
      // Asked again: removed already; an unknown one is not this cluster's.
      CHECK(run_tpc({"cluster", "remove", "2", "--data-dir", data}).code == 0);
      CHECK(run_tpc({"cluster", "remove", "9", "--data-dir", data}).code == 1);
      CHECK(cluster.terminate(10000) == 0);
    }
    // No cluster runs there now.
    CHECK(run_tpc({"cluster", "add", "--data-dir", data}).code == 4);
    // Started again: the added participant runs, the removed one does not.
    std::string log2 = s.path() + "/cluster2.log";
    Process cluster(args, log2);
    REQUIRE(wait_for_text(log2, "tpc cluster is up", 20000));
    std::string banner = read_file(log2);
    CHECK(banner.find("participant 4 on") != std::string::npos);
    CHECK(banner.find("participant 2 on") == std::string::npos);
    CHECK(processes_with(data).size() == 5);  // the cluster, three participants, the leader
    for (int i = 0; i < 60; ++i)
      CHECK(run_tpc({"client", "--leader", leader, "get", fmt::format("k{}", i)}).code == 0);
    CHECK(cluster.terminate(10000) == 0);
    CHECK(wait_for([&] { return processes_with(data).empty(); }, 5000));
  }

  TEST_CASE("tpc cluster --insecure leaves no orphans even when killed -9") {
    Scratch s;
    uint16_t base = free_port_run(2 + 3);  // and every node's metrics
    std::string data = s.path() + "/data";
    Process cluster({TPC_BINARY, "cluster", "--port", std::to_string(base), "--data-dir", data,
                     "--log-level", "warn", "--insecure"},
                    s.path() + "/cluster.log");
    REQUIRE(wait_for_text(s.path() + "/cluster.log", "tpc cluster is up", 20000));
    CHECK(read_file(s.path() + "/cluster.log").find("insecure") != std::string::npos);
    CHECK_FALSE(fs::exists(data + "/certs"));
    CHECK(run_tpc({"client", "--leader", "127.0.0.1:" + std::to_string(base), "put", "a", "1"})
              .code == 0);
    cluster.kill9();
    CHECK(wait_for([&] { return processes_with(data).empty(); }, 10000));
  }

  TEST_CASE("the interactive shell under a pseudo-terminal") {
    Cluster c;
    REQUIRE(c.wait_ready());
    Scratch s;
    // script(1) gives the client a pseudo-terminal; its input is typed line by line.
    std::string cmd = std::string(TPC_BINARY) + " client --leader " + c.leader_addr();
    std::ofstream(s.path() + "/in") << "put shell-key shell-value\nget shell-key\nhelp\nquit\n";
    Process p({"/bin/sh", "-c",
               "exec /usr/bin/script -q -e -c '" + cmd + "' /dev/null < " + s.path() + "/in"},
              s.path() + "/out", {{"HOME", s.path()}, {"TERM", "dumb"}});
    int code = p.wait_exit(20000);
    std::string out = read_file(s.path() + "/out");
    INFO(out);
    CHECK(code == 0);
    CHECK(out.find("tpc " + c.leader_addr() + "> ") != std::string::npos);  // the prompt
    CHECK(out.find("shell-value") != std::string::npos);
    CHECK(out.find("resolve TXID") != std::string::npos);  // help ran
    CHECK(c.read_at(0, "shell-key") == "shell-value");
    CHECK(read_file(s.path() + "/.tpc_history").find("shell-key") != std::string::npos);
  }

  TEST_CASE("in-doubt lists a stuck transaction, resolve --force decides it both ways") {
    Cluster::Options o;
    o.leader_env = {{"TPC_FAILPOINTS", "leader/beforeDecisionFsync=1*crash"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    std::string peers = c.participant_addr(0) + "," + c.participant_addr(1);
    for (std::string decision : {"abort", "commit"}) {
      INFO(decision);
      Scratch s;
      Process put(
          {TPC_BINARY, "client", "--leader", c.leader_addr(), "put", "stuck-" + decision, "v"},
          s.path() + "/out");
      REQUIRE(c.leader()->wait_exit(10000) == 128 + SIGKILL);
      auto r = c.client({"--peers", peers, "in-doubt"});
      INFO(r.out << r.err);
      CHECK(r.code == 0);
      std::smatch m;
      REQUIRE(std::regex_search(
          r.out, m,
          std::regex("\n(1\\.\\d+\\.\\d+) +1 +127\\.0\\.0\\.1:\\d+ +\\S+ +\\S+ +"
                     "([0-9a-f]{32}) +stuck-" +
                     decision)));
      std::string txid = m[1], rid = m[2];  // the client's request id, from the PREPARED records
      CHECK(r.out.find(c.participant_addr(0)) != std::string::npos);
      r = c.client({"--peers", peers, "in-doubt", "--json"});
      CHECK(r.out.find("\"txid\":\"" + txid + "\",\"request\":\"" + rid + "\"") !=
            std::string::npos);
      // Without the leader, deciding is heuristic: refused without --force.
      r = c.client({"--peers", peers, "resolve", txid, decision});
      CHECK(r.code == 4);
      CHECK(r.err.find("--force") != std::string::npos);
      r = c.client({"--peers", peers, "resolve", txid, decision, "--force"});
      CHECK(r.code == 0);
      CHECK(r.err.find("WARNING: heuristic") != std::string::npos);
      CHECK(c.stat(0, "in_doubt") == 0);
      CHECK(c.stat(1, "in_doubt") == 0);
      CHECK(c.stat(0, "heuristic") >= 1);
      auto v0 = c.read_at(0, "stuck-" + decision), v1 = c.read_at(1, "stuck-" + decision);
      CHECK(v0 == v1);
      CHECK(v0.has_value() == (decision == "commit"));
      CHECK(c.log_of_participant(0).find("HEURISTIC decision") != std::string::npos);
      put.kill9();
      c.start_leader(decision == "abort" ? o.leader_env
                                         : std::map<std::string, std::string>{{"TPC_NONE", "1"}});
      REQUIRE(c.wait_ready());
    }
    // The heuristic decisions survive a restart of the participant (they are in its log).
    c.kill_participant(0);
    c.start_participant(0);
    REQUIRE(c.wait_ready());
    CHECK(c.stat(0, "heuristic") == 2);
    auto st = c.client({"status"});
    CHECK(st.out.find("participant 1 holds 2 heuristic decision(s)") != std::string::npos);
    CHECK(c.client({"status", "--json"}).out.find("\"heuristic\":2") != std::string::npos);
    CHECK(c.client({"resolve", "9.9.9", "commit"}).code == 1);
    // The leader had decided neither: presumed abort. The forced abort agrees with it; the
    // forced commit contradicts it, and each participant's report of it is recorded by the
    // leader (docs/recovery.md, heuristic outcomes).
    CHECK(wait_for([&] { return c.stat(-1, "heuristic") == 2; }, 15000));
    auto h = c.client({"heuristics"});
    CHECK(h.out.find(" commit   abort") == std::string::npos);
    CHECK(h.out.find(" abort    commit") != std::string::npos);
  }

  TEST_CASE("resolve follows the leader's durable decision and refuses to contradict it") {
    Cluster::Options o;
    // COMMIT messages and outcome queries are lost, so the participants stay in doubt while
    // the leader is up and has a durable COMMIT decision.
    o.leader_env = {{"TPC_FAILPOINTS", "leader/sendCommit=error(EIO)"}};
    o.participant_env[0] = {{"TPC_FAILPOINTS", "participant/askOutcome=error(EIO)"}};
    o.participant_env[1] = {{"TPC_FAILPOINTS", "participant/askOutcome=error(EIO)"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    REQUIRE(c.client({"put", "decided", "yes"}).code == 0);
    auto r = c.client({"in-doubt"});
    std::smatch m;
    REQUIRE(std::regex_search(r.out, m, std::regex("\n(1\\.\\d+\\.\\d+) ")));
    std::string txid = m[1];
    // Meanwhile a read of the key waits its bound, then says "in doubt" (exit 4): no guess.
    auto g = c.client({"get", "decided"});
    CHECK(g.code == 4);
    CHECK(g.err.find("in doubt") != std::string::npos);
    r = c.client({"resolve", txid, "abort"});
    CHECK(r.code == 3);
    CHECK(r.err.find("refused") != std::string::npos);
    r = c.client({"resolve", txid, "abort", "--force"});
    CHECK(r.code == 3);  // --force never overrides a reachable leader's decision
    CHECK(c.stat(0, "in_doubt") == 1);
    r = c.client({"resolve", txid, "commit"});
    CHECK(r.code == 0);
    CHECK(r.out.find("following leader") != std::string::npos);
    CHECK(c.read_at(0, "decided") == "yes");
    CHECK(c.read_at(1, "decided") == "yes");
    CHECK(c.stat(0, "heuristic") == 0);
  }

  TEST_CASE("--trace shows the two phases with microsecond times") {
    Cluster c;
    REQUIRE(c.wait_ready());
    auto r = c.client({"put", "--trace", "k", "v"});
    CHECK(r.code == 0);
    for (std::string ev : std::vector<std::string>{
             "PREPARE sent to participant " + c.participant_addr(0),
             "vote YES from " + c.participant_addr(1) + " (log force", "COMMIT record durable",
             "COMMIT acknowledged by " + c.participant_addr(0), "END record written"})
      CHECK(r.out.find(ev) != std::string::npos);
    CHECK(std::regex_search(r.out, std::regex("\\n +\\d+ us  COMMIT record durable")));
    r = c.client({"--trace", "txn", "check", "k", "nope", "put", "k", "w"});
    CHECK(r.code == 3);
    CHECK(r.out.find("vote NO") != std::string::npos);
    CHECK(r.out.find("decision ABORT") != std::string::npos);
  }

  TEST_CASE("bench runs a bounded load and reports throughput, aborts and percentiles") {
    Cluster c;
    REQUIRE(c.wait_ready());
    auto r = c.client({"bench", "--clients", "4", "--duration", "1s", "--keys", "1000", "--json"});
    CHECK(r.code == 0);
    INFO(r.out);
    std::smatch m;
    REQUIRE(std::regex_search(r.out, m, std::regex("\"committed\":(\\d+)")));
    CHECK(std::stol(m[1]) > 0);
    for (std::string f : {"\"committed_per_s\":", "\"aborts\":{", "\"p50_ms\":", "\"p90_ms\":",
                          "\"p99_ms\":", "\"p999_ms\":", "\"max_ms\":"})
      CHECK(r.out.find(f) != std::string::npos);
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
    CHECK(c.client({"bench", "--clients", "0"}).code == 2);
  }

  TEST_CASE("the man page renders without warnings and names every option") {
    std::string man = std::string(TPC_SOURCE_DIR) + "/man/tpc.1";
    Scratch s;
    Process groff({"/bin/sh", "-c", "groff -man -Tutf8 -ww " + man + " > /dev/null"},
                  s.path() + "/err");
    CHECK(groff.wait_exit(20000) == 0);
    CHECK(read_file(s.path() + "/err") == "");
    std::string text = read_file(man);
    text = std::regex_replace(text, std::regex("\\\\-"), "-");
    for (std::vector<std::string> cmd :
         std::vector<std::vector<std::string>>{{"--help"},
                                               {"participant", "--help"},
                                               {"leader", "--help"},
                                               {"client", "--help"},
                                               {"cluster", "--help"},
                                               {"cert", "create-ca", "--help"},
                                               {"cert", "create-node", "--help"},
                                               {"cert", "create-client", "--help"},
                                               {"client", "bench", "--help"}}) {
      auto r = run_tpc(cmd);
      CHECK(r.code == 0);
      std::regex opt("(--[a-z][a-z-]+)");
      for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), opt);
           it != std::sregex_iterator(); ++it) {
        INFO((*it)[1]);
        CHECK(text.find((*it)[1]) != std::string::npos);
      }
    }
    auto v = run_tpc({"--version"});
    CHECK(v.out.find(TPC_VERSION) != std::string::npos);
    CHECK(text.find("tpc " TPC_VERSION) != std::string::npos);
  }
}

TEST_SUITE("packaging") {
  // make check leaves out the tests named in tests/slow.txt (ctest label "slow"): a name
  // there that names no test would leave nothing out, silently.
  TEST_CASE("every name in tests/slow.txt is a test case of this binary") {
    std::set<std::string> cases;
    std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    FILE* f = popen(("'" + self + "' --list-test-cases --no-version 2>&1").c_str(), "r");
    REQUIRE(f != nullptr);
    char buf[4096];
    while (fgets(buf, sizeof buf, f)) {
      std::string l(buf);
      if (!l.empty() && l.back() == '\n') l.pop_back();
      cases.insert(l);
    }
    pclose(f);
    REQUIRE(cases.size() > 50);
    std::ifstream in(std::string(TPC_SOURCE_DIR) + "/tests/slow.txt");
    REQUIRE(in.good());
    int named = 0;
    for (std::string l; std::getline(in, l);) {
      if (l.empty() || l[0] == '#') continue;
      ++named;
      CAPTURE(l);
      CHECK(cases.count(l) == 1);
    }
    CHECK(named > 0);
  }

  TEST_CASE("the systemd units verify clean (systemd-analyze verify)") {
    if (!std::filesystem::exists("/usr/bin/systemd-analyze")) {
      MESSAGE("skipped: systemd-analyze is not installed (make deps installs the systemd package)");
      return;
    }
    Scratch s;
    for (std::string unit : {"tpc-participant@", "tpc-leader@"}) {
      INFO(unit);
      // `make install` puts its PREFIX/bin where the unit says @BINDIR@; here, this build's.
      std::string text = read_file(std::string(TPC_SOURCE_DIR) + "/packaging/systemd/" + unit +
                                   ".service");
      REQUIRE(text.find("@BINDIR@/tpc ") != std::string::npos);
      CHECK(text.find("/usr/local") == std::string::npos);
      text = std::regex_replace(text, std::regex("@BINDIR@/tpc "), std::string(TPC_BINARY) + " ");
      std::string path = s.path() + "/" + unit + "1.service";
      {
        std::ofstream f(path);
        f << text;
      }
      Process v({"/usr/bin/systemd-analyze", "verify", "--man=no", path}, s.path() + "/verify.log");
      CHECK(v.wait_exit(30000) == 0);
      CHECK(read_file(s.path() + "/verify.log").empty());
    }
  }
}
