// Hardening without certificates (docs/security.md): private file modes, idle connections,
// oversize transactions, validated arguments, and verbs refused by role.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>

#include <fmt/format.h>

#include "client/connection.h"
#include "harness.h"

using namespace tpc;
using namespace tpc::it;
namespace fs = std::filesystem;

namespace {
unsigned mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 0777;
}
}  // namespace

TEST_SUITE("security") {
  TEST_CASE("data directories are 0700 and files 0600 under umask 0") {
    mode_t old = ::umask(0);  // the servers inherit it, and must not follow it
    Cluster c;
    ::umask(old);
    REQUIRE(c.wait_ready());
    REQUIRE(c.client({"put", "k", "v"}).code == 0);
    for (std::string d : {c.dir() + "/leader", c.data_dir(0), c.data_dir(1)}) {
      INFO(d);
      CHECK(mode_of(d) == 0700);
      for (auto& e : fs::directory_iterator(d)) {
        INFO(e.path().string());
        CHECK(mode_of(e.path().string()) == 0600);
      }
    }
    CHECK(fs::exists(c.data_dir(0) + "/data.db"));
    CHECK(fs::exists(c.data_dir(0) + "/identity"));
  }
}
