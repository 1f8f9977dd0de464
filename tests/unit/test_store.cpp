#include <doctest/doctest.h>

#include <filesystem>
#include <unistd.h>

#include "store/store.h"

using namespace tpc;
using protocol::Op;
using protocol::OpKind;

TEST_SUITE("store") {
  TEST_CASE("sqlite store applies once and keeps arbitrary bytes") {
    auto dir = std::filesystem::temp_directory_path() / ("tpc-store-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    std::string path = (dir / "data.db").string();
    std::string nul_key("k\0ey", 4), value("v\0\n\xff", 4);
    {
      store::SqliteStore s(path);
      CHECK_FALSE(s.get(nul_key)->has_value());
      REQUIRE(s.apply("t1", {Op{OpKind::put, nul_key, value}, Op{OpKind::put, "e", ""}}));
      CHECK(s.is_applied("t1"));
      CHECK(**s.get(nul_key) == value);
      CHECK(s.get("e")->has_value());
      CHECK(**s.get("e") == "");
      REQUIRE(s.apply("t2", {Op{OpKind::put, nul_key, "new"}}));
      // A re-delivered t1 must not overwrite the newer value.
      REQUIRE(s.apply("t1", {Op{OpKind::put, nul_key, value}}));
      CHECK(**s.get(nul_key) == "new");
      REQUIRE(s.apply("t3", {Op{OpKind::del, "e", ""}, Op{OpKind::check, "x", "y"}}));
      CHECK_FALSE(s.get("e")->has_value());
      CHECK(s.key_count() == 1);
    }
    store::SqliteStore again(path);
    CHECK(**again.get(nul_key) == "new");
    CHECK(again.is_applied("t3"));
    std::filesystem::remove_all(dir);
  }
}
