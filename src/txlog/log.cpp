#include "txlog/log.h"

#include <fcntl.h>
#include <unistd.h>
#include <algorithm>

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "common/failpoint.h"
#include "common/logging.h"

namespace tpc::txlog {

namespace {
constexpr std::string_view k_magic = "TPCLOG";
const char* role_name(uint8_t role) {
  return role == 1 ? "leader" : role == 2 ? "participant" : "node";
}
}  // namespace

std::string header_payload(uint8_t role) {
  return std::string(k_magic) + static_cast<char>(role) + static_cast<char>(k_format_version);
}

std::unique_ptr<Log> Log::open(std::unique_ptr<File> file, const std::string& name,
                               std::vector<Record>* recovered, const Format& format) {
  std::string image;
  if (int e = file->read_all(&image))
    throw Error(fmt::format("cannot read log {}: {}", name, std::strerror(e)));
  Recovery r = recover_image(image);
  if (!r.status)
    throw Error(
        fmt::format("log {} is {}; refusing to start: restore the file or move it aside "
                    "knowingly",
                    name, r.status.message()));
  if (r.tail == Recovery::zeros) {
    // Preallocated space after the last record: the normal state of the file.
    file->set_end(r.end);
  } else if (r.tail == Recovery::torn) {
    log::warn("log {}: dropping torn tail of {} bytes at offset {} (a write was cut short)", name,
              r.dropped, r.end);
    if (int e = file->truncate(r.end))
      throw Error(fmt::format("cannot truncate log {}: {}", name, std::strerror(e)));
  }
  // What a crashed process wrote may still sit in the page cache only: make it durable before
  // acting on it, or a power failure after the restart could take back a decision the node
  // already re-sent (PostgreSQL fsyncs its data directory after a crash for the same reason).
  if (r.end > 0)
    if (int e = file->sync())
      throw Error(fmt::format("cannot sync log {}: {}", name, std::strerror(e)));
  size_t first = 0;
  if (!r.records.empty() && r.records[0].type == k_header_type) {
    const std::string& h = r.records[0].payload;
    if (h.size() != k_magic.size() + 2 || h.compare(0, k_magic.size(), k_magic) != 0)
      throw Error(fmt::format("log {} has a damaged header; refusing to start", name));
    uint8_t role = static_cast<uint8_t>(h[k_magic.size()]);
    uint8_t version = static_cast<uint8_t>(h[k_magic.size() + 1]);
    if (version != k_format_version)
      throw Error(
          fmt::format("log {} is in format version {}; this tpc reads version {}. "
                      "Refusing to start: use the tpc that wrote it",
                      name, version, k_format_version));
    if (format.role && role != format.role)
      throw Error(fmt::format("log {} belongs to a {}, not a {}; refusing to start", name,
                              role_name(role), role_name(format.role)));
    first = 1;
  } else if (r.records.empty() && r.end == 0) {
    // A new log: its header goes first, durably.
    std::string h = frame(k_header_type, header_payload(format.role));
    int e = file->append(h.data(), h.size());
    if (!e) e = file->sync();
    if (e) throw Error(fmt::format("cannot write log {}: {}", name, std::strerror(e)));
  }
  for (size_t i = first; i < r.records.size(); ++i) {
    uint8_t t = r.records[i].type;
    bool known = format.types.empty() ||
                 std::find(format.types.begin(), format.types.end(), t) != format.types.end();
    if (!known || t == k_header_type)
      throw Error(
          fmt::format("log {} holds a record of unknown type {} at byte offset {} "
                      "(written by a newer tpc?); refusing to start",
                      name, t, r.offsets[i]));
  }
  recovered->assign(std::make_move_iterator(r.records.begin() + static_cast<long>(first)),
                    std::make_move_iterator(r.records.end()));
  std::unique_ptr<Log> log(new Log(std::move(file), name, format));
  log->m_stats.records = recovered->size();
  return log;
}

Log::Log(std::unique_ptr<File> file, std::string name, Format format)
    : m_file(std::move(file)), m_name(std::move(name)), m_format(std::move(format)) {
  if (std::getenv("TPC_TEST_RECORD_SYNCED"))
    m_synced_fd = ::open((m_name + ".synced").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  record_synced();  // open() made the whole file durable
  m_stats.bytes = m_file->size();
  m_thread = std::thread([this] { run(); });
}

void Log::record_synced(uint64_t bytes) {
  if (m_synced_fd < 0) return;
  std::string n = fmt::format("{:<20}\n", bytes);
  ssize_t w = ::pwrite(m_synced_fd, n.data(), n.size(), 0);
  (void)w;  // test instrumentation only
}

Log::~Log() {
  {
    std::lock_guard<std::mutex> g(m_mutex);
    m_stopping = true;
  }
  m_cv.notify_all();
  m_thread.join();
  if (m_synced_fd >= 0) ::close(m_synced_fd);
}

void Log::enqueue(Item it) {
  {
    std::lock_guard<std::mutex> g(m_mutex);
    m_queue.push_back(std::move(it));
  }
  m_cv.notify_one();
}

void Log::append(uint8_t type, std::string payload, bool force, Done done) {
  Item it;
  it.bytes = frame(type, payload);
  it.force = force;
  it.done = std::move(done);
  enqueue(std::move(it));
}

void Log::append_lazy(uint8_t type, std::string payload, Done done) {
  Item it;
  it.bytes = frame(type, payload);
  it.lazy = true;
  it.done = std::move(done);
  enqueue(std::move(it));
}

void Log::rewrite(std::vector<Record> live, Replace replace, Done done) {
  Item it;
  it.is_rewrite = true;
  it.live = std::move(live);
  it.replace = std::move(replace);
  it.done = std::move(done);
  {
    std::lock_guard<std::mutex> g(m_mutex);
    m_rewrite_queued = true;
  }
  enqueue(std::move(it));
}

Log::Replace Log::replace_file(const std::string& path) {
  return [path](const std::string& content) {
    write_file_atomic(path, content);
    return open_posix_file(path);
  };
}

bool Log::wants_rewrite(uint64_t threshold) const {
  std::lock_guard<std::mutex> g(m_mutex);
  return !m_rewrite_queued && m_stats.bytes >= threshold &&
         m_stats.bytes >= 2 * m_bytes_after_rewrite;
}

Log::Stats Log::stats() const {
  std::lock_guard<std::mutex> g(m_mutex);
  return m_stats;
}

void Log::fail(const char* what, int err) {
  fatal(fmt::format("log {}: {} failed: {}; the log's durable state is unknown", m_name, what,
                    std::strerror(err)));
}

void Log::run() {
  std::deque<Item> batch;
  std::string buf;
  std::vector<Done> dones;
  std::vector<Done> lazy;  // written, waiting for a sync to become durable
  bool unsynced = false;   // bytes written since the last sync
  size_t batch_records = 0;  // in the write the next sync makes durable
  auto do_sync = [&] {
    auto* seen = m_observer.load(std::memory_order_relaxed);
    auto t0 = seen ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    int e = failpoint::hit("txlog/sync");
    if (!e) e = m_file->sync();
    if (e) fail("fdatasync", e);
    if (seen)
      seen->synced(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                   batch_records);
    batch_records = 0;
    unsynced = false;
    record_synced();
    std::lock_guard<std::mutex> g(m_mutex);
    ++m_stats.syncs;
  };
  while (true) {
    {
      std::unique_lock<std::mutex> lk(m_mutex);
      auto ready = [&] { return m_stopping || !m_queue.empty(); };
      if (lazy.empty()) {
        m_cv.wait(lk, ready);
      } else if (!m_cv.wait_for(lk, std::chrono::microseconds(lazy_window_us), ready)) {
        // No forced append came along in time: sync for the lazy ones.
        lk.unlock();
        do_sync();
        for (auto& d : lazy) d();
        lazy.clear();
        continue;
      }
      if (m_queue.empty() && m_stopping) {
        lk.unlock();
        if (!lazy.empty()) {
          do_sync();
          for (auto& d : lazy) d();
        }
        return;
      }
      batch.swap(m_queue);
    }
    // Appends up to the next rewrite go out in one write and at most one fdatasync.
    while (!batch.empty()) {
      buf.clear();
      dones.clear();
      bool force = false;
      uint64_t n = 0;
      while (!batch.empty() && !batch.front().is_rewrite) {
        Item& it = batch.front();
        buf += it.bytes;
        force |= it.force;
        if (it.done) (it.lazy ? lazy : dones).push_back(std::move(it.done));
        ++n;
        ++batch_records;
        batch.pop_front();
      }
      if (!buf.empty()) {
        int e = failpoint::hit("txlog/write");
        if (!e) e = m_file->append(buf.data(), buf.size());
        if (e) fail("write", e);
        unsynced = true;
        if (force) do_sync();
        {
          std::lock_guard<std::mutex> g(m_mutex);
          m_stats.records += n;
          m_stats.bytes = m_file->size();
        }
        for (auto& d : dones) d();
        if (force) {
          for (auto& d : lazy) d();
          lazy.clear();
        }
      }
      if (!batch.empty() && batch.front().is_rewrite) {
        // Records written so far must be durable before the file is replaced (the new file
        // holds only the live ones; a lazy record's promise covers the old file).
        if (unsynced) do_sync();
        for (auto& d : lazy) d();
        lazy.clear();
        Item it = std::move(batch.front());
        batch.pop_front();
        std::string content = frame(k_header_type, header_payload(m_format.role));
        for (auto& r : it.live) content += frame(r.type, r.payload);
        // The file is about to be replaced by one synced whole: until the marker says its size,
        // it must not say less than either file holds (the old one is synced whole, just above;
        // a smaller marker would cut the new one if the process dies between the two).
        record_synced(std::max<uint64_t>(m_file->size(), content.size()));
        std::unique_ptr<File> next;
        try {
          next = it.replace(content);
        } catch (const std::exception& ex) {
          fatal(fmt::format("log {}: rewrite failed: {}", m_name, ex.what()));
        }
        m_file = std::move(next);
        record_synced();  // the replacement was synced whole
        {
          std::lock_guard<std::mutex> g(m_mutex);
          m_stats.records = it.live.size();
          m_stats.bytes = m_file->size();
          ++m_stats.rewrites;
          m_rewrite_queued = false;
          m_bytes_after_rewrite = m_stats.bytes;
        }
        if (it.done) it.done();
      }
    }
  }
}

}  // namespace tpc::txlog
