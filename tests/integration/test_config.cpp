// Options from the command line, TPC_<NAME> variables and --config files; logs as JSON and in
// a file reopened on SIGHUP.
#include <doctest/doctest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "harness.h"

using namespace tpc;
using namespace tpc::it;

TEST_SUITE("config") {
  TEST_CASE("options: the command line wins over TPC_<NAME>, which wins over --config's file") {
    Scratch s;
    uint16_t p_file = free_port(), p_env = free_port(), p_flag = free_port();
    std::string conf = s.path() + "/p.toml";
    {
      std::ofstream f(conf);
      f << fmt::format("port = {}\nid = \"7\"\n[participant]\nlog-level = \"WARN\"\n", p_file);
    }
    auto start = [&](const std::string& name, std::vector<std::string> extra,
                     std::map<std::string, std::string> env) {
      std::vector<std::string> args{TPC_BINARY, "participant", "--config", conf, "--data-dir",
                                    s.path() + "/" + name, "--log-level", "info"};
      args.insert(args.end(), extra.begin(), extra.end());
      return std::make_unique<Process>(args, s.path() + "/" + name + ".log", env);
    };
    struct Case {
      std::string name;
      std::vector<std::string> flags;
      std::map<std::string, std::string> env;
      uint16_t port;
    };
    for (const auto& c : {Case{"file", {}, {}, p_file},
                          Case{"env", {}, {{"TPC_PORT", std::to_string(p_env)}}, p_env},
                          Case{"flag", {"--port", std::to_string(p_flag)},
                               {{"TPC_PORT", std::to_string(p_env)}}, p_flag}}) {
      INFO(c.name);
      auto p = start(c.name, c.flags, c.env);
      CHECK(wait_for_text(s.path() + "/" + c.name + ".log",
                          fmt::format("listening on 127.0.0.1:{}", c.port), 10000));
      // The id came from the file; the flag's log level beat the file's WARN (info is logged).
      CHECK(read_file(s.path() + "/" + c.name + ".log").find("participant 7 ") !=
            std::string::npos);
      CHECK(p->terminate() == 0);
    }
    // An option of two names (--max-message, and --max-line, its older one) is taken once:
    // the command line's under either name, else the environment's first name that is set.
    struct Alias {
      std::string name;
      std::vector<std::string> flags;
      size_t limit;
    };
    const std::map<std::string, std::string> both{{"TPC_MAX_MESSAGE", "100000"},
                                                  {"TPC_MAX_LINE", "200000"}};
    for (const auto& c :
         {Alias{"alias-flag", {"--max-line", "65536"}, 65536}, Alias{"alias-env", {}, 100000}}) {
      INFO(c.name);
      uint16_t port = free_port();
      auto flags = c.flags;
      flags.insert(flags.end(), {"--port", std::to_string(port)});
      auto p = start(c.name, flags, both);
      REQUIRE(wait_for_text(s.path() + "/" + c.name + ".log",
                            fmt::format("listening on 127.0.0.1:{}", port), 10000));
      auto conn = client::Connection::open(fmt::format("127.0.0.1:{}", port), 2000);
      REQUIRE(conn.is_ok());
      CHECK(conn->server_max_message() == c.limit);  // the limit its HELLO says
      CHECK(p->terminate() == 0);
    }
    // An unknown name in the file is refused, with the nearest option.
    {
      std::ofstream f(s.path() + "/bad.toml");
      f << "data-dri = \"x\"\n";
    }
    auto bad = run_tpc({"participant", "--port", "1", "--config", s.path() + "/bad.toml"});
    CHECK(bad.code == 2);
    CHECK(bad.err.find("did you mean 'data-dir'") != std::string::npos);
    auto missing = run_tpc({"participant", "--port", "1", "--config", s.path() + "/none.toml"});
    CHECK(missing.code == 2);
    // Any command: the client's timeout from the environment is range-checked like the flag.
    auto client = run_tpc({"client", "get", "k"}, 10000, "", {{"TPC_TIMEOUT", "-5"}});
    CHECK(client.code == 2);
  }

  TEST_CASE("logs: JSON lines, levels in any case, a log file reopened on SIGHUP") {
    Scratch s;
    uint16_t port = free_port();
    std::string file = s.path() + "/p.log";
    Process p({TPC_BINARY, "participant", "--port", std::to_string(port), "--id", "1",
               "--data-dir", s.path() + "/p", "--log-format", "JSON", "--log-level", "DEBUG",
               "--log-file", file},
              s.path() + "/stderr");
    REQUIRE(wait_for_text(file, "listening on", 10000));
    // logrotate's way: move the file away, SIGHUP, the server writes a new one.
    std::filesystem::rename(file, file + ".1");
    ::kill(p.pid(), SIGHUP);
    REQUIRE(wait_for_text(file, "log file reopened", 10000));
    CHECK(p.alive());
    CHECK(p.terminate() == 0);
    int lines = 0;
    for (const std::string& f : {file + ".1", file}) {
      std::istringstream in(read_file(f));
      std::string line;
      while (std::getline(in, line)) {
        INFO(line);
        auto j = nlohmann::json::parse(line, nullptr, false);
        REQUIRE_FALSE(j.is_discarded());
        CHECK(j.is_object());
        CHECK(j["ts"].is_string());
        CHECK(j["msg"].is_string());
        CHECK(j["node"] == "participant-1");
        std::string level = j["level"];
        CHECK((level == "debug" || level == "info" || level == "warn" || level == "error"));
        ++lines;
      }
    }
    CHECK(lines >= 4);
    CHECK(read_file(s.path() + "/stderr").empty());  // everything went to the file
  }
}
