// The client's surface (issue: operable in production): result after an unknown outcome, and
// more of the command line as it grows.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <poll.h>
#include <pty.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <regex>

#include <fmt/format.h>

#include "common/util.h"
#include "harness.h"

using namespace tpc;
using namespace tpc::it;

namespace {
// Runs `args` (a program and its arguments); its standard output.
std::string run_cmd(const std::vector<std::string>& args) {
  Scratch s;
  Process p(args, s.path() + "/out");
  p.wait_exit(10000);
  return read_file(s.path() + "/out");
}

// The request id an exit 4 names, from the command it tells the user to run.
std::string rid_in(const std::string& err) {
  std::smatch m;
  if (!std::regex_search(err, m, std::regex("`tpc client result ([A-Za-z0-9_-]+)`"))) return "";
  return m[1];
}
}  // namespace

TEST_SUITE("client") {
  TEST_CASE("result: after exit 4 the printed request id tells the outcome, 0 or 3") {
    Cluster::Options o;
    // The leader dies right after its decision is durable, before it answers: committed.
    o.leader_env = {{"TPC_FAILPOINTS", "leader/afterDecisionFsync=1*crash"}};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    auto put = c.client({"--timeout", "2000", "put", "k", "v"});
    REQUIRE(put.code == 4);
    std::string rid = rid_in(put.err);
    INFO(put.err);
    REQUIRE(rid.size() == 32);
    // While the leader is down the outcome stays unknown.
    CHECK(c.client({"result", rid}).code == 4);
    c.start_leader({{"TPC_NONE", "1"}});
    REQUIRE(c.wait_ready());
    auto r = c.client({"result", rid});
    CHECK(r.code == 0);
    CHECK(r.out.rfind("committed ", 0) == 0);
    CHECK(c.read_at(0, "k") == "v");

    // The leader dies between the votes and its decision: nothing was decided, so aborted.
    c.kill_leader();
    c.start_leader({{"TPC_FAILPOINTS", "leader/afterVotes=1*crash"}});
    REQUIRE(c.wait_ready());
    auto put2 = c.client({"--timeout", "2000", "put", "k", "v2"});
    REQUIRE(put2.code == 4);
    std::string rid2 = rid_in(put2.err);
    REQUIRE(!rid2.empty());
    c.start_leader({{"TPC_NONE", "1"}});
    REQUIRE(c.wait_ready());
    auto r2 = c.client({"result", rid2});
    CHECK(r2.code == 3);
    CHECK(r2.err.find("not applied") != std::string::npos);
    REQUIRE(c.wait_settled());
    CHECK(c.read_at(0, "k") == "v");

    // An id never seen is answered aborted, and a request under it is refused from then on.
    CHECK(c.client({"result", "never-sent-1"}).code == 3);
    auto late = c.client({"--request-id", "never-sent-1", "put", "k", "late"});
    CHECK(late.code == 3);
    CHECK(late.err.find("DUPLICATE") != std::string::npos);
    CHECK(c.read_at(0, "k") == "v");
    // A malformed id is a usage error.
    CHECK(c.client({"result", "bad/id"}).code == 2);
    CHECK(c.client({"result"}).code == 2);
  }

  TEST_CASE("put KEY - takes a 1 MiB binary value from stdin, get --raw gives its exact bytes") {
    Cluster c;  // default settings: a value travels as its raw bytes, and 1 MiB fits
    REQUIRE(c.wait_ready());
    std::string value(1 << 20, '\0');
    uint64_t x = 88172645463325252ull;  // xorshift: every byte value, reproducibly
    for (auto& ch : value) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      ch = static_cast<char>(x & 0xff);
    }
    auto put = run_tpc({"client", "--leader", c.leader_addr(), "put", "blob", "-"}, 60000, value);
    INFO(put.err);
    REQUIRE(put.code == 0);
    auto get = run_tpc({"client", "--leader", c.leader_addr(), "get", "--raw", "blob"}, 60000);
    REQUIRE(get.code == 0);
    CHECK(get.out.size() == value.size());
    CHECK(get.out == value);
    CHECK(c.read_at(0, "blob") == value);
    CHECK(c.read_at(1, "blob") == value);
    // Without --raw, one newline follows the value; an empty stdin writes an empty value.
    CHECK(c.client({"put", "small", "-"}).code == 0);
    auto plain = c.client({"get", "small"});
    CHECK(plain.code == 0);
    CHECK(plain.out == "\n");
    CHECK(c.client({"get", "--raw", "small"}).out.empty());
  }

  TEST_CASE("the command line: options anywhere, -- everywhere, --help exits 0, suggestions") {
    Cluster c;
    REQUIRE(c.wait_ready());
    // Options after the arguments: the command's own and tpc client's.
    auto traced = run_tpc({"client", "put", "k", "v", "--trace", "--leader", c.leader_addr()});
    CHECK(traced.code == 0);
    CHECK(traced.out.find("the commit point") != std::string::npos);
    CHECK(run_tpc({"client", "get", "k", "--leader=" + c.leader_addr()}).out == "v\n");
    // "--" works for every command.
    CHECK(c.client({"get", "--", "k"}).out == "v\n");
    CHECK(c.client({"del", "--", "k"}).code == 0);
    CHECK(c.client({"status", "--json", "--"}).code == 0);
    // --help on every command: its usage, exit 0.
    for (std::string cmd : {"put", "get", "del", "txn", "status", "in-doubt", "resolve", "result",
                            "backup", "bench"}) {
      INFO(cmd);
      auto h = run_tpc({"client", cmd, "--help"});
      CHECK(h.code == 0);
      CHECK(h.out.find(cmd == "bench" ? "--clients" : "usage: " + cmd) != std::string::npos);
    }
    CHECK(run_tpc({"client", "--help"}).code == 0);
    CHECK(run_tpc({"--help"}).code == 0);
    // Mistyped: named, with the nearest, exit 2.
    auto sub = run_tpc({"participan", "--port", "1"});
    CHECK(sub.code == 2);
    CHECK(sub.err.find("did you mean 'tpc participant'") != std::string::npos);
    auto ver = run_tpc({"version"});
    CHECK(ver.code == 2);
    CHECK(ver.err.find("tpc --version") != std::string::npos);
    auto flag = run_tpc({"client", "--leaderr", c.leader_addr(), "put", "a", "b"});
    CHECK(flag.code == 2);
    CHECK(flag.err.find("did you mean '--leader'") != std::string::npos);
    auto cmd = c.client({"pu", "a", "b"});
    CHECK(cmd.code == 2);
    CHECK(cmd.err.find("did you mean 'put'") != std::string::npos);
    auto json = c.client({"status", "--jsn"});
    CHECK(json.code == 2);
    CHECK(json.err.find("did you mean '--json'") != std::string::npos);
    auto server = run_tpc({"leader", "--peerz", "127.0.0.1:1"});
    CHECK(server.code == 2);
    CHECK(server.err.find("did you mean '--peers'") != std::string::npos);
    CHECK_FALSE(c.read_at(0, "a").has_value());
  }

  TEST_CASE("numbers out of range are usage errors (exit 2)") {
    Scratch s;
    for (std::vector<std::string> args :
         {std::vector<std::string>{"client", "--timeout", "-5", "get", "k"},
          {"client", "get", "k", "--timeout", "-5"},
          {"client", "--timeout", "0", "get", "k"},
          {"client", "--retries", "-1", "get", "k"},
          {"client", "get", "k", "--retries=x"},
          {"participant", "--port", "1", "--id", "1", "--read-timeout", "-5", "--data-dir",
           s.path() + "/p"},
          {"participant", "--port", "1", "--id", "1", "--resolve-after", "0", "--data-dir",
           s.path() + "/p"},
          {"leader", "--peers", "127.0.0.1:1", "--prepare-timeout", "0", "--data-dir",
           s.path() + "/l"},
          {"leader", "--peers", "127.0.0.1:1", "--replicas", "-1", "--data-dir", s.path() + "/l"},
          {"leader", "--peers", "127.0.0.1:1,127.0.0.1:2", "--replicas", "3", "--data-dir",
           s.path() + "/l"},
          {"cluster", "--port", "65535", "--data-dir", s.path() + "/c"}}) {
      INFO(args[0] << " " << args[1] << " " << args[2]);
      auto r = run_tpc(args, 10000);
      CHECK(r.code == 2);
    }
  }

  TEST_CASE("--timeout bounds the whole call, against a leader that never answers") {
    // A listening socket that accepts nothing: the connection is made, no reply ever comes.
    uint16_t port = free_port();
    int fd = listen_loopback(port);
    REQUIRE(fd >= 0);
    std::string addr = fmt::format("127.0.0.1:{}", port);
    for (std::string cmd : {"put", "get"}) {
      int64_t t0 = now_ms();
      auto r = cmd == "put"
                   ? run_tpc({"client", "--leader", addr, "--timeout", "500", "put", "k", "v"})
                   : run_tpc({"client", "--leader", addr, "--timeout", "500", "get", "k"});
      int64_t took = now_ms() - t0;
      INFO(cmd << ": " << r.err);
      CHECK(r.code == 4);
      CHECK(took < 1500);
    }
    ::close(fd);
  }

  TEST_CASE("bench: checked options, its keys removed unless --keep, a summary on Ctrl-C") {
    Cluster c;
    REQUIRE(c.wait_ready());
    auto keys = [&] { return c.stat(0, "keys"); };
    for (std::string d : {"0s", "abc", "-1s", "5x"}) {
      auto r = c.client({"bench", "--duration", d});
      INFO(d << ": " << r.err);
      CHECK(r.code == 2);
      CHECK(r.err.find("bad --duration") != std::string::npos);
      CHECK(r.err.find("stod") == std::string::npos);
      CHECK(r.out.find("nan") == std::string::npos);
    }
    CHECK(c.client({"bench", "--clients", "0"}).code == 2);
    CHECK(c.client({"bench", "--ops", "-1"}).code == 2);
    // Its keys go at the end; the cluster's own stay.
    REQUIRE(c.client({"put", "mine", "v"}).code == 0);
    auto r = c.client({"bench", "--clients", "4", "--duration", "1s", "--keys", "500"});
    CHECK(r.code == 0);
    CHECK(r.out.find("committed ") != std::string::npos);
    REQUIRE(c.wait_settled());  // the last deletes' COMMITs may still be on the way
    CHECK(keys() == 1);
    CHECK(c.read_at(0, "mine") == "v");
    // --keep leaves them.
    CHECK(c.client({"bench", "--clients", "2", "--duration", "500ms", "--keys", "50", "--keep"})
              .code == 0);
    CHECK(keys() > 1);
    // Ctrl-C: the summary of what was done, then its keys removed.
    Scratch s;
    Process p({TPC_BINARY, "client", "--leader", c.leader_addr(), "bench", "--clients", "4",
               "--duration", "60s", "--keys", "300", "--key-prefix", "int:"},
              s.path() + "/out");
    REQUIRE(wait_for_text(s.path() + "/out", "done", 10000));
    ::kill(p.pid(), SIGINT);
    CHECK(p.wait_exit(30000) == 0);
    std::string out = read_file(s.path() + "/out");
    CHECK(out.find("latency ms") != std::string::npos);
    REQUIRE(c.wait_settled());
    for (int k = 0; k < 300; k += 37) CHECK_FALSE(c.read_at(0, fmt::format("int:{}", k)).has_value());
  }

  TEST_CASE("tpc completion bash completes commands and options, zsh through bashcompinit") {
    auto bash = run_tpc({"completion", "bash"});
    REQUIRE(bash.code == 0);
    Scratch s;
    {
      std::ofstream f(s.path() + "/c.bash");
      f << bash.out;
    }
    auto complete = [&](const std::string& words, int cword) {
      return run_cmd({"/bin/bash", "-c",
                      "source " + s.path() + "/c.bash; COMP_WORDS=(" + words +
                          "); COMP_CWORD=" + std::to_string(cword) +
                          "; _tpc; echo \"${COMPREPLY[*]}\""});
    };
    CHECK(complete("tpc parti", 1) == "participant\n");
    CHECK(complete("tpc client res", 2) == "resolve result restore\n");
    CHECK(complete("tpc leader --takeo", 2) == "--takeover-after\n");
    CHECK(complete("tpc cert create-client --ro", 3) == "--role\n");
    auto zsh = run_tpc({"completion", "zsh"});
    CHECK(zsh.code == 0);
    CHECK(zsh.out.find("bashcompinit") != std::string::npos);
    CHECK(run_tpc({"completion", "fish"}).code == 2);
  }

  TEST_CASE("status: exact in-doubt counts right after a commit, --peers while the leader is down") {
    Cluster c;
    REQUIRE(c.wait_ready());
    for (int i = 0; i < 10; ++i) {
      REQUIRE(c.client({"put", fmt::format("k{}", i), "v"}).code == 0);
      auto st = c.client({"status", "--json"});
      CHECK(st.code == 0);
      // Both participants: committed (or applying the commit), in doubt about nothing.
      CHECK(st.out.find("\"role\":\"participant\",\"id\":\"1\"") != std::string::npos);
      std::regex in_doubt(R"("role":"participant"[^}]*"in_doubt":([0-9]+))");
      int rows = 0;
      for (auto it = std::sregex_iterator(st.out.begin(), st.out.end(), in_doubt);
           it != std::sregex_iterator(); ++it, ++rows)
        CHECK((*it)[1] == "0");
      CHECK(rows == 2);
    }
    c.kill_leader();
    std::string peers = c.participant_addr(0) + "," + c.participant_addr(1);
    auto down = c.client({"--peers", peers, "status"});
    CHECK(down.code == 4);  // a node is down
    CHECK(down.out.find("DOWN") != std::string::npos);
    CHECK(std::regex_search(down.out, std::regex("participant +1 +127\\.0\\.0\\.1:[0-9]+ +up +- +10 ")));
    CHECK(std::regex_search(down.out, std::regex("participant +2 +127\\.0\\.0\\.1:[0-9]+ +up +- +10 ")));
    auto plain = c.client({"status"});
    CHECK(plain.code == 4);
    CHECK(plain.err.find("--peers") != std::string::npos);
  }

  TEST_CASE("scan --prefix over three participants with --replicas 1: every key once, in order") {
    // Each key lives on one participant: a scan must read all three and merge their pages.
    Cluster::Options o;
    o.participants = 3;
    o.leader_args = {"--replicas", "1"};
    // A third of the leader's COMMIT sends are lost (sent again after 200 ms, then with
    // backoff), so a participant often still holds a transaction's prepared writes when its
    // client has the answer: a scan must wait for them (linearizable). The participants wait
    // long enough for seven losses in a row (12.6 s; 0.3^7 = 2e-4).
    o.leader_env = {{"TPC_FAILPOINTS", "leader/sendCommit=30%error(EIO)"}};
    o.participant_args = {"--read-timeout", "15000"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    std::map<std::string, std::string> want;
    for (int t = 0; t < 10; ++t) {  // 2500 keys, more than a page (1000)
      std::vector<std::string> args{"txn"};
      for (int i = 0; i < 250; ++i) {
        std::string k = fmt::format("user/{:05}", t * 250 + i);
        want[k] = "v " + std::to_string(t * 250 + i);
        args.insert(args.end(), {"put", k, want[k]});
      }
      REQUIRE(c.client(args).code == 0);
    }
    REQUIRE(c.client({"put", "user", "the prefix itself"}).code == 0);
    REQUIRE(c.client({"put", "usex", "outside"}).code == 0);
    REQUIRE(c.client({"put", "a", "outside"}).code == 0);
    want["user"] = "the prefix itself";
    auto expected = [&](size_t limit) {
      std::string s;
      size_t n = 0;
      for (auto& [k, v] : want) {
        if (limit && n++ == limit) break;
        s += k + " \"" + v + "\"\n";
      }
      return s;
    };
    auto all = c.client({"scan", "--prefix", "user"});  // at once: it waits for lost COMMITs
    CHECK(all.code == 0);
    CHECK(all.out == expected(0));
    REQUIRE(c.wait_settled());
    long held = 0;
    for (int i = 0; i < 3; ++i) {
      long n = c.stat(i, "keys");
      CHECK(n > 0);
      CHECK(n < 2503);  // spread, not copied
      held += n;
    }
    CHECK(held == 2503);
    auto some = c.client({"scan", "--limit", "1500", "--prefix=user"});
    CHECK(some.code == 0);
    CHECK(some.out == expected(1500));
    auto keys = c.client({"scan", "--keys-only", "--prefix", "user/0000"});
    CHECK(keys.out ==
          "user/00000\nuser/00001\nuser/00002\nuser/00003\nuser/00004\n"
          "user/00005\nuser/00006\nuser/00007\nuser/00008\nuser/00009\n");
    auto none = c.client({"scan", "--prefix", "nothing"});
    CHECK(none.code == 0);  // no key matching is no error
    CHECK(none.out.empty());
    // Right after a transaction over every participant returned, a scan sees all of it.
    for (int round = 0; round < 3; ++round) {
      std::vector<std::string> args{"txn"};
      std::string v = "round" + std::to_string(round);
      for (int i = 0; i < 30; ++i) args.insert(args.end(), {"put", fmt::format("hot/{:02}", i), v});
      REQUIRE(c.client(args).code == 0);
      auto r = c.client({"scan", "--prefix", "hot/"});
      CHECK(r.code == 0);
      size_t lines = 0, fresh = 0;
      for (size_t at = 0; (at = r.out.find('\n', at)) != std::string::npos; ++at) ++lines;
      for (size_t at = 0; (at = r.out.find(" " + v + "\n", at)) != std::string::npos; ++at) ++fresh;
      CHECK(lines == 30);
      CHECK(fresh == 30);
    }
    // Under writers hammering the same keys, scans still get through, each page whole: a
    // write into a range being read waits for the scan (refused; its client retries).
    Process load({TPC_BINARY, "client", "--leader", c.leader_addr(), "bench", "--clients", "8",
                  "--duration", "3s", "--keys", "200", "--key-prefix", "busy/", "--keep"},
                 c.dir() + "/bench.log");
    REQUIRE(wait_for([&] { return !c.client({"scan", "--prefix", "busy/"}).out.empty(); }, 5000));
    for (int i = 0; i < 5; ++i) {
      auto r = c.client({"scan", "--prefix", "busy/", "--keys-only"});
      INFO(r.err);
      CHECK(r.code == 0);
      std::vector<std::string> lines;
      for (size_t at = 0, nl; (nl = r.out.find('\n', at)) != std::string::npos; at = nl + 1)
        lines.push_back(r.out.substr(at, nl - at));
      CHECK(!lines.empty());
      CHECK(std::is_sorted(lines.begin(), lines.end()));
      CHECK(std::adjacent_find(lines.begin(), lines.end()) == lines.end());
    }
    CHECK(load.wait_exit(20000) == 0);
    // With one owner per key, a participant down leaves keys nobody can list: exit 4.
    c.kill_participant(1);
    auto down = c.client({"scan", "--prefix", "user"});
    CHECK(down.code == 4);
    CHECK(down.err.find("participants are down") != std::string::npos);
  }

  TEST_CASE("the shell on a terminal: commands in any case, tab completion, Ctrl-C, history") {
    Cluster c;
    REQUIRE(c.wait_ready());
    Scratch home;
    int fd = -1;
    pid_t pid = ::forkpty(&fd, nullptr, nullptr, nullptr);
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::setenv("HOME", home.path().c_str(), 1);
      ::execl(TPC_BINARY, "tpc", "client", "--leader", c.leader_addr().c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    std::string out;
    // Reads what the shell writes until `want` shows up after offset `from` (or 10 s pass);
    // returns where it starts, or npos.
    auto until = [&](const std::string& want, size_t from = 0) {
      int64_t end = now_ms() + 10000;
      while (out.find(want, from) == std::string::npos && now_ms() < end) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 100) > 0) {
          char buf[4096];
          ssize_t n = ::read(fd, buf, sizeof buf);
          if (n <= 0) break;
          out.append(buf, static_cast<size_t>(n));
        }
      }
      return out.find(want, from);
    };
    auto type = [&](const std::string& s) { (void)!::write(fd, s.data(), s.size()); };
    // The line editor prints its prompt before it takes the terminal out of canonical mode,
    // and a control key the terminal sees in canonical mode never reaches the editor. Keys
    // like Ctrl-C, Tab and Ctrl-D are typed once the shell is blocked reading the terminal:
    // read(2), syscall 0, on fd 0.
    auto editor_reads = [&] {
      return wait_for(
          [&] {
            return read_file("/proc/" + std::to_string(pid) + "/syscall").rfind("0 0x0 ", 0) == 0;
          },
          10000);
    };
    // The prompt that follows a command's output.
    auto prompt_after = [&](const std::string& output) {
      size_t at = until(output);
      return at != std::string::npos && until("> ", at + output.size()) != std::string::npos;
    };
    CHECK(until("> ") != std::string::npos);
    type("PUT a \"x\\x01 y\"\r");
    CHECK(prompt_after("OK"));
    type("half a line");
    CHECK(until("half a line") != std::string::npos);
    CHECK(editor_reads());
    type("\x03");  // Ctrl-C drops the line: a new prompt, and the line is not run
    CHECK(prompt_after("half a line"));
    type("Get a\r");
    CHECK(prompt_after("\"x\\x01 y\""));  // shown as it can be typed back
    type("get no-such-key\r");            // exit 1, but not the last command: the shell exits 0
    CHECK(prompt_after("(nil)"));
    type("sta");
    CHECK(until("sta", out.rfind("> ")) != std::string::npos);
    CHECK(editor_reads());
    type("\t");  // Tab completes status
    CHECK(until("tus") != std::string::npos);
    type("\r");
    CHECK(prompt_after("ROLE"));
    CHECK(editor_reads());
    type("\x04");  // Ctrl-D leaves
    int st = 0;
    bool left = wait_for([&] { return ::waitpid(pid, &st, WNOHANG) == pid; }, 10000);
    if (!left) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
    }
    INFO(out);
    CHECK(left);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);  // the last command's status (status: 0)
    ::close(fd);
    CHECK(c.read_at(0, "a") == std::string("x\x01 y"));
    std::string hist = read_file(home.path() + "/.tpc_history");
    CHECK(hist.find("PUT") != std::string::npos);
    CHECK(hist.find("Get") != std::string::npos);
    CHECK(hist.find("half") == std::string::npos);
  }
}
