#include "leader/server.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "common/failpoint.h"
#include "common/logging.h"
#include "common/util.h"
#include "txlog/file.h"

namespace tpc::leader {

namespace asio = boost::asio;
using protocol::escape;
using protocol::LineBuilder;
using protocol::Reply;

namespace {
std::string read_small_file(const std::string& path, bool* exists) {
  std::ifstream in(path);
  *exists = static_cast<bool>(in);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

namespace {
bool is_wildcard(const std::string& host) {
  boost::system::error_code ec;
  auto a = asio::ip::make_address(host, ec);
  return !ec && a.is_unspecified();
}
}  // namespace

void validate(const Config& cfg, bool resolve) {
  if (cfg.peers.empty()) throw Error("--peers: at least one participant", 2);
  if (cfg.decision_store != "local") {
    if (auto eps = parse_decision_store(cfg.decision_store); !eps)
      throw Error(eps.status().message(), 2);
  }
  if (!protocol::is_id(cfg.cluster_name))
    throw Error("--cluster-name: letters, digits, - and _ only", 2);
  std::map<std::string, std::string> seen;  // "address port" -> the --peers entry naming it
  for (auto& p : cfg.peers) {
    std::string host;
    uint16_t port;
    if (!parse_host_port(p, &host, &port))
      throw Error(fmt::format("--peers: '{}' is not HOST:PORT with a port in 1..65535", p), 2);
    if (is_wildcard(host))
      throw Error(fmt::format("--peers: '{}' is a wildcard address, not a participant", p), 2);
    std::vector<std::string> addrs;
    if (!resolve) {
      addrs.push_back(host);
    } else {
      asio::io_context io;
      asio::ip::tcp::resolver r(io);
      boost::system::error_code ec;
      auto res = r.resolve(host, std::to_string(port), ec);
      if (ec || res.empty())
        throw Error(fmt::format("--peers: cannot resolve '{}': {}", host,
                                ec ? ec.message() : std::string("no address")),
                    2);
      for (auto& e : res) addrs.push_back(e.endpoint().address().to_string());
    }
    for (auto& a : addrs) {
      auto [it, fresh] = seen.emplace(a + " " + std::to_string(port), p);
      if (!fresh && it->second != p)
        throw Error(fmt::format("--peers: '{}' and '{}' are the same participant ({} port {}); "
                                "name each participant once",
                                it->second, p, a, port),
                    2);
      if (!fresh)
        throw Error(fmt::format("--peers: '{}' is named twice; name each participant once", p), 2);
    }
  }
  if (cfg.replicas > cfg.peers.size())
    throw Error(fmt::format("--replicas {} is more than the {} participants of --peers",
                            cfg.replicas, cfg.peers.size()),
                2);
  if (is_wildcard(cfg.bind) && cfg.advertise.empty())
    throw Error(fmt::format("--bind {} listens on every address, so the leader cannot tell "
                            "participants where to reach it: add --advertise HOST:PORT (an "
                            "address of this machine the participants can connect to)",
                            cfg.bind),
                2);
  if (!cfg.advertise.empty()) {
    std::string host;
    uint16_t port;
    if (!parse_host_port(cfg.advertise, &host, &port))
      throw Error(
          fmt::format("--advertise: '{}' is not HOST:PORT with a port in 1..65535", cfg.advertise),
          2);
    if (is_wildcard(host))
      throw Error(fmt::format("--advertise: '{}' is a wildcard address; participants need one "
                              "they can connect to",
                              cfg.advertise),
                  2);
  }
}

namespace {
std::vector<uint8_t> record_types() {
  std::vector<uint8_t> types;
  for (auto& [type, name] : k_records) types.push_back(type);
  return types;
}
}  // namespace

Server::Server(asio::io_context& io, Config cfg) : m_io(io), m_cfg(std::move(cfg)) {
  // Nothing is written before the configuration is known good and the port is ours.
  validate(m_cfg);
  m_host = std::make_unique<node::Host>(io, node::host_config("leader", m_cfg), m_ident,
                                        [this] { step(ev::Tick{}); });
  m_host->serve(verbs());
  txlog::make_dirs(m_cfg.data_dir);
  lock_data_dir(m_cfg.data_dir);
  // Everything that can refuse the directory is read first; then the writes.
  bool new_set = check_peers_file();
  load_pins();
  // Incarnation: bumped durably at every start, so transaction ids never repeat.
  if (m_cfg.advertise.empty()) m_cfg.advertise = host_port(m_cfg.bind, port());
  std::optional<EtcdDecisions::Startup> etcd_start;
  std::string store_members;
  DecisionStoreOptions dso;
  if (m_cfg.decision_store != "local") {
    // The incarnation and this leader's unfinished decisions come from etcd; nothing of
    // them is in the local log.
    dso.endpoints = *parse_decision_store(m_cfg.decision_store);
    dso.prefix = "/tpc/" + m_cfg.cluster_name + "/";
    dso.leader_id = m_cfg.id;
    dso.advertise = m_cfg.advertise;
    dso.lease_ttl_s = m_cfg.lease_ttl_s;
    dso.batch_wait_us = m_cfg.batch_wait_ms * 1000;
    adopt_cluster(dso);
    // The membership every leader works under: its first epoch comes with the cluster.
    store_members = claim_members(dso, m_cfg.peers, m_cfg.replicas);
    etcd_start = EtcdDecisions::open(dso);
    m_incarnation = etcd_start->incarnation;
  } else {
    bool exists;
    std::string inc = read_small_file(m_cfg.data_dir + "/incarnation", &exists);
    auto next = next_incarnation(exists ? std::optional<std::string>(inc) : std::nullopt);
    if (!next) throw Error(m_cfg.data_dir + "/" + next.status().message());
    m_incarnation = *next;
  }
  m_ident = node::open_identity(m_cfg.data_dir, "leader", m_cfg.cluster_id);
  if (new_set) txlog::write_file_atomic(m_cfg.data_dir + "/participants", peers_file_text());
  if (!etcd_start)
    txlog::write_file_atomic(m_cfg.data_dir + "/incarnation",
                             std::to_string(m_incarnation) + "\n");

  CoreConfig cc;
  cc.id = m_cfg.id;
  cc.incarnation = m_incarnation;
  cc.peers = m_cfg.peers;
  cc.replicas = m_cfg.replicas;
  cc.advertise = m_cfg.advertise;
  cc.prepare_timeout_ms = m_cfg.prepare_timeout_ms;
  cc.resend_ms = m_cfg.resend_interval_ms;
  cc.shared_store = etcd_start.has_value();
  cc.takeover_after_ms = m_cfg.takeover_after_ms;
  cc.exclude_after_ms = m_cfg.exclude_after_ms;
  cc.min_insync = static_cast<size_t>(m_cfg.min_insync);
  m_core = std::make_unique<Core>(std::move(cc));
  std::vector<txlog::Record> recovered;
  m_log = txlog::Log::open(txlog::open_posix_file(m_cfg.data_dir + "/txlog"),
                           m_cfg.data_dir + "/txlog", &recovered, txlog::Format{1, record_types()});
  for (auto& r : recovered) m_core->recover(r);
  if (etcd_start) {
    // The store's membership, not this log's (it is kept there, by compare-and-swap).
    if (auto m = membership::decode(store_members); !m || !is_successor(m_core->members(), *m))
      throw Error(fmt::format("decision store: the membership {}members is damaged or of "
                              "another participant set; refusing to start",
                              dso.prefix),
                  1);
    m_core->recover(txlog::Record{k_rec_membership, store_members});
    for (auto& [txid, payload] : etcd_start->decisions)
      m_core->recover(txlog::Record{k_rec_commit, payload});
    // Mismatches in etcd that this log lacks (a lost disk): kept as if recovered here.
    for (auto& payload : etcd_start->mismatches)
      if (auto m = decode_mismatch(payload);
          m && !m_core->mismatches().count({m->txid, m->part}) && m->part < m_cfg.peers.size())
        m_core->recover(txlog::Record{k_rec_heuristic, payload});
    dso.endpoints = etcd_start->endpoints;
    m_decisions = std::make_unique<EtcdDecisions>(io, dso, *etcd_start);
    m_decisions->set_preparing([this] { return m_core->preparing(); });
    m_decisions->on_health(
        [this](bool up) { asio::post(m_io, [this, up] { step(ev::StoreHealth{up}); }); });
    m_decisions->start();
    log::info("decision store: etcd at {}, prefix {}, lease {}; {} decisions to finish",
              m_cfg.decision_store, dso.prefix, etcd_start->lease,
              etcd_start->decisions.size());
  }
  m_exec = std::make_unique<Executor>(*m_core, static_cast<Io&>(*this), m_decisions.get());
  log::info("incarnation {}; recovered {} log records; {} committed transactions to finish",
            m_incarnation, recovered.size(), m_core->active());

  check_given_peers();
  sync_links();
  m_join_epoch = m_core->members().epoch;
  log::info("leader {} of cluster {} listening on {}:{}, {} participants, replicas {}, data in {}",
            m_cfg.id, m_ident.cluster, m_cfg.bind, port(), m_links.size(),
            m_cfg.replicas ? std::to_string(m_cfg.replicas) : std::string("all"), m_cfg.data_dir);
  if (m_host->metrics()) start_metrics(io);
  auto a = m_core->start(now_ms());
  m_exec->execute(a);
  // Several leaders: each confirms the membership in effect four times a lease (reads wait
  // for a confirmation younger than the lease).
  if (m_decisions)
    m_exec->poll_members(std::max<int64_t>(1, m_core->config().members_lease_ms / 4));
}

void Server::make_link(size_t p) {
  const std::string& addr = m_core->members().slots[p].addr;
  std::string host;
  uint16_t port = 0;
  if (!parse_host_port(addr, &host, &port))  // (checked by MEMBER ADD and REPLACE)
    log::error("participant {} has an unusable address '{}'", p, addr);
  std::string hello = fmt::format("HELLO {} leader {} {} advertise={}", protocol::k_version,
                                  m_cfg.id, node::hello_tokens(m_ident), m_cfg.advertise);
  auto link = std::make_shared<protocol::Link>(m_io, host, port, hello, m_cfg.max_message);
  link->set_tls(m_cfg.tls, "participant");
  // A link made anew for the slot (member replace) leaves the old one's callbacks unheard.
  std::weak_ptr<protocol::Link> weak = link;
  auto mine = [this, p, weak] { return p < m_links.size() && m_links[p] == weak.lock(); };
  link->on_up([this, p, mine] {
    if (!mine()) return;
    resend_joins();  // the membership may have changed while it joined
    step(ev::LinkUp{p, m_links[p]->peer_max_message()});
  });
  link->on_down([this, p, mine] {
    if (mine()) step(ev::LinkDown{p});
  });
  link->on_hello([this, p](const std::string& reply) { return admit(p, reply); });
  if (p < m_links.size()) {
    m_links[p] = link;
    m_link_addr[p] = addr;
  } else {
    m_links.push_back(link);
    m_link_addr.push_back(addr);
  }
  if (port) link->start();
}

void Server::sync_links() {
  const auto& mem = m_core->members();
  if (m_pins.size() < mem.size()) m_pins.resize(mem.size());
  if (m_join_gen.size() < mem.size()) m_join_gen.resize(mem.size(), 0);
  bool pins_changed = false;
  for (size_t p = 0; p < mem.size(); ++p) {
    const auto& slot = mem.slots[p];
    // A pin of the node at another address than the slot's: the slot was given a new node
    // (member replace; perhaps before a restart), admitted at its first contact.
    if (!m_pins[p].node.empty() && m_pins[p].addr.empty() && slot.addr == slot.name)
      m_pins[p].addr = slot.addr;  // (a file of an older version: admitted where it was made)
    if (!m_pins[p].node.empty() && !m_pins[p].addr.empty() && m_pins[p].addr != slot.addr) {
      log::info("participant {}: node {} at {} is no longer its node", p, m_pins[p].node,
                m_pins[p].addr);
      m_pins[p] = Pin{};
      pins_changed = true;
    }
    if (p >= m_links.size()) {
      make_link(p);
      if (slot.state == membership::State::removed) m_links[p]->stop();  // a placeholder
      continue;
    }
    if (slot.state == membership::State::removed) {
      // A removed participant is never contacted again.
      if (!m_links[p]->stopped()) m_links[p]->stop();
      continue;
    }
    if (m_link_addr[p] == slot.addr) continue;
    // Member replace: the slot's node is another one, at another address. The old node's
    // pin goes (the new one is admitted at its first contact).
    log::info("participant {}: its node is at {} now (was {})", p, slot.addr, m_link_addr[p]);
    auto old = m_links[p];
    make_link(p);
    old->stop();
    if (!m_pins[p].node.empty()) {
      m_pins[p] = Pin{};
      pins_changed = true;
    }
  }
  if (pins_changed) save_pins();
}

Server::~Server() { stop(); }

void Server::reload_tls(std::shared_ptr<const tls::Context> tls) {
  m_cfg.tls = tls;
  m_host->reload_tls(tls);
  for (auto& link : m_links) link->set_tls(tls, "participant");
}

void Server::stop() {
  if (m_host->stopped()) return;
  if (m_exec) m_exec->stop();
  m_host->stop();
  if (m_pause_watch) m_pause_watch->cancel();
  if (m_decisions) m_decisions->stop();
  for (auto& l : m_links) l->stop();
}

std::string Server::view_text() const {
  size_t n = m_cfg.peers.size();
  std::string view = "peers " + fmt::format("{}", fmt::join(m_cfg.peers, ",")) + "\nreplicas ";
  view += m_cfg.replicas == 0 || m_cfg.replicas >= n ? std::string("all")
                                                     : std::to_string(m_cfg.replicas);
  return view + "\n";
}

std::string Server::claim_members(const DecisionStoreOptions& dso,
                                  const std::vector<std::string>& peers, size_t replicas) const {
  return EtcdDecisions::claim_members(dso,
                                      membership::encode(membership::Membership::initial(
                                          peers, replicas, static_cast<size_t>(m_cfg.min_insync))));
}

void Server::adopt_cluster(const DecisionStoreOptions& dso) {
  // This directory's cluster (if it has one), else --cluster-id, else a new one: proposed to
  // the store, which keeps the first proposal it got. Every leader then runs under that.
  std::string local;
  if (node::has_identity(m_cfg.data_dir))
    local = node::open_identity(m_cfg.data_dir, "leader", "").cluster;
  std::string mine = !local.empty()              ? local
                     : !m_cfg.cluster_id.empty() ? m_cfg.cluster_id
                                                 : new_uuid();
  auto [cluster, view] = EtcdDecisions::claim_cluster(dso, mine, view_text());
  std::string where = fmt::format("the decision store ({}, {})", m_cfg.decision_store, dso.prefix);
  auto adopted = adopt_claim(local, m_cfg.cluster_id, view_text(), cluster, view);
  if (!adopted && adopted.status().code() == "VIEW" && m_given_peers.empty()) {
    // Another --peers than the cluster was made with: fine if it names the membership in
    // effect there (a leader added after member changes), as with a local log. The creation
    // set stays this leader's first placement.
    std::vector<std::string> made;
    std::optional<int64_t> replicas;
    for (auto& line : split_list(view, '\n')) {
      if (line.rfind("peers ", 0) == 0) made = split_list(line.substr(6), ',');
      if (line.rfind("replicas ", 0) == 0)
        replicas = line.substr(9) == "all" ? std::optional<int64_t>(0) : parse_int(line.substr(9));
    }
    if (!made.empty() && replicas && *replicas >= 0) {
      auto m = membership::decode(claim_members(dso, made, static_cast<size_t>(*replicas)));
      if (m && names_membership(*m, m_cfg.peers, static_cast<int64_t>(m_cfg.replicas))) {
        m_given_peers = std::move(m_cfg.peers);
        m_given_replicas = m_cfg.replicas;
        m_cfg.peers = std::move(made);
        m_cfg.replicas = *replicas;
        adopted = adopt_claim(local, m_cfg.cluster_id, view_text(), cluster, view);
      }
    }
  }
  if (!adopted && adopted.status().code() == "DIR")
    throw Error(fmt::format("this leader's data directory {} belongs to cluster {}, but {} holds "
                            "cluster {}: use the data directory of a leader of that cluster, "
                            "or another --cluster-name",
                            m_cfg.data_dir, local, where, cluster),
                2);
  if (!adopted && adopted.status().code() == "ID")
    throw Error(
        fmt::format("--cluster-id {}, but {} holds cluster {}", m_cfg.cluster_id, where, cluster),
        2);
  if (!adopted) {
    auto line = [](const std::string& v) {
      std::string s = v;
      std::replace(s.begin(), s.end(), '\n', ' ');
      while (!s.empty() && s.back() == ' ') s.pop_back();
      return s;
    };
    throw Error(fmt::format("the cluster {} in {} has {}; this leader was started with {}: "
                            "start it with the cluster's --peers and --replicas",
                            cluster, where, line(view), line(view_text())),
                2);
  }
  if (local.empty() && cluster != mine)
    log::info("adopting cluster {} from {} (another leader created it first)", cluster, where);
  m_cfg.cluster_id = cluster;
}

std::string Server::peers_file_text() const {
  std::string want;
  for (auto& p : m_cfg.peers) want += p + "\n";
  want += "replicas " + std::to_string(m_cfg.replicas) + "\n";
  return want;
}

bool Server::check_peers_file() {
  // The set the cluster was made with decides the first placement: never another --peers.
  std::string want = peers_file_text();
  bool exists;
  std::string have = read_small_file(m_cfg.data_dir + "/participants", &exists);
  if (!exists) return true;
  if (have == want) return false;
  std::vector<std::string> peers;
  std::optional<int64_t> replicas;
  for (auto& line : split_list(have, '\n')) {
    if (line.rfind("replicas ", 0) == 0)
      replicas = parse_int(line.substr(9));
    else
      peers.push_back(line);
  }
  if (peers.empty() || !replicas || *replicas < 0)
    throw Error(fmt::format("{}/participants is damaged; refusing to start", m_cfg.data_dir));
  m_given_peers = std::move(m_cfg.peers);
  m_given_replicas = m_cfg.replicas;
  m_cfg.peers = std::move(peers);
  m_cfg.replicas = *replicas;
  return false;
}

namespace {
// The addresses of the participants in `mem` (removed ones left out), in slot order.
std::vector<std::string> member_addrs(const membership::Membership& mem) {
  std::vector<std::string> now;
  for (auto& s : mem.slots)
    if (s.state != membership::State::removed) now.push_back(s.addr);
  return now;
}
}  // namespace

bool Server::names_membership(const membership::Membership& mem,
                              const std::vector<std::string>& peers, int64_t replicas) {
  auto now = member_addrs(mem);
  bool same_replicas = replicas == 0 ? mem.replicas == 0 || mem.replicas >= now.size()
                                     : static_cast<size_t>(replicas) == mem.replicas;
  return peers == now && same_replicas;
}

void Server::check_given_peers() {
  const auto& mem = m_core->members();
  auto now = member_addrs(mem);
  bool changed = now != m_cfg.peers;
  if (!m_given_peers.empty()) {
    // Another --peers than the cluster was made with: fine if it names the membership in
    // effect (an operator who followed the changes), else a mistake.
    if (!names_membership(mem, m_given_peers, m_given_replicas))
      throw Error(fmt::format(
          "--peers {} --replicas {} name a different participant set than this cluster was "
          "made with ({}, replicas {}; {}/participants) and than its membership in effect "
          "(epoch {}: {}): keys would be looked up in the wrong place; start with either, or a "
          "new --data-dir",
          fmt::join(m_given_peers, ","), m_given_replicas, fmt::join(m_cfg.peers, ","),
          m_cfg.replicas, m_cfg.data_dir, mem.epoch, fmt::join(now, ",")));
    return;
  }
  if (changed)
    log::warn(
        "--peers is outdated: the membership in effect (epoch {}) is {}. --peers only "
        "makes a cluster; the membership is used (tpc client members)",
        mem.epoch, fmt::join(now, ","));
}

// DIR/members: one line per participant admitted so far, "SLOT ID NODE-ID ADDRESS", in slot
// order (files of older versions lack ADDRESS).
void Server::load_pins() {
  m_pins.assign(m_cfg.peers.size(), Pin{});
  bool exists;
  std::string text = read_small_file(m_cfg.data_dir + "/members", &exists);
  if (!exists) return;
  for (auto& line : split_list(text, '\n')) {
    if (line[0] == '#') continue;
    auto t = protocol::split(line);
    auto slot = t.size() == 3 || t.size() == 4 ? parse_int(t[0]) : std::nullopt;
    if (!slot || *slot < 0 || static_cast<size_t>(*slot) >= membership::k_max_slots ||
        !node::is_uuid(std::string(t[2])))
      throw Error(
          fmt::format("{}/members is damaged at '{}'; refusing to start", m_cfg.data_dir, line));
    // (Slots past --peers: participants added since the cluster was made.)
    if (static_cast<size_t>(*slot) >= m_pins.size()) m_pins.resize(static_cast<size_t>(*slot) + 1);
    m_pins[static_cast<size_t>(*slot)] =
        Pin{std::string(t[1]), std::string(t[2]), t.size() == 4 ? std::string(t[3]) : ""};
  }
}

void Server::save_pins() {
  ++m_pins_gen;
  std::string text = "# participants admitted by this leader: slot, --id, node id, address\n";
  for (size_t p = 0; p < m_pins.size(); ++p)
    if (!m_pins[p].node.empty())
      text += fmt::format("{} {} {} {}\n", p, m_pins[p].id, m_pins[p].node, m_pins[p].addr);
  txlog::write_file_atomic(m_cfg.data_dir + "/members", text);
}

std::string Server::join_line(size_t p) const {
  node::Membership m;
  m.cluster = m_ident.cluster;
  m.slot = p;
  const auto& members = m_core->members();
  m.replicas = members.replicas;
  for (size_t i = 0; i < members.size(); ++i) {
    Pin pin = i < m_pins.size() ? m_pins[i] : Pin{};  // (a slot added: its link comes next)
    m.members.push_back({members.slots[i].addr, pin.id, pin.node});
  }
  if (m_cfg.decision_store != "local") m.store = "etcd/" + m_cfg.cluster_name;
  m.epoch = members.epoch;
  if (!members.placed_by_address()) m.placement = membership::encode(members);
  return node::encode_join(m);
}

void Server::resend_joins() {
  // The membership changed: every admitted participant keeps the current one (a replacement
  // restored from it needs the node id it replaces). A link still joining gets it once up.
  for (size_t i = 0; i < m_links.size(); ++i)
    if (m_links[i]->up() && m_join_gen[i] != m_pins_gen) {
      m_join_gen[i] = m_pins_gen;
      m_links[i]->request(join_line(i), [](auto) {});
    }
}

Result<std::string> Server::admit(size_t p, const std::string& reply) {
  auto t = protocol::split(reply);
  auto f = protocol::parse_fields(reply);
  const std::string addr = m_core->members().slots[p].addr;
  std::string role(t[2]), pid(t[3]), node = f["node"], cluster = f["cluster"];
  if (role != "participant")
    return Status::error("IDENTITY",
                         fmt::format("{} is a {}, not a participant: fix --peers", addr, role));
  if (!node::is_uuid(node))
    return Status::error("IDENTITY", fmt::format("{} reports no node identity (a tpc older "
                                                 "than this leader?): upgrade it",
                                                 addr));
  if (!cluster.empty() && cluster != "-" && cluster != m_ident.cluster)
    return Status::error("CLUSTER",
                         fmt::format("{} belongs to cluster {}, this leader to cluster {}: "
                                     "--peers names a node of another cluster",
                                     addr, cluster, m_ident.cluster));
  Pin& pin = m_pins[p];
  if (pin.node != node) {
    // A first contact, or a new node in a pinned place: only a replacement restored from a
    // replica (it names the node it replaces) takes a pinned place.
    if (!pin.node.empty() && (f["replaces"] != pin.node || cluster != m_ident.cluster))
      return Status::error(
          "IDENTITY",
          fmt::format("participant {} at {} is node {}, but this cluster knows it as node {}: "
                      "its data directory was wiped, replaced or is another node's, so it lacks "
                      "writes it acknowledged. It is not used. Repair: stop it, remove its data "
                      "directory and start it with `tpc participant --id {} --port PORT "
                      "--data-dir DIR --restore-from HOST:PORT`, HOST:PORT a live participant "
                      "(docs/operations.md)",
                      pid, addr, node, pin.node, pin.id));
    if (pin.node.empty())
      log::info("participant {} at {} admitted to cluster {} as node {}", pid, addr,
                m_ident.cluster, node);
    else
      log::warn("participant {} at {}: node {} (restored from a replica) replaces node {}", pid,
                addr, node, pin.node);
    pin = Pin{pid, node, addr};
    save_pins();
    resend_joins();
  } else if (pin.id != pid) {
    return Status::error("IDENTITY",
                         fmt::format("{} was admitted as participant {} but now says it is "
                                     "participant {}: restart it with --id {}",
                                     addr, pin.id, pid, pin.id));
  }
  // JOIN CLUSTER SLOT REPLICAS N {ADDR ID NODE}: the participant joins the cluster (if new)
  // and keeps the membership, which a replacement restored from it needs (placement).
  m_join_gen[p] = m_pins_gen;
  return join_line(p);
}

void Server::start_metrics(boost::asio::io_context& io) {
  auto& m = *m_host->metrics();
  auto& r = m.registry;
  m.watch(*m_log);
  m.connections([this] { return static_cast<double>(m_host->connections()); });
  // Gauges and counters read the one snapshot taken at the scrape (STATS's).
  r.before_render([this] { m_scraped = stats(); });
  auto read = [this](int64_t node::Stats::*f) {
    return [this, f] { return static_cast<double>(m_scraped.*f); };
  };
  r.counter_fn("tpc_transactions_total", "Transactions ended, by outcome.",
               read(&node::Stats::committed), "outcome=\"committed\"");
  r.counter_fn("tpc_transactions_total", "Transactions ended, by outcome.",
               read(&node::Stats::aborted), "outcome=\"aborted\"");
  for (const char* code : {"CONFLICT", "CHECK", "TIMEOUT", "UNAVAILABLE", "DUPLICATE", "SETTLED",
                           "TOOLONG", ""})
    m_abort_reasons[code] =
        &r.counter("tpc_transaction_aborts_total",
                   "Transactions answered ABORTED, by reason (OTHER: any other code).",
                   fmt::format("reason=\"{}\"", *code ? code : "OTHER"));
  m_commit_seconds = &r.histogram("tpc_commit_seconds",
                                  "Request received to COMMITTED answered, at the leader.",
                                  metrics::latency_buckets());
  r.gauge("tpc_transactions_active", "Transactions collecting votes or finishing their commit.",
          read(&node::Stats::active));
  r.gauge("tpc_heuristic_mismatches",
          "Heuristic mismatches recorded and not yet forgotten (tpc client heuristics).",
          read(&node::Stats::heuristic));
  r.gauge("tpc_participants_up", "Participants this leader's links reach now.",
          read(&node::Stats::peers_up));
  const char* changes =
      "Membership changes: participants marked out, and back in-sync after a copy.";
  r.counter_fn("tpc_membership_changes_total", changes, read(&node::Stats::exclusions),
               "change=\"exclusion\"");
  r.counter_fn("tpc_membership_changes_total", changes, read(&node::Stats::rejoins),
               "change=\"rejoin\"");
  r.gauge("tpc_membership_epoch", "The membership's epoch in effect.", read(&node::Stats::epoch));
  for (auto [st, f] : {std::pair{membership::State::in_sync, &node::Stats::in_sync},
                       std::pair{membership::State::catching_up, &node::Stats::catching_up},
                       std::pair{membership::State::out, &node::Stats::out}})
    r.gauge("tpc_participants", "Participants by state in the membership.", read(f),
            fmt::format("state=\"{}\"", membership::name(st)));
  r.counter_fn("tpc_catchup_keys_total", "Keys copied to participants catching up.", [this] {
    return static_cast<double>(m_scraped.caught_up_keys + m_scraped.copying_keys);
  });
  r.counter_fn(
      "tpc_catchup_bytes_total", "Bytes of keys and values copied to participants catching up.",
      [this] { return static_cast<double>(m_scraped.caught_up_bytes + m_scraped.copying_bytes); });
  r.counter_fn("tpc_catchup_seconds_total",
               "Time spent by finished copies, from the start of "
               "a participant's catch-up to its in-sync change.",
               [this] { return static_cast<double>(m_scraped.catchup_ms) / 1000.0; });
  r.gauge("tpc_catchup_last_seconds", "How long the last finished copy took (-1: none yet).",
          [this] {
            auto ms = m_scraped.last_catchup_ms;
            return ms < 0 ? -1.0 : static_cast<double>(ms) / 1000.0;
          });
  if (m_decisions)
    r.gauge("tpc_decision_store_up", "1 while the etcd decision store answers and the lease holds.",
            [this] { return m_scraped.store == "up" ? 1.0 : 0.0; });
  m.serve(io, m_cfg.metrics_addr, [this] {
    return m_decisions && !m_decisions->healthy() ? std::string("decision store (etcd) unreachable")
                                                  : std::string();
  });
  log::info("metrics on http://{}/metrics", m_cfg.metrics_addr);
}

namespace {
void fail(const Reply& reply, const Status& s) {
  reply.send(LineBuilder("ERR").raw(s.code()).text(s.message()).str());
}
}  // namespace

node::Verb Server::data_verb(std::string_view name,
                             std::function<void(const node::Tokens&, Reply)> run) {
  return {name, "", false, [this, run = std::move(run)](const node::Tokens& t, Reply reply) {
            if (std::string why = view_refused(); !why.empty())
              return fail(reply, Status::error("VIEW",
                                               "this leader's view of the cluster is refused by "
                                               "participant " +
                                                   why + " (fix this leader's configuration)"));
            run(t, std::move(reply));
          }};
}

// The leader's verbs (docs/protocol.md). Anyone may send them but PAUSE, RESUME and FORGET,
// which are an operator's (role admin, docs/security.md).
std::vector<node::Verb> Server::verbs() {
  using node::Tokens;
  auto single = [this](std::string_view verb) {
    // PUT KEY VALUE and DEL KEY: a transaction of one op.
    return data_verb(verb, [this, verb](const Tokens& t, Reply reply) {
      bool put = verb == "PUT";
      if (t.size() != (put ? 3u : 2u))
        return fail(reply, Status::error("PROTO", put ? "usage: PUT KEY VALUE" : "usage: DEL KEY"));
      std::vector<std::string_view> ops_tokens{put ? "put" : "del"};
      ops_tokens.insert(ops_tokens.end(), t.begin() + 1, t.end());
      auto ops = protocol::parse_ops(ops_tokens, 0);
      if (!ops) return fail(reply, ops.status());
      step(ev::Txn{client(reply, true), "", std::move(*ops), false});
    });
  };
  return {
      single("PUT"),
      single("DEL"),
      data_verb("TXN",
                [this](const Tokens& t, Reply reply) {
                  if (t.size() < 3)
                    return fail(reply,
                                Status::error("PROTO", "usage: TXN RID|- [trace] OP [OP...]"));
                  std::string rid = t[1] == "-" ? "" : std::string(t[1]);
                  if (!rid.empty())
                    if (Status s = protocol::check_request_id(rid); !s) return fail(reply, s);
                  bool want_trace = t[2] == "trace";
                  auto ops = protocol::parse_ops(t, want_trace ? 3 : 2);
                  if (!ops) return fail(reply, ops.status());
                  step(ev::Txn{client(reply, true), rid, std::move(*ops), want_trace});
                }),
      data_verb("GET",
                [this](const Tokens& t, Reply reply) {
                  auto r = protocol::decode_read(t);
                  if (!r)
                    return fail(reply, t.size() == 2 ? r.status()
                                                     : Status::error("PROTO", "usage: GET KEY"));
                  step(ev::Get{client(reply), std::move(r->key)});
                }),
      data_verb("SCAN",
                [this](const Tokens& t, Reply reply) {
                  // The participants' SCAN without MAX-BYTES: a page's keys and values, raw, in
                  // a quarter of a message, so that with the keys escaped (at most three bytes per
                  // byte) it fits a participant's reply and the reply to the client.
                  std::vector<std::string_view> args(t);
                  std::string bytes = std::to_string(std::max<size_t>(1, m_cfg.max_message / 4));
                  if (t.size() == 4) args.push_back(bytes);
                  auto m = protocol::decode_scan(args);
                  if (t.size() != 4 || !m)
                    return fail(reply,
                                Status::error("PROTO", fmt::format("usage: SCAN PREFIX AFTER LIMIT "
                                                                   "(LIMIT 1 to {}; \"\" for none)",
                                                                   protocol::k_max_scan_limit)));
                  step(ev::Scan{client(reply), std::move(m->prefix), std::move(m->after), m->limit,
                                m->max_bytes});
                }),
      {"RESULT", "", false,
       [this](const Tokens& t, Reply reply) {
         if (t.size() != 2) return fail(reply, Status::error("PROTO", "usage: RESULT RID"));
         if (Status s = protocol::check_request_id(t[1]); !s) return fail(reply, s);
         step(ev::Result{client(reply), std::string(t[1])});
       }},
      {"OUTCOME", "", false,
       [this](const Tokens& t, Reply reply) {
         auto q = protocol::decode_outcome_query(t);
         if (!q) return fail(reply, q.status());
         // A report of an operator's outcome names its participant by the node id this leader
         // pinned for it: any other peer's report is answered, never recorded.
         size_t part = SIZE_MAX;
         if (q->heuristic && reply.peer().role == "participant" && !reply.peer().node.empty())
           for (size_t i = 0; i < m_pins.size(); ++i)
             if (m_pins[i].node == reply.peer().node) part = i;
         step(ev::Outcome{client(reply), std::move(q->txid), q->heuristic, std::move(q->rid), part,
                          q->held_ms});
       }},
      {"TRACE", "", false,
       [this](const Tokens& t, Reply reply) {
         if (t.size() != 2) return fail(reply, Status::error("PROTO", "usage: TRACE TXID"));
         on_trace(std::string(t[1]), reply, now_ms() + 3000);
       }},
      {"PEERS", "", false, [this](const Tokens&, Reply reply) { on_peers(reply); }},
      {"MEMBERS", "", false, [this](const Tokens&, Reply reply) { on_members(reply); }},
      {"HEURISTICS", "", false,
       [this](const Tokens& t, Reply reply) {
         if (t.size() != 1) return fail(reply, Status::error("PROTO", "usage: HEURISTICS"));
         on_heuristics(reply);
       }},
      {"STATS", "", false,
       [this](const Tokens&, Reply reply) { reply.send(node::encode(stats())); }},
      {"PAUSE", "admin", false,
       [this](const Tokens& t, Reply reply) {
         auto ms = t.size() == 2 ? parse_int(t[1]) : std::nullopt;
         if (!ms || *ms < 1 || *ms > 600000)
           return fail(reply, Status::error("PROTO", "usage: PAUSE MS (1 to 600000)"));
         bool was = m_core->paused();
         step(ev::Pause{client(reply), *ms});
         if (!was && m_core->paused()) watch_pause(reply);
       }},
      {"MEMBER", "admin", false,
       [this](const Tokens& t, Reply reply) {
         // MEMBER ADD ADDRESS | MEMBER REMOVE ID|ADDRESS | MEMBER REPLACE ID|ADDRESS ADDRESS
         // (docs/membership.md): answered once the change is done.
         const Status usage =
             Status::error("PROTO",
                           "usage: MEMBER ADD ADDRESS | MEMBER REMOVE ID|ADDRESS | MEMBER REPLACE "
                           "ID|ADDRESS NEW-ADDRESS");
         bool add = t.size() == 3 && t[1] == "ADD", remove = t.size() == 3 && t[1] == "REMOVE",
              replace = t.size() == 4 && t[1] == "REPLACE";
         if (!add && !remove && !replace) return fail(reply, usage);
         std::string addr(t.back());
         if (add || replace) {
           std::string host;
           uint16_t port;
           if (!parse_host_port(addr, &host, &port) || port == 0 || host == "0.0.0.0" ||
               host == "::" || host.empty())
             return fail(reply,
                         Status::error("PROTO", fmt::format("'{}' is not the HOST:PORT of a "
                                                            "participant",
                                                            protocol::escape_display(addr))));
         }
         if (add) return step(ev::Add{client(reply), addr});
         auto slot = slot_of(t[2]);
         // Asked again after the replace was made (the leader restarted): the ID's node is
         // gone, its slot is at the new address.
         if (!slot && replace) slot = slot_of(addr);
         if (!slot)
           return fail(
               reply,
               Status::error("NOTFOUND", fmt::format("no participant has id or "
                                                     "address {}",
                                                     protocol::escape_display(std::string(t[2])))));
         if (replace) return step(ev::Replace{client(reply), *slot, addr});
         step(ev::Remove{client(reply), *slot});
       }},
      {"RESUME", "admin", false,
       [this](const Tokens&, Reply reply) { step(ev::Resume{client(reply)}); }},
      {"FORGET", "admin", false,
       [this](const Tokens& t, Reply reply) {
         auto txid = protocol::decode_txid_arg(t);
         if (!txid) return fail(reply, Status::error("PROTO", "usage: FORGET TXID"));
         step(ev::Forget{client(reply), std::move(*txid)});
       }},
  };
}

std::optional<size_t> Server::slot_of(std::string_view who) const {
  // An id names the participant admitted at a slot; an address names the slot itself.
  const auto& mem = m_core->members();
  for (size_t p = 0; p < m_pins.size(); ++p)
    if (!m_pins[p].id.empty() && m_pins[p].id == who) return p;
  for (size_t p = 0; p < mem.size(); ++p)
    if (mem.slots[p].addr == who) return p;
  return std::nullopt;
}

void Server::on_peers(Reply reply) {
  // PEERS {ADDR up|down|refused[ REASON]}
  LineBuilder b("PEERS");
  for (auto& l : m_links) {
    if (l->stopped()) continue;  // a removed participant's
    b.raw(l->address()).raw(l->up() ? "up" : l->refused().empty() ? "down" : "refused");
    if (!l->up() && !l->refused().empty()) b.arg(l->refused());
  }
  reply.send(b.str());
}

void Server::on_members(Reply reply) {
  // MEMBERS EPOCH {ID ADDR STATE}: the membership in effect (docs/membership.md).
  const auto& mem = m_core->members();
  LineBuilder b("MEMBERS");
  b.num(static_cast<long long>(mem.epoch));
  for (size_t p = 0; p < mem.size(); ++p)
    b.raw(p >= m_pins.size() || m_pins[p].id.empty() ? std::string("-") : m_pins[p].id)
        .raw(mem.slots[p].addr)
        .raw(membership::name(mem.slots[p].state));
  reply.send(b.str());
}

void Server::on_heuristics(Reply reply) {
  // HEURISTICS COUNT {TXID RID|- PARTICIPANT DECIDED THEIRS}
  LineBuilder b("HEURISTICS");
  b.num(static_cast<long long>(m_core->mismatches().size()));
  for (auto& [key, m] : m_core->mismatches())
    b.raw(m.txid)
        .raw(m.rid.empty() ? "-" : m.rid)
        .raw(m_core->members().slots.at(m.part).addr)
        .raw(m.decided_commit ? "commit" : "abort")
        .raw(m.their_commit ? "commit" : "abort");
  reply.send(b.str());
}

std::string Server::view_refused() const {
  for (size_t p = 0; p < m_links.size(); ++p) {
    const std::string& code = m_links[p]->refused_code();
    if (code == "VIEW" || code == "CLUSTER") return m_link_addr[p] + ": " + m_links[p]->refused();
  }
  return "";
}

void Server::watch_pause(Reply pauser) {
  // Every 50 ms while paused: a pause whose connection closed (a backup client that died, or
  // a stranger's) ends at once instead of holding every write until its deadline.
  if (!m_pause_watch) m_pause_watch = std::make_unique<asio::steady_timer>(m_io);
  m_pause_watch->expires_after(std::chrono::milliseconds(50));
  m_pause_watch->async_wait([this, pauser](boost::system::error_code ec) {
    if (ec || m_host->stopped() || !m_core->paused()) return;
    if (pauser.connected()) return watch_pause(pauser);
    log::warn("pause ended: the connection that asked for it ({}) closed", pauser.peer().address);
    step(ev::Resume{0});
  });
}

node::Stats Server::stats() {
  node::Stats s = m_host->stats();
  s.incarnation = static_cast<int64_t>(m_incarnation);
  s.replicas = static_cast<int64_t>(m_cfg.replicas);
  s.committed = static_cast<int64_t>(m_core->committed_count());
  s.aborted = static_cast<int64_t>(m_core->aborted_count());
  s.active = static_cast<int64_t>(m_core->active());
  s.heuristic = static_cast<int64_t>(m_core->mismatches().size());
  for (auto& l : m_links) {
    s.peers_up += l->up();
    s.peers += !l->stopped();
  }
  const auto& mem = m_core->members();
  s.epoch = static_cast<int64_t>(mem.epoch);
  s.in_sync = static_cast<int64_t>(mem.count(membership::State::in_sync));
  s.catching_up = static_cast<int64_t>(mem.count(membership::State::catching_up));
  s.out = static_cast<int64_t>(mem.count(membership::State::out));
  s.exclusions = static_cast<int64_t>(m_core->exclusions());
  s.rejoins = static_cast<int64_t>(m_core->rejoins());
  const auto& copied = m_core->catchup_totals();
  s.caught_up_keys = static_cast<int64_t>(copied.keys);
  s.caught_up_bytes = static_cast<int64_t>(copied.bytes);
  s.catchup_ms = copied.ms;
  s.last_catchup_ms = copied.last_ms;
  if (auto c = m_core->catching_up()) {
    s.copying_keys = static_cast<int64_t>(c->keys);
    s.copying_bytes = static_cast<int64_t>(c->bytes);
  }
  auto ls = m_log->stats();
  s.log_bytes = static_cast<int64_t>(ls.bytes);
  s.log_syncs = static_cast<int64_t>(ls.syncs);
  s.decisions = m_decisions ? "etcd" : "local";
  if (m_decisions) s.store = m_decisions->healthy() ? "up" : "down";
  return s;
}

}  // namespace tpc::leader
