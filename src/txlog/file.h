// The outside world of the log: a file that can be appended to, forced, read and truncated.
// PosixFile is the real one; tests use MemFile (tests/unit) that can lose unsynced bytes or fail.
#pragma once
#include <memory>
#include <string>

#include "common/status.h"

namespace tpc::txlog {

class File {
 public:
  virtual ~File() = default;
  // Each returns 0 or an errno value. A failed append or sync leaves the file's durable
  // content unknown: the caller must stop (see Log).
  virtual int append(const char* data, size_t n) = 0;
  virtual int sync() = 0;                      // fdatasync
  virtual int read_all(std::string* out) = 0;  // whole content, from offset 0
  virtual int truncate(size_t size) = 0;       // and syncs
  // The logical end of the file is `size`; everything after it is zero (preallocated space):
  // the next append goes there.
  virtual void set_end(size_t size) = 0;
  virtual size_t size() const = 0;  // logical size
};

// Opens (creating if needed) `path` for appending; throws tpc::Error on failure. A newly
// created file is made durable with an fsync of its directory. The file grows in zero-filled
// chunks ahead of the appends, so that an fdatasync after an append flushes data only and
// does not have to commit a new file size to the filesystem journal.
std::unique_ptr<File> open_posix_file(const std::string& path);

// fsyncs the directory `dir`; returns 0 or errno.
int sync_dir(const std::string& dir);
// Writes `content` to `path` atomically: temp file, fsync, rename, directory fsync.
// Throws tpc::Error on failure.
void write_file_atomic(const std::string& path, const std::string& content);
// Creates `dir` and its parents if missing; throws tpc::Error on failure.
void make_dirs(const std::string& dir);

}  // namespace tpc::txlog
