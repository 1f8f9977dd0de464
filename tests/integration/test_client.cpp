// The client's surface (issue: operable in production): result after an unknown outcome, and
// more of the command line as it grows.
#include <doctest/doctest.h>

#include <regex>

#include "harness.h"

using namespace tpc;
using namespace tpc::it;

namespace {
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

  TEST_CASE("put KEY - takes a 5 MiB binary value from stdin; get --raw gives its exact bytes") {
    Cluster::Options o;
    // Binary bytes travel %-escaped: a 5 MiB value is a line of about 11 MiB.
    o.leader_args = {"--max-line", "16777216"};
    o.participant_args = {"--max-line", "16777216"};
    Cluster c(o);
    REQUIRE(c.wait_ready());
    std::string value(5 << 20, '\0');
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
}
