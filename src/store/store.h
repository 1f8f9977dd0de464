// Committed data of a participant.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/op.h"
#include "common/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace tpc::store {

class Store {
 public:
  virtual ~Store() = default;
  // Committed value of `key`, or nullopt when absent. Error STORAGE on a read failure.
  virtual Result<std::optional<std::string>> get(const std::string& key) = 0;
  // Every txid whose "applied" mark is in the store (marks are pruned after log rewrites, so
  // this is bounded). Read once, at recovery.
  virtual std::set<std::string> applied_txids() = 0;
  // Applies the write ops of `txid` and records "txid applied" in the same store transaction.
  // The caller applies each txid at most once (the participant core guarantees it: only a
  // prepared, not yet applied transaction is applied; recovery skips applied_txids()).
  // Error STORAGE when the store cannot commit; the caller must stop.
  virtual Status apply(const std::string& txid, const std::vector<Op>& ops) = 0;
  virtual uint64_t key_count() = 0;
  // Batching: apply() calls between begin_batch() and end_batch() share one store transaction
  // (SqliteStore may hold it open for later batches too). end_batch() returns STORAGE on
  // failure (the caller must stop). Nothing applied in a batch may be acknowledged before
  // end_batch() returned; what makes it durable is the log, or make_durable().
  virtual Status begin_batch() { return Status::ok(); }
  virtual Status end_batch() { return Status::ok(); }
  // Sequence number of the last apply (increasing across restarts).
  virtual uint64_t applied_seq() = 0;
  // Forgets "applied" marks with sequence <= upto: safe once no PREPARED record of those
  // transactions remains in the log (after a log rewrite that started after them).
  virtual Status prune_applied(uint64_t upto) = 0;
  // Makes every apply() that returned durable (one checkpoint with fsyncs).
  virtual Status make_durable() { return Status::ok(); }
  // Up to `limit` keys after `after` ("" : from the first) in key order, with their values,
  // stopping early once `max_bytes` are collected. Error STORAGE on a read failure.
  using KeyValues = std::vector<std::pair<std::string, std::string>>;
  virtual Result<KeyValues> scan(const std::string& after, size_t limit, size_t max_bytes) = 0;
};

// scan() over a std::map (the in-memory stores).
Result<Store::KeyValues> scan_map(const std::map<std::string, std::string>& data,
                                  const std::string& after, size_t limit, size_t max_bytes);

// In-memory store for tests of the participant core.
class MemStore : public Store {
 public:
  Result<std::optional<std::string>> get(const std::string& key) override;
  std::set<std::string> applied_txids() override;
  Status apply(const std::string& txid, const std::vector<Op>& ops) override;
  uint64_t key_count() override { return m_data.size(); }
  uint64_t applied_seq() override { return m_seq; }
  Status prune_applied(uint64_t upto) override;
  Result<KeyValues> scan(const std::string& after, size_t limit, size_t max_bytes) override;
  std::map<std::string, std::string> m_data;
  std::map<std::string, uint64_t> m_applied;
  uint64_t m_seq = 0;
  int m_apply_calls = 0;
};

// SQLite in WAL mode with synchronous=NORMAL. The participant's log is the durable record of
// commits (see docs/recovery.md), so the store is not forced on every commit, and with
// `hold_ms` > 0 not even committed on every batch: end_batch() leaves the SQLite transaction
// open, and the batches of the next `hold_ms` milliseconds join it, until an end_batch() past
// that age or past `hold_max_writes` key writes, commit_due(), make_durable() or backup_to()
// commits it. A B-tree page that many commits change is then written to the WAL once per hold
// instead of once per batch (a 4 KiB page for every key of every batch). The bound on writes
// bounds the commit, which runs on the event loop: at most about that many pages written. What a
// held transaction applied is read back by this object at once (get, scan, key_count see it), but
// is lost by a process crash: recovery redoes it from the log, as it redoes what a power loss took
// from the WAL. With hold_ms 0, end_batch() commits, and a returned batch survives a process crash
// (not a power loss). Not thread-safe: one thread uses it.
class SqliteStore : public Store {
 public:
  // Opens or creates `path`; throws tpc::Error when the database cannot be opened.
  explicit SqliteStore(const std::string& path, int64_t hold_ms = 0,
                       uint64_t hold_max_writes = k_hold_max_writes);
  // The default bound of a held transaction's key writes (docs/design.md has the A/B).
  static constexpr uint64_t k_hold_max_writes = 2000;
  ~SqliteStore() override;
  Result<std::optional<std::string>> get(const std::string& key) override;
  std::set<std::string> applied_txids() override;
  Status apply(const std::string& txid, const std::vector<Op>& ops) override;
  uint64_t key_count() override;
  Status begin_batch() override;
  Status end_batch() override;
  uint64_t applied_seq() override { return m_seq; }
  Status prune_applied(uint64_t upto) override;
  Status make_durable() override;
  // Commits a held transaction once it is due (`hold_ms` old, or its bound of writes reached;
  // the server calls it from a timer, so an idle store does not keep one open). Error STORAGE when
  // the commit fails.
  Status commit_due();
  // Whether a transaction is held open (applied batches not yet committed to SQLite).
  bool holding() const { return m_open && !m_in_batch; }
  Result<KeyValues> scan(const std::string& after, size_t limit, size_t max_bytes) override;
  // A consistent copy of the whole database at `path` (SQLite's online backup API), made
  // durable. Error STORAGE on failure (a partial file is removed).
  Status backup_to(const std::string& path);

 private:
  void exec(const char* sql);
  sqlite3_stmt* prepare(const char* sql);
  Status fail(const char* what);
  std::string m_path;
  sqlite3* m_db = nullptr;
  sqlite3_stmt* m_get = nullptr;
  sqlite3_stmt* m_put = nullptr;
  sqlite3_stmt* m_del = nullptr;
  sqlite3_stmt* m_mark = nullptr;
  sqlite3_stmt* m_begin = nullptr;
  sqlite3_stmt* m_commit = nullptr;
  sqlite3_stmt* m_rollback = nullptr;
  sqlite3_stmt* m_count = nullptr;
  sqlite3_stmt* m_prune = nullptr;
  sqlite3_stmt* m_scan = nullptr;
  Status commit_open();     // commits the open SQLite transaction, if any
  // Whether the open transaction is to be committed: no hold, or past its age or its writes.
  bool due() const;
  bool m_in_batch = false;  // between begin_batch() and end_batch()
  bool m_open = false;      // a SQLite transaction is open (in a batch, or held)
  int64_t m_hold_ms = 0;
  uint64_t m_hold_max_writes = 0;
  int64_t m_opened_ms = 0;  // when the open transaction began (steady clock)
  uint64_t m_held_writes = 0;  // key writes in the open transaction
  uint64_t m_seq = 0;
  // Checkpoints run on a thread of their own, with a connection of their own, so copying
  // the WAL into the database never stalls the event loop (SQLite's checkpoints run
  // concurrently with writers in WAL mode).
  void checkpointer(sqlite3* db);  // owns db
  static int on_wal(void* self, sqlite3* db, const char* name, int frames);
  std::thread m_ckpt_thread;
  std::mutex m_ckpt_mutex;
  std::condition_variable m_ckpt_cv;
  bool m_ckpt_wanted = false;
  bool m_ckpt_stop = false;
};

}  // namespace tpc::store
