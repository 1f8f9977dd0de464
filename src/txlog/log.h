// The transaction log of one node: an append-only file of framed records with group commit.
//
// Durability contract: `done` of an append with force=true runs only after an fdatasync that
// covers the record returned successfully. Appends queued while a write or sync is in progress
// are written together and share the next fdatasync (group commit). Records are written in
// the order append() was called.
//
// Failure: a failed write or fdatasync (EIO, ENOSPC, ...) stops the process via tpc::fatal():
// after a failed fsync the file's durable content is unknown and retrying cannot fix that
// (the rule LevelDB and PostgreSQL follow). On restart, open() recovers what is durable.
//
// For power-loss tests: with TPC_TEST_RECORD_SYNCED set in the environment, a log kept in the
// file `name` writes, after every fdatasync, the length it covered to `name`.synced (a plain
// write, not itself synced). A test that cuts the log back to that length after kill -9 sees
// exactly what a power failure could leave.
//
// Threads: append(), rewrite() and stats() may be called from any thread. `done` callbacks run
// on the log's writer thread and must be short (post to an executor).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "txlog/file.h"
#include "txlog/record.h"

namespace tpc::txlog {

// What a log holds: whose it is and which record types it may contain. Every log begins with
// a header record (type k_header_type: magic "TPCLOG", role, format version) written when the
// file is created and by every rewrite. A log without one was written before headers
// existed and is read as version 1 (it gets one at its next rewrite).
struct Format {
  uint8_t role = 0;            // 1 leader, 2 participant; 0: any (tests)
  std::vector<uint8_t> types;  // the record types of that role; empty: any (tests)
};
inline constexpr uint8_t k_header_type = 0x7F;
inline constexpr uint8_t k_format_version = 1;
std::string header_payload(uint8_t role);

class Log {
 public:
  using Done = std::function<void()>;
  // Writes `content` as the new whole log durably and returns the new file (see rewrite()).
  using Replace = std::function<std::unique_ptr<File>(const std::string& content)>;

  // Reads and scans `file`. A torn tail is truncated with a warning. Corruption in the middle,
  // a header of another role or format version, and a record of a type `format` does not
  // know all throw tpc::Error naming `name` (and the offset). Recovered records, without the
  // header, go to *recovered. An empty file gets a durable header first.
  static std::unique_ptr<Log> open(std::unique_ptr<File> file, const std::string& name,
                                   std::vector<Record>* recovered, const Format& format = {});
  ~Log();  // drains queued appends, then joins the writer thread

  void append(uint8_t type, std::string payload, bool force, Done done = {});
  // Like a forced append, `done` runs only once the record is durable, but the record does not
  // cause an fdatasync of its own: it rides on the next forced append's, or on one made after
  // `lazy_window_us` if none comes. Under load this makes it free.
  void append_lazy(uint8_t type, std::string payload, Done done);
  static constexpr int64_t lazy_window_us = 1000;
  // Compaction: after every append queued before this call, replaces the whole log with
  // `live` through `replace` (temp file + fsync + rename + directory fsync), then continues
  // on the new file. `done` runs once the new file is in place.
  void rewrite(std::vector<Record> live, Replace replace, Done done = {});
  // The Replace of a log kept in the file at `path`: temp file, fsync, rename, directory fsync,
  // then the new file opened for appending.
  static Replace replace_file(const std::string& path);

  // True when the log has outgrown `threshold` bytes and also twice what the last rewrite
  // left (so a log whose live records alone pass the threshold is not rewritten on every
  // append), and no rewrite is queued.
  bool wants_rewrite(uint64_t threshold) const;

  struct Stats {
    uint64_t records = 0;
    uint64_t syncs = 0;
    uint64_t bytes = 0;  // current file size
    uint64_t rewrites = 0;
  };
  Stats stats() const;
  // Told of each fdatasync from the writer thread (metrics): its duration and the records it
  // made durable. Set once; it must outlive the log.
  class SyncObserver {
   public:
    virtual ~SyncObserver() = default;
    virtual void synced(double seconds, size_t records) = 0;
  };
  void set_observer(SyncObserver* o) { m_observer.store(o); }

 private:
  Log(std::unique_ptr<File> file, std::string name, Format format);
  void run();
  struct Item;
  void enqueue(Item it);
  void fail(const char* what, int err);
  struct Item {
    std::string bytes;
    bool force = false;
    bool lazy = false;
    Done done;
    bool is_rewrite = false;
    std::vector<Record> live;
    Replace replace;
  };
  std::unique_ptr<File> m_file;  // used by the writer thread only after construction
  std::string m_name;
  Format m_format;
  int m_synced_fd = -1;  // TPC_TEST_RECORD_SYNCED: where the synced length goes
  void record_synced() { record_synced(m_file->size()); }
  void record_synced(uint64_t bytes);
  mutable std::mutex m_mutex;
  std::atomic<SyncObserver*> m_observer{nullptr};
  std::condition_variable m_cv;
  std::deque<Item> m_queue;
  bool m_stopping = false;
  Stats m_stats;
  bool m_rewrite_queued = false;
  uint64_t m_bytes_after_rewrite = 0;
  std::thread m_thread;
};

}  // namespace tpc::txlog
