#include "store/store.h"

#include <sqlite3.h>

#include <ctime>

#include <fmt/format.h>

namespace tpc::store {

using protocol::OpKind;

Result<std::optional<std::string>> MemStore::get(const std::string& key) {
  auto it = m_data.find(key);
  if (it == m_data.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

Status MemStore::apply(const std::string& txid, const std::vector<protocol::Op>& ops) {
  ++m_apply_calls;
  if (!m_applied.insert(txid).second) return Status::ok();
  for (auto& op : ops) {
    if (op.kind == OpKind::put) m_data[op.key] = op.value;
    if (op.kind == OpKind::del) m_data.erase(op.key);
  }
  return Status::ok();
}

SqliteStore::SqliteStore(const std::string& path) : m_path(path) {
  if (sqlite3_open_v2(path.c_str(), &m_db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string msg = m_db ? sqlite3_errmsg(m_db) : "out of memory";
    sqlite3_close(m_db);
    m_db = nullptr;
    throw Error(fmt::format("cannot open database {}: {}", path, msg));
  }
  sqlite3_busy_timeout(m_db, 5000);
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=FULL");
  exec("CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID");
  exec("CREATE TABLE IF NOT EXISTS applied (txid TEXT PRIMARY KEY, at INTEGER NOT NULL) "
       "WITHOUT ROWID");
  m_get = prepare("SELECT value FROM kv WHERE key = ?1");
  m_put = prepare("INSERT INTO kv(key, value) VALUES(?1, ?2) "
                  "ON CONFLICT(key) DO UPDATE SET value = excluded.value");
  m_del = prepare("DELETE FROM kv WHERE key = ?1");
  m_is_applied = prepare("SELECT 1 FROM applied WHERE txid = ?1");
  m_mark = prepare("INSERT INTO applied(txid, at) VALUES(?1, ?2)");
  m_begin = prepare("BEGIN IMMEDIATE");
  m_commit = prepare("COMMIT");
  m_rollback = prepare("ROLLBACK");
  m_count = prepare("SELECT count(*) FROM kv");
}

SqliteStore::~SqliteStore() {
  for (auto* s : {m_get, m_put, m_del, m_is_applied, m_mark, m_begin, m_commit, m_rollback,
                  m_count})
    sqlite3_finalize(s);
  sqlite3_close(m_db);
}

void SqliteStore::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(m_db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "?";
    sqlite3_free(err);
    throw Error(fmt::format("database {}: {}: {}", m_path, sql, msg));
  }
}

sqlite3_stmt* SqliteStore::prepare(const char* sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(m_db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
    throw Error(fmt::format("database {}: cannot prepare {}: {}", m_path, sql,
                            sqlite3_errmsg(m_db)));
  return s;
}

Status SqliteStore::fail(const char* what) {
  return Status::error("STORAGE", fmt::format("database {}: {}: {}", m_path, what,
                                              sqlite3_errmsg(m_db)));
}

Result<std::optional<std::string>> SqliteStore::get(const std::string& key) {
  sqlite3_reset(m_get);
  sqlite3_bind_blob(m_get, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
  int rc = sqlite3_step(m_get);
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return fail("read");
  const void* p = sqlite3_column_blob(m_get, 0);
  int n = sqlite3_column_bytes(m_get, 0);
  std::string v(p ? static_cast<const char*>(p) : "", static_cast<size_t>(n));
  sqlite3_reset(m_get);
  return std::optional<std::string>(std::move(v));
}

bool SqliteStore::is_applied(const std::string& txid) {
  sqlite3_reset(m_is_applied);
  sqlite3_bind_text(m_is_applied, 1, txid.data(), static_cast<int>(txid.size()), SQLITE_STATIC);
  bool yes = sqlite3_step(m_is_applied) == SQLITE_ROW;
  sqlite3_reset(m_is_applied);
  return yes;
}

Status SqliteStore::apply(const std::string& txid, const std::vector<protocol::Op>& ops) {
  auto step = [&](sqlite3_stmt* s) {
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW;
  };
  if (!step(m_begin)) return fail("begin");
  auto abort_with = [&](const char* what) {
    Status st = fail(what);
    step(m_rollback);
    return st;
  };
  if (is_applied(txid)) {
    step(m_rollback);
    return Status::ok();
  }
  for (auto& op : ops) {
    if (op.kind == OpKind::put) {
      sqlite3_bind_blob(m_put, 1, op.key.data(), static_cast<int>(op.key.size()), SQLITE_STATIC);
      sqlite3_bind_blob(m_put, 2, op.value.data(), static_cast<int>(op.value.size()),
                        SQLITE_STATIC);
      if (!step(m_put)) return abort_with("put");
    } else if (op.kind == OpKind::del) {
      sqlite3_bind_blob(m_del, 1, op.key.data(), static_cast<int>(op.key.size()), SQLITE_STATIC);
      if (!step(m_del)) return abort_with("delete");
    }
  }
  sqlite3_bind_text(m_mark, 1, txid.data(), static_cast<int>(txid.size()), SQLITE_STATIC);
  sqlite3_bind_int64(m_mark, 2, static_cast<sqlite3_int64>(std::time(nullptr)));
  if (!step(m_mark)) return abort_with("record applied txid");
  if (!step(m_commit)) return abort_with("commit");
  return Status::ok();
}

uint64_t SqliteStore::key_count() {
  sqlite3_reset(m_count);
  uint64_t n = 0;
  if (sqlite3_step(m_count) == SQLITE_ROW) n = static_cast<uint64_t>(sqlite3_column_int64(m_count, 0));
  sqlite3_reset(m_count);
  return n;
}

}  // namespace tpc::store
