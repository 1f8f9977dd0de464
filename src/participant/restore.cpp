#include "participant/restore.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <ostream>

#include <fmt/format.h>

#include "client/connection.h"
#include "common/util.h"
#include "node/identity.h"
#include "participant/core.h"
#include "protocol/messages.h"
#include "store/store.h"
#include "txlog/file.h"
#include "txlog/log.h"

namespace tpc::participant {

namespace fs = std::filesystem;

void require_empty_dir(const std::string& dir, const char* option) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  for (auto& e : fs::directory_iterator(dir, ec))
    if (e.path().filename() != "LOCK")
      throw Error(fmt::format("{} needs an empty data directory, and {} holds {} (another "
                              "node's data, or an unfinished restore): remove it, or choose "
                              "another --data-dir",
                              option, dir, e.path().filename().string()),
                  2);
}

namespace {

// A restore that fails leaves the directory as empty as it found it (a LOCK file aside):
// nothing is persisted by a command that then fails.
template <class F>
void all_or_nothing(const std::string& dir, F f) {
  try {
    f();
  } catch (...) {
    std::error_code ec;
    for (auto& e : fs::directory_iterator(dir, ec))
      if (e.path().filename() != "LOCK") fs::remove_all(e.path(), ec);
    throw;
  }
}

Result<std::string> call(client::Connection& c, const std::string& line) {
  auto r = c.call(line, 30000);
  if (!r) return r;
  if (r->rfind("ERR ", 0) == 0) return Status::error("REFUSED", *r);
  return r;
}

// Writes the copied transactions as PREPARED records, forced, into a new log.
void write_prepared(const std::string& dir, const std::map<std::string, protocol::Prepare>& txns) {
  std::vector<txlog::Record> ignored;
  auto log = txlog::Log::open(
      txlog::open_posix_file(dir + "/txlog"), dir + "/txlog", &ignored,
      log_format());
  std::promise<void> done;
  int64_t now = wall_ms();
  size_t left = txns.size();
  for (auto& [txid, m] : txns) {
    Prepared p;
    p.txid = txid;
    p.rid = m.rid;
    p.leader = m.leader;
    p.leader_addr = m.leader_addr;
    p.ops = m.ops;
    p.prepared_at_ms = now;
    bool last = --left == 0;
    log->append(k_rec_prepared, encode_prepared(p), true, [&done, last] {
      if (last) done.set_value();
    });
  }
  if (!txns.empty()) done.get_future().wait();
}

}  // namespace

namespace {
// Where a restore copies from: the cluster's membership as the named replica holds it, this
// participant's place in it, and a connection to every participant that shares its keys.
struct Sources {
  node::Membership membership;
  size_t slot = 0;
  std::vector<std::string> addrs;
  std::vector<client::Connection> conns;
};

Sources open_sources(const Config& cfg, const std::string& source) {
  auto conn = client::Connection::open(source, 5000, "participant");
  if (!conn) throw Error(fmt::format("--restore-from {}: {}", source, conn.status().message()), 4);
  auto m = call(*conn, "MEMBERSHIP");
  if (!m) throw Error(fmt::format("--restore-from {}: {}", source, m.status().message()), 4);
  auto tokens = protocol::split(*m);
  tokens[0] = "JOIN";
  auto membership = node::decode_join(tokens);
  if (!membership)
    throw Error(fmt::format("--restore-from {}: unreadable membership: {}", source,
                            membership.status().message()));
  const auto& members = membership->members;
  size_t slot = members.size();
  for (size_t i = 0; i < members.size(); ++i)
    if (members[i].id == cfg.id) slot = i;
  if (slot == members.size())
    throw Error(fmt::format("the cluster {} knows no participant with --id {}: check --id",
                            membership->cluster, cfg.id),
                2);
  if (members[slot].node.empty())
    throw Error(fmt::format("participant {} was never admitted to the cluster: start it without "
                            "--restore-from",
                            cfg.id),
                2);
  size_t n = members.size();
  size_t replicas = membership->replicas == 0 ? n : membership->replicas;
  if (replicas == 1)
    throw Error(fmt::format("the cluster keeps one copy of each key (--replicas 1): no other "
                            "replica holds participant {}'s keys, so it cannot be rebuilt from a "
                            "replica; restore it from a backup (--restore-backup)",
                            cfg.id),
                2);
  if (slot == membership->slot)
    throw Error(fmt::format("{} is participant {} itself: name a live replica", source, cfg.id), 2);
  // Every other participant that shares keys with this one. With every key on every
  // participant, the one named is enough; otherwise each holds a part, and all are needed.
  Sources src;
  src.addrs.push_back(source);
  if (replicas < n)
    for (size_t i = 0; i < n; ++i)
      if (i != slot && i != membership->slot) src.addrs.push_back(members[i].addr);
  src.conns.push_back(std::move(*conn));
  for (size_t i = 1; i < src.addrs.size(); ++i) {
    auto c = client::Connection::open(src.addrs[i], 5000, "participant");
    if (!c)
      throw Error(fmt::format("participant {} shares keys with {} and is unreachable ({}): with "
                              "--replicas {} every other participant must be up to rebuild one",
                              src.addrs[i], cfg.id, c.status().message(), replicas),
                  4);
    src.conns.push_back(std::move(*c));
  }
  for (auto& c : src.conns) c.set_max_message(2 * cfg.max_message + 1024);
  src.membership = std::move(*membership);
  src.slot = slot;
  return src;
}

// The transactions the sources hold prepared on this participant's keys (each once, with the
// ops of every source).
std::map<std::string, protocol::Prepare> fetch_prepared(Sources& src) {
  std::map<std::string, protocol::Prepare> prepared;
  for (size_t i = 0; i < src.conns.size(); ++i) {
    auto r = call(src.conns[i], fmt::format("SNAPSHOT {} prepared", src.slot));
    if (!r) throw Error(fmt::format("{}: {}", src.addrs[i], r.status().message()), 4);
    auto t = protocol::split(*r);
    auto count = t.size() >= 2 && t[0] == "PREPARED" ? parse_int(t[1]) : std::nullopt;
    if (!count || t.size() != 2 + static_cast<size_t>(*count))
      throw Error(fmt::format("{}: bad SNAPSHOT reply", src.addrs[i]));
    for (size_t k = 2; k < t.size(); ++k) {
      auto line = protocol::unescape(t[k]);
      auto p = line ? protocol::decode_prepare(protocol::split(*line))
                    : Result<protocol::Prepare>(line.status());
      if (!p)
        throw Error(
            fmt::format("{}: bad prepared transaction: {}", src.addrs[i], p.status().message()));
      auto [it, fresh] = prepared.try_emplace(p->txid, *p);
      if (!fresh)  // ops on keys both sources own arrive twice
        for (auto& op : p->ops)
          if (std::find(it->second.ops.begin(), it->second.ops.end(), op) == it->second.ops.end())
            it->second.ops.push_back(op);
    }
  }
  return prepared;
}

// Every key of this participant, page by page from each source, into the store (made
// durable); returns the bytes of keys and values copied.
uint64_t copy_keys(Sources& src, store::SqliteStore& st) {
  uint64_t bytes = 0;
  for (size_t i = 0; i < src.conns.size(); ++i) {
    std::string after;
    for (bool more = true; more;) {
      auto r = call(src.conns[i], protocol::LineBuilder("SNAPSHOT")
                                      .num(static_cast<long long>(src.slot))
                                      .raw("keys")
                                      .arg(after)
                                      .str());
      if (!r) throw Error(fmt::format("{}: {}", src.addrs[i], r.status().message()), 4);
      auto t = protocol::split(*r);
      auto count = t.size() >= 4 && t[0] == "KEYS" ? parse_int(t[3]) : std::nullopt;
      auto cursor = t.size() >= 4 ? protocol::unescape(t[1]) : Result<std::string>(std::string());
      if (!count || !cursor || t.size() != 4 + 2 * static_cast<size_t>(*count))
        throw Error(fmt::format("{}: bad SNAPSHOT reply", src.addrs[i]));
      std::vector<Op> ops;
      for (size_t k = 4; k < t.size(); k += 2) {
        auto key = protocol::unescape(t[k]), value = protocol::unescape(t[k + 1]);
        if (!key || !value) throw Error(fmt::format("{}: bad SNAPSHOT reply", src.addrs[i]));
        bytes += key->size() + value->size();
        ops.push_back(Op{OpKind::put, std::move(*key), std::move(*value)});
      }
      if (!ops.empty()) {
        if (Status s = st.begin_batch(); !s) throw Error(s.to_string());
        if (Status s = st.apply("restore", ops); !s) throw Error(s.to_string());
        if (Status s = st.end_batch(); !s) throw Error(s.to_string());
      }
      after = *cursor;
      more = t[2] == "MORE";
    }
  }
  if (Status s = st.make_durable(); !s) throw Error(s.to_string());
  return bytes;
}
}  // namespace

void restore_from_replica(const Config& cfg, const std::string& source, std::ostream& out) {
  require_empty_dir(cfg.data_dir, "--restore-from");
  Sources src = open_sources(cfg, source);
  auto& membership = src.membership;
  const std::string replaced = membership.members[src.slot].node;
  out << fmt::format("restoring participant {} of cluster {} (replacing node {}) from {}\n", cfg.id,
                     membership.cluster, replaced, fmt::join(src.addrs, ", "))
      << std::flush;
  // Prepared state first: a transaction that commits while the keys are copied is then
  // either in the copied values or re-applied by its COMMIT (see restore.h).
  auto prepared = fetch_prepared(src);
  txlog::make_dirs(cfg.data_dir);
  lock_data_dir(cfg.data_dir);
  all_or_nothing(cfg.data_dir, [&] {
    uint64_t keys = 0, bytes = 0;
    {
      store::SqliteStore st(cfg.data_dir + "/data.db");
      bytes = copy_keys(src, st);
      keys = st.key_count();
    }
    write_prepared(cfg.data_dir, prepared);
    // The membership as this participant's own (its place, not the source's): the leader's
    // next JOIN must find the view it was admitted with (docs/identity.md).
    membership.slot = src.slot;
    txlog::write_file_atomic(cfg.data_dir + "/membership", node::encode_join(membership) + "\n");
    // Last: the identity. A restore cut short leaves a directory without one, which a plain
    // start turns into a new node that the leader refuses: never a half copy admitted.
    node::Identity id;
    id.role = "participant";
    id.cluster = membership.cluster;
    id.node = new_uuid();
    id.replaces = replaced;
    id.origin = "restore-from " + source;
    node::save_identity(cfg.data_dir, id);
    out << fmt::format(
               "restored {} keys ({} bytes) and {} prepared transactions; node {} "
               "replaces {}\n",
               keys, bytes, prepared.size(), id.node, id.replaces)
        << std::flush;
  });
}

}  // namespace tpc::participant

namespace tpc::participant {

void restore_from_backup(const Config& cfg, const std::string& backup_dir, std::ostream& out) {
  require_empty_dir(cfg.data_dir, "--restore-backup");
  std::string db = backup_dir + "/data.db";
  std::error_code ec;
  if (!fs::is_regular_file(db, ec))
    throw Error(fmt::format("--restore-backup: {} is not a participant's backup (no data.db); "
                            "name a DIR/participant-N that tpc client backup wrote",
                            backup_dir),
                2);
  txlog::make_dirs(cfg.data_dir);
  lock_data_dir(cfg.data_dir);
  all_or_nothing(cfg.data_dir, [&] {
    fs::copy_file(db, cfg.data_dir + "/data.db.tmp", fs::copy_options::overwrite_existing, ec);
    if (ec) throw Error(fmt::format("cannot copy {}: {}", db, ec.message()));
    uint64_t keys = 0;
    {
      // Opening it checks it is a database, and syncing it makes the copy durable.
      store::SqliteStore st(cfg.data_dir + "/data.db.tmp");
      if (Status s = st.make_durable(); !s) throw Error(s.to_string());
      keys = st.key_count();
    }
    fs::rename(cfg.data_dir + "/data.db.tmp", cfg.data_dir + "/data.db", ec);
    if (ec) throw Error(fmt::format("cannot rename the restored database: {}", ec.message()));
    for (auto* side : {"-wal", "-shm"}) fs::remove(cfg.data_dir + "/data.db.tmp" + side, ec);
    if (int e = txlog::sync_dir(cfg.data_dir); e != 0)
      throw Error(fmt::format("cannot sync {}: {}", cfg.data_dir, std::strerror(e)));
    // A backup restores into a new cluster: no cluster id yet (the first leader that admits it
    // gives one), a new node id, and where it came from.
    node::Identity id;
    id.role = "participant";
    id.node = new_uuid();
    id.origin = "backup " + backup_dir;
    node::save_identity(cfg.data_dir, id);
    out << fmt::format(
               "restored {} keys from {}; node {}, to be admitted by a new cluster's leader\n",
               keys, backup_dir, id.node)
        << std::flush;
  });
}

}  // namespace tpc::participant
