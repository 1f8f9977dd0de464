#include <doctest/doctest.h>

#include <unistd.h>
#include <filesystem>

#include "store/store.h"

using namespace tpc;
using tpc::Op;
using tpc::OpKind;

TEST_SUITE("store") {
  TEST_CASE("sqlite store keeps arbitrary bytes and applied marks across reopen") {
    auto dir = std::filesystem::temp_directory_path() / ("tpc-store-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    std::string path = (dir / "data.db").string();
    std::string nul_key("k\0ey", 4), value("v\0\n\xff", 4);
    {
      store::SqliteStore s(path);
      CHECK_FALSE(s.get(nul_key)->has_value());
      REQUIRE(s.apply("t1", {Op{OpKind::put, nul_key, value}, Op{OpKind::put, "e", ""}}));
      CHECK(s.applied_txids() == std::set<std::string>{"t1"});
      CHECK(**s.get(nul_key) == value);
      CHECK(s.get("e")->has_value());
      CHECK(**s.get("e") == "");
      // A batch: several transactions, one store commit.
      REQUIRE(s.begin_batch());
      REQUIRE(s.apply("t2", {Op{OpKind::put, nul_key, "new"}}));
      REQUIRE(s.apply("t3", {Op{OpKind::del, "e", ""}, Op{OpKind::check, "x", "y"}}));
      REQUIRE(s.end_batch());
      CHECK(**s.get(nul_key) == "new");
      CHECK_FALSE(s.get("e")->has_value());
      CHECK(s.key_count() == 1);
      CHECK(s.applied_seq() == 3);
      REQUIRE(s.make_durable());
    }
    {
      store::SqliteStore again(path);
      CHECK(**again.get(nul_key) == "new");
      CHECK(again.applied_txids() == std::set<std::string>{"t1", "t2", "t3"});
      CHECK(again.applied_seq() == 3);
      // Marks up to a sequence are pruned; the sequence keeps increasing.
      REQUIRE(again.prune_applied(2));
      CHECK(again.applied_txids() == std::set<std::string>{"t3"});
      REQUIRE(again.apply("t4", {Op{OpKind::put, "z", "1"}}));
      CHECK(again.applied_seq() == 4);
    }
    std::filesystem::remove_all(dir);
  }
}
