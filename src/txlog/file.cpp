#include "txlog/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

namespace tpc::txlog {
namespace {

std::string dir_of(const std::string& path) {
  auto p = std::filesystem::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

class PosixFile : public File {
 public:
  static constexpr size_t k_chunk = 4 << 20;  // preallocation step
  PosixFile(int fd, size_t size) : m_fd(fd), m_size(size), m_alloc(size) {}
  ~PosixFile() override { ::close(m_fd); }
  int append(const char* data, size_t n) override {
    if (m_size + n > m_alloc) {
      if (int e = extend(m_size + n)) return e;
    }
    if (int e = pwrite_all(data, n, m_size)) return e;
    m_size += n;
    return 0;
  }
  int sync() override { return ::fdatasync(m_fd) == 0 ? 0 : errno; }
  int read_all(std::string* out) override {
    out->clear();
    char buf[1 << 16];
    off_t off = 0;
    while (true) {
      ssize_t r = ::pread(m_fd, buf, sizeof buf, off);
      if (r < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (r == 0) return 0;
      out->append(buf, static_cast<size_t>(r));
      off += r;
    }
  }
  int truncate(size_t size) override {
    if (::ftruncate(m_fd, static_cast<off_t>(size)) != 0) return errno;
    m_size = m_alloc = size;
    return sync();
  }
  void set_end(size_t size) override { m_size = size; }
  size_t size() const override { return m_size; }

 private:
  int pwrite_all(const char* data, size_t n, size_t off) {
    while (n > 0) {
      ssize_t w = ::pwrite(m_fd, data, n, static_cast<off_t>(off));
      if (w < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      data += w;
      n -= static_cast<size_t>(w);
      off += static_cast<size_t>(w);
    }
    return 0;
  }
  // Writes zeros up to a chunk boundary past `need` (real zeros, not fallocate: writing into
  // unwritten extents would again change metadata at every fdatasync).
  int extend(size_t need) {
    size_t target = (need / k_chunk + 1) * k_chunk;
    static const std::string zeros(1 << 16, '\0');
    size_t off = m_alloc;
    while (off < target) {
      size_t n = std::min(zeros.size(), target - off);
      if (int e = pwrite_all(zeros.data(), n, off)) return e;
      off += n;
    }
    m_alloc = target;
    return 0;
  }
  int m_fd;
  size_t m_size;   // logical: end of the records
  size_t m_alloc;  // physical: end of the file
};

}  // namespace

std::unique_ptr<File> open_posix_file(const std::string& path) {
  bool existed = ::access(path.c_str(), F_OK) == 0;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw Error(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(fmt::format("cannot stat {}: {}", path, std::strerror(e)));
  }
  if (!existed) {
    if (::fsync(fd) != 0 || sync_dir(dir_of(path)) != 0) {
      ::close(fd);
      throw Error(fmt::format("cannot make {} durable: {}", path, std::strerror(errno)));
    }
  }
  return std::make_unique<PosixFile>(fd, static_cast<size_t>(st.st_size));
}

int sync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int rc = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return rc;
}

void write_file_atomic(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw Error(fmt::format("cannot create {}: {}", tmp, std::strerror(errno)));
  size_t off = 0;
  while (off < content.size()) {
    ssize_t w = ::write(fd, content.data() + off, content.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int e = errno;
      ::close(fd);
      throw Error(fmt::format("cannot write {}: {}", tmp, std::strerror(e)));
    }
    off += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(fmt::format("cannot fsync {}: {}", tmp, std::strerror(e)));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    throw Error(fmt::format("cannot rename {}: {}", tmp, std::strerror(errno)));
  if (int e = sync_dir(dir_of(path)))
    throw Error(fmt::format("cannot fsync directory of {}: {}", path, std::strerror(e)));
}

void make_dirs(const std::string& dir) {
  // Each directory made here is 0700, whatever the umask: it holds a node's data.
  std::filesystem::path p;
  for (auto& part : std::filesystem::path(dir)) {
    p /= part;
    if (::mkdir(p.c_str(), 0700) == 0) {
      if (::chmod(p.c_str(), 0700) != 0)
        throw Error(fmt::format("cannot chmod {}: {}", p.string(), std::strerror(errno)));
    } else if (errno != EEXIST) {
      throw Error(fmt::format("cannot create directory {}: {}", p.string(), std::strerror(errno)));
    }
  }
}

}  // namespace tpc::txlog
