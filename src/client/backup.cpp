// tpc client backup DIR (docs/operations.md):
//   DIR/manifest              cluster id, time, replicas, participants in slot order, and the
//                             membership (MEMBERS: epoch, each slot's id, address, state)
//   DIR/participant-ID/data.db  that participant's store at the backup point
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>

#include <fmt/format.h>

#include "client/client.h"
#include "client/connection.h"
#include "common/util.h"
#include "node/stats.h"
#include "protocol/codec.h"
#include "protocol/messages.h"
#include "txlog/file.h"

namespace tpc::client {

namespace fs = std::filesystem;

namespace {
struct Part {
  std::string addr, id, dir;
  uint64_t bytes = 0, keys = 0;
  Connection conn;
};

// Every participant the leader lists, each up and connected as an admin; an exit code when
// one is not.
std::optional<int> open_parts(Connection& leader, std::vector<Part>& parts, std::ostream& err) {
  auto peers = leader.call("PEERS", 5000);
  if (!peers || peers->rfind("PEERS", 0) != 0) {
    err << "backup: the leader did not describe the cluster\n";
    return k_unknown;
  }
  for (auto& ps : protocol::parse_peers(*peers)) {
    if (ps.state != "up") {
      err << "backup: participant " << ps.addr << " is " << ps.state
          << "; every participant must be up for a backup\n";
      return k_unknown;
    }
    parts.push_back(Part{ps.addr, "", "", 0, 0, {}});
  }
  for (auto& p : parts) {
    auto c = Connection::open(p.addr, 3000, "admin");
    auto s = c ? c->call("STATS", 5000) : Result<std::string>(c.status());
    if (!s) {
      err << "backup: participant " << p.addr << ": " << s.status().message() << "\n";
      return k_unknown;
    }
    auto st = node::decode_stats(*s);
    if (!st) {
      err << "backup: participant " << p.addr << ": " << st.status().message() << "\n";
      return k_unknown;
    }
    p.id = st->id;
    p.conn = std::move(*c);
    p.conn.set_max_message(8 << 20);
  }
  return std::nullopt;
}

// The backup point: nothing in flight, new transactions held, every store copied where it is
// (BACKUP); then the cluster runs again. `pause_ms`: how long new transactions were held.
std::optional<int> copy_at_backup_point(Connection& leader, std::vector<Part>& parts,
                                        int64_t& pause_ms, std::ostream& err) {
  int64_t paused_at = now_ms();
  auto paused = leader.call("PAUSE 10000", 15000);
  auto resume = [&] { (void)leader.call("RESUME", 5000); };
  if (!paused || *paused != "OK") {
    bool denied = paused && paused->rfind("ERR DENIED", 0) == 0;
    if (!denied) resume();
    err << "backup: the leader could not pause: "
        << protocol::display_text(paused ? *paused : paused.status().message())
        << (denied ? " (a backup needs the admin role: tpc cert create-client NAME --role admin)"
                   : "")
        << "\n";
    return denied ? k_usage : k_unknown;
  }
  for (auto& p : parts) {
    auto r = p.conn.call("BACKUP", 60000);
    auto bt = r ? protocol::split(*r) : std::vector<std::string_view>{};
    auto bytes = bt.size() == 3 && bt[0] == "BACKUP" ? parse_int(bt[1]) : std::nullopt;
    auto keys = bt.size() == 3 ? parse_int(bt[2]) : std::nullopt;
    if (!bytes || !keys) {
      resume();
      if (r && r->rfind("ERR DENIED", 0) == 0) {
        err << "backup: participant " << p.addr << " refused: " << protocol::display_text(*r)
            << "\n";
        return k_usage;
      }
      err << "backup: participant " << p.addr
          << " could not copy its store: " << (r ? *r : r.status().message()) << "\n";
      return k_unknown;
    }
    p.bytes = static_cast<uint64_t>(*bytes);
    p.keys = static_cast<uint64_t>(*keys);
  }
  resume();
  pause_ms = now_ms() - paused_at;
  return std::nullopt;
}

// Fetches participant p's copy into DIR/participant-ID/data.db (durable before it is named
// so) with its info file, and drops the copy there.
std::optional<int> fetch_copy(Part& p, const std::string& dir, std::ostream& err) {
  p.dir = dir + "/participant-" + p.id;
  txlog::make_dirs(p.dir);
  std::string tmp = p.dir + "/data.db.part";
  {
    std::ofstream f(tmp, std::ios::binary);
    uint64_t off = 0;
    for (bool more = true; more;) {
      auto r = p.conn.call(fmt::format("FETCH {} {}", off, 256 << 10), 30000);
      auto ft = r ? protocol::split(*r) : std::vector<std::string_view>{};
      auto data = ft.size() == 3 && ft[0] == "DATA" ? protocol::unescape(ft[2])
                                                    : Result<std::string>(Status::error("X", ""));
      if (!data) {
        err << "backup: fetching from " << p.addr
            << " failed: " << (r ? r->substr(0, 200) : r.status().message()) << "\n";
        return k_unknown;
      }
      f.write(data->data(), static_cast<std::streamsize>(data->size()));
      off += data->size();
      more = ft[1] == "MORE";
    }
    if (!f || off != p.bytes) {
      err << "backup: the copy from " << p.addr << " is " << off << " bytes, expected " << p.bytes
          << "\n";
      return k_unknown;
    }
  }
  (void)p.conn.call("DROP", 5000);
  txlog::write_file_atomic(
      p.dir + "/info", fmt::format("participant {}\naddress {}\nkeys {}\nbytes {}\n", p.id, p.addr,
                                   p.keys, p.bytes));
  // Durable before it is named data.db.
  int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  bool synced = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!synced) {
    err << "backup: cannot sync " << tmp << "\n";
    return k_unknown;
  }
  std::error_code ec;
  fs::rename(tmp, p.dir + "/data.db", ec);
  if (ec) {
    err << "backup: " << ec.message() << "\n";
    return k_unknown;
  }
  return std::nullopt;
}
}  // namespace

int run_backup(const Options& o, const std::string& dir, std::ostream& out, std::ostream& err) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
    err << "backup: " << dir << " is not empty; name a new or empty directory\n";
    return k_usage;
  }
  int64_t t0 = now_ms();
  auto leader = Connection::open(o.leader, 3000, "admin");
  if (!leader) {
    err << "backup: leader " << o.leader << ": " << leader.status().message() << "\n";
    return leader.status().code() == "CLUSTER" ? k_usage : k_unknown;
  }
  auto stats = leader->call("STATS", 5000);
  if (!stats || stats->rfind("STATS ", 0) != 0) {
    err << "backup: the leader did not describe the cluster\n";
    return k_unknown;
  }
  auto lf = protocol::parse_fields(*stats);
  // The membership at the backup (MEMBERS: epoch, then each slot's id, address and state),
  // kept in the manifest: which place each copy held.
  auto members = leader->call("MEMBERS", 5000);
  if (!members || members->rfind("MEMBERS ", 0) != 0) {
    err << "backup: the leader did not describe its membership\n";
    return k_unknown;
  }
  std::vector<Part> parts;
  if (auto rc = open_parts(*leader, parts, err)) return *rc;
  int64_t pause_ms = 0;
  if (auto rc = copy_at_backup_point(*leader, parts, pause_ms, err)) return *rc;
  // The copies, fetched while the cluster runs again.
  txlog::make_dirs(dir);
  uint64_t total_keys = 0, total_bytes = 0;
  for (auto& p : parts) {
    if (auto rc = fetch_copy(p, dir, err)) return *rc;
    total_keys += p.keys;
    total_bytes += p.bytes;
    out << fmt::format("participant {} ({}): {} keys, {} bytes -> {}\n", p.id, p.addr, p.keys,
                       p.bytes, p.dir + "/data.db")
        << std::flush;
  }
  std::string manifest =
      fmt::format("# tpc backup\ncluster {}\ntaken_at_ms {}\nreplicas {}\n", lf["cluster"],
                  wall_ms(), lf["replicas"].empty() ? "0" : lf["replicas"]);
  for (auto& p : parts) manifest += fmt::format("participant {} {}\n", p.id, p.addr);
  manifest += "members " + members->substr(8) + "\n";
  txlog::write_file_atomic(dir + "/manifest", manifest);
  if (int e = txlog::sync_dir(dir); e != 0) {
    err << "backup: cannot sync " << dir << "\n";
    return k_unknown;
  }
  out << fmt::format(
      "backup of cluster {}: {} participants, {} keys, {} bytes in {} ms (new transactions "
      "paused {} ms) -> {}\n",
      lf["cluster"], parts.size(), total_keys, total_bytes, now_ms() - t0, pause_ms, dir);
  return k_ok;
}

}  // namespace tpc::client
