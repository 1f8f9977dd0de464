// tpc client restore DIR: a backup (tpc client backup) written into a new cluster through its
// leader, whatever that cluster's participants, their addresses, their order and its replica
// count (docs/operations.md). The copies are read as they are (never changed); each key is
// written once, the first copy that holds it giving its value: every copy holds the same
// transactions (the backup point), so the copies of a key agree. The copies are merged in key
// order, so memory does not grow with the number of keys.
#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <thread>

#include <fmt/format.h>

#include "client/client.h"
#include "client/connection.h"
#include "common/util.h"
#include "protocol/codec.h"
#include "protocol/messages.h"
#include "protocol/ops.h"

namespace fs = std::filesystem;

namespace tpc::client {

namespace {
// A batch: at most this many keys, and this many raw bytes of keys and values (escaped, at
// most three bytes a byte: well under the default 1 MiB line).
constexpr size_t k_batch_keys = 500;
constexpr size_t k_batch_bytes = 192 * 1024;

// One participant's copy (DIR/participant-N/data.db), read in key order without touching it.
class Copy {
 public:
  explicit Copy(const std::string& path) : m_path(path) {
    std::string uri = "file:" + path + "?immutable=1";
    if (sqlite3_open_v2(uri.c_str(), &m_db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(m_db, "SELECT key, value FROM kv ORDER BY key", -1, &m_rows, nullptr) !=
            SQLITE_OK)
      m_error = m_db ? sqlite3_errmsg(m_db) : "out of memory";
  }
  ~Copy() {
    sqlite3_finalize(m_rows);
    sqlite3_close(m_db);
  }
  Copy(const Copy&) = delete;
  const std::string& error() const { return m_error; }
  // The next key and value; false at the end, or on an error (then error() says it).
  bool next(std::string& key, std::string& value) {
    int rc = sqlite3_step(m_rows);
    if (rc == SQLITE_DONE) return false;
    if (rc != SQLITE_ROW) {
      m_error = sqlite3_errmsg(m_db);
      return false;
    }
    auto blob = [&](int col) {
      const char* p = static_cast<const char*>(sqlite3_column_blob(m_rows, col));
      return std::string(p ? p : "", static_cast<size_t>(sqlite3_column_bytes(m_rows, col)));
    };
    key = blob(0);
    value = blob(1);
    return true;
  }

 private:
  std::string m_path, m_error;
  sqlite3* m_db = nullptr;
  sqlite3_stmt* m_rows = nullptr;
};

// The lines of DIR/manifest that start with `word`, without it.
std::vector<std::string> manifest_lines(const std::string& text, const std::string& word) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(at, end - at);
    if (line.rfind(word + " ", 0) == 0) out.push_back(line.substr(word.size() + 1));
    at = end + 1;
  }
  return out;
}
}  // namespace

int run_restore(const Options& o, const std::string& dir, bool force, std::ostream& out,
                std::ostream& err) {
  int64_t t0 = now_ms();
  std::string manifest;
  {
    std::ifstream in(dir + "/manifest", std::ios::binary);
    manifest.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (manifest.rfind("# tpc backup\n", 0) != 0) {
    err << "restore: " << dir << " is not a backup (no DIR/manifest that tpc client backup "
        << "wrote)\n";
    return k_usage;
  }
  // The copies: one per participant at the backup, as its manifest lists them.
  std::vector<std::string> copies;
  for (auto& line : manifest_lines(manifest, "participant")) {
    auto t = protocol::split(line);
    if (t.empty()) continue;
    std::string path = fmt::format("{}/participant-{}/data.db", dir, t[0]);
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      err << "restore: " << path << " is missing: the backup is incomplete\n";
      return k_usage;
    }
    copies.push_back(path);
  }
  if (copies.empty()) {
    err << "restore: the manifest of " << dir << " lists no participant\n";
    return k_usage;
  }
  auto cluster = manifest_lines(manifest, "cluster");
  std::string from = cluster.empty() ? "?" : cluster[0];

  auto leader = Connection::open(o.leader, 3000, "admin");
  if (!leader) {
    err << "restore: leader " << o.leader << ": " << leader.status().message() << "\n";
    return leader.status().code() == "CLUSTER" ? k_usage : k_unknown;
  }
  // A backup restores into a new cluster: one that holds keys would get old values back.
  auto first = leader->call(protocol::LineBuilder("SCAN").arg("").arg("").num(1).str(), 10000);
  auto page = protocol::parse_scan_reply(first);
  if (page.kind == protocol::ScanReply::error) {
    err << "restore: cannot read the cluster: " << protocol::display_text(page.detail) << "\n";
    return k_unknown;
  }
  if (!page.kvs.empty() && !force) {
    err << "restore: the cluster at " << o.leader
        << " holds keys (the first: " << protocol::escape_display(page.kvs[0].first)
        << "): a backup restores into a new, empty cluster (--force: into this one, e.g. to "
           "finish a restore that stopped part way)\n";
    return k_usage;
  }

  uint64_t keys = 0, bytes = 0, txns = 0;
  std::vector<Op> batch;
  size_t batch_bytes = 0;
  // Writes the batch as one transaction (asked again, under its request id, if the answer is
  // lost: never applied twice).
  auto flush = [&]() -> int {
    if (batch.empty()) return k_ok;
    std::string rid, line;
    auto fresh = [&] {  // the batch's request under a new id
      rid = new_request_id();
      protocol::LineBuilder b("TXN");
      b.raw(rid);
      protocol::append_ops(b, batch);
      line = b.str();
    };
    fresh();
    // Each batch has its own time (a restore of many keys takes as long as it takes).
    int64_t deadline = now_ms() + std::max(o.timeout_ms, 60000);
    for (int attempt = 0;; ++attempt) {
      if (now_ms() > deadline) {
        err << "restore: the leader did not take the keys in time; " << keys
            << " keys written so far: run it again with --force\n";
        return k_unknown;
      }
      if (!leader->is_open()) {
        auto c = Connection::open(o.leader, 3000, "admin");
        if (!c) {  // (a leader restarting refuses connections at once: not a busy loop)
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          continue;
        }
        *leader = std::move(*c);
      }
      auto r = leader->call(line, static_cast<int>(std::max<int64_t>(1, deadline - now_ms())), rid);
      if (!r) continue;  // lost: the same request again (its id makes it run once)
      auto res = protocol::parse_txn_reply(r);
      if (res.kind == protocol::TxnReply::committed) break;
      if (res.kind == protocol::TxnReply::aborted && res.code == "CONFLICT" && attempt < 20) {
        fresh();  // (a write by someone else meanwhile: this id is decided)
        continue;
      }
      err << "restore: a batch of " << batch.size() << " keys (from "
          << protocol::escape_display(batch.front().key) << ") was not written: " << *r << "; "
          << keys << " keys written so far\n";
      return res.kind == protocol::TxnReply::error && res.code == "TOOLONG" ? k_usage : k_unknown;
    }
    keys += batch.size();
    ++txns;
    batch.clear();
    batch_bytes = 0;
    return k_ok;
  };
  // The copies merged in key order (SQLite orders BLOB keys bytewise, as std::string does):
  // each key once, from the first copy (in the manifest's order) that holds it. Memory: one
  // row per copy, whatever the number of keys.
  struct Cursor {
    std::unique_ptr<Copy> copy;
    std::string key, value;
    bool live = false;
    uint64_t taken = 0;
  };
  std::vector<Cursor> cur(copies.size());
  auto advance = [&](size_t i) -> bool {
    cur[i].live = cur[i].copy->next(cur[i].key, cur[i].value);
    if (!cur[i].copy->error().empty()) {
      err << "restore: cannot read " << copies[i] << ": " << cur[i].copy->error() << "\n";
      return false;
    }
    return true;
  };
  for (size_t i = 0; i < copies.size(); ++i) {
    cur[i].copy = std::make_unique<Copy>(copies[i]);
    if (!advance(i)) return k_usage;
  }
  for (;;) {
    size_t first = SIZE_MAX;
    for (size_t i = 0; i < cur.size(); ++i)
      if (cur[i].live && (first == SIZE_MAX || cur[i].key < cur[first].key)) first = i;
    if (first == SIZE_MAX) break;
    std::string k = cur[first].key, v = std::move(cur[first].value);
    ++cur[first].taken;
    for (size_t i = 0; i < cur.size(); ++i)
      if (cur[i].live && cur[i].key == k && !advance(i)) return k_usage;
    if (!batch.empty() &&
        (batch.size() >= k_batch_keys || batch_bytes + k.size() + v.size() > k_batch_bytes))
      if (int rc = flush()) return rc;
    bytes += k.size() + v.size();
    batch_bytes += k.size() + v.size();
    batch.push_back(Op{OpKind::put, std::move(k), std::move(v)});
  }
  for (size_t i = 0; i < cur.size(); ++i)
    out << fmt::format("{}: {} keys (the others were in a copy listed before)\n", copies[i],
                       cur[i].taken);
  if (int rc = flush()) return rc;
  out << fmt::format(
      "restored {} keys ({} bytes) of cluster {} from {} copies in {} transactions, {} ms\n", keys,
      bytes, from, copies.size(), txns, now_ms() - t0);
  return k_ok;
}

}  // namespace tpc::client
