#include "node/identity.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "common/util.h"
#include "protocol/codec.h"
#include "protocol/messages.h"
#include "tls/certs.h"
#include "txlog/file.h"

namespace tpc::node {

std::string encode(const Identity& id) {
  std::string s = "# tpc node identity: written when this directory was initialised; do not edit\n";
  s += fmt::format("format {}\nrole {}\ncluster {}\nnode {}\n", id.format, id.role,
                   id.cluster.empty() ? "-" : id.cluster, id.node);
  if (!id.replaces.empty()) s += "replaces " + id.replaces + "\n";
  s += "origin " + id.origin + "\n";
  return s;
}

Result<Identity> decode(const std::string& text) {
  Identity id;
  id.format = 0;
  id.origin.clear();
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto sp = line.find(' ');
    if (sp == std::string::npos) return Status::error("CORRUPT", "identity line without value");
    std::string k = line.substr(0, sp), v = line.substr(sp + 1);
    if (k == "format") {
      auto n = parse_int(v);
      if (!n || *n <= 0 || *n > 1000000)
        return Status::error("CORRUPT", "identity has a bad format version");
      id.format = static_cast<int>(*n);
    } else if (k == "role") {
      id.role = v;
    } else if (k == "cluster") {
      id.cluster = v == "-" ? "" : v;
    } else if (k == "node") {
      id.node = v;
    } else if (k == "replaces") {
      id.replaces = v;
    } else if (k == "origin") {
      id.origin = v;
    }
  }
  if (id.format == 0 || id.role.empty() || !is_uuid(id.node))
    return Status::error("CORRUPT", "identity lacks its format, role or node id");
  return id;
}

bool is_uuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (s[i] == '-')) return false;
    if (!dash && !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

bool has_identity(const std::string& dir) {
  std::error_code ec;
  return std::filesystem::exists(dir + "/identity", ec);
}

void save_identity(const std::string& dir, const Identity& id) {
  txlog::write_file_atomic(dir + "/identity", encode(id));
}

Identity open_identity(const std::string& dir, const std::string& role, const std::string& cluster,
                       const std::string& origin) {
  std::string path = dir + "/identity";
  std::ifstream in(path);
  if (!in) {
    Identity id;
    id.role = role;
    id.node = new_uuid();
    id.cluster = cluster.empty() && role == "leader" ? new_uuid() : cluster;
    id.origin = origin;
    save_identity(dir, id);
    return id;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  auto id = decode(ss.str());
  if (!id)
    throw Error(
        fmt::format("{} is damaged ({}); refusing to start: this node cannot tell which "
                    "cluster it belongs to",
                    path, id.status().message()));
  if (id->format > k_format)
    throw Error(fmt::format("{} was written by a newer tpc (data format {}; this binary reads up "
                            "to {}): run the newer binary",
                            dir, id->format, k_format),
                2);
  if (id->role != role)
    throw Error(fmt::format("{} is the data directory of a {}, not of a {}: use another "
                            "--data-dir",
                            dir, id->role, role),
                2);
  if (!cluster.empty() && !id->cluster.empty() && id->cluster != cluster)
    throw Error(
        fmt::format("{} belongs to cluster {}, not to --cluster-id {}", dir, id->cluster, cluster),
        2);
  return *id;
}

std::string hello_tokens(const Identity& me) {
  std::string s = fmt::format("cluster={} node={}", me.cluster.empty() ? "-" : me.cluster, me.node);
  if (!me.replaces.empty()) s += " replaces=" + me.replaces;
  return s;
}

Result<std::string> answer_hello(const Identity& me, const std::string& hello_line) {
  auto f = protocol::parse_fields(hello_line);
  auto it = f.find("cluster");
  if (it != f.end() && it->second != "-" && !me.cluster.empty() && it->second != me.cluster)
    return Status::error("CLUSTER", fmt::format("this {} belongs to cluster {}, not to cluster {} "
                                                "that the connecting node belongs to: the "
                                                "address names a node of another cluster",
                                                me.role, me.cluster, it->second));
  return hello_tokens(me);
}

Status check_cluster(const std::string& expected, const std::string& hello_reply,
                     const std::string& addr) {
  if (expected.empty()) return Status::ok();
  if (hello_reply.rfind("ERR CLUSTER", 0) == 0)
    return Status::error("CLUSTER", addr + " refused: " + protocol::rest_after(hello_reply, 2));
  auto f = protocol::parse_fields(hello_reply);
  auto it = f.find("cluster");
  std::string theirs = it == f.end() ? "(none: an older tpc?)" : it->second;
  if (theirs != expected)
    return Status::error("CLUSTER", fmt::format("{} belongs to cluster {}, not to cluster {}: "
                                                "it is a node of another cluster",
                                                addr, theirs, expected));
  return Status::ok();
}

}  // namespace tpc::node

namespace tpc::node {

std::string encode_join(const Membership& m) {
  protocol::LineBuilder b("JOIN");
  b.raw(m.cluster).num(static_cast<long long>(m.slot)).num(static_cast<long long>(m.replicas));
  b.num(static_cast<long long>(m.members.size()));
  for (auto& x : m.members)
    b.raw(x.addr).raw(x.id.empty() ? "-" : x.id).raw(x.node.empty() ? "-" : x.node);
  if (!m.store.empty()) b.raw("store=" + m.store);
  if (!m.placement.empty()) b.raw("members=" + protocol::escape(m.placement));
  protocol::append_epoch(b, m.epoch);
  return b.str();
}

Result<Membership> decode_join(std::vector<std::string_view> t) {
  const Status bad =
      Status::error("PROTO", "usage: JOIN CLUSTER SLOT REPLICAS N {ADDR ID NODE}...");
  if (t.size() < 5 || t[0] != "JOIN") return bad;
  Membership m;
  m.cluster = t[1];
  auto slot = parse_int(t[2]), replicas = parse_int(t[3]), n = parse_int(t[4]);
  if (!is_uuid(m.cluster) || !slot || !replicas || !n || *n < 1 || *n > 100000 || *slot < 0 ||
      *slot >= *n || *replicas < 0 || t.size() < 5 + 3 * static_cast<size_t>(*n) ||
      t.size() > 8 + 3 * static_cast<size_t>(*n))
    return bad;
  m.slot = static_cast<size_t>(*slot);
  m.replicas = static_cast<size_t>(*replicas);
  size_t end = 5 + 3 * static_cast<size_t>(*n);
  if (t.size() > end && t.back().substr(0, 6) == "epoch=") {
    auto e = protocol::parse_epoch(t.back());
    if (!e) return bad;
    m.epoch = *e;
    t.pop_back();
  }
  if (t.size() > end && t.back().substr(0, 8) == "members=") {
    auto line = protocol::unescape(t.back().substr(8));
    if (!line || line->empty()) return bad;
    m.placement = std::move(*line);
    t.pop_back();
  }
  if (t.size() > end + 1) return bad;
  if (t.size() == end + 1) {
    if (t[end].substr(0, 6) != "store=" || t[end].size() == 6) return bad;
    m.store = std::string(t[end].substr(6));
    if (m.store.substr(0, 5) != "etcd/" || !protocol::is_id(m.store.substr(5))) return bad;
  }
  for (size_t i = 5; i < end; i += 3) {
    Member x{std::string(t[i]), std::string(t[i + 1]), std::string(t[i + 2])};
    if (x.id == "-") x.id.clear();
    if (x.node == "-") x.node.clear();
    if (!x.node.empty() && !is_uuid(x.node)) return bad;
    m.members.push_back(std::move(x));
  }
  return m;
}

std::string view_difference(const Membership& admitted, const Membership& offered) {
  std::vector<std::string> diff;
  auto addrs = [](const Membership& m) {
    std::string s;
    for (auto& x : m.members) s += (s.empty() ? "" : ",") + x.addr;
    return s;
  };
  auto replicas = [](const Membership& m) {
    size_t n = m.members.size();
    return m.replicas == 0 || m.replicas >= n ? std::string("all") : std::to_string(m.replicas);
  };
  auto store = [](const Membership& m) {
    return m.store.empty() ? std::string("the leader's own log") : m.store;
  };
  if (admitted.cluster != offered.cluster)
    diff.push_back(fmt::format("cluster {}, not {}", offered.cluster, admitted.cluster));
  if (addrs(admitted) != addrs(offered)) {
    diff.push_back(fmt::format("--peers {}, not {}", addrs(offered), addrs(admitted)));
  } else {
    for (size_t i = 0; i < admitted.members.size(); ++i) {
      const auto &a = admitted.members[i], &o = offered.members[i];
      if (!a.id.empty() && !o.id.empty() && a.id != o.id)
        diff.push_back(fmt::format("participant {} has --id {}, not {}", a.addr, o.id, a.id));
    }
    if (admitted.slot != offered.slot)
      diff.push_back(
          fmt::format("this participant at place {}, not {}", offered.slot, admitted.slot));
  }
  if (replicas(admitted) != replicas(offered))
    diff.push_back(fmt::format("--replicas {}, not {}", replicas(offered), replicas(admitted)));
  if (admitted.store != offered.store)
    diff.push_back(fmt::format("decisions in {}, not in {}", store(offered), store(admitted)));
  std::string s;
  for (auto& d : diff) s += (s.empty() ? "" : "; ") + d;
  return s;
}

Result<membership::Membership> placement_of(const Membership& join) {
  if (join.placement.empty()) {
    std::vector<std::string> addrs;
    for (auto& x : join.members) addrs.push_back(x.addr);
    return membership::Membership::initial(addrs, join.replicas);
  }
  auto m = membership::decode(join.placement);
  if (!m) return m.status();
  if (m->size() != join.members.size())
    return Status::error("CORRUPT", fmt::format("the JOIN's membership has {} slots, its list {}",
                                                m->size(), join.members.size()));
  return m;
}

Status judge_join(const Identity& me, const Membership* admitted, uint64_t epoch,
                  const Membership& offered, const std::string& cert,
                  const std::vector<std::string>& cert_hosts, const std::string& advertise) {
  if (!me.cluster.empty() && offered.cluster != me.cluster)
    return Status::error("CLUSTER", fmt::format("this participant belongs to cluster {}, not {}",
                                                me.cluster, offered.cluster));
  // Only a leader whose view of the cluster is the one this participant was admitted with:
  // a stray leader (another --peers or --replicas, a stale configuration) is refused, and
  // serves no write.
  // A newer epoch than the admitted view's is a change of this cluster's membership (member
  // add, remove, replace): its addresses, places and replica count may differ; its cluster
  // and decision store not. (A view of no epoch is of a leader older than epochs: judged
  // whole.)
  std::optional<Membership> was;
  if (admitted) {
    was = *admitted;
    if (admitted->epoch > 0 && offered.epoch > admitted->epoch) {
      was->members = offered.members;
      was->slot = offered.slot;
      was->replicas = offered.replicas;
    }
  }
  if (was)
    if (std::string diff = view_difference(*was, offered); !diff.empty())
      return Status::error("VIEW", fmt::format("this participant was admitted to another view of "
                                               "the cluster; this leader says {}",
                                               diff));
  // Over TLS, the leader's certificate must name the host it advertises (where this
  // participant will ask it for outcomes), as a leader checks that a participant's names the
  // host it dialled: a leader certificate of another machine cannot pose as this cluster's.
  if (!cert.empty()) {
    std::string host;
    uint16_t port;
    if (!parse_host_port(advertise, &host, &port) || !tls::names_host(cert_hosts, host))
      return Status::error(
          "DENIED",
          fmt::format("the leader's certificate '{}' names {}, not the host it "
                      "advertises ({})",
                      cert, fmt::join(cert_hosts, ", "), advertise.empty() ? "none" : advertise));
  }
  // A leader whose membership is older than one this participant was given has not taken a
  // change another leader made (or its log is older than the cluster's): it must not use
  // this participant until it has.
  if (offered.epoch && offered.epoch < epoch)
    return Status::error("EPOCH", fmt::format("this participant was given membership epoch {}, "
                                              "the leader's is {}: it has not taken the newer "
                                              "membership",
                                              epoch, offered.epoch));
  if (offered.slot >= offered.members.size() || offered.members[offered.slot].node != me.node)
    return Status::error(
        "IDENTITY",
        fmt::format("the leader admits node {} at this place, not this node {}",
                    offered.slot < offered.members.size() ? offered.members[offered.slot].node
                                                          : std::string("none"),
                    me.node));
  return Status::ok();
}

}  // namespace tpc::node
