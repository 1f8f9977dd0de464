#include "participant/core.h"

#include <algorithm>

#include <fmt/format.h>

#include "protocol/codec.h"
#include "txlog/record.h"

namespace tpc::participant {

using protocol::Decision;
using tpc::OpKind;
namespace {
constexpr int64_t k_scan_ms = 100;  // how often in-doubt transactions are looked at
constexpr int64_t k_takeover_poll_ms = 1000;  // longest wait between asks, with several leaders

protocol::Vote no(std::string code, std::string detail) {
  return {protocol::Vote::no, std::move(code), std::move(detail), 0};
}
protocol::Vote yes(int64_t force_us) { return {protocol::Vote::yes, "", "", force_us}; }
protocol::ReadReply read_reply(protocol::ReadReply::Kind k, std::string value = {},
                               std::string code = {}, std::string detail = {}) {
  return {k, std::move(value), std::move(code), std::move(detail)};
}
}  // namespace

std::string encode(const ReplyMsg& m) {
  return std::visit([](auto& x) { return protocol::encode(x); }, m);
}

std::string encode_prepared(const Prepared& p) {
  txlog::Encoder e;
  e.str(p.txid).str(p.leader).str(p.leader_addr).u64(static_cast<uint64_t>(p.prepared_at_ms));
  e.u64(p.ops.size());
  for (auto& op : p.ops) e.u8(static_cast<uint8_t>(op.kind)).str(op.key).str(op.value);
  e.str(p.rid).str(p.leader_node);
  return e.data();
}

Result<Prepared> decode_prepared(const std::string& payload) {
  const Status bad = Status::error("CORRUPT", "undecodable PREPARED record");
  txlog::Decoder d(payload);
  Prepared p;
  uint64_t at, n;
  if (!d.str(&p.txid) || !d.str(&p.leader) || !d.str(&p.leader_addr) || !d.u64(&at) || !d.u64(&n) ||
      n > payload.size())
    return bad;
  p.prepared_at_ms = static_cast<int64_t>(at);
  for (uint64_t i = 0; i < n; ++i) {
    uint8_t k;
    Op op;
    if (!d.u8(&k) || k > 3 || !d.str(&op.key) || !d.str(&op.value)) return bad;
    op.kind = static_cast<OpKind>(k);
    p.ops.push_back(std::move(op));
  }
  // Older records end before the request id, or before the leader's node id.
  if (!d.done() && !d.str(&p.rid)) return bad;
  if (!d.done() && (!d.str(&p.leader_node) || !d.done())) return bad;
  return p;
}

std::string encode_heuristic(const std::string& txid, const Heuristic& h) {
  return txlog::Encoder()
      .str(txid)
      .u8(h.commit ? 1 : 0)
      .str(h.leader_addr)
      .str(h.rid)
      .u8(h.relayed ? 1 : 0)
      .u8(h.reported ? 1 : 0)
      .data();
}

Result<std::pair<std::string, Heuristic>> decode_heuristic(const std::string& payload) {
  const Status bad = Status::error("CORRUPT", "undecodable HEURISTIC record");
  txlog::Decoder d(payload);
  std::pair<std::string, Heuristic> r;
  uint8_t commit, relayed, reported;
  if (!d.str(&r.first) || !d.u8(&commit) || commit > 1) return bad;
  r.second.commit = commit != 0;
  if (d.done()) {  // an older record: nothing to report it to
    r.second.reported = true;
    return r;
  }
  if (!d.str(&r.second.leader_addr) || !d.str(&r.second.rid) || !d.u8(&relayed) ||
      !d.u8(&reported) || !d.done() || relayed > 1 || reported > 1)
    return bad;
  r.second.relayed = relayed != 0;
  r.second.reported = reported != 0;
  return r;
}

// --- recovery -----------------------------------------------------------------------------

void Core::recover(const txlog::Record& rec) {
  if (rec.type == k_rec_prepared) {
    auto decoded = decode_prepared(rec.payload);
    TPC_CHECK(decoded.is_ok(), decoded.status().message());
    Prepared p = std::move(*decoded);
    p.durable = true;
    p.recovered = true;
    m_prepared[p.txid] = std::move(p);
  } else if (rec.type == k_rec_heuristic) {
    auto h = decode_heuristic(rec.payload);
    TPC_CHECK(h.is_ok(), h.status().message());
    m_heuristic[h->first] = std::move(h->second);
  } else if (rec.type == k_rec_reported) {
    txlog::Decoder d(rec.payload);
    std::string txid;
    TPC_CHECK(d.str(&txid) && d.done(), "undecodable REPORTED record");
    if (auto h = m_heuristic.find(txid); h != m_heuristic.end()) h->second.reported = true;
  } else if (rec.type == k_rec_epoch) {
    txlog::Decoder d(rec.payload);
    uint64_t e = 0;
    TPC_CHECK(d.u64(&e) && d.done(), "undecodable EPOCH record");
    m_epoch = std::max(m_epoch, e);
  } else if (rec.type == k_rec_committed || rec.type == k_rec_aborted) {
    txlog::Decoder d(rec.payload);
    std::string txid;
    TPC_CHECK(d.str(&txid) && d.done(), "undecodable outcome record");
    auto it = m_prepared.find(txid);
    if (rec.type == k_rec_committed && it != m_prepared.end())
      m_redo.push_back(std::move(it->second));
    if (it != m_prepared.end()) m_prepared.erase(it);
    if (rec.type == k_rec_aborted) m_recent_aborted.insert(txid);
    if (rec.type == k_rec_committed) m_recent_committed.insert(txid);
  } else {
    fatal(fmt::format("participant log: unknown record type {}", rec.type));
  }
}

Actions Core::start(int64_t now, int64_t, const std::set<std::string>& applied) {
  Actions out;
  // Redo committed transactions the store lost (it is not forced at commit), in log order;
  // those whose applied mark survived are skipped, so this is idempotent.
  act::Apply redo;
  for (auto& p : m_redo) {
    if (applied.count(p.txid)) continue;
    redo.batch.emplace_back(p.txid, &p.ops);
    m_applying.push_back(p.txid);
    ++m_redone;
  }
  if (!redo.batch.empty()) {
    m_redo_applying = true;
    out.list.push_back(std::move(redo));
  } else {
    m_redo.clear();
  }
  for (auto it = m_prepared.begin(); it != m_prepared.end();) {
    // Crash after the store applied the commit but before the COMMITTED record: done.
    if (applied.count(it->first)) {
      m_recent_committed.insert(it->first);
      it = m_prepared.erase(it);
      continue;
    }
    for (auto& op : it->second.ops) m_locks[op.key] = it->first;
    m_queries[it->first] = Query{now, m_cfg.resolve_backoff_ms};  // ask at once
    ++it;
  }
  for (auto& [txid, h] : m_heuristic)
    if (report_due(h)) m_reports_due.insert(txid);
  // An operator's decision forced to the log before the crash, not yet carried out: it is
  // carried out now, never replaced by the leader's (the record is what gets reported).
  std::vector<std::pair<std::string, bool>> decided;
  for (auto& [txid, p] : m_prepared)
    if (auto h = m_heuristic.find(txid); h != m_heuristic.end())
      decided.emplace_back(txid, h->second.commit);
  for (auto& [txid, commit] : decided) {
    if (commit)
      this->commit(txid, 0, out);
    else
      abort(txid, 0, out);
  }
  m_next_scan_ms = now;
  out.wake_at = next_wake(now);
  return out;
}

// --- the event loop -----------------------------------------------------------------------

void Core::step(int64_t now, int64_t wall, Event e, Actions& out) {
  m_now = now;
  std::visit([&](auto& x) { on(now, wall, x, out); }, e);
  out.wake_at = next_wake(now);
}

int64_t Core::next_wake(int64_t now) const {
  int64_t w = 0;
  if (!m_read_deadlines.empty()) w = m_read_deadlines.begin()->first;
  for (auto& l : m_listers) w = w == 0 ? l.deadline_ms : std::min(w, l.deadline_ms);
  if (!m_prepared.empty() || !m_reports_due.empty()) {
    int64_t s = std::max(m_next_scan_ms, now);
    w = w == 0 ? s : std::min(w, s);
  }
  return w;
}

void Core::reply(Actions& out, ClientId c, ReplyMsg m) {
  if (c) out.list.push_back(act::Reply{c, std::move(m)});
}

void Core::on(int64_t, int64_t wall, ev::Prepare& e, Actions& out) {
  auto& m = e.msg;
  // A NO is final here: a late copy of this PREPARE is refused again (the transaction may
  // still commit without a learner: docs/membership.md).
  auto refuse = [&](protocol::Vote v) {
    m_recent_aborted.insert(m.txid);
    reply(out, e.client, std::move(v));
  };
  if (auto it = m_prepared.find(m.txid); it != m_prepared.end()) {
    // A repeated PREPARE: YES once durable (also when decided since), else wait for it.
    if (it->second.durable) return reply(out, e.client, yes(0));
    if (e.client) m_vote_waiters[m.txid].push_back(e.client);
    return;
  }
  if (m_recent_aborted.contains(m.txid))
    return refuse(no("ABORTED", "transaction was already aborted here"));
  if (!epoch_ok(m.epoch, out)) return refuse(no("EPOCH", epoch_refusal(m.epoch)));
  // A late copy of the PREPARE of a transaction committed here: it voted YES already.
  if (m_recent_committed.contains(m.txid)) return reply(out, e.client, yes(0));
  // Locks first: a held lock is an immediate NO (no waiting, so no deadlock).
  for (auto& op : m.ops) {
    auto it = m_locks.find(op.key);
    if (it != m_locks.end())
      return refuse(no(
          "CONFLICT", fmt::format("key {} is locked by {}", protocol::escape(op.key), it->second)));
  }
  // A write into a range a scan reads (or waits to read) waits for the scan: refused now.
  if (!m_listers.empty() || !m_watches.empty())
    for (auto& op : m.ops)
      if (op.is_write() && scanned(op.key, m_now))
        return refuse(no("CONFLICT", fmt::format("key {} is in a range being scanned",
                                                 protocol::escape(op.key))));
  // Conditions are evaluated against committed data; the locks taken below keep them true
  // until the decision. A learner (catching up) does not: its copies may be stale, and its
  // vote does not count.
  for (auto& op : m.ops) {
    if (m.learner || (op.kind != OpKind::check && op.kind != OpKind::absent)) continue;
    auto v = m_store.get(op.key);
    if (!v) return refuse(no("STORAGE", v.status().message()));
    if (op.kind == OpKind::absent && v->has_value())
      return refuse(no("CHECK", fmt::format("absent {} failed: found {}", protocol::escape(op.key),
                                            protocol::escape(**v))));
    if (op.kind == OpKind::check && (!v->has_value() || **v != op.value))
      return refuse(no(
          "CHECK", fmt::format("check {} {} failed: found {}", protocol::escape(op.key),
                               protocol::escape(op.value),
                               v->has_value() ? protocol::escape(**v) : std::string("(absent)"))));
  }
  Prepared p;
  p.txid = m.txid;
  p.rid = std::move(m.rid);
  p.leader_node = std::move(e.from);
  p.leader = std::move(m.leader);
  p.leader_addr = std::move(m.leader_addr);
  p.ops = std::move(m.ops);
  p.prepared_at_ms = wall;
  if (m_sync) p.sync_pass = m_sync->seq;
  p.learner = m.learner;
  p.placement_gen = m_placement_gen;
  std::string record = encode_prepared(p);
  // A vote is a promise to remember: never vote YES on what the log cannot hold.
  if (record.size() > txlog::k_max_payload)
    return refuse(no("TOOLARGE", fmt::format("transaction of {} bytes exceeds the log's record "
                                             "limit of {} bytes",
                                             record.size(), txlog::k_max_payload)));
  for (auto& op : p.ops) m_locks[op.key] = p.txid;
  if (e.client) m_vote_waiters[p.txid].push_back(e.client);
  out.list.push_back(act::Append{act::Append::force, k_rec_prepared, std::move(record), p.txid});
  std::string txid = p.txid;
  m_prepared.emplace(std::move(txid), std::move(p));
}

void Core::on(int64_t, int64_t, ev::Durable& e, Actions& out) {
  auto it = m_prepared.find(e.txid);
  if (e.type == k_rec_prepared) {
    bool still = it != m_prepared.end();
    if (still) it->second.durable = true;
    auto w = m_vote_waiters.find(e.txid);
    if (w == m_vote_waiters.end()) return;
    for (auto c : w->second)
      reply(out, c, still ? yes(e.force_us) : no("ABORTED", "transaction was aborted meanwhile"));
    m_vote_waiters.erase(w);
  } else if (e.type == k_rec_committed) {
    if (it == m_prepared.end()) return;
    TPC_CHECK(it->second.applied, "COMMITTED durable before the apply of " + e.txid);
    finish(it, out);
  } else if (e.type == k_rec_heuristic) {
    auto r = m_resolvers.find(e.txid);
    TPC_CHECK(r != m_resolvers.end(), "HEURISTIC durable without a resolve of " + e.txid);
    ClientId client = r->second.client;
    bool commit = r->second.h.commit;
    if (report_due(r->second.h)) m_reports_due.insert(e.txid);
    m_heuristic[e.txid] = std::move(r->second.h);
    m_resolvers.erase(r);
    if (it == m_prepared.end() || it->second.applying)
      return reply(out, client, protocol::Ack{});          // resolved meanwhile
    if (commit) return this->commit(e.txid, client, out);  // ACK once durable
    abort(e.txid, client, out);
  }
}

void Core::on(int64_t, int64_t, ev::Members& e, Actions& out) {
  epoch_ok(e.epoch, out);  // (the server refused an older one)
  m_members = std::move(e);
  if (auto view = placement_view(m_members->members); view != m_placement_view) {
    m_placement_view = std::move(view);
    ++m_placement_gen;
  }
  prune(out);
}

std::string Core::placement_view(const membership::Membership& mem) {
  std::string view = std::to_string(mem.replicas);
  for (size_t p = 0; p < mem.size(); ++p)
    if (mem.placed(p)) view += " " + mem.slots[p].name;
  return view;
}

void Core::prune(Actions& out) {
  // Only under a placement that is not changing, in a slot that holds keys in it: a removed
  // slot keeps what it had (an operator's last resort), a slot being moved keeps everything.
  const auto& mem = m_members->members;
  size_t me = m_members->slot;
  if (mem.moving() || me >= mem.size() || !mem.placed(me)) return;
  const std::string& view = m_placement_view;
  if (view == m_pruned_view) return;
  // A batch being applied may write keys this scan would not see: after it (ev::Applied).
  // (Batches after the prune leave out the keys this participant does not own: Flush.)
  m_prune_wanted = !m_applying.empty() || !m_sync_applying.empty();
  if (m_prune_wanted) return;
  m_pruned_view = view;
  // Every key here that another slot owns now went there with the change (copied before its
  // cutover): deleted. Also one a prepared transaction locks: if it commits, Flush leaves the
  // key out (it is not this participant's); this copy is read by nobody.
  std::string after;
  uint64_t pages = 0;
  for (;;) {
    auto kvs = m_store.scan(after, 1000, 1 << 20);
    if (!kvs) {
      out.list.push_back(act::Note{
          act::Note::warn,
          "dropping the keys this participant no longer owns: " + kvs.status().message()});
      m_pruned_view.clear();  // again at the next JOIN
      return;
    }
    if (kvs->empty()) break;
    SyncPage page{0, fmt::format("prune.{}.{}", m_members->epoch, ++pages), {}, false};
    for (auto& [k, v] : *kvs) {
      auto o = mem.owners(k);
      if (std::count(o.begin(), o.end(), me)) continue;
      page.ops.push_back(Op{OpKind::del, k, ""});
    }
    after = kvs->back().first;
    if (page.ops.empty()) continue;
    m_pruned_keys += page.ops.size();
    m_sync_queue.push_back(std::move(page));
    out.flush = true;
  }
}

bool Core::epoch_ok(uint64_t e, Actions& out) {
  if (e == 0 || e == m_epoch) return true;  // unsaid (a client's READ, an older leader)
  if (e < m_epoch) {
    ++m_epoch_refusals;
    return false;
  }
  m_epoch = e;
  out.list.push_back(
      act::Append{act::Append::none, k_rec_epoch, txlog::Encoder().u64(e).data(), ""});
  return true;
}

std::string Core::epoch_refusal(uint64_t e) const {
  return fmt::format(
      "this participant was given membership epoch {}; this request is of epoch "
      "{}: its leader has not taken the newer membership yet",
      m_epoch, e);
}

void Core::on(int64_t, int64_t, ev::SyncBegin& e, Actions& out) {
  // A copy of gained keys needs the membership that says which: one from before the change
  // (a JOIN not yet here) would take none and delete them all.
  if (e.msg.gain && (!m_members || !m_members->members.moving()))
    return reply(out, e.client,
                 protocol::Error{"STATE",
                                 "no members changing in this participant's membership "
                                 "(a newer JOIN has not come yet)"});
  if (!m_sync || m_sync->pass != e.msg.pass)
    m_sync = SyncPass{++m_sync_passes, e.msg.pass,   std::move(e.msg.sources), {}, 0,
                      e.msg.gain,      e.msg.drained};
  reply(out, e.client, protocol::Ack{});
}

void Core::on(int64_t, int64_t, ev::Sync& e, Actions& out) {
  auto& m = e.msg;
  if (!m_sync || m_sync->pass != m.pass)
    return reply(out, e.client,
                 protocol::Error{"STATE", "no copy pass " + m.pass + " under way here"});
  if (!m_members || m.source >= m_members->members.size() ||
      m_members->slot >= m_members->members.size())
    return reply(out, e.client,
                 protocol::Error{"STATE", "no membership here, or no such source slot"});
  auto in_range = [&](const std::string& k) { return k > m.after && (!m.more || k <= m.upto); };
  // A prepared write in the range is older or newer than the page: wait for its outcome.
  // (Not in a drained pass: every transaction prepared here since it began is newer than its
  // pages, and one that commits after a page is queued is applied after it.)
  if (!m_sync->drained)
    if (auto l = m_locks.upper_bound(m.after); l != m_locks.end() && in_range(l->first))
      return reply(out, e.client,
                   protocol::Error{"BUSY", fmt::format("key {} of the page is locked by {}",
                                                       protocol::escape(l->first), l->second)});
  const auto& mem = m_members->members;
  // The keys this page answers for: owned here (gained, in a pass of gained keys), and copied
  // from this source (the lowest numbered source among the key's owners).
  auto shared = [&](const std::string& k) {
    auto o = mem.owners(k);
    // A pass of the keys it gains (members changing) copies those, and leaves alone the keys
    // it owns: they are current here.
    auto mine = m_sync->gain ? mem.gains(k) : o;
    if (!std::count(mine.begin(), mine.end(), m_members->slot)) return false;
    for (size_t x : o)
      if (x != m_members->slot && std::count(m_sync->sources.begin(), m_sync->sources.end(), x))
        return x == m.source;
    return false;
  };
  auto& dirty = m_sync->dirty;
  SyncPage page{e.client, fmt::format("sync.{}.{}", m.pass, ++m_sync->pages), {}, m.last};
  std::set<std::string> in_page;
  for (auto& [k, v] : m.kvs) {
    if (!in_range(k) || !shared(k)) continue;
    in_page.insert(k);
    if (!dirty.count(k)) page.ops.push_back(Op{OpKind::put, k, v});
  }
  // This participant's keys of the range that the source does not hold: deleted there.
  std::string cursor = m.after;
  for (bool past = false; !past;) {
    auto kvs = m_store.scan(cursor, 1000, 1 << 20);
    if (!kvs) return reply(out, e.client, protocol::Error{"STORAGE", kvs.status().message()});
    if (kvs->empty()) break;
    for (auto& [k, v] : *kvs) {
      if (!in_range(k)) {
        past = true;
        break;
      }
      if (!in_page.count(k) && !dirty.count(k) && shared(k))
        page.ops.push_back(Op{OpKind::del, k, ""});
    }
    cursor = kvs->back().first;
  }
  m_sync_queue.push_back(std::move(page));
  out.flush = true;
}

void Core::commit(const std::string& txid, ClientId client, Actions& out) {
  auto it = m_prepared.find(txid);
  if (it == m_prepared.end()) {
    if (auto h = m_heuristic.find(txid); h != m_heuristic.end()) {
      // The leader's COMMIT is its decision: a report of the operator's outcome is answered.
      if (client) mark_reported(txid, h->second, out);
      if (!h->second.commit) {
        out.list.push_back(act::Note{act::Note::error,
                                     fmt::format("HEURISTIC MISMATCH: {} was aborted here on an "
                                                 "operator's order but its leader decided commit",
                                                 txid)});
        return reply(out, client, protocol::HeuristicReply{false});
      }
    }
    // Already applied (or never prepared here): acknowledge, apply nothing.
    return reply(out, client, protocol::Ack{});
  }
  Prepared& p = it->second;
  if (!p.durable) {
    // Cannot happen with a correct leader: it commits only after our YES, sent after the force.
    out.list.push_back(
        act::Note{act::Note::error, "COMMIT " + txid + " before its prepare is durable; refused"});
    return reply(out, client, protocol::Error{"STATE", "prepare not yet durable"});
  }
  // Acknowledged once the COMMITTED record is durable.
  if (client) m_commit_waiters[txid].push_back(client);
  if (p.applying) return;  // already being committed
  p.applying = true;
  m_queries.erase(txid);
  // Applied in the next batch: COMMITs that arrive in one turn share one store transaction.
  m_commit_queue.push_back(txid);
  // A copy under way leaves the keys this commit writes alone, when it was prepared since the
  // copy began or as a learner: it may be newer than a page (a source may not even have
  // prepared it when its page was read). (One prepared before, not as a learner, was decided
  // before the copy began: a source's page is read once the source applied it; and a page
  // that finds its key still locked here waits.)
  if (m_sync && (p.sync_pass == m_sync->seq || p.learner))
    for (auto& op : p.ops)
      if (op.is_write()) m_sync->dirty.insert(op.key);
  out.flush = true;
}

bool Core::denied(const std::string& verb, const std::string& txid, const std::string& from,
                  ClientId client, Actions& out) {
  auto it = m_prepared.find(txid);
  if (it == m_prepared.end() || it->second.leader_node.empty() || from == it->second.leader_node)
    return false;
  std::string why = fmt::format("{} of {} from node {}, but leader node {} prepared it", verb, txid,
                                from.empty() ? "(none)" : from, it->second.leader_node);
  out.list.push_back(act::Note{act::Note::warn, "refused " + why});
  reply(out, client, protocol::Error{"DENIED", why});
  return true;
}

// While an operator's decision is being forced, the leader's COMMIT or ABORT is refused
// (COMMIT is re-sent, and then answered by that decision): the operator's order, once
// accepted, is what this participant carries out and reports.
bool Core::resolving(const std::string& txid, ClientId client, Actions& out) {
  if (!m_resolvers.count(txid)) return false;
  reply(out, client,
        protocol::Error{"STATE", "an operator's decision of " + txid + " is being recorded"});
  return true;
}

void Core::on(int64_t, int64_t, ev::Commit& e, Actions& out) {
  if (denied("COMMIT", e.txid, e.from, e.client, out) || resolving(e.txid, e.client, out)) return;
  commit(e.txid, e.client, out);
}

void Core::on(int64_t, int64_t, ev::Flush&, Actions& out) {
  if (!m_applying.empty() || !m_sync_applying.empty()) return;  // next flush after Applied
  if (m_commit_queue.empty() && m_sync_queue.empty()) return;
  act::Apply a;
  // Copied pages before the commits of this batch: a page leaves out the keys of the commits
  // queued before it (dirty), so only a commit queued after the page was read can share a key
  // with it, and that commit is newer (its key was locked here, or it was prepared since the
  // copy began): it wins.
  m_sync_applying = std::move(m_sync_queue);
  m_sync_queue.clear();
  for (auto& page : m_sync_applying) {
    a.batch.emplace_back(page.mark, &page.ops);
    a.durable |= page.last;
  }
  // A key this participant no longer owns (a change moved it since the prepare, and the prune
  // dropped it here) is not written back: its owners have it. Only a transaction prepared
  // under another placement can hold one (the leader sends each participant its own keys).
  bool filter = false;
  if (m_members && !m_members->members.moving()) {
    const auto& mem = m_members->members;
    size_t me = m_members->slot;
    // (With every key on every placed slot, it owns them all.)
    filter = me < mem.size() && mem.placed(me) && mem.spread();
  }
  m_filtered_ops.clear();
  for (auto& txid : m_commit_queue) {
    const auto& p = m_prepared.at(txid);
    const auto& ops = p.ops;
    auto mine = [&](const Op& op) {
      auto o = m_members->members.owners(op.key);
      return std::count(o.begin(), o.end(), m_members->slot) > 0;
    };
    if (!filter || p.placement_gen == m_placement_gen ||
        std::all_of(ops.begin(), ops.end(), mine)) {
      a.batch.emplace_back(txid, &ops);
      continue;
    }
    // (A copy: the transaction's ops name the keys its locks are released on.)
    auto& kept = m_filtered_ops.emplace_back();
    std::copy_if(ops.begin(), ops.end(), std::back_inserter(kept), mine);
    a.batch.emplace_back(txid, &kept);
  }
  m_applying = std::move(m_commit_queue);
  m_commit_queue.clear();
  out.list.push_back(std::move(a));
}

void Core::on(int64_t, int64_t, ev::Applied&, Actions& out) {
  TPC_CHECK(!m_applying.empty() || !m_sync_applying.empty(), "Applied without an Apply");
  for (auto& page : m_sync_applying) reply(out, page.client, protocol::Ack{});
  m_sync_applying.clear();
  auto batch = std::move(m_applying);
  m_applying.clear();
  if (m_redo_applying) {
    m_redo_applying = false;  // recovery's redo: its COMMITTED records are in the log
    m_redo.clear();
  } else {
    // The COMMITTED record is the durable proof of the commit (the store is not forced): it
    // shares the log's group fsync with concurrent PREPARED records. Only after it is
    // durable are the locks released and the leader told.
    for (auto& txid : batch) {
      m_prepared.at(txid).applied = true;
      out.list.push_back(
          act::Append{act::Append::lazy, k_rec_committed, txlog::Encoder().str(txid).data(), txid});
    }
  }
  if (m_prune_wanted) prune(out);
  if (!m_commit_queue.empty() || !m_sync_queue.empty()) out.flush = true;
}

void Core::finish(std::map<std::string, Prepared>::iterator it, Actions& out) {
  const std::string txid = it->first;
  std::vector<std::string> released;
  for (auto& op : it->second.ops) {
    auto l = m_locks.find(op.key);
    if (l != m_locks.end() && l->second == txid) {
      m_locks.erase(l);
      released.push_back(op.key);
    }
  }
  if (it->second.applied) {
    ++m_committed;
    m_recent_committed.insert(txid);
    if (auto w = m_commit_waiters.find(txid); w != m_commit_waiters.end()) {
      for (auto c : w->second) reply(out, c, protocol::Ack{});
      m_commit_waiters.erase(w);
    }
  } else {
    ++m_aborted;
  }
  m_prepared.erase(it);
  m_queries.erase(txid);
  wake_readers(released, out);
  if (!m_listers.empty() && !released.empty()) wake_listers(m_now, out);
}

void Core::abort(const std::string& txid, ClientId client, Actions& out) {
  auto it = m_prepared.find(txid);
  if (it != m_prepared.end() && it->second.applying) {
    // Decided COMMIT here: an ABORT for it contradicts the leader.
    out.list.push_back(act::Note{
        act::Note::error,
        "ABORT " + txid + " after its COMMIT was decided: the leader contradicts itself; ignored"});
    return reply(out, client, protocol::Error{"STATE", "transaction is committing"});
  }
  if (it == m_prepared.end())
    if (auto h = m_heuristic.find(txid); h != m_heuristic.end()) {
      if (!h->second.commit) {
        if (client) mark_reported(txid, h->second, out);  // the leader decided abort too
      } else {
        // Reported to the leader by OUTCOME until it answers: an ABORT is not re-sent, so
        // this reply alone could be lost.
        out.list.push_back(act::Note{act::Note::error,
                                     fmt::format("HEURISTIC MISMATCH: {} was committed here on an "
                                                 "operator's order but its leader decided abort",
                                                 txid)});
        return reply(out, client, protocol::HeuristicReply{true});
      }
    }
  m_recent_aborted.insert(txid);
  if (it != m_prepared.end()) {
    out.list.push_back(
        act::Append{act::Append::none, k_rec_aborted, txlog::Encoder().str(txid).data(), txid});
    finish(it, out);
  }
  // A vote still waiting for its force will answer NO (the transaction is gone).
  reply(out, client, protocol::Ack{});
}

void Core::on(int64_t, int64_t, ev::Abort& e, Actions& out) {
  if (denied("ABORT", e.txid, e.from, e.client, out) || resolving(e.txid, e.client, out)) return;
  abort(e.txid, e.client, out);
}

void Core::on(int64_t, int64_t, ev::Resolve& e, Actions& out) {
  auto it = m_prepared.find(e.txid);
  if (it == m_prepared.end() || !it->second.durable || it->second.applying ||
      m_resolvers.count(e.txid))
    return reply(out, e.client, protocol::Error{"NOTFOUND", e.txid + " is not in doubt here"});
  out.list.push_back(act::Note{
      act::Note::warn,
      e.relayed ? fmt::format("{} {} on an operator's order, relaying its leader's decision; "
                              "reported to the leader",
                              e.commit ? "commit" : "abort", e.txid)
                : fmt::format("HEURISTIC decision by an operator: {} {} without its leader",
                              e.commit ? "commit" : "abort", e.txid)});
  Heuristic h;
  h.commit = e.commit;
  h.relayed = e.relayed;
  h.leader_addr = it->second.leader_addr;
  h.rid = it->second.rid;
  out.list.push_back(
      act::Append{act::Append::force, k_rec_heuristic, encode_heuristic(e.txid, h), e.txid});
  m_resolvers[e.txid] = {e.client, std::move(h)};
}

void Core::mark_reported(const std::string& txid, Heuristic& h, Actions& out) {
  if (h.reported) return;
  h.reported = true;
  m_reports_due.erase(txid);
  m_queries.erase(txid);
  out.list.push_back(
      act::Append{act::Append::none, k_rec_reported, txlog::Encoder().str(txid).data(), txid});
}

void Core::report_heuristics(int64_t now, Actions& out) {
  for (auto& txid : m_reports_due) {
    if (m_prepared.count(txid)) continue;  // its decision is still being carried out
    const Heuristic& h = m_heuristic.at(txid);
    auto [q, fresh] = m_queries.try_emplace(txid, Query{now, m_cfg.resolve_backoff_ms});
    (void)fresh;
    if (now < q->second.next_ms) continue;
    q->second.next_ms = now + q->second.backoff_ms;
    q->second.backoff_ms = std::min(q->second.backoff_ms * 2, m_cfg.resolve_max_backoff_ms);
    act::Ask a{h.leader_addr, txid, -1, h.commit, h.rid};
    out.list.push_back(std::move(a));
  }
}

// --- reads --------------------------------------------------------------------------------

void Core::on(int64_t now, int64_t, ev::Read& e, Actions& out) {
  if (!epoch_ok(e.epoch, out))
    return reply(
        out, e.client,
        protocol::ReadReply{protocol::ReadReply::error, "", "EPOCH", epoch_refusal(e.epoch)});
  read(e.client, e.key, now, now + m_cfg.read_timeout_ms, out, e.epoch != 0);
}

void Core::read(ClientId client, const std::string& key, int64_t now, int64_t deadline,
                Actions& out, bool leaders) {
  auto lk = m_locks.find(key);
  if (lk != m_locks.end()) {
    auto& p = m_prepared.at(lk->second);
    bool writes = false;
    for (auto& op : p.ops) writes |= op.key == key && op.is_write();
    if (writes) {
      // A prepared write may commit: wait for its outcome, so a read is never stale.
      if (now >= deadline)
        return reply(out, client,
                     read_reply(protocol::ReadReply::error, "", "INDOUBT",
                                fmt::format("key {} has a prepared write of {} whose outcome "
                                            "is not known yet",
                                            protocol::escape(key), p.txid)));
      m_readers.emplace(key, Reader{client, deadline, leaders});
      m_read_deadlines.insert({deadline, key});
      return;
    }
  }
  // A key a change moved away since the read was sent (it waited for a lock meanwhile): this
  // copy may be pruned; the leader asks another.
  if (leaders && m_members && !m_members->members.moving()) {
    const auto& mem = m_members->members;
    size_t me = m_members->slot;
    auto o = me < mem.size() && mem.placed(me) ? mem.owners(key) : std::vector<size_t>{me};
    if (!std::count(o.begin(), o.end(), me))
      return reply(out, client,
                   read_reply(protocol::ReadReply::error, "", "EPOCH",
                              fmt::format("key {} is no longer this participant's (membership "
                                          "epoch {})",
                                          protocol::escape(key), m_members->epoch)));
  }
  auto v = m_store.get(key);
  if (!v)
    return reply(out, client,
                 read_reply(protocol::ReadReply::error, "", "STORAGE", v.status().message()));
  if (!v->has_value()) return reply(out, client, read_reply(protocol::ReadReply::absent));
  reply(out, client, read_reply(protocol::ReadReply::found, std::move(**v)));
}

void Core::wake_readers(const std::vector<std::string>& keys, Actions& out) {
  for (auto& key : keys) {
    auto range = m_readers.equal_range(key);
    if (range.first == range.second) continue;
    std::vector<Reader> ready;
    for (auto it = range.first; it != range.second; ++it) {
      ready.push_back(it->second);
      m_read_deadlines.erase({it->second.deadline_ms, key});
    }
    m_readers.erase(range.first, range.second);
    for (auto& r : ready) read(r.client, key, m_now, r.deadline_ms, out, r.leaders);
  }
}

// --- scans --------------------------------------------------------------------------------

void Core::on(int64_t now, int64_t, ev::Scan& e, Actions& out) {
  if (!epoch_ok(e.msg.epoch, out)) {
    protocol::ScanReply r;
    r.code = "EPOCH";
    r.detail = epoch_refusal(e.msg.epoch);
    return reply(out, e.client, std::move(r));
  }
  list(Lister{e.client, std::move(e.msg), std::move(e.from), now + m_cfg.read_timeout_ms, {}}, now,
       out);
}

void Core::list(Lister l, int64_t now, Actions& out) {
  auto& m = l.msg;
  auto fail = [&](const char* code, std::string why) {
    protocol::ScanReply r;
    r.code = code;
    r.detail = std::move(why);
    reply(out, l.client, std::move(r));
  };
  // Keys with the prefix after `after`, in chunks, up to the limit and the byte budget (at
  // least one key). MORE when a key with the prefix follows the last one taken.
  protocol::ScanReply page;
  page.kind = protocol::ScanReply::keys;
  size_t bytes = 0;
  bool done = false;
  if (m.after < m.prefix) {
    auto v = m_store.get(m.prefix);  // the prefix itself is a key under it
    if (!v) return fail("STORAGE", v.status().message());
    if (v->has_value()) {
      bytes += m.prefix.size() + (*v)->size();
      page.kvs.emplace_back(m.prefix, std::move(**v));
    }
  }
  std::string cursor = m.after < m.prefix ? m.prefix : m.after;
  while (!done) {
    size_t want = static_cast<size_t>(
        std::min<uint64_t>(m.limit - std::min<uint64_t>(m.limit, page.kvs.size()) + 1, 32));
    auto chunk = m_store.scan(cursor, want, SIZE_MAX);
    if (!chunk) return fail("STORAGE", chunk.status().message());
    for (auto& [k, v] : *chunk) {
      if (k.compare(0, m.prefix.size(), m.prefix) != 0) {
        done = true;  // past the prefix
        break;
      }
      if (page.kvs.size() >= m.limit ||
          (!page.kvs.empty() && bytes + k.size() + v.size() > m.max_bytes)) {
        page.more = true;
        done = true;
        break;
      }
      bytes += k.size() + v.size();
      page.kvs.emplace_back(std::move(k), std::move(v));
    }
    if (chunk->size() < want) done = true;  // the end of the store
    if (!done) cursor = page.kvs.back().first;
  }
  l.range = ScanRange{m.prefix, m.after, page.more ? page.kvs.back().first : "", page.more};
  // A prepared write in the range may commit: wait for its outcome, as a read does (not for
  // a copy's page: committed values are what it copies).
  auto lk = m.committed          ? m_locks.end()
            : m.after < m.prefix ? m_locks.lower_bound(m.prefix)
                                 : m_locks.upper_bound(m.after);
  for (; lk != m_locks.end() && l.range.holds(lk->first); ++lk) {
    auto& p = m_prepared.at(lk->second);
    bool writes = false;
    for (auto& op : p.ops) writes |= op.key == lk->first && op.is_write();
    if (!writes) continue;
    if (now >= l.deadline_ms)
      return fail("INDOUBT", fmt::format("key {} has a prepared write of {} whose outcome is not "
                                         "known yet",
                                         protocol::escape(lk->first), p.txid));
    if (m_listers.size() >= k_max_waiting_scans)
      return fail("BUSY", "too many scans wait for in-doubt keys here");
    m_listers.push_back(std::move(l));
    return;
  }
  if (!m.watch.empty()) {
    std::erase_if(m_watches, [&](auto& w) { return w.second.expires_ms <= now; });
    if (m_watches.size() >= k_max_watches) return fail("BUSY", "too many scans in flight here");
    m_watches[l.from + " " + m.watch] = Watch{std::move(l.range), now + k_watch_ms};
  }
  reply(out, l.client, std::move(page));
}

bool Core::scanned(const std::string& key, int64_t now) const {
  for (auto& l : m_listers)
    if (l.range.holds(key)) return true;
  for (auto& [id, w] : m_watches)
    if (w.expires_ms > now && w.range.holds(key)) return true;
  return false;
}

void Core::wake_listers(int64_t now, Actions& out) {
  std::vector<Lister> waiting;
  waiting.swap(m_listers);
  for (auto& l : waiting) list(std::move(l), now, out);
}

void Core::on(int64_t now, int64_t, ev::ScanCheck& e, Actions& out) {
  // An unknown watch (expired, or forgotten by a restart) cannot vouch for its range.
  auto it = m_watches.find(e.from + " " + e.watch);
  bool clean = it != m_watches.end() && it->second.expires_ms > now;
  if (it != m_watches.end()) m_watches.erase(it);
  reply(out, e.client, protocol::ScanChecked{clean});
}

// --- time ---------------------------------------------------------------------------------

void Core::on(int64_t now, int64_t wall, ev::Tick&, Actions& out) {
  // Reads whose wait is over answer INDOUBT.
  std::vector<std::string> expired;
  for (auto it = m_read_deadlines.begin(); it != m_read_deadlines.end() && it->first <= now; ++it)
    expired.push_back(it->second);
  wake_readers(expired, out);
  if (std::any_of(m_listers.begin(), m_listers.end(),
                  [&](const Lister& l) { return l.deadline_ms <= now; }))
    wake_listers(now, out);
  if (now < m_next_scan_ms) return;
  m_next_scan_ms = now + k_scan_ms;
  // A prepared participant never decides alone: it asks the leader, with backoff.
  for (auto& [txid, p] : m_prepared) {
    if (!p.durable || p.applying) continue;
    if (!p.recovered && wall - p.prepared_at_ms < m_cfg.resolve_after_ms &&
        wall >= p.prepared_at_ms)
      continue;
    auto [q, fresh] = m_queries.try_emplace(txid, Query{now, m_cfg.resolve_backoff_ms});
    (void)fresh;
    if (now < q->second.next_ms) continue;
    q->second.next_ms = now + q->second.backoff_ms;
    // With other leaders to ask, at least once a second: one of them settles the transaction
    // as soon as its own leader's lease is gone.
    int64_t cap = m_leaders_seen.size() > 1
                      ? std::min<int64_t>(m_cfg.resolve_max_backoff_ms, k_takeover_poll_ms)
                      : m_cfg.resolve_max_backoff_ms;
    q->second.backoff_ms = std::min(q->second.backoff_ms * 2, cap);
    // Its own leader first; every other query to another leader of the cluster, in turn:
    // over a shared decision store any of them can answer, and settle it if its own leader
    // is gone.
    std::vector<const std::string*> others;
    for (auto& a : m_leaders_seen)
      if (a != p.leader_addr) others.push_back(&a);
    uint64_t n = q->second.asked++;
    const std::string& ask =
        n % 2 == 0 || others.empty() ? p.leader_addr : *others[(n / 2) % others.size()];
    out.list.push_back(
        act::Ask{ask, txid, std::max<int64_t>(0, wall - p.prepared_at_ms), std::nullopt, ""});
  }
  report_heuristics(now, out);
}

void Core::on(int64_t, int64_t, ev::LeaderSeen& e, Actions&) {
  if (std::find(m_leaders_seen.begin(), m_leaders_seen.end(), e.addr) != m_leaders_seen.end())
    return;
  if (m_leaders_seen.size() >= 16) m_leaders_seen.erase(m_leaders_seen.begin());
  m_leaders_seen.push_back(e.addr);
}

void Core::on(int64_t now, int64_t, ev::Outcome& e, Actions& out) {
  if (auto h = m_heuristic.find(e.txid); h != m_heuristic.end() && !m_prepared.count(e.txid)) {
    // Only the answer to a report says the leader heard of the operator's outcome (and
    // recorded a mismatch before answering); an earlier query's answer does not.
    if (!e.report || !m_reports_due.count(e.txid)) return;
    if (!e.decision || *e.decision == Decision::pending) return;  // reported again later
    bool leader_commit = *e.decision == Decision::committed;
    if (leader_commit != h->second.commit)
      out.list.push_back(act::Note{
          act::Note::error,
          fmt::format("HEURISTIC MISMATCH: {} was {} here on an operator's order but its leader "
                      "decided {}; the leader recorded it",
                      e.txid, h->second.commit ? "committed" : "aborted",
                      leader_commit ? "commit" : "abort")});
    else
      out.list.push_back(act::Note{
          act::Note::info, fmt::format("the operator's {} of {} agrees with its leader's decision",
                                       h->second.commit ? "commit" : "abort", e.txid)});
    mark_reported(e.txid, h->second, out);
    return;
  }
  auto it = m_prepared.find(e.txid);
  if (it == m_prepared.end() || it->second.applying || m_resolvers.count(e.txid)) return;
  if (!e.decision) {
    // That leader did not answer: the next one is asked at the next scan, not after the
    // backoff (a dead leader must not slow down its takeover).
    if (auto q = m_queries.find(e.txid); q != m_queries.end() && m_leaders_seen.size() > 1 &&
                                         q->second.asked % 2 == 1)
      q->second.next_ms = now;
    return;
  }
  if (*e.decision == Decision::pending) return;  // asked again after the backoff
  bool commit = *e.decision == Decision::committed;
  out.list.push_back(act::Note{
      act::Note::info,
      fmt::format("in-doubt {} resolved by its leader: {}", e.txid, commit ? "commit" : "abort")});
  if (commit)
    this->commit(e.txid, 0, out);
  else
    abort(e.txid, 0, out);
}

void Core::on(int64_t, int64_t, ev::LogFull&, Actions& out) {
  // Keep the PREPARED record of every transaction not finished (also those whose force is
  // still queued: the rewrite is ordered after it, and must not lose it), except those
  // already in the store: the executor makes the store durable before the rewrite, and a
  // later COMMIT for them is acknowledged as already applied.
  act::Rewrite rw;
  if (m_epoch) rw.live.push_back({k_rec_epoch, txlog::Encoder().u64(m_epoch).data()});
  for (auto& [txid, p] : m_prepared)
    if (!p.applied) rw.live.push_back({k_rec_prepared, encode_prepared(p)});
  // Heuristic decisions stay visible for good (they are few, and an operator must see them),
  // also those whose force is still queued: the rewrite would replace their record.
  for (auto& [txid, h] : m_heuristic)
    rw.live.push_back({k_rec_heuristic, encode_heuristic(txid, h)});
  for (auto& [txid, r] : m_resolvers)
    rw.live.push_back({k_rec_heuristic, encode_heuristic(txid, r.h)});
  out.list.push_back(std::move(rw));
}

// --- views --------------------------------------------------------------------------------

const Prepared* Core::find(const std::string& txid) const {
  auto it = m_prepared.find(txid);
  return it == m_prepared.end() ? nullptr : &it->second;
}

std::string Core::check_invariants() const {
  for (auto& [key, txid] : m_locks) {
    auto it = m_prepared.find(txid);
    if (it == m_prepared.end()) return "lock on " + key + " held by unknown " + txid;
  }
  for (auto& [txid, p] : m_prepared)
    for (auto& op : p.ops) {
      auto it = m_locks.find(op.key);
      if (it == m_locks.end() || it->second != txid)
        return "prepared " + txid + " does not hold lock on " + op.key;
    }
  return {};
}

}  // namespace tpc::participant
