#include "leader/core.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/status.h"

namespace tpc::leader {
using protocol::Decision;
namespace {
// Enough for the client's resolve window (a few seconds) at tens of thousands of txn/s.
constexpr size_t k_rid_memory = 65536;

ClientReply reply(ClientReply::Kind k, std::string code = {}, std::string detail = {}) {
  ClientReply r;
  r.kind = k;
  r.code = std::move(code);
  r.detail = std::move(detail);
  return r;
}
}  // namespace

std::string encode(const ClientReply& r) {
  using protocol::LineBuilder;
  switch (r.kind) {
    case ClientReply::committed:
      return r.txid.empty() ? "COMMITTED" : "COMMITTED " + r.txid;
    case ClientReply::aborted:
      return r.code.empty() ? "ABORTED" : LineBuilder("ABORTED").raw(r.code).text(r.detail).str();
    case ClientReply::pending:
      return r.txid.empty() ? "PENDING" : "PENDING " + r.txid;
    case ClientReply::found:
      return LineBuilder("VALUE").value(r.value).str();
    case ClientReply::not_found:
      return "NOTFOUND";
    case ClientReply::ok:
      return r.detail.empty() ? "OK" : LineBuilder("OK").text(r.detail).str();
    case ClientReply::keys: {
      protocol::ScanReply s;
      s.kind = protocol::ScanReply::keys;
      s.more = r.more;
      s.kvs = r.kvs;
      return protocol::encode(s);
    }
    case ClientReply::heuristic:
      return LineBuilder("HEURISTIC").raw(r.txid).raw(r.code).text(r.detail).str();
    case ClientReply::error:
      break;
  }
  return LineBuilder("ERR").raw(r.code).text(r.detail).str();
}

Result<uint64_t> next_incarnation(const std::optional<std::string>& file) {
  if (!file) return uint64_t{1};
  char* end = nullptr;
  uint64_t last = std::strtoull(file->c_str(), &end, 10);
  if (end == file->c_str() || last == 0)
    return Status::error("CORRUPT", "incarnation is damaged; refusing to start");
  return last + 1;
}

std::string encode_commit(const std::string& txid, const std::string& rid,
                          const std::vector<size_t>& parts, uint64_t digest) {
  txlog::Encoder e;
  e.str(txid).str(rid).u64(parts.size());
  for (auto p : parts) e.u64(p);
  e.u64(digest);
  return e.data();
}

Result<CommitRecord> decode_commit(const std::string& payload) {
  const Status bad = Status::error("CORRUPT", "undecodable COMMIT record");
  txlog::Decoder d(payload);
  CommitRecord c;
  uint64_t n;
  if (!d.str(&c.txid) || !d.str(&c.rid) || !d.u64(&n) || n > 1u << 20) return bad;
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t p;
    if (!d.u64(&p)) return bad;
    c.parts.push_back(p);
  }
  if (!d.done() && (!d.u64(&c.digest) || !d.done())) return bad;
  return c;
}

std::string encode_mismatch(const Mismatch& m) {
  return txlog::Encoder()
      .str(m.txid)
      .str(m.rid)
      .u64(m.part)
      .u8(m.decided_commit ? 1 : 0)
      .u8(m.their_commit ? 1 : 0)
      .data();
}

Result<Mismatch> decode_mismatch(const std::string& payload) {
  txlog::Decoder d(payload);
  Mismatch m;
  uint64_t part;
  uint8_t decided, theirs;
  if (!d.str(&m.txid) || !d.str(&m.rid) || !d.u64(&part) || !d.u8(&decided) || !d.u8(&theirs) ||
      !d.done() || decided > 1 || theirs > 1 || part > 1u << 20)
    return Status::error("CORRUPT", "undecodable HEURISTIC record");
  m.part = static_cast<size_t>(part);
  m.decided_commit = decided != 0;
  m.their_commit = theirs != 0;
  return m;
}

Core::Core(CoreConfig cfg)
    : m_cfg(std::move(cfg)),
      m_up(m_cfg.peers.size(), false),
      m_lost_at(m_cfg.peers.size(), 0),
      m_peer_max_message(m_cfg.peers.size(), m_cfg.peer_max_message) {
  if (m_cfg.replicas == 0 || m_cfg.replicas > m_cfg.peers.size())
    m_cfg.replicas = m_cfg.peers.size();
  m_members = membership::Membership::initial(m_cfg.peers, m_cfg.replicas, m_cfg.min_insync);
  m_members_text = membership::encode(m_members);
}

bool is_successor(const membership::Membership& was, const membership::Membership& next) {
  if (next.slots.size() < was.slots.size() || next.replicas != was.replicas) return false;
  for (size_t i = 0; i < was.slots.size(); ++i)
    if (next.slots[i].name != was.slots[i].name) return false;
  return true;
}

void Core::grow(int64_t now) {
  // A slot a member add made: down (its link is made now), connecting from now on.
  size_t n = m_members.size();
  if (m_up.size() >= n) return;
  m_up.resize(n, false);
  m_lost_at.resize(n, now);
  m_peer_max_message.resize(n, m_cfg.peer_max_message);
}

// --- recovery -----------------------------------------------------------------------------

void Core::recover(const txlog::Record& rec) {
  if (rec.type == k_rec_commit) {
    auto c = decode_commit(rec.payload);
    TPC_CHECK(c.is_ok(), c.status().message());
    std::string txid = std::move(c->txid);
    Txn t;
    t.rid = std::move(c->rid);
    t.digest = c->digest;
    t.parts = std::move(c->parts);
    t.phase = Phase::committed;
    for (auto p : t.parts) {
      TPC_CHECK(p < m_members.size(), "COMMIT record names unknown peer");
      t.unacked[p] = {0, m_cfg.resend_ms};
    }
    if (!t.rid.empty()) remember(t.rid, Decision::committed, txid, t.digest);
    m_decided.insert(txid);
    m_txns[txid] = std::move(t);
  } else if (rec.type == k_rec_rid) {
    txlog::Decoder d(rec.payload);
    std::string rid, txid;
    uint64_t digest = 0;
    TPC_CHECK(d.str(&rid) && d.str(&txid) && (d.done() || (d.u64(&digest) && d.done())),
              "undecodable RID record");
    remember(rid, Decision::committed, txid, digest);
  } else if (rec.type == k_rec_heuristic) {
    auto m = decode_mismatch(rec.payload);
    TPC_CHECK(m.is_ok(), m.status().message());
    auto key = std::make_pair(m->txid, m->part);
    m_mismatches[key] = std::move(*m);
  } else if (rec.type == k_rec_forget) {
    txlog::Decoder d(rec.payload);
    std::string txid;
    TPC_CHECK(d.str(&txid) && d.done(), "undecodable FORGET record");
    std::erase_if(m_mismatches, [&](auto& kv) { return kv.first.first == txid; });
  } else if (rec.type == k_rec_membership) {
    auto m = membership::decode(rec.payload);
    TPC_CHECK(m.is_ok(), m.status().message());
    // The participant set the cluster was made with is checked before recovery
    // (DIR/participants); every later membership keeps its slots' names and adds slots after
    // them (member add).
    TPC_CHECK(is_successor(m_members, *m), "MEMBERSHIP record of another participant set");
    m->min_insync = m_cfg.min_insync;  // an option of this leader, not of the record's
    m_members = std::move(*m);
    m_members_text = rec.payload;
    grow(0);
  } else if (rec.type == k_rec_end) {
    txlog::Decoder d(rec.payload);
    std::string txid;
    TPC_CHECK(d.str(&txid), "undecodable END record");
    m_txns.erase(txid);
    m_decided.erase(txid);
  } else {
    fatal(fmt::format("leader log: unknown record type {}", rec.type));
  }
}

Actions Core::start(int64_t now_ms) {
  // Every decision without END is re-sent as soon as its participant's link is up.
  Actions out;
  m_next_resend_ms = now_ms;
  std::fill(m_lost_at.begin(), m_lost_at.end(), now_ms);
  out.wake_at = next_wake(now_ms);
  return out;
}

// --- the event loop -----------------------------------------------------------------------

void Core::step(int64_t now, Event e, Actions& out) {
  std::visit([&](auto& x) { on(now, x, out); }, e);
  if (m_paused) check_paused(out);
  out.wake_at = next_wake(now);
}

int64_t Core::next_wake(int64_t now) const {
  int64_t w = m_paused ? m_paused->until_ms : 0;
  if (!m_deadlines.empty()) {
    int64_t d = m_deadlines.begin()->first;
    w = w == 0 ? d : std::min(w, d);
  }
  if (!m_decided.empty()) {
    int64_t r = std::max(m_next_resend_ms, now);
    w = w == 0 ? r : std::min(w, r);
  }
  // (While paused, resume() runs the parked requests: waking for them would find nothing to
  // do, again and again.)
  if (!m_parked.empty() && m_unpark_at != INT64_MAX && !m_paused) {
    int64_t u = std::max(m_unpark_at, now);
    w = w == 0 ? u : std::min(w, u);
  }
  if (m_catchup && m_catchup->id == 0) {
    int64_t r = std::max(m_catchup->retry_at, now);
    w = w == 0 ? r : std::min(w, r);
  }
  if (m_changing && (m_staged || m_put_retry_at)) {
    int64_t r = std::max(m_staged ? m_apply_at : m_put_retry_at, now);
    w = w == 0 ? r : std::min(w, r);
  }
  // A participant down past --exclude-after is marked out at that time.
  if (excluding())
    for (size_t p = 0; p < m_up.size(); ++p)
      if (connecting(p, now) && m_members.slots[p].state != membership::State::out) {
        int64_t x = m_lost_at[p] + m_cfg.exclude_after_ms;
        w = w == 0 ? x : std::min(w, x);
      }
  return w;
}

void Core::trace(const std::string& txid, const Txn& t, std::string text, Actions& out,
                 bool finished) {
  if (t.trace) out.list.push_back(act::Trace{txid, t.rid, std::move(text), finished});
}

void Core::remember(const std::string& rid, Decision d, const std::string& txid, uint64_t digest) {
  auto [it, fresh] = m_rids.insert_or_assign(rid, RidOutcome{d, txid, digest});
  (void)it;
  if (fresh) {
    m_rid_order.push_back(rid);
    if (m_rid_order.size() > k_rid_memory) {
      m_rids.erase(m_rid_order.front());
      m_rid_order.pop_front();
    }
  }
}

// --- pause (backups) -----------------------------------------------------------------------

constexpr size_t k_max_held = 100000;  // new transactions held by a pause; more are refused
constexpr size_t k_max_parked = 10000;  // requests waiting for connecting participants
// A copy about to begin a pass holds new transactions back at most this long (park()).
constexpr int64_t k_drain_park_ms = 2000;

void Core::on(int64_t now, ev::Pause& e, Actions& out) {
  if (m_paused) {
    out.list.push_back(act::Reply{
        e.client, reply(ClientReply::error, "BUSY", "already paused (another backup runs)")});
    return;
  }
  // A copy of a participant that is not in-sync lacks writes: a backup needs every one.
  for (auto& slot : m_members.slots)
    if (slot.state != membership::State::in_sync && slot.state != membership::State::removed)
      return out.list.push_back(act::Reply{
          e.client,
          reply(ClientReply::error, "UNAVAILABLE",
                fmt::format("participant {} is {}: a backup needs every participant in-sync",
                            slot.addr, membership::name(slot.state)))});
  m_paused = Paused{e.client, now + std::max<int64_t>(e.max_ms, 1), {}};
}

void Core::check_paused(Actions& out) {
  if (m_paused->client == 0) return;
  // In flight: any transaction but a decided one that waits only for removed participants
  // (never contacted again, and in no backup: every other store holds it).
  for (auto& [txid, t] : m_txns) {
    if (t.phase != Phase::committed) return;
    for (auto& [p, pend] : t.unacked)
      if (p >= m_members.size() || m_members.slots[p].state != membership::State::removed) return;
  }
  out.list.push_back(act::Reply{m_paused->client, reply(ClientReply::ok)});
  m_paused->client = 0;
}

void Core::on(int64_t now, ev::Resume& e, Actions& out) {
  bool was = m_paused.has_value();
  resume(now, out);
  out.list.push_back(act::Reply{
      e.client, was ? reply(ClientReply::ok) : reply(ClientReply::error, "STATE", "not paused")});
}

void Core::wait_for_move(int64_t now, ClientId client) {
  // What moved is counted from the first operator's request here (a leader restarted in
  // between counts from its restart).
  if (m_move_waiting.empty()) m_move_started_ms = now, m_move_from = m_catchup_totals;
  m_move_waiting.push_back(client);
}

std::string Core::busy() const {
  if (m_replacing && !m_changing && !m_members.moving())
    return fmt::format(
        "participant {} is being replaced at {} (until it is reachable and has caught up): "
        "try again then, or replace it again at another address, or remove it",
        m_replacing->slot, m_replacing->addr);
  return "the members are changing already: try again when that change is done";
}

void Core::end_replace(const std::string& why, Actions& out) {
  for (auto c : m_replacing->waiting)
    out.list.push_back(act::Reply{c, reply(ClientReply::error, "STATE", why)});
  m_replacing.reset();
}

void Core::on(int64_t now, ev::Remove& e, Actions& out) {
  auto refuse = [&](const std::string& why) {
    out.list.push_back(act::Reply{e.client, reply(ClientReply::error, "STATE", why)});
  };
  if (e.slot >= m_members.size()) return refuse("no such participant");
  const auto& slot = m_members.slots[e.slot];
  // Asked again (the operator's command after a leader restart): the same answer.
  if (slot.state == membership::State::removed)
    return out.list.push_back(act::Reply{
        e.client, reply(ClientReply::ok, "",
                        fmt::format("{} removed (epoch {})", slot.addr, m_members.epoch))});
  using membership::leaves;
  if (leaves(slot.state) ||
      (m_changing && e.slot < m_changing->size() && leaves(m_changing->slots[e.slot].state))) {
    return wait_for_move(now, e.client);  // under way
  }
  // (Its new node not reachable yet: once it catches up, the replace ends first.)
  if (m_replacing && m_replacing->slot == e.slot && !m_changing && !m_members.moving() &&
      slot.state == membership::State::out)
    end_replace(fmt::format("participant {} is being removed instead (member remove)", e.slot),
                out);
  if (m_changing || m_members.moving() || m_replacing) return refuse(busy());
  // An in-sync slot leaves serving its keys until the cutover; one that is out (or unreachable,
  // and may be marked out) leaves as leaving-out: its keys are copied from the other owners.
  bool dead = slot.state == membership::State::in_sync && !m_up[e.slot] &&
              !connecting(e.slot, now) && m_members.may_exclude(e.slot);
  if (slot.state != membership::State::in_sync && slot.state != membership::State::out)
    return refuse(fmt::format(
        "{} is {}: a participant is removed when in-sync or out (wait until its catch-up ends, "
        "or until it is marked out)",
        slot.addr, membership::name(slot.state)));
  size_t left = 0;
  for (size_t p = 0; p < m_members.size(); ++p)
    left += p != e.slot && m_members.placed(p) &&
            m_members.slots[p].state == membership::State::in_sync;
  if (left == 0) return refuse("it is the last in-sync participant");
  auto next = m_members;
  next.slots[e.slot].state = slot.state == membership::State::out || dead
                                 ? membership::State::leaving_out
                                 : membership::State::leaving;
  m_gained.clear();
  wait_for_move(now, e.client);
  change_members(std::move(next), out);
}

void Core::on(int64_t now, ev::Add& e, Actions& out) {
  using membership::State;
  auto refuse = [&](const std::string& why) {
    out.list.push_back(act::Reply{e.client, reply(ClientReply::error, "STATE", why)});
  };
  // Asked again (the operator's command after a leader restart): the same answer, or wait
  // for the add under way.
  for (const auto* m : {&m_members, m_changing ? &*m_changing : nullptr}) {
    if (!m) continue;
    for (size_t p = 0; p < m->size(); ++p) {
      const auto& slot = m->slots[p];
      if (slot.addr != e.addr || slot.state == State::removed) continue;
      if (slot.state == State::joining) {
        return wait_for_move(now, e.client);
      }
      if (m == &m_members)  // added already (whatever change runs now)
        return out.list.push_back(act::Reply{
            e.client,
            reply(ClientReply::ok, "",
                  fmt::format("{} is participant {} (epoch {})", e.addr, p, m_members.epoch))});
    }
  }
  if (m_changing || m_members.moving() || m_replacing) return refuse(busy());
  if (m_members.size() >= membership::k_max_slots)
    return refuse(fmt::format("a cluster has at most {} slots", membership::k_max_slots));
  // The new slot's placement name: its address, unless another slot (a removed one, or one
  // replaced since) has that name; then one made unique by the epoch.
  std::string name = e.addr;
  auto taken = [&](const std::string& n) {
    return std::any_of(m_members.slots.begin(), m_members.slots.end(),
                       [&](const membership::Slot& s) { return s.name == n; });
  };
  if (taken(name)) name = fmt::format("{}#{}", e.addr, m_members.epoch + 1);
  auto next = m_members;
  next.slots.push_back({name, e.addr, State::joining});
  m_gained.clear();
  wait_for_move(now, e.client);
  change_members(std::move(next), out);
}

void Core::on(int64_t now, ev::Replace& e, Actions& out) {
  using membership::State;
  auto refuse = [&](const std::string& why) {
    out.list.push_back(act::Reply{e.client, reply(ClientReply::error, "STATE", why)});
  };
  if (e.slot >= m_members.size()) return refuse("no such participant");
  const auto& slot = m_members.slots[e.slot];
  if (m_replacing && m_replacing->slot == e.slot && m_replacing->addr == e.addr)
    return m_replacing->waiting.push_back(e.client);  // under way
  bool done = slot.addr == e.addr && !m_changing;
  if (done && slot.state == State::in_sync)  // asked again: the same answer
    return out.list.push_back(act::Reply{
        e.client,
        reply(ClientReply::ok, "",
              fmt::format("participant {} is {} (epoch {})", e.slot, e.addr, m_members.epoch))});
  if (done && slot.state != State::removed) {  // the leader restarted while it caught up
    m_replacing = Replacing{e.slot, e.addr, {e.client}, now, m_catchup_totals};
    return;
  }
  // A replace whose new node never came up gives way to another replace of the same slot.
  if (m_replacing && m_replacing->slot == e.slot && !m_changing && !m_members.moving())
    end_replace(fmt::format("participant {} is to be replaced at {} instead", e.slot, e.addr), out);
  if (m_changing || m_members.moving() || m_replacing) return refuse(busy());
  if (slot.state == State::removed || slot.state == State::joining ||
      membership::leaves(slot.state))
    return refuse(fmt::format("participant {} is {}", e.slot, membership::name(slot.state)));
  for (auto& s : m_members.slots)
    if (s.addr == e.addr && s.state != State::removed)
      return refuse(fmt::format("{} is a participant already", e.addr));
  // Its new node holds nothing: the slot is out until it has copied what it owns. Taking an
  // in-sync copy out must leave every key an in-sync owner, as marking it out would.
  if (slot.state == State::in_sync && !m_members.may_exclude(e.slot))
    return refuse(fmt::format(
        "participant {} holds the last in-sync copy of some keys: bring another copy in-sync "
        "first",
        e.slot));
  auto next = m_members;
  next.slots[e.slot].addr = e.addr;
  next.slots[e.slot].state = State::out;
  m_replacing = Replacing{e.slot, e.addr, {e.client}, now, m_catchup_totals};
  change_members(std::move(next), out);
}

void Core::move_keys(int64_t now, Actions& out) {
  if (!m_members.moving() || m_changing || m_catchup || !drives_catchup()) return;
  // A participant catching up copies what it owns in the placement in effect: it is in-sync
  // (then copies what it gains) before the cutover.
  if (m_members.count(membership::State::catching_up)) return;
  // With rendezvous placement a slot that stays gains keys only from one that leaves: with
  // none leaving (a member add) only the joining slots copy.
  // Nor with every key on every slot already (full replication): a leaving slot gives none.
  bool leaving = m_members.spread() &&
                 std::any_of(m_members.slots.begin(), m_members.slots.end(),
                             [](const membership::Slot& s) { return membership::leaves(s.state); });
  size_t next_slots = 0, next_current = 0;
  for (size_t p = 0; p < m_members.size(); ++p) {
    auto st = m_members.slots[p].state;
    if (!m_members.placed_next(p)) continue;
    ++next_slots;
    if (st != membership::State::in_sync && st != membership::State::joining) continue;
    if (m_gained.count(p) || (!leaving && st != membership::State::joining)) {
      ++next_current;
      continue;
    }
    if (!m_up[p]) return;  // it copies once reachable (or goes out: then it copies no more)
    return start_catchup(p, now, out, true);
  }
  // Every slot of the next placement that takes writes holds what it gains. The next
  // placement takes effect only if every key then keeps an in-sync owner (as may_exclude):
  // otherwise the move waits for the participants that are out to catch up.
  size_t copies =
      m_members.replicas == 0 || m_members.replicas >= next_slots ? next_slots : m_members.replicas;
  if (next_slots - next_current >= copies) return;
  change_members(m_members.cutover(), out);
}

void Core::resume(int64_t now, Actions& out) {
  if (!m_paused) return;
  Paused p = std::move(*m_paused);
  m_paused.reset();
  if (p.client)
    out.list.push_back(
        act::Reply{p.client, reply(ClientReply::error, "TIMEOUT",
                                   "transactions in flight did not finish within the pause (a "
                                   "participant down?)")});
  for (auto& t : p.held) on(now, t, out);
  unpark(now, out);
}

void Core::on(int64_t now, ev::Txn& e, Actions& out) {
  // Fail fast: no decision can be taken now. Nothing is prepared.
  if (m_cfg.shared_store && !m_store_up)
    return out.list.push_back(
        act::Reply{e.client, reply(ClientReply::error, "UNAVAILABLE",
                                   "the decision store (etcd) is unreachable; try again")});
  if (m_paused) {
    if (m_paused->held.size() >= k_max_held)
      out.list.push_back(act::Reply{
          e.client, reply(ClientReply::aborted, "BUSY", "paused for a backup; too many waiting")});
    else
      m_paused->held.push_back(std::move(e));
    return;
  }
  uint64_t digest = ops_digest(e.ops);
  if (!e.rid.empty()) {
    // The same request again (a client retrying after a lost connection): never run twice.
    auto it = m_rids.find(e.rid);
    if (it != m_rids.end()) {
      ClientReply r;
      if (it->second.digest != 0 && it->second.digest != digest) {
        // Another request under a known id (a colliding or reused id): answering with the
        // first request's outcome would tell this client "committed" for writes never run.
        r = reply(ClientReply::error, "RIDREUSE",
                  "request id " + e.rid + " already names another request" +
                      (it->second.txid.empty() ? std::string() : " (" + it->second.txid + ")") +
                      " with other ops; not run: send it again with a fresh id");
        out.list.push_back(act::Reply{e.client, std::move(r)});
        return;
      }
      switch (it->second.decision) {
        case Decision::committed:
          r.kind = ClientReply::committed;
          r.txid = it->second.txid;
          break;
        case Decision::aborted:
          r = reply(ClientReply::aborted, "DUPLICATE", "request id already ended as aborted");
          break;
        case Decision::pending:
          r = reply(ClientReply::error, "PENDING",
                    "request " + e.rid + " is still in progress as " + it->second.txid);
          break;
      }
      out.list.push_back(act::Reply{e.client, std::move(r)});
      return;
    }
  }
  begin(now, e, digest, out);
}

template <typename E>
bool Core::park(int64_t now, const std::vector<size_t>& parts, E& e, Actions& out, bool wait) {
  // A membership change being forced: every request waits for it (each is run under one
  // membership). Else only those for a connecting participant's keys, or told to `wait`.
  // A copy waiting for the transactions in flight to end before its pass begins: new ones
  // wait too (a moment: up to k_drain_park_ms), or under steady load it would never begin.
  // And until the slot has acknowledged SYNCBEGIN: a PREPARE sent before that could reach it
  // first (were the network to reorder), and commit there before its pass began.
  bool drain = m_catchup && m_catchup->step == CatchUp::begin && m_catchup->drain_since >= 0 &&
               (m_catchup->id != 0 || now - m_catchup->drain_since < k_drain_park_ms);
  if (!wait && !m_changing && !drain &&
      std::none_of(parts.begin(), parts.end(), [&](size_t p) { return connecting(p, now); }))
    return false;
  if (m_parked.size() >= k_max_parked) {
    out.list.push_back(
        act::Reply{e.client, reply(ClientReply::error, "BUSY",
                                   "too many requests wait for participants that are connecting")});
    return true;
  }
  uint64_t digest = 0;
  if constexpr (std::is_same_v<E, ev::Txn>) {
    digest = ops_digest(e.ops);
    if (!e.rid.empty()) remember(e.rid, Decision::pending, "", digest);
  }
  m_parked.push_back(Parked{std::move(e), digest});
  m_unpark_at = std::min(m_unpark_at, drain ? now + 20 : connecting_until(now));
  return true;
}

void Core::unpark(int64_t now, Actions& out) {
  if (m_paused) return;  // resume() runs them
  std::deque<Parked> parked;
  parked.swap(m_parked);
  m_unpark_at = INT64_MAX;
  for (auto& p : parked) {
    if (auto* t = std::get_if<ev::Txn>(&p.e))
      begin(now, *t, p.digest, out);
    else if (auto* g = std::get_if<ev::Get>(&p.e))
      on(now, *g, out);
    else
      on(now, std::get<ev::Scan>(p.e), out);
  }
}

void Core::begin(int64_t now, ev::Txn& e, uint64_t digest, Actions& out) {
  // Each participant is sent only the ops on keys it writes (owns, or gains while members
  // change): it locks, checks and stores those. Owners that are out take no part
  // (docs/membership.md); each key needs min-insync in-sync ones. A slot that learns a key
  // (catching up, or gaining it) is sent no condition on it: its copy may be stale. It is a
  // learner of the transaction (its vote does not count) if it learns every key it is sent.
  std::map<size_t, std::vector<Op>> by_part;
  std::map<size_t, bool> learns_all;
  std::vector<size_t> skipped;
  for (auto& op : e.ops) {
    bool condition = op.kind == OpKind::check || op.kind == OpKind::absent;
    // One placement per op (the hot path): its owners, then the slots that gain it (none
    // unless members change). These are Membership::writers, learns and readers, computed
    // once.
    auto copies = m_members.owners(op.key);
    size_t owners = copies.size(), in_sync = 0;
    auto gainers = m_members.gains(op.key);
    copies.insert(copies.end(), gainers.begin(), gainers.end());
    for (size_t i = 0; i < copies.size(); ++i) {
      size_t p = copies[i];
      auto st = m_members.slots[p].state;
      in_sync +=
          i < owners && (st == membership::State::in_sync || st == membership::State::leaving);
      if (!m_members.writes(p)) {
        if (std::find(skipped.begin(), skipped.end(), p) == skipped.end()) skipped.push_back(p);
        continue;
      }
      bool learns = i >= owners || st == membership::State::catching_up;
      if (condition && learns) continue;
      by_part[p].push_back(op);
      learns_all.try_emplace(p, true).first->second &= learns;
    }
    if (!m_changing && in_sync < m_cfg.min_insync)
      return out.list.push_back(act::Reply{
          e.client, reply(ClientReply::error, "UNAVAILABLE",
                          fmt::format("key {} has fewer than --min-insync {} in-sync copies: {}",
                                      protocol::escape_display(op.key), m_cfg.min_insync,
                                      m_members.describe_owners(op.key)))});
  }
  std::vector<size_t> parts;
  for (auto& [p, mine] : by_part) parts.push_back(p);
  if (park(now, parts, e, out)) return;
  std::string txid = fmt::format("{}.{}.{}", m_cfg.id, m_cfg.incarnation, m_next_seq);
  // Never send a message a participant would refuse (it would answer TOOLONG and reset the
  // link, failing every other transaction on it): refuse the request instead.
  for (auto& [p, mine] : by_part) {
    size_t bound = 128 + txid.size() + m_cfg.id.size() + m_cfg.advertise.size() + e.rid.size();
    for (auto& op : mine) bound += 32 + 3 * op.key.size() + op.value.size();
    if (bound <= m_peer_max_message[p]) continue;  // cannot be too long, whatever the escaping
    size_t len = protocol::encode(protocol::Prepare{txid, m_cfg.id, m_cfg.advertise, mine, e.rid,
                                                    true, m_members.epoch})
                     .size() +
                 24;  // "@TAG " and the newline
    if (len > m_peer_max_message[p]) {
      out.list.push_back(act::Reply{
          e.client,
          reply(ClientReply::error, "TOOLONG",
                fmt::format("the transaction is too large: its PREPARE to participant {} would "
                            "be {} bytes, over that participant's limit of {} (--max-message)",
                            addr(p), len, m_peer_max_message[p]))});
      return;
    }
  }
  ++m_next_seq;
  Txn& t = m_txns[txid];
  t.rid = e.rid;
  t.digest = digest;
  t.client = e.client;
  t.trace = e.trace;
  t.deadline_ms = now + m_cfg.prepare_timeout_ms;
  t.placement_gen = m_placement_gen;
  m_deadlines.insert({t.deadline_ms, txid});
  if (t.trace)
    trace(txid, t,
          fmt::format("begin {} at leader {} (incarnation {})", txid, m_cfg.id, m_cfg.incarnation),
          out);
  t.skipped = std::move(skipped);
  for (auto& [p, mine] : by_part) {
    t.parts.push_back(p);
    bool learner = learns_all[p];
    if (learner) t.learners.insert(p);
    if (t.trace)
      trace(txid, t,
            fmt::format("PREPARE sent to participant {}{}", addr(p),
                        learner ? " (a learner: catching up)" : ""),
            out);
    out.list.push_back(act::Send{p,
                                 protocol::Prepare{txid, m_cfg.id, m_cfg.advertise, std::move(mine),
                                                   e.rid, learner, m_members.epoch},
                                 0});
  }
  if (!e.rid.empty()) remember(e.rid, Decision::pending, txid, digest);
}

void Core::abort_txn(std::map<std::string, Txn>::iterator it, std::string code, std::string detail,
                     Actions& out) {
  const std::string& txid = it->first;
  Txn& t = it->second;
  if (t.trace) trace(txid, t, "decision ABORT (" + code + "; not logged: presumed abort)", out);
  // Tell every participant that may hold a prepare (voted YES, or not answered yet).
  for (auto p : t.parts) {
    auto v = t.votes.find(p);
    if (v == t.votes.end() || v->second) {
      if (t.trace) trace(txid, t, "ABORT sent to participant " + addr(p), out);
      out.list.push_back(act::Send{p, protocol::Abort{txid}, 0});
    }
  }
  if (t.trace) trace(txid, t, "", out, true);
  if (t.client)
    out.list.push_back(
        act::Reply{t.client, reply(ClientReply::aborted, std::move(code), std::move(detail))});
  if (!t.rid.empty()) remember(t.rid, Decision::aborted, txid, t.digest);
  ++m_aborted;
  m_deadlines.erase({t.deadline_ms, txid});
  m_txns.erase(it);  // presumed abort: nothing to remember durably
}

void Core::on(int64_t now, ev::Vote& e, Actions& out) {
  auto it = m_txns.find(e.txid);
  if (it == m_txns.end() || it->second.phase != Phase::preparing) return;
  Txn& t = it->second;
  if (std::find(t.parts.begin(), t.parts.end(), e.part) == t.parts.end()) return;
  if (t.votes.count(e.part) || t.dropped.count(e.part)) return;
  const auto& v = e.vote;
  const std::string& who = addr(e.part);
  if (v.kind != protocol::Vote::yes && t.learners.count(e.part) && learner_may_drop(e.part)) {
    if (t.trace)
      trace(e.txid, t,
            fmt::format("learner {} did not vote YES ({} {}): going on without it", who, v.code,
                        v.detail),
            out);
    drop_learner(t, e.part, now, out);
    return decide_if_ready(it, out);
  }
  if (v.kind != protocol::Vote::yes) {
    t.votes[e.part] = false;
    if (t.trace)
      trace(e.txid, t,
            (v.kind == protocol::Vote::no ? "vote NO from " : "no vote from ") + who + ": " +
                v.code + " " + v.detail,
            out);
    // A reply that is not a vote (a participant's error) aborts as ERROR, with its text.
    return abort_txn(it, v.code, v.detail, out);
  }
  t.votes[e.part] = true;
  if (t.trace)
    trace(e.txid, t, fmt::format("vote YES from {} (log force {} us)", who, v.force_us), out);
  decide_if_ready(it, out);
}

void Core::drop_learner(Txn& t, size_t part, int64_t now, Actions& out) {
  // It stays a participant of the decision (it may hold a prepare whose answer was lost: it
  // gets COMMIT or ABORT as the others), but its vote is not waited for.
  t.dropped.insert(part);
  t.votes.erase(part);
  // Its copy starts over: it may have missed this write.
  if (m_catchup && m_catchup->slot == part && m_catchup->step != CatchUp::done)
    start_catchup(part, now, out);
}

bool Core::learner_may_drop(size_t p) const {
  // Several leaders: another's copy could not know this one dropped it (docs/membership.md).
  if (m_cfg.shared_store) return false;
  // Not once its copy is complete: it is (about to be) in-sync, and must miss no write.
  if (m_members.slots[p].state != membership::State::catching_up) return false;
  if (m_changing && m_changing->slots[p].state == membership::State::in_sync) return false;
  return !(m_catchup && m_catchup->slot == p && m_catchup->step == CatchUp::done);
}

void Core::decide_if_ready(std::map<std::string, Txn>::iterator it, Actions& out) {
  Txn& t = it->second;
  const std::string& txid = it->first;
  if (t.votes.size() + t.dropped.size() < t.parts.size()) return;
  // All YES: the COMMIT record is the commit point; force it before telling anyone.
  t.phase = Phase::deciding;
  m_deadlines.erase({t.deadline_ms, txid});
  if (t.trace) trace(txid, t, "all votes YES; forcing the COMMIT record", out);
  out.list.push_back(
      act::Append{k_rec_commit, encode_commit(txid, t.rid, t.parts, t.digest), true, txid});
}

void Core::on(int64_t now, ev::Durable& e, Actions& out) {
  if (e.type == k_rec_membership) {
    TPC_CHECK(m_changing.has_value(), "MEMBERSHIP durable without its append");
    return stage_change(now, out);
  }
  if (e.type == k_rec_heuristic) {
    auto f = m_mismatch_forcing.find(e.txid);
    TPC_CHECK(f != m_mismatch_forcing.end(), "HEURISTIC durable without its append: " + e.txid);
    if (--f->second > 0) return;
    m_mismatch_forcing.erase(f);
    if (m_end_after_mismatch.erase(e.txid))
      out.list.push_back(
          act::Append{k_rec_end, txlog::Encoder().str(e.txid).data(), false, e.txid});
    auto [b, end] = m_mismatch_waiters.equal_range(e.txid);
    for (auto w = b; w != end; ++w)
      out.list.push_back(act::Reply{w->second.first, w->second.second});
    m_mismatch_waiters.erase(b, end);
    return;
  }
  auto it = m_txns.find(e.txid);
  TPC_CHECK(it != m_txns.end() && it->second.phase == Phase::deciding,
            "decision durable for unknown txn " + e.txid);
  Txn& t = it->second;
  t.phase = Phase::committed;
  m_decided.insert(e.txid);
  if (!t.rid.empty()) remember(t.rid, Decision::committed, e.txid, t.digest);
  ++m_committed;
  if (t.trace)
    trace(e.txid, t,
          fmt::format("COMMIT record durable (log force {} us): the commit point", e.force_us),
          out);
  if (t.client) {
    ClientReply r;
    r.kind = ClientReply::committed;
    r.txid = e.txid;
    out.list.push_back(act::Reply{t.client, std::move(r)});
    t.client = 0;
    if (t.trace) trace(e.txid, t, "client told COMMITTED", out);
  }
  for (auto p : t.parts) {
    t.unacked[p] = {0, m_cfg.resend_ms};
    send_commit(e.txid, t, p, now, out);
  }
}

void Core::on(int64_t, ev::Refused& e, Actions& out) {
  auto it = m_txns.find(e.txid);
  if (it == m_txns.end() || it->second.phase != Phase::deciding) return;
  if (!e.stale_members)
    return abort_txn(it, "SETTLED", "another leader settled this transaction as aborted first",
                     out);
  // Decided under a membership the store no longer holds: again under the new one (once it
  // is in effect here) if the votes cover it.
  if (m_changing) {
    m_stale_decisions.insert(e.txid);
    return;
  }
  if (!covers(it->second, m_members, false))
    return abort_txn(it, "MEMBERSHIP",
                     fmt::format("the membership changed (epoch {}) while it was decided; its "
                                 "votes do not cover the new one: try again",
                                 m_members.epoch),
                     out);
  Txn& t = it->second;
  if (t.trace) trace(e.txid, t, "membership changed: deciding again under the new one", out);
  ++m_redecided;
  out.list.push_back(
      act::Append{k_rec_commit, encode_commit(e.txid, t.rid, t.parts, t.digest), true, e.txid});
}

void Core::send_commit(const std::string& txid, Txn& t, size_t part, int64_t now, Actions& out) {
  auto& pend = t.unacked[part];
  if (!m_up[part]) return;  // sent when the link comes up
  pend.next_send_ms = now + pend.backoff_ms;
  pend.backoff_ms = std::min(pend.backoff_ms * 2, m_cfg.resend_max_ms);
  if (t.trace) trace(txid, t, "COMMIT sent to participant " + addr(part), out);
  out.list.push_back(act::Send{part, protocol::Commit{txid}, 0});
}

void Core::mismatch(Mismatch m, ClientId waiter, ClientReply r, Actions& out) {
  auto key = std::make_pair(m.txid, m.part);
  bool fresh = !m_mismatches.count(key);
  if (fresh) {
    out.list.push_back(act::Append{k_rec_heuristic, encode_mismatch(m), true, m.txid});
    ++m_mismatch_forcing[m.txid];
  }
  if (waiter && !m_mismatch_forcing.count(m.txid)) {
    out.list.push_back(act::Reply{waiter, std::move(r)});  // recorded before, and durable
    return;
  }
  if (waiter) m_mismatch_waiters.emplace(m.txid, std::make_pair(waiter, std::move(r)));
  if (fresh) m_mismatches.emplace(key, std::move(m));
}

void Core::on(int64_t, ev::AbortReply& e, Actions& out) {
  if (e.part >= m_members.size()) return;
  mismatch(Mismatch{e.txid, "", e.part, false, true}, 0, {}, out);
}

void Core::on(int64_t, ev::CommitReply& e, Actions& out) {
  if (!e.acked && !e.heuristic) return;  // re-sent after its backoff
  auto it = m_txns.find(e.txid);
  if (it == m_txns.end() || it->second.phase != Phase::committed) return;
  Txn& t = it->second;
  if (e.heuristic && t.unacked.count(e.part)) {
    // Recorded before the END record that may follow: a crash loses both or neither.
    mismatch(Mismatch{e.txid, t.rid, e.part, true, false}, 0, {}, out);
    if (t.trace)
      trace(e.txid, t, "HEURISTIC MISMATCH: " + addr(e.part) + " aborted it by hand", out);
  }
  if (!t.unacked.erase(e.part)) return;
  if (t.trace) trace(e.txid, t, "COMMIT acknowledged by " + addr(e.part) + " (applied)", out);
  if (!t.unacked.empty()) return;
  // Every participant's COMMITTED record is durable: nobody will ask about it again. A
  // mismatch being recorded goes first: the END record (with a shared store, the batch's
  // end there) must not outlive it in a crash, or the mismatch is never reported.
  if (m_mismatch_forcing.count(e.txid))
    m_end_after_mismatch.insert(e.txid);
  else
    out.list.push_back(act::Append{k_rec_end, txlog::Encoder().str(e.txid).data(), false, e.txid});
  if (t.trace) trace(e.txid, t, "END record written; transaction finished", out, true);
  m_decided.erase(e.txid);
  m_txns.erase(it);
}

void Core::on(int64_t now, ev::LinkUp& e, Actions& out) {
  if (e.part >= m_up.size()) return;
  m_up[e.part] = true;
  if (e.max_message) m_peer_max_message[e.part] = e.max_message;
  rejoin(now, out);
  if (!m_parked.empty()) unpark(now, out);
  for (auto& txid : m_decided) {
    auto& t = m_txns.at(txid);
    auto p = t.unacked.find(e.part);
    if (p == t.unacked.end()) continue;
    p->second.backoff_ms = m_cfg.resend_ms;
    send_commit(txid, t, e.part, now, out);
  }
}

void Core::on(int64_t now, ev::LinkDown& e, Actions&) {
  if (e.part >= m_up.size() || !m_up[e.part]) return;
  m_up[e.part] = false;
  m_lost_at[e.part] = now;
  if (m_catchup && m_catchup->slot == e.part) m_catchup.reset();  // again when it is back
}

void Core::on(int64_t now, ev::Tick&, Actions& out) {
  if (m_paused && now >= m_paused->until_ms) resume(now, out);
  if (m_changing && m_staged && now >= m_apply_at) apply_change(now, out);
  if (m_changing && !m_staged && m_put_retry_at && now >= m_put_retry_at) {
    m_put_retry_at = 0;
    out.list.push_back(act::PutMembers{m_members_text, m_changing_text});
  }
  exclude_down(now, out);
  rejoin(now, out);
  if (m_catchup && m_catchup->id == 0 && now >= m_catchup->retry_at) catchup_send(now, out);
  // A participant that stopped connecting (down now) lets its parked requests run (or fail).
  if (!m_parked.empty() && now >= m_unpark_at) unpark(now, out);
  // Prepare timeouts.
  while (!m_deadlines.empty() && m_deadlines.begin()->first <= now) {
    std::string txid = m_deadlines.begin()->second;
    auto it = m_txns.find(txid);
    TPC_CHECK(it != m_txns.end(), "deadline of unknown txn " + txid);
    std::string missing;
    Txn& t = it->second;
    for (auto p : t.parts)
      if (!t.votes.count(p) && !t.dropped.count(p) && !(t.learners.count(p) && learner_may_drop(p)))
        missing += (missing.empty() ? "" : ",") + addr(p);
    if (missing.empty()) {  // only learners are late: the transaction goes on without them
      m_deadlines.erase(m_deadlines.begin());
      for (auto p : t.parts)
        if (!t.votes.count(p) && !t.dropped.count(p)) drop_learner(t, p, now, out);
      decide_if_ready(it, out);
      continue;
    }
    abort_txn(it, "TIMEOUT", "no vote from " + missing + " within the prepare timeout", out);
  }
  // Re-sends of unacknowledged COMMITs, each after its own backoff.
  if (!m_decided.empty() && now >= m_next_resend_ms) {
    for (auto& txid : m_decided) {
      auto& t = m_txns.at(txid);
      for (auto& [p, pend] : t.unacked)
        if (now >= pend.next_send_ms) send_commit(txid, t, p, now, out);
    }
    m_next_resend_ms = now + m_cfg.resend_ms;
  }
}

void Core::on(int64_t, ev::LogFull&, Actions& out) {
  // Keep the COMMIT record of every transaction not yet END-ed, including decisions whose
  // force is still queued (the rewrite is ordered after them and must not drop them), and
  // the recent client requests that committed, so that RESULT after a lost connection still
  // hears "committed" after the rewrite and a restart (never a presumed abort of a commit).
  act::Rewrite rw;
  for (auto& rid : m_rid_order) {
    auto it = m_rids.find(rid);
    if (it != m_rids.end() && it->second.decision == Decision::committed)
      rw.live.push_back(
          {k_rec_rid,
           txlog::Encoder().str(rid).str(it->second.txid).u64(it->second.digest).data()});
  }
  // The membership in effect, and one being forced (its append is queued before the rewrite,
  // which would drop it): before the COMMIT records, which may name slots it added.
  if (m_members.epoch > 1 && !m_cfg.shared_store)
    rw.live.push_back({k_rec_membership, m_members_text});
  if (m_changing && !m_cfg.shared_store)  // (the shared store holds it, not this log)
    rw.live.push_back({k_rec_membership, m_changing_text});
  for (auto& [txid, t] : m_txns)
    if (t.phase != Phase::preparing)
      rw.live.push_back({k_rec_commit, encode_commit(txid, t.rid, t.parts, t.digest)});
  // Mismatches stay until an operator forgets them (they are few).
  for (auto& [key, m] : m_mismatches) rw.live.push_back({k_rec_heuristic, encode_mismatch(m)});
  out.list.push_back(std::move(rw));
}

void Core::on(int64_t, ev::Result& e, Actions& out) {
  ClientReply r;
  for (auto& [key, m] : m_mismatches) {
    if (m.rid != e.rid) continue;
    r.kind = ClientReply::heuristic;
    r.txid = m.txid;
    r.code = m.decided_commit ? "commit" : "abort";
    r.detail = fmt::format("participant {} {} it on an operator's order (tpc client heuristics)",
                           addr(m.part), m.their_commit ? "committed" : "aborted");
    out.list.push_back(act::Reply{e.client, std::move(r)});
    return;
  }
  auto it = m_rids.find(e.rid);
  // Several leaders over a shared store: the request may be another's. Committed ones are in
  // the store; any other is not known here, so never "aborted" (on RidFound).
  if (it == m_rids.end() && m_cfg.shared_store)
    return out.list.push_back(act::FindRid{e.client, e.rid, std::nullopt});
  if (it == m_rids.end()) {
    // Unknown: record it as aborted, so the request arriving later is refused instead of
    // committed behind the client's back.
    remember(e.rid, Decision::aborted, "", 0);
    r = reply(ClientReply::aborted, "UNKNOWN", "no decision for this request");
  } else if (it->second.decision == Decision::committed) {
    r.kind = ClientReply::committed;
    r.txid = it->second.txid;
  } else if (it->second.decision == Decision::aborted) {
    r = reply(ClientReply::aborted, "UNKNOWN", "no decision for this request");
  } else {
    r.kind = ClientReply::pending;
    r.txid = it->second.txid;
  }
  out.list.push_back(act::Reply{e.client, std::move(r)});
}

// --- a shared decision store: another leader's transactions (docs/decision-store.md) -------

void Core::on(int64_t, ev::Looked& e, Actions& out) {
  ClientReply r;
  if (!e.facts) {
    r = reply(ClientReply::error, "UNAVAILABLE", e.facts.status().message());
  } else if (e.facts->committed) {
    r.kind = ClientReply::committed;
  } else if (e.facts->aborted) {
    r.kind = ClientReply::aborted;
  } else {
    // Takeover: a transaction whose leader is gone (its lease expired), or that a participant
    // held in doubt past --takeover-after, is settled as aborted by this leader. Fenced
    // unless overdue: the abort key is created only while the owner's key is still gone, so
    // an owner back in time decides itself.
    bool overdue = e.held_ms >= 0 && e.held_ms >= m_cfg.takeover_after_ms;
    if (!e.facts->owner_alive || overdue)
      return out.list.push_back(act::Settle{e.client, e.txid, e.owner, !overdue});
    r.kind = ClientReply::pending;  // the owner decides
  }
  out.list.push_back(act::Reply{e.client, std::move(r)});
}

void Core::on(int64_t, ev::Settled& e, Actions& out) {
  ClientReply r;
  if (!e.result) {
    r = reply(ClientReply::error, "UNAVAILABLE", e.result.status().message());
  } else {
    switch (*e.result) {
      case SettleResult::committed:
        r.kind = ClientReply::committed;
        break;
      case SettleResult::settled:
      case SettleResult::aborted:
        r.kind = ClientReply::aborted;
        break;
      case SettleResult::owner_back:
        r.kind = ClientReply::pending;
        break;
    }
  }
  out.list.push_back(act::Reply{e.client, std::move(r)});
}

void Core::on(int64_t, ev::RidFound& e, Actions& out) {
  if (e.report) {
    // A report of an operator's outcome of this leader's transaction: committed if the store
    // says its request committed that transaction; else presumed aborted. An unanswered
    // query says nothing: the participant reports again.
    if (!e.txid)
      return out.list.push_back(act::Reply{
          e.client, reply(ClientReply::error, "UNAVAILABLE", e.txid.status().message())});
    Decision d = *e.txid == e.report->txid ? Decision::committed : Decision::aborted;
    return answer_outcome(e.client, e.report->txid, e.report->heuristic, e.rid, e.report->part, d,
                          out);
  }
  ClientReply r;
  if (!e.txid) {
    r = reply(ClientReply::error, "UNAVAILABLE", e.txid.status().message());
  } else if (e.txid->empty()) {
    r.kind = ClientReply::pending;
  } else {
    r.kind = ClientReply::committed;
    r.txid = *e.txid;
  }
  out.list.push_back(act::Reply{e.client, std::move(r)});
}

void Core::on(int64_t, ev::StoreHealth& e, Actions&) { m_store_up = e.up; }

protocol::Decision Core::decision(const std::string& txid) const {
  auto it = m_txns.find(txid);
  if (it == m_txns.end()) return Decision::aborted;  // presumed abort
  return it->second.phase == Phase::committed ? Decision::committed : Decision::pending;
}

void Core::on(int64_t, ev::Forget& e, Actions& out) {
  size_t n = std::erase_if(m_mismatches, [&](auto& kv) { return kv.first.first == e.txid; });
  if (n == 0) {
    out.list.push_back(act::Reply{
        e.client, reply(ClientReply::error, "NOTFOUND", "no heuristic mismatch of " + e.txid)});
    return;
  }
  out.list.push_back(act::Append{k_rec_forget, txlog::Encoder().str(e.txid).data(), false, e.txid});
  out.list.push_back(act::Reply{e.client, reply(ClientReply::ok)});
}

void Core::on(int64_t, ev::Outcome& e, Actions& out) {
  ClientReply r;
  // Another leader's transaction (several leaders over the same participants): this leader
  // knows nothing of it, and presumed abort holds only for its own ids. PENDING, never a
  // guess; with an etcd decision store the server answers such a query from etcd instead.
  if (std::string owner = e.txid.substr(0, e.txid.find('.')); owner != m_cfg.id) {
    // With a shared decision store, the store knows, or this leader settles it (on Looked).
    if (m_cfg.shared_store)
      return out.list.push_back(act::Lookup{e.client, e.txid, std::move(owner), e.held_ms});
    r.kind = ClientReply::pending;
    out.list.push_back(act::Reply{e.client, std::move(r)});
    return;
  }
  Decision d = decision(e.txid);
  if (e.heuristic) {
    // A report: what this leader decided, never forgotten sooner than the participant's
    // record of it (a mismatch recorded from COMMIT's reply; a request id that committed).
    if (auto m = m_mismatches.find({e.txid, e.part}); m != m_mismatches.end())
      d = m->second.decided_commit ? Decision::committed : Decision::aborted;
    else if (auto rid = m_rids.find(e.rid); d == Decision::aborted && !e.rid.empty() &&
                                            rid != m_rids.end() && rid->second.txid == e.txid &&
                                            rid->second.decision == Decision::committed)
      d = Decision::committed;
    else if (d == Decision::aborted && !e.rid.empty() && rid == m_rids.end() && m_cfg.shared_store)
      // With a shared store, a commit ended in an earlier incarnation is known there only
      // (its batch is gone, its request id kept): asked before a mismatch is recorded.
      return out.list.push_back(
          act::FindRid{e.client, e.rid, ReportOf{e.txid, *e.heuristic, e.part}});
  }
  answer_outcome(e.client, e.txid, e.heuristic, e.rid, e.part, d, out);
}

// The answer to OUTCOME of this leader's `txid`, decided `d`; with `heuristic`, a report: a
// contradiction is recorded first.
void Core::answer_outcome(ClientId client, const std::string& txid, std::optional<bool> heuristic,
                          const std::string& report_rid, size_t part, Decision d, Actions& out) {
  ClientReply r;
  if (heuristic && d != Decision::pending && part < m_members.size() &&
      *heuristic != (d == Decision::committed)) {
    r.kind = d == Decision::committed ? ClientReply::committed : ClientReply::aborted;
    std::string rid = report_rid;
    if (auto t = m_txns.find(txid); t != m_txns.end() && !t->second.rid.empty())
      rid = t->second.rid;
    return mismatch(Mismatch{txid, rid, part, d == Decision::committed, *heuristic}, client,
                    std::move(r), out);
  }
  switch (d) {
    case Decision::committed:
      r.kind = ClientReply::committed;
      break;
    case Decision::aborted:
      r.kind = ClientReply::aborted;
      break;
    case Decision::pending:
      r.kind = ClientReply::pending;
      break;
  }
  out.list.push_back(act::Reply{client, std::move(r)});
}

int64_t Core::connecting_until(int64_t now) const {
  int64_t until = INT64_MAX;
  for (size_t p = 0; p < m_up.size(); ++p)
    if (connecting(p, now)) until = std::min(until, m_lost_at[p] + m_cfg.exclude_after_ms);
  return until;
}

void Core::change_members(membership::Membership next, Actions& out) {
  TPC_CHECK(!m_changing, "a membership change while another is forced");
  next.epoch = m_members.epoch + 1;
  m_changing_text = membership::encode(next);
  m_changing = std::move(next);
  m_staged = false;
  m_change_mine = true;
  if (m_cfg.shared_store)
    out.list.push_back(act::PutMembers{m_members_text, m_changing_text});
  else
    out.list.push_back(act::Append{k_rec_membership, m_changing_text, true,
                                   fmt::format("epoch {}", m_changing->epoch)});
}

void Core::stage_change(int64_t now, Actions& out) {
  m_staged = true;
  m_put_retry_at = 0;
  m_apply_at = now;
  // Shared store: another leader may still read a copy that leaves in-sync now, for as long
  // as it trusts the old membership (members_lease_ms since its last confirmation, which
  // started before this change was stored): nobody writes without that copy before then.
  if (m_cfg.shared_store)
    for (size_t p = 0; p < m_members.size(); ++p)
      if ((m_members.slots[p].state == membership::State::in_sync ||
           m_members.slots[p].state == membership::State::leaving) &&
          m_changing->slots[p].state != m_members.slots[p].state)
        m_apply_at = now + 2 * m_cfg.members_lease_ms;
  if (now >= m_apply_at) apply_change(now, out);
}

void Core::apply_change(int64_t now, Actions& out) {
  // Counted by the leader that made the change (with several leaders, once in all).
  bool mine = m_change_mine;
  for (size_t p = 0; p < m_members.size() && mine; ++p) {
    auto was = m_members.slots[p].state, is = m_changing->slots[p].state;
    m_exclusions += was != is && is == membership::State::out;
    m_rejoins += was == membership::State::catching_up && is == membership::State::in_sync;
  }
  m_adopted += !mine;
  for (size_t p = 0; p < m_members.size(); ++p)
    if (m_members.placed(p) != m_changing->placed(p) ||
        m_members.placed_next(p) != m_changing->placed_next(p)) {
      ++m_placement_gen;
      break;
    }
  auto was = std::move(m_members);
  m_members = std::move(*m_changing);
  m_members_text = std::move(m_changing_text);
  m_changing.reset();
  grow(now);
  for (size_t p = 0; p < was.size(); ++p)
    if (was.slots[p].addr != m_members.slots[p].addr) {
      // A member replace: the slot's node is another now, reached at another address. Its
      // link is made anew (the executor's); until it is up the slot is down.
      m_up[p] = false;
      m_lost_at[p] = now;
      if (m_catchup && m_catchup->slot == p) m_catchup.reset();
    }
  m_staged = false;
  m_confirmed_ms = m_staged_confirmed_ms;
  m_staged_confirmed_ms = INT64_MIN;
  // A slot that stopped being in-sync (or joining) may have missed writes of keys it gains:
  // its copy of them counts no more.
  std::erase_if(m_gained, [&](size_t p) {
    return m_members.slots[p].state != membership::State::in_sync &&
           m_members.slots[p].state != membership::State::joining;
  });
  if (!m_members.moving()) m_gained.clear();
  if (m_catchup && m_catchup->gain) {
    // Its sources or its placement may have changed: a new pass, if it still gains keys.
    auto st = m_members.slots[m_catchup->slot].state;
    if (m_members.moving() &&
        (st == membership::State::in_sync || st == membership::State::joining))
      start_catchup(m_catchup->slot, now, out, true);
    else
      m_catchup.reset();
  } else if (m_catchup) {
    // Done (its slot in-sync now), or its sources changed: a new pass. (Another leader's
    // change may have happened while it was out: a new pass too.)
    if (m_members.slots[m_catchup->slot].state == membership::State::in_sync) {
      auto& t = m_catchup_totals;
      t.keys += m_catchup->keys;
      t.bytes += m_catchup->bytes;
      t.last_ms = now - m_catchup->started_ms;
      t.ms += t.last_ms;
    }
    if (m_members.slots[m_catchup->slot].state != membership::State::catching_up)
      m_catchup.reset();
    else if (m_catchup->step != CatchUp::done || !mine)
      start_catchup(m_catchup->slot, now, out);
  }
  if (m_cfg.shared_store) {
    // Each transaction runs under one membership: those it no longer covers end now.
    std::vector<std::string> gone;
    for (auto& [txid, t] : m_txns) {
      if (t.phase != Phase::preparing) continue;
      for (auto p : t.parts)  // out now: not waited for
        if (!m_members.writes(p) && !t.votes.count(p)) t.dropped.insert(p);
      if (!covers(t, m_members, true)) gone.push_back(txid);
    }
    for (auto& txid : gone)
      abort_txn(m_txns.find(txid), "MEMBERSHIP",
                fmt::format("the membership changed (epoch {}) while it was prepared: try again",
                            m_members.epoch),
                out);
    for (auto it = m_txns.begin(); it != m_txns.end(); ++it)
      if (it->second.phase == Phase::preparing) decide_if_ready(it, out);
    auto stale = std::move(m_stale_decisions);
    m_stale_decisions.clear();
    for (auto& txid : stale) {
      ev::Refused r{txid, true};
      on(now, r, out);
    }
  }
  if (!m_cfg.shared_store) {
    // A transaction still collecting votes under the placement before this change may lack
    // the slots that write its keys now (a slot joining, leaving, gaining): it ends now, or it
    // could commit after their copy was read, without them. (With a shared store: covers()
    // above.)
    std::vector<std::string> gone;
    for (auto& [txid, t] : m_txns)
      if (t.phase == Phase::preparing && t.placement_gen != m_placement_gen) gone.push_back(txid);
    for (auto& txid : gone)
      abort_txn(m_txns.find(txid), "MEMBERSHIP",
                fmt::format("the placement changed (epoch {}) while it was prepared: try again",
                            m_members.epoch),
                out);
  }
  answer_moves(was, now, out);
  exclude_down(now, out);  // the next one, if any
  if (!m_changing) rejoin(now, out);
  if (!m_changing && !m_parked.empty()) unpark(now, out);
}

void Core::answer_moves(const membership::Membership& was, int64_t now, Actions& out) {
  using membership::State;
  if (!m_members.moving() && was.moving()) {
    // What moved: the keys copied to the slots that gained them, since the change began here
    // (a leader restarted in between counts from its restart).
    std::string added, gone, rolled_back;
    auto note = [&](std::string& list, size_t p) {
      list += (list.empty() ? "" : ",") + m_members.slots[p].addr;
    };
    for (size_t p = 0; p < was.size(); ++p) {
      auto a = was.slots[p].state, b = m_members.slots[p].state;
      if (a == State::joining) note(b == State::in_sync ? added : rolled_back, p);
      if (membership::leaves(a)) note(gone, p);
    }
    ClientReply r;
    if (!rolled_back.empty())
      r = reply(ClientReply::error, "UNAVAILABLE",
                fmt::format("{} was unreachable for {} ms while it joined: the add is rolled "
                            "back (epoch {}); start it and add it again",
                            rolled_back, m_cfg.exclude_after_ms, m_members.epoch));
    else
      r = reply(ClientReply::ok, "",
                fmt::format("epoch {}: {} keys ({} bytes) copied in {} ms; {}", m_members.epoch,
                            m_catchup_totals.keys - m_move_from.keys,
                            m_catchup_totals.bytes - m_move_from.bytes,
                            std::max<int64_t>(0, now - m_move_started_ms),
                            added.empty() ? "removed: " + gone : "added: " + added));
    for (auto c : m_move_waiting) out.list.push_back(act::Reply{c, r});
    m_move_waiting.clear();
  }
  if (m_replacing) {
    auto& slot = m_members.slots[m_replacing->slot];
    ClientReply r;
    if (slot.addr != m_replacing->addr)  // another leader's replace of the slot came first
      r = reply(ClientReply::error, "STATE",
                fmt::format("participant {} is at {} (epoch {}), not {}: the replace was not "
                            "made (another change came first); try again",
                            m_replacing->slot, slot.addr, m_members.epoch, m_replacing->addr));
    else if (membership::leaves(slot.state) || slot.state == State::removed)
      r = reply(ClientReply::error, "STATE",
                fmt::format("participant {} is {} (epoch {}): the replace ends", m_replacing->slot,
                            membership::name(slot.state), m_members.epoch));
    else if (slot.state == State::in_sync)
      r = reply(ClientReply::ok, "",
                fmt::format("epoch {}: {} keys ({} bytes) copied in {} ms; participant {} is "
                            "{} now",
                            m_members.epoch, m_catchup_totals.keys - m_replacing->from.keys,
                            m_catchup_totals.bytes - m_replacing->from.bytes,
                            std::max<int64_t>(0, now - m_replacing->started_ms), m_replacing->slot,
                            slot.addr));
    else
      return;
    for (auto c : m_replacing->waiting) out.list.push_back(act::Reply{c, r});
    m_replacing.reset();
  }
}

bool Core::covers(const Txn& t, const membership::Membership& m, bool preparing) const {
  if (t.placement_gen != m_placement_gen) return false;  // its keys may have new writers
  for (auto p : t.skipped)
    if (m.writes(p)) return false;  // never asked
  for (auto p : t.parts) {
    if (!m.writes(p)) continue;
    auto v = t.votes.find(p);
    if (v != t.votes.end() && v->second) continue;
    if (preparing && !t.dropped.count(p)) continue;
    return false;
  }
  return true;
}

void Core::on(int64_t now, ev::MembersSeen& e, Actions& out) {
  if (!e.leaders.empty()) m_leaders = e.leaders;
  // An answer to our put that did not say where it landed: the same put again after `ms`.
  auto retry_put = [&](int64_t ms) {
    if (e.put && m_changing && !m_staged) m_put_retry_at = now + ms;
  };
  if (!e.status) return retry_put(200);
  auto m = membership::decode(e.encoded);
  if (!m || !is_successor(m_members, *m)) return retry_put(1000);  // not this cluster's
  auto confirm = [&](int64_t& at) {
    if (e.asked_ms >= 0) at = std::max(at, e.asked_ms);
  };
  if (e.encoded == m_members_text) {
    confirm(m_confirmed_ms);
    // An answer to our put that found the old membership still there cannot happen (the
    // compare would have held); an unknown outcome is retried.
    retry_put(200);
  } else if (m->epoch <= m_members.epoch) {
    return;  // an older read
  } else if (m_changing && e.encoded == m_changing_text) {
    confirm(m_staged_confirmed_ms);
    if (!m_staged) stage_change(now, out);  // ours, stored (or the same one adopted)
  } else if (!m_changing || !m_staged || m->epoch > m_changing->epoch) {
    // Another leader's change: ours (if any) lost its compare, or is older than this one.
    m_changing = std::move(*m);
    m_changing_text = e.encoded;
    m_change_mine = false;
    m_staged_confirmed_ms = INT64_MIN;
    confirm(m_staged_confirmed_ms);
    stage_change(now, out);
  }
  rejoin(now, out);
  if (!m_parked.empty() && members_fresh(now)) unpark(now, out);
}

void Core::exclude_down(int64_t now, Actions& out) {
  if (!excluding()) return;
  for (size_t p = 0; p < m_up.size(); ++p) {
    if (m_up[p] || connecting(p, now) || !m_members.may_exclude(p)) continue;
    auto next = m_members;
    // A slot being added that stays unreachable: the add rolls back (it owns nothing yet).
    // One being removed: the removal goes on without it (its keys copied from the others).
    auto st = m_members.slots[p].state;
    next.slots[p].state = st == membership::State::joining   ? membership::State::removed
                          : st == membership::State::leaving ? membership::State::leaving_out
                                                             : membership::State::out;
    return change_members(std::move(next), out);
  }
}

void Core::rejoin(int64_t now, Actions& out) {
  if (m_catchup && !drives_catchup()) m_catchup.reset();  // another leader copies it now
  if (m_changing) return;
  // An out participant reachable again catches up (one change at a time).
  for (size_t p = 0; p < m_up.size(); ++p) {
    if (!m_up[p] || m_members.slots[p].state != membership::State::out) continue;
    auto next = m_members;
    next.slots[p].state = membership::State::catching_up;
    return change_members(std::move(next), out);
  }
  if (m_catchup || !drives_catchup()) return;
  for (size_t p = 0; p < m_up.size(); ++p)
    if (m_up[p] && m_members.slots[p].state == membership::State::catching_up)
      return start_catchup(p, now, out);
  move_keys(now, out);
}

void Core::start_catchup(size_t slot, int64_t now, Actions& out, bool gain) {
  CatchUp c;
  c.gain = gain;
  if (m_catchup && m_catchup->slot == slot && m_catchup->gain == gain) {  // a new pass
    c.started_ms = m_catchup->started_ms;
    c.keys = m_catchup->keys;
    c.bytes = m_catchup->bytes;
    c.passes = m_catchup->passes;
  } else {
    c.started_ms = now;
  }
  c.slot = slot;
  c.pass = fmt::format("{}-{}-{}", m_cfg.id, m_cfg.incarnation, m_next_pass++);
  ++c.passes;
  for (size_t p = 0; p < m_members.size(); ++p)
    if (p != slot && (m_members.slots[p].state == membership::State::in_sync ||
                      m_members.slots[p].state == membership::State::leaving))
      c.sources.push_back(p);
  c.sources = live_sources(c, now);
  // Every key on every slot: the first source has them all.
  if (!gain && m_members.copies() == m_members.size() && !c.sources.empty()) c.sources.resize(1);
  if (c.sources.empty()) {  // nothing to copy from now: again at a later tick
    m_catchup.reset();
    return;
  }
  m_catchup = std::move(c);
  catchup_send(now, out);
}

std::vector<size_t> Core::live_sources(const CatchUp& c, int64_t now) const {
  // Every key it copies keeps a source among its owners while fewer than copies() placed
  // slots are no source. (The slot that copies is one of them when it catches up: it owns
  // what it copies; not when it gains keys: it owns none of them yet.)
  std::vector<size_t> live;
  for (auto q : c.sources)
    if (m_up[q] || connecting(q, now)) live.push_back(q);
  if (live.size() == c.sources.size() || live.empty()) return c.sources;
  size_t not_source = 0;
  for (size_t p = 0; p < m_members.size(); ++p)
    not_source +=
        m_members.placed(p) && !(c.gain && p == c.slot) && !std::count(live.begin(), live.end(), p);
  return not_source < m_members.copies() ? live : c.sources;
}

void Core::catchup_send(int64_t now, Actions& out) {
  auto& c = *m_catchup;
  switch (c.step) {
    case CatchUp::begin:
      // The pass begins once no transaction in flight touches what it copies (new ones on
      // the slot wait meanwhile: park()). The sources' pages are read without waiting for
      // prepared writes (SCAN ... committed), and the slot keeps what commits write during the
      // pass; so, at SYNCBEGIN:
      // - none may still write its keys without it (begun while it was out, or that dropped
      //   it): it could reach a source after that source's page is read;
      // - none that includes it may be undecided, or decided and not yet applied by it or a
      //   source: applied at the slot during the pass it would count as newer than the page,
      //   yet a later transaction (that the slot, a learner, missed) may have overwritten its
      //   keys; applied at the slot before the pass but at a source after its page is read,
      //   the older page would overwrite it.
      // With several leaders this one does not see the others' transactions: the pages then
      // wait for prepared writes at the sources (a plain SCAN), as a read does.
      for (auto& [txid, t] : m_txns) {
        bool in = std::find(t.parts.begin(), t.parts.end(), c.slot) != t.parts.end();
        bool without = t.dropped.count(c.slot) ||
                       std::find(t.skipped.begin(), t.skipped.end(), c.slot) != t.skipped.end();
        bool wait = (in || without) && t.phase != Phase::committed;
        if (t.phase == Phase::committed) {
          // (Whether it skipped the slot is not recovered after a restart: any decided
          // transaction a source has not applied yet.)
          wait = t.unacked.count(c.slot) > 0;
          for (auto q : c.sources) wait |= t.unacked.count(q) > 0;
        }
        if (wait) {
          c.id = 0;
          c.retry_at = now + 20;
          if (c.drain_since < 0) c.drain_since = now;
          return;
        }
      }
      if (c.drain_since < 0) c.drain_since = now;  // new transactions wait for its ACK
      c.id = m_next_read++;
      out.list.push_back(act::Send{
          c.slot, protocol::SyncBegin{c.pass, c.sources, c.gain, !m_cfg.shared_store}, c.id});
      return;
    case CatchUp::scan:
    case CatchUp::sync: {
      c.step = CatchUp::scan;
      size_t q = c.sources[c.src];
      if (!m_up[q] && !connecting(q, now) && live_sources(c, now).size() < c.sources.size())
        return start_catchup(c.slot, now, out, c.gain);  // a new pass, without it
      if (!m_up[q]) {  // back soon, or marked out (a new pass then)
        c.id = 0;
        c.retry_at = now + 200;
        return;
      }
      c.id = m_next_read++;
      // A page's keys and values, raw, in a quarter of the shorter message limit of the source
      // (its reply) and the learner (the SYNC): with the keys escaped (at most three bytes a
      // byte; values travel raw) they fit.
      size_t line = std::min(m_peer_max_message[q], m_peer_max_message[c.slot]);
      uint64_t bytes = std::max<size_t>(1, line / 4 > 1024 ? line / 4 - 1024 : 1);
      out.list.push_back(act::Send{
          q, protocol::Scan{"", c.after, 1000, bytes, "", m_members.epoch, !m_cfg.shared_store},
          c.id});
      return;
    }
    case CatchUp::done: {
      c.id = 0;
      if (c.gain) {  // it holds every key it gains: the next one, or the cutover
        m_gained.insert(c.slot);
        auto& t = m_catchup_totals;
        t.keys += c.keys;
        t.bytes += c.bytes;
        m_catchup.reset();
        return rejoin(now, out);  // a participant catching up first, then the next gainer
      }
      // Every page is in: in-sync. From now on its votes count, also in the transactions
      // that began while it was a learner (learner_may_drop).
      if (m_changing) {
        c.retry_at = now + 20;
        return;
      }
      auto next = m_members;
      next.slots[c.slot].state = membership::State::in_sync;
      c.id = UINT64_MAX;  // nothing more to send
      return change_members(std::move(next), out);
    }
  }
}

bool Core::catchup_scan_reply(ev::ScanReply& e, int64_t now, Actions& out) {
  if (!m_catchup || m_catchup->id != e.scan || e.scan == 0) return false;
  auto& c = *m_catchup;
  c.id = 0;
  if (e.reply.kind == protocol::ScanReply::error) {  // in doubt there, busy, gone: again soon
    c.retry_at = now + 100;
    return true;
  }
  // The keys this participant copies from this source: it owns them, and this is the lowest
  // numbered source among their owners (SYNCBEGIN told it the sources).
  size_t q = c.sources[c.src];
  protocol::Sync page{c.pass, q, c.after, "", e.reply.more, {}, false};
  if (page.more && !e.reply.kvs.empty()) page.upto = e.reply.kvs.back().first;
  for (auto& [k, v] : e.reply.kvs) {
    auto o = m_members.owners(k);
    if (c.gain) {
      auto g = m_members.gains(k);
      if (!std::count(g.begin(), g.end(), c.slot)) continue;
    } else if (!std::count(o.begin(), o.end(), c.slot)) {
      continue;
    }
    size_t from = SIZE_MAX;
    for (size_t x : o)
      if (x != c.slot && std::count(c.sources.begin(), c.sources.end(), x)) {
        from = x;
        break;
      }
    if (from != q) continue;
    c.bytes += k.size() + v.size();
    page.kvs.emplace_back(k, v);
  }
  page.last = !page.more && c.src + 1 == c.sources.size();
  c.page = std::move(page);
  c.step = CatchUp::sync;
  c.id = m_next_read++;
  out.list.push_back(act::Send{c.slot, c.page, c.id});
  return true;
}

void Core::on(int64_t now, ev::SyncReply& e, Actions& out) {
  if (!m_catchup || m_catchup->id != e.id || e.part != m_catchup->slot) return;
  auto& c = *m_catchup;
  c.id = 0;
  if (!e.status) {
    // STATE: it lost the pass (it restarted): a new one. Else (busy, gone): again soon.
    if (e.status.code() == "STATE") return start_catchup(c.slot, now, out, c.gain);
    c.retry_at = now + 100;
    return;
  }
  if (c.step == CatchUp::begin) {
    // The pass began there: what waited for it runs now.
    c.step = CatchUp::scan;
    c.drain_since = -1;
    if (!m_parked.empty()) unpark(now, out);
  } else if (c.step == CatchUp::sync) {
    c.keys += c.page.kvs.size();
    if (c.page.more) {
      c.after = c.page.upto;
    } else if (++c.src < c.sources.size()) {
      c.after.clear();
    } else {
      c.step = CatchUp::done;
    }
    c.page = {};
    if (c.step == CatchUp::sync) c.step = CatchUp::scan;
  }
  catchup_send(now, out);
}

bool Core::wait_for_members(int64_t now, ev::Get* g, ev::Scan* s, Actions& out) {
  if (members_fresh(now)) return false;
  ClientId client = g ? g->client : s->client;
  // Shared store: the membership in effect is not confirmed recently, so a copy it calls
  // in-sync may have been marked out by another leader: wait for the store's word.
  if (!m_store_up)
    out.list.push_back(
        act::Reply{client, reply(ClientReply::error, "UNAVAILABLE",
                                 "the decision store (etcd) is unreachable: the membership is not "
                                 "confirmed; try again")});
  else if (g)
    park(now, {}, *g, out, true);
  else
    park(now, {}, *s, out, true);
  return true;
}

void Core::on(int64_t now, ev::Get& e, Actions& out) {
  if (wait_for_members(now, &e, nullptr, out)) return;
  // In-sync owners only: another may lack acknowledged writes.
  auto owners = m_members.readers(e.key);
  if (owners.empty())
    return out.list.push_back(act::Reply{
        e.client, reply(ClientReply::error, "UNAVAILABLE",
                        "no in-sync copy of this key: " + m_members.describe_owners(e.key))});
  // Nobody to ask yet, but an owner is connecting: wait for it.
  if (std::none_of(owners.begin(), owners.end(), [&](size_t p) { return m_up[p]; }) &&
      park(now, owners, e, out))
    return;
  // Owners in rotation, starting at a different one each time.
  PendingRead r{e.client, e.key, {}, 0};
  for (size_t i = 0; i < owners.size(); ++i)
    r.order.push_back(owners[(m_read_rr + i) % owners.size()]);
  ++m_read_rr;
  uint64_t id = m_next_read++;
  m_reads[id] = std::move(r);
  try_read(id, out);
}

void Core::try_read(uint64_t id, Actions& out) {
  auto& r = m_reads.at(id);
  while (r.next < r.order.size() && !m_up[r.order[r.next]]) ++r.next;
  if (r.next >= r.order.size()) {
    out.list.push_back(act::Reply{
        r.client, reply(ClientReply::error, "UNAVAILABLE", "no live participant owns this key")});
    m_reads.erase(id);
    return;
  }
  out.list.push_back(act::Send{r.order[r.next], protocol::Read{r.key, m_members.epoch}, id});
}

void Core::on(int64_t, ev::ReadReply& e, Actions& out) {
  auto it = m_reads.find(e.read);
  if (it == m_reads.end()) return;
  const auto& rr = e.reply;
  if (rr.kind == protocol::ReadReply::error && rr.code == "UNAVAILABLE") {
    ++it->second.next;  // that owner went away: try the next
    return try_read(e.read, out);
  }
  ClientReply r;
  if (rr.kind == protocol::ReadReply::found) {
    r.kind = ClientReply::found;
    r.value = rr.value;
  } else if (rr.kind == protocol::ReadReply::absent) {
    r.kind = ClientReply::not_found;
  } else {
    r = reply(ClientReply::error, rr.code, rr.detail);
  }
  out.list.push_back(act::Reply{it->second.client, std::move(r)});
  m_reads.erase(it);
}

// --- scans: docs/protocol.md ("SCAN") -----------------------------------------------------

protocol::ScanReply merge_scan(const std::vector<protocol::ScanReply>& pages, uint64_t limit,
                               uint64_t max_bytes) {
  std::optional<std::string> cut;
  for (auto& p : pages)
    if (p.more && !p.kvs.empty() && (!cut || p.kvs.back().first < *cut)) cut = p.kvs.back().first;
  std::map<std::string, const std::string*> keys;
  for (auto& p : pages)
    for (auto& [k, v] : p.kvs)
      if (!cut || k <= *cut) keys.emplace(k, &v);
  protocol::ScanReply out;
  out.kind = protocol::ScanReply::keys;
  out.more = cut.has_value();
  uint64_t bytes = 0;
  for (auto& [k, v] : keys) {
    if (out.kvs.size() >= limit || (!out.kvs.empty() && bytes + k.size() + v->size() > max_bytes)) {
      out.more = true;
      break;
    }
    bytes += k.size() + v->size();
    out.kvs.emplace_back(k, *v);
  }
  return out;
}

// A scan reads every participant that may hold keys of the range, or one when each holds
// every key. Several participants are read at different moments, so their pages are one
// snapshot only if no transaction prepared a write in the range at any of them between its
// read and the last one: each holds a read lock (a watch, refusing writes) on the range it
// answered for, and SCANCHECK asks, once every page is in, whether it still held it. A lock
// lost (it expires) means the page is read again (k_scan_attempts in all).
void Core::on(int64_t now, ev::Scan& e, Actions& out) {
  if (wait_for_members(now, nullptr, &e, out)) return;
  PendingScan s;
  s.req = std::move(e);
  size_t n = m_members.size(), placed = 0;
  for (size_t i = 0; i < n; ++i) placed += m_members.placed(i);
  if (m_members.copies() >= placed) {  // every key on every placed slot: one of them
    for (size_t i = 0; i < n; ++i) s.order.push_back((m_read_rr + i) % n);
    ++m_read_rr;
  }
  uint64_t id = m_next_read++;
  m_scans.emplace(id, std::move(s));
  start_scan(id, out);
}

void Core::start_scan(uint64_t id, Actions& out) {
  auto& s = m_scans.at(id);
  auto fail = [&](const char* code, std::string why) {
    out.list.push_back(act::Reply{s.req.client, reply(ClientReply::error, code, std::move(why))});
    m_scans.erase(id);
  };
  s.pages.clear();
  s.checks.clear();
  s.parts.clear();
  if (!s.order.empty()) {
    while (s.next < s.order.size() && !serves(s.order[s.next])) ++s.next;
    if (s.next >= s.order.size()) return fail("UNAVAILABLE", "no live in-sync participant");
    s.parts.push_back(s.order[s.next]);
  } else {
    size_t placed = 0, down = 0;
    for (size_t p = 0; p < m_up.size(); ++p) {
      if (serves(p)) s.parts.push_back(p);
      if (!m_members.placed(p)) continue;
      ++placed;
      down += !serves(p);
    }
    if (down >= m_members.copies())
      return fail("UNAVAILABLE",
                  fmt::format("{} of {} participants are down or not in-sync: keys held only by "
                              "them (each key has {} owners) cannot be listed",
                              down, placed, m_members.copies()));
    s.watch = fmt::format("{}-{}-{}-{}", m_cfg.id, m_cfg.incarnation, id, s.attempt);
  }
  const auto& r = s.req;
  for (size_t p : s.parts)
    out.list.push_back(act::Send{
        p, protocol::Scan{r.prefix, r.after, r.limit, r.max_bytes, s.watch, m_members.epoch}, id});
}

void Core::on(int64_t now, ev::ScanReply& e, Actions& out) {
  if (catchup_scan_reply(e, now, out)) return;
  auto it = m_scans.find(e.scan);
  if (it == m_scans.end()) return;
  auto& s = it->second;
  if (std::find(s.parts.begin(), s.parts.end(), e.part) == s.parts.end() || s.pages.count(e.part))
    return;
  if (s.watch.empty() && e.reply.kind == protocol::ScanReply::error &&
      e.reply.code == "UNAVAILABLE") {
    ++s.next;  // that participant went away: the next one
    return start_scan(e.scan, out);
  }
  s.pages[e.part] = std::move(e.reply);
  if (s.pages.size() < s.parts.size()) return;
  for (auto& [p, page] : s.pages) {
    if (page.kind != protocol::ScanReply::error) continue;
    for (auto& [q, other] : s.pages)  // release the others' watches
      if (!s.watch.empty() && other.kind == protocol::ScanReply::keys)
        out.list.push_back(act::Send{q, protocol::ScanCheck{s.watch}, e.scan});
    if (page.code == "UNAVAILABLE" && ++s.attempt < k_scan_attempts)
      return start_scan(e.scan, out);  // a participant went away: who is up now?
    out.list.push_back(act::Reply{s.req.client, reply(ClientReply::error, page.code, page.detail)});
    m_scans.erase(it);
    return;
  }
  std::vector<protocol::ScanReply> pages;
  for (auto& [p, page] : s.pages) pages.push_back(std::move(page));
  s.merged = merge_scan(pages, s.req.limit, s.req.max_bytes);
  if (s.watch.empty()) return finish_scan(it, out);
  for (size_t p : s.parts) out.list.push_back(act::Send{p, protocol::ScanCheck{s.watch}, e.scan});
}

void Core::finish_scan(std::map<uint64_t, PendingScan>::iterator it, Actions& out) {
  ClientReply r;
  r.kind = ClientReply::keys;
  r.more = it->second.merged.more;
  r.kvs = std::move(it->second.merged.kvs);
  out.list.push_back(act::Reply{it->second.req.client, std::move(r)});
  m_scans.erase(it);
}

void Core::on(int64_t, ev::ScanChecked& e, Actions& out) {
  auto it = m_scans.find(e.scan);
  if (it == m_scans.end() || e.watch != it->second.watch) return;
  auto& s = it->second;
  if (s.pages.size() < s.parts.size()) return;  // a release of an attempt that failed
  s.checks[e.part] = e.clean;
  if (s.checks.size() < s.parts.size()) return;
  bool clean = std::all_of(s.checks.begin(), s.checks.end(), [](auto& c) { return c.second; });
  if (clean) {
    finish_scan(it, out);
  } else if (++s.attempt < k_scan_attempts) {
    start_scan(e.scan, out);
  } else {
    out.list.push_back(
        act::Reply{s.req.client,
                   reply(ClientReply::error, "CONFLICT",
                         fmt::format("a participant's read lock on the range was lost ({} tries)",
                                     k_scan_attempts))});
    m_scans.erase(it);
  }
}

std::optional<Core::Phase> Core::phase(const std::string& txid) const {
  auto it = m_txns.find(txid);
  if (it == m_txns.end()) return std::nullopt;
  return it->second.phase;
}

size_t Core::unacked() const {
  size_t n = 0;
  for (auto& txid : m_decided) n += m_txns.at(txid).unacked.size();
  return n;
}

}  // namespace tpc::leader
