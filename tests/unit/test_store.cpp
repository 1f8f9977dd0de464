#include <doctest/doctest.h>

#include <sqlite3.h>
#include <unistd.h>
#include <filesystem>

#include "common/util.h"
#include "store/store.h"

using namespace tpc;
using tpc::Op;
using tpc::OpKind;

namespace {
// The committed keys of the database at `path`, as another connection sees them: what a crash
// of the store's process would leave.
int committed_keys(const std::string& path) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT count(*) FROM kv", -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  int n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n;
}

std::string scratch_db(const char* name) {
  auto dir = std::filesystem::temp_directory_path() /
             (std::string("tpc-store-") + name + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return (dir / "data.db").string();
}
}  // namespace

TEST_SUITE("store") {
  TEST_CASE("sqlite store keeps arbitrary bytes and applied marks across reopen") {
    std::string path = scratch_db("reopen");
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
    std::filesystem::remove_all(std::filesystem::path(path).parent_path());
  }

  TEST_CASE("a held store transaction is read back at once and committed when due or forced") {
    std::string path = scratch_db("hold");
    {
      store::SqliteStore s(path, 60000);
      REQUIRE(s.begin_batch());
      REQUIRE(s.apply("t1", {Op{OpKind::put, "a", "1"}}));
      REQUIRE(s.end_batch());
      // Held: this object reads it, another connection (a crash) does not.
      CHECK(s.holding());
      CHECK(**s.get("a") == "1");
      CHECK(s.key_count() == 1);
      CHECK(committed_keys(path) == 0);
      // A later batch joins the held transaction; an apply outside a batch too.
      REQUIRE(s.begin_batch());
      REQUIRE(s.apply("t2", {Op{OpKind::put, "b", "2"}}));
      REQUIRE(s.end_batch());
      REQUIRE(s.apply("t3", {Op{OpKind::put, "c", "3"}}));
      CHECK(s.scan("", 10, 1 << 20)->size() == 3);
      CHECK(committed_keys(path) == 0);
      REQUIRE(s.commit_due());  // not 60 s old: still held
      CHECK(s.holding());
      // make_durable commits it (a log rewrite relies on that).
      REQUIRE(s.make_durable());
      CHECK_FALSE(s.holding());
      CHECK(committed_keys(path) == 3);
      // A backup copies what is held too.
      REQUIRE(s.apply("t4", {Op{OpKind::put, "d", "4"}}));
      CHECK(s.holding());
      std::string copy = path + ".copy";
      REQUIRE(s.backup_to(copy));
      CHECK(committed_keys(copy) == 4);
      REQUIRE(s.apply("t5", {Op{OpKind::put, "e", "5"}}));
    }
    // Closing the store commits what it held.
    CHECK(committed_keys(path) == 5);
    store::SqliteStore again(path);
    CHECK(again.applied_txids() == std::set<std::string>{"t1", "t2", "t3", "t4", "t5"});
    std::filesystem::remove_all(std::filesystem::path(path).parent_path());
  }

  TEST_CASE(
      "a short hold commits once due, a hold ends at its bound of writes, no hold commits every "
      "batch") {
    // Each store is closed before its directory goes.
    std::string path = scratch_db("due");
    {
      store::SqliteStore held(path, 20);
      REQUIRE(held.apply("t1", {Op{OpKind::put, "a", "1"}}));
      CHECK(held.holding());
      int64_t deadline = now_ms() + 5000;
      Status st = Status::ok();
      while (st && held.holding() && now_ms() < deadline) st = held.commit_due();
      REQUIRE(st);
      CHECK_FALSE(held.holding());
      CHECK(committed_keys(path) == 1);
    }

    // A hold also ends at its bound of key writes, however young.
    std::string pathw = scratch_db("writes");
    {
      store::SqliteStore bounded(pathw, 60000, 3);
      REQUIRE(bounded.apply("t1", {Op{OpKind::put, "a", "1"}, Op{OpKind::check, "b", ""}}));
      REQUIRE(bounded.apply("t2", {Op{OpKind::del, "c", ""}}));
      CHECK(bounded.holding());
      REQUIRE(bounded.commit_due());  // neither old nor full yet: still held
      CHECK(bounded.holding());
      REQUIRE(bounded.apply("t3", {Op{OpKind::put, "d", "4"}}));
      CHECK_FALSE(bounded.holding());
      CHECK(committed_keys(pathw) == 2);
      REQUIRE(bounded.apply("t4", {Op{OpKind::put, "e", "5"}}));
      CHECK(bounded.holding());
    }

    std::string path0 = scratch_db("nohold");
    {
      store::SqliteStore each(path0);
      REQUIRE(each.apply("t1", {Op{OpKind::put, "a", "1"}}));
      CHECK_FALSE(each.holding());
      CHECK(committed_keys(path0) == 1);
    }
    for (const auto& p : {path, pathw, path0})
      std::filesystem::remove_all(std::filesystem::path(p).parent_path());
  }
}
