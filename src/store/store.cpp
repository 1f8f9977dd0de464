#include "store/store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "common/logging.h"
#include "common/util.h"

namespace tpc::store {

using tpc::OpKind;

Result<std::optional<std::string>> MemStore::get(const std::string& key) {
  auto it = m_data.find(key);
  if (it == m_data.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

std::set<std::string> MemStore::applied_txids() {
  std::set<std::string> out;
  for (auto& [t, seq] : m_applied) out.insert(t);
  return out;
}

Status MemStore::prune_applied(uint64_t upto) {
  std::erase_if(m_applied, [&](auto& kv) { return kv.second <= upto; });
  return Status::ok();
}

Result<Store::KeyValues> MemStore::scan(const std::string& after, size_t limit, size_t max_bytes) {
  return scan_map(m_data, after, limit, max_bytes);
}

Result<Store::KeyValues> scan_map(const std::map<std::string, std::string>& data,
                                  const std::string& after, size_t limit, size_t max_bytes) {
  Store::KeyValues out;
  size_t bytes = 0;
  for (auto it = data.upper_bound(after); it != data.end() && out.size() < limit; ++it) {
    if (!out.empty() && bytes + it->first.size() + it->second.size() > max_bytes) break;
    bytes += it->first.size() + it->second.size();
    out.emplace_back(it->first, it->second);
  }
  return out;
}

Status MemStore::apply(const std::string& txid, const std::vector<Op>& ops) {
  // Like SqliteStore: no deduplication here (the caller applies a txid once), so a core bug
  // that applied twice would show in the data and in m_apply_calls.
  ++m_apply_calls;
  m_applied[txid] = ++m_seq;
  for (auto& op : ops) {
    if (op.kind == OpKind::put) m_data[op.key] = op.value;
    if (op.kind == OpKind::del) m_data.erase(op.key);
  }
  return Status::ok();
}

namespace {
bool step_reset(sqlite3_stmt* s) {
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  return rc == SQLITE_DONE || rc == SQLITE_ROW;
}
}  // namespace

SqliteStore::SqliteStore(const std::string& path, int64_t hold_ms, uint64_t hold_max_writes)
    : m_path(path), m_hold_ms(hold_ms), m_hold_max_writes(hold_max_writes) {
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
  exec("PRAGMA synchronous=NORMAL");
  exec("CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID");
  exec("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID");
  // Keyed by sequence: marks are appended at the end of the B-tree (cheap), and read in full
  // only at recovery.
  exec("CREATE TABLE IF NOT EXISTS applied (seq INTEGER PRIMARY KEY, txid TEXT NOT NULL)");
  m_get = prepare("SELECT value FROM kv WHERE key = ?1");
  m_put = prepare(
      "INSERT INTO kv(key, value) VALUES(?1, ?2) "
      "ON CONFLICT(key) DO UPDATE SET value = excluded.value");
  m_del = prepare("DELETE FROM kv WHERE key = ?1");
  m_mark = prepare("INSERT INTO applied(txid, seq) VALUES(?1, ?2)");
  exec("PRAGMA cache_size=-16384");  // 16 MiB of page cache
  // Reads through a memory map instead of a pread per page; bounded so that resident memory
  // stays small however large the database grows.
  exec("PRAGMA mmap_size=33554432");
  // No checkpoints on this connection: the checkpointer thread does them (see store.h).
  exec("PRAGMA wal_autocheckpoint=0");
  sqlite3_wal_hook(m_db, &SqliteStore::on_wal, this);
  // The checkpointer's connection is opened here, so a failure is a start-up error (and the
  // thread never races the file's removal).
  sqlite3* ckpt = nullptr;
  if (sqlite3_open_v2(m_path.c_str(), &ckpt, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    sqlite3_close(ckpt);
    throw Error("database " + m_path + ": the checkpointer cannot open it");
  }
  sqlite3_busy_timeout(ckpt, 5000);
  // Opens the file for real (connections open lazily; a checkpoint on an unopened one is a
  // silent no-op).
  sqlite3_exec(ckpt, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
  m_ckpt_thread = std::thread([this, ckpt] { checkpointer(ckpt); });
  m_prune = prepare("DELETE FROM applied WHERE seq <= ?1");
  {
    sqlite3_stmt* mx = prepare("SELECT coalesce(max(seq), 0) FROM applied");
    if (sqlite3_step(mx) == SQLITE_ROW) m_seq = static_cast<uint64_t>(sqlite3_column_int64(mx, 0));
    sqlite3_finalize(mx);
  }
  m_begin = prepare("BEGIN IMMEDIATE");
  m_commit = prepare("COMMIT");
  m_rollback = prepare("ROLLBACK");
  m_count = prepare("SELECT count(*) FROM kv");
  m_scan = prepare("SELECT key, value FROM kv WHERE key > ?1 ORDER BY key LIMIT ?2");
}

Result<Store::KeyValues> SqliteStore::scan(const std::string& after, size_t limit,
                                           size_t max_bytes) {
  KeyValues out;
  size_t bytes = 0;
  sqlite3_reset(m_scan);
  sqlite3_bind_blob(m_scan, 1, after.data(), static_cast<int>(after.size()), SQLITE_STATIC);
  sqlite3_bind_int64(m_scan, 2, static_cast<sqlite3_int64>(limit));
  int rc;
  while ((rc = sqlite3_step(m_scan)) == SQLITE_ROW) {
    auto* k = static_cast<const char*>(sqlite3_column_blob(m_scan, 0));
    size_t kn = static_cast<size_t>(sqlite3_column_bytes(m_scan, 0));
    auto* v = static_cast<const char*>(sqlite3_column_blob(m_scan, 1));
    size_t vn = static_cast<size_t>(sqlite3_column_bytes(m_scan, 1));
    if (!out.empty() && bytes + kn + vn > max_bytes) break;
    bytes += kn + vn;
    out.emplace_back(std::string(k ? k : "", kn), std::string(v ? v : "", vn));
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    Status s = Status::error("STORAGE", std::string("scan: ") + sqlite3_errmsg(m_db));
    sqlite3_reset(m_scan);
    return s;
  }
  sqlite3_reset(m_scan);
  return out;
}

Status SqliteStore::backup_to(const std::string& path) {
  auto failed = [&](const std::string& why) {
    std::remove(path.c_str());
    return Status::error("STORAGE", "backup to " + path + ": " + why);
  };
  // The copy reads committed pages: what a held transaction applied is committed first.
  if (Status st = commit_open(); !st) return st;
  sqlite3* dst = nullptr;
  if (sqlite3_open_v2(path.c_str(), &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    std::string why = dst ? sqlite3_errmsg(dst) : "out of memory";
    sqlite3_close(dst);
    return failed(why);
  }
  // One step copies every page under one read transaction: a consistent copy of the state
  // every apply() so far left (the event loop, the only writer, waits for it).
  sqlite3_backup* b = sqlite3_backup_init(dst, "main", m_db, "main");
  int rc = b ? sqlite3_backup_step(b, -1) : SQLITE_ERROR;
  if (b) sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE) {
    std::string why = sqlite3_errmsg(dst);
    sqlite3_close(dst);
    return failed(why);
  }
  // The copy is a plain rollback-journal database; make it durable before anyone relies on it.
  char* err = nullptr;
  if (sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", nullptr, nullptr, &err) != SQLITE_OK) {
    std::string why = err ? err : "journal mode";
    sqlite3_free(err);
    sqlite3_close(dst);
    return failed(why);
  }
  sqlite3_close(dst);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    if (fd >= 0) ::close(fd);
    return failed(std::strerror(errno));
  }
  ::close(fd);
  return Status::ok();
}

int SqliteStore::on_wal(void* self, sqlite3*, const char*, int frames) {
  auto* me = static_cast<SqliteStore*>(self);
  // A large WAL between checkpoints lets each checkpoint copy a page once for many commits.
  if (frames >= 4000) {
    std::lock_guard<std::mutex> g(me->m_ckpt_mutex);
    me->m_ckpt_wanted = true;
    me->m_ckpt_cv.notify_one();
  }
  return SQLITE_OK;
}

void SqliteStore::checkpointer(sqlite3* db) {
  while (true) {
    {
      std::unique_lock<std::mutex> lk(m_ckpt_mutex);
      m_ckpt_cv.wait(lk, [&] { return m_ckpt_wanted || m_ckpt_stop; });
      if (m_ckpt_stop) break;
      m_ckpt_wanted = false;
    }
    int log_frames = 0, done_frames = 0;
    int rc = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                       &done_frames);
    log::debug("checkpoint: rc {} wal frames {} checkpointed {}", rc, log_frames, done_frames);
    // BUSY: another checkpoint is running or the WAL is in use; the next commit asks again.
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
      fatal("database " + m_path + ": checkpoint failed: " + sqlite3_errmsg(db));
  }
  sqlite3_close(db);
}

SqliteStore::~SqliteStore() {
  // A held transaction is committed (a close would roll it back; the log would redo it anyway),
  // unless a batch was left open by a failure: then it all goes, and recovery redoes it.
  if (m_in_batch) {
    step_reset(m_rollback);
    m_open = m_in_batch = false;
  }
  if (Status st = commit_open(); !st) log::warn("closing the store: {}", st.message());
  {
    std::lock_guard<std::mutex> g(m_ckpt_mutex);
    m_ckpt_stop = true;
  }
  m_ckpt_cv.notify_one();
  if (m_ckpt_thread.joinable()) m_ckpt_thread.join();
  for (auto* s :
       {m_get, m_put, m_del, m_mark, m_begin, m_commit, m_rollback, m_count, m_prune, m_scan})
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
    throw Error(
        fmt::format("database {}: cannot prepare {}: {}", m_path, sql, sqlite3_errmsg(m_db)));
  return s;
}

Status SqliteStore::fail(const char* what) {
  return Status::error("STORAGE",
                       fmt::format("database {}: {}: {}", m_path, what, sqlite3_errmsg(m_db)));
}

Result<std::optional<std::string>> SqliteStore::get(const std::string& key) {
  sqlite3_reset(m_get);
  sqlite3_bind_blob(m_get, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
  int rc = sqlite3_step(m_get);
  // Every path resets the statement: an unreset statement keeps its read transaction open,
  // which stops checkpoints from ever finishing and lets the WAL grow without bound.
  if (rc == SQLITE_DONE) {
    sqlite3_reset(m_get);
    return std::optional<std::string>();
  }
  if (rc != SQLITE_ROW) {
    Status st = fail("read");
    sqlite3_reset(m_get);
    return st;
  }
  const void* p = sqlite3_column_blob(m_get, 0);
  int n = sqlite3_column_bytes(m_get, 0);
  std::string v(p ? static_cast<const char*>(p) : "", static_cast<size_t>(n));
  sqlite3_reset(m_get);
  return std::optional<std::string>(std::move(v));
}

std::set<std::string> SqliteStore::applied_txids() {
  std::set<std::string> out;
  sqlite3_stmt* st = prepare("SELECT txid FROM applied");
  while (sqlite3_step(st) == SQLITE_ROW)
    out.emplace(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)),
                static_cast<size_t>(sqlite3_column_bytes(st, 0)));
  sqlite3_finalize(st);
  return out;
}

Status SqliteStore::begin_batch() {
  if (m_in_batch) return Status::ok();
  if (!m_open) {
    if (!step_reset(m_begin)) return fail("begin");
    m_open = true;
    m_opened_ms = now_ms();
  }
  m_in_batch = true;
  return Status::ok();
}

Status SqliteStore::end_batch() {
  if (!m_in_batch) return Status::ok();
  m_in_batch = false;
  return due() ? commit_open() : Status::ok();  // else held
}

bool SqliteStore::due() const {
  return m_hold_ms <= 0 || now_ms() - m_opened_ms >= m_hold_ms ||
         m_held_writes >= m_hold_max_writes;
}

Status SqliteStore::commit_open() {
  if (!m_open || m_in_batch) return Status::ok();
  m_open = false;
  m_held_writes = 0;
  if (!step_reset(m_commit)) {
    Status st = fail("commit");
    step_reset(m_rollback);
    return st;
  }
  return Status::ok();
}

Status SqliteStore::commit_due() { return holding() && due() ? commit_open() : Status::ok(); }

Status SqliteStore::make_durable() {
  if (Status st = commit_open(); !st) return st;
  // In WAL mode every commit is in the WAL; with synchronous=NORMAL it is not fsynced at
  // commit. One commit with synchronous=FULL fsyncs the WAL, and with it every earlier commit.
  // (Much cheaper than a checkpoint, which copies the WAL into the database file.)
  // After start-up, a failure is a Status (the caller stops with exit 70), never a throw.
  auto pragma = [&](const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(m_db, sql, nullptr, nullptr, &err) == SQLITE_OK) return Status::ok();
    Status s = Status::error("STORAGE", fmt::format("{}: {}", sql, err ? err : "?"));
    sqlite3_free(err);
    return s;
  };
  Status st = pragma("PRAGMA synchronous=FULL");
  if (st && !step_reset(m_begin)) st = fail("begin");
  if (st) {
    char* err = nullptr;
    if (sqlite3_exec(m_db, "INSERT OR REPLACE INTO meta(k, v) VALUES('synced', 1)", nullptr,
                     nullptr, &err) != SQLITE_OK) {
      st = Status::error("STORAGE", std::string("database sync: ") + (err ? err : "?"));
      sqlite3_free(err);
      step_reset(m_rollback);
    } else if (!step_reset(m_commit)) {
      st = fail("sync commit");
    }
  }
  Status back = pragma("PRAGMA synchronous=NORMAL");
  return st ? back : st;
}

Status SqliteStore::prune_applied(uint64_t upto) {
  sqlite3_bind_int64(m_prune, 1, static_cast<sqlite3_int64>(upto));
  if (!step_reset(m_prune)) return fail("prune applied");
  return Status::ok();
}

Status SqliteStore::apply(const std::string& txid, const std::vector<Op>& ops) {
  bool own = !m_in_batch;
  if (own) {
    if (Status st = begin_batch(); !st) return st;
  }
  // A failure is returned at once, the batch left open: the caller stops.
  for (auto& op : ops) {
    m_held_writes += op.is_write();
    if (op.kind == OpKind::put) {
      sqlite3_bind_blob(m_put, 1, op.key.data(), static_cast<int>(op.key.size()), SQLITE_STATIC);
      sqlite3_bind_blob(m_put, 2, op.value.data(), static_cast<int>(op.value.size()),
                        SQLITE_STATIC);
      if (!step_reset(m_put)) return fail("put");
    } else if (op.kind == OpKind::del) {
      sqlite3_bind_blob(m_del, 1, op.key.data(), static_cast<int>(op.key.size()), SQLITE_STATIC);
      if (!step_reset(m_del)) return fail("delete");
    }
  }
  sqlite3_bind_text(m_mark, 1, txid.data(), static_cast<int>(txid.size()), SQLITE_STATIC);
  sqlite3_bind_int64(m_mark, 2, static_cast<sqlite3_int64>(m_seq + 1));
  if (!step_reset(m_mark)) return fail("record applied txid");
  ++m_seq;
  return own ? end_batch() : Status::ok();
}

uint64_t SqliteStore::key_count() {
  sqlite3_reset(m_count);
  uint64_t n = 0;
  if (sqlite3_step(m_count) == SQLITE_ROW)
    n = static_cast<uint64_t>(sqlite3_column_int64(m_count, 0));
  sqlite3_reset(m_count);
  return n;
}

}  // namespace tpc::store
