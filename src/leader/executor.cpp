#include "leader/executor.h"

#include <cstring>

#include <fmt/format.h>

#include "common/failpoint.h"
#include "common/util.h"

namespace tpc::leader {

namespace {
constexpr int64_t k_store_retry_ms = 200;  // a decision store that could not say: again
}

void Executor::step(Event e) {
  if (m_stopped) return;
  m_io.before_step(e);
  Actions a;
  m_core.step(m_io.now_ms(), std::move(e), a);
  execute(a);
  if (!m_stopped) m_io.after_step();
}

void Executor::execute(Actions& a) {
  bool ended = false;
  // The txid of the previous action when it sent a COMMIT (points into `a`, no copy).
  const std::string* last_commit_sent = nullptr;
  for (auto& action : a.list) {
    if (m_stopped) return;
    const std::string* commit_sent = nullptr;
    if (auto* ap = std::get_if<act::Append>(&action)) {
      ended |= ap->type == k_rec_end;
      append(*ap);
    } else if (auto* s = std::get_if<act::Send>(&action)) {
      if (auto* c = std::get_if<protocol::Commit>(&s->msg)) commit_sent = &c->txid;
      send(*s, commit_sent && last_commit_sent && *commit_sent == *last_commit_sent);
    } else if (auto* r = std::get_if<act::Reply>(&action)) {
      m_io.reply(r->client, r->reply);
    } else if (auto* rw = std::get_if<act::Rewrite>(&action)) {
      m_io.rewrite(std::move(rw->live));
    } else if (auto* t = std::get_if<act::Trace>(&action)) {
      m_io.trace(*t);
    } else if (auto* l = std::get_if<act::Lookup>(&action)) {
      TPC_CHECK(m_store, "Lookup without a shared decision store");
      m_store->lookup(l->txid, l->owner, [this, l = *l](Result<StoreFacts> f) {
        step(ev::Looked{l.client, l.txid, l.owner, l.held_ms, std::move(f)});
      });
    } else if (auto* st = std::get_if<act::Settle>(&action)) {
      TPC_CHECK(m_store, "Settle without a shared decision store");
      m_store->settle(st->txid, st->owner, st->fenced, [this, st = *st](Result<SettleResult> r) {
        if (r && *r == SettleResult::settled)
          m_io.warn(fmt::format(
              "settled {} as aborted: its leader {} {}", st.txid, st.owner,
              st.fenced ? "is gone (its lease expired)" : "held it past --takeover-after"));
        step(ev::Settled{st.client, st.txid, std::move(r)});
      });
    } else if (auto* pm = std::get_if<act::PutMembers>(&action)) {
      TPC_CHECK(m_store, "PutMembers without a shared decision store");
      put_members(std::move(*pm));
    } else if (auto* fr = std::get_if<act::FindRid>(&action)) {
      TPC_CHECK(m_store, "FindRid without a shared decision store");
      m_store->find_rid(fr->rid, [this, fr = *fr](Result<std::string> txid) {
        step(ev::RidFound{fr.client, fr.rid, std::move(txid), fr.report});
      });
    }
    last_commit_sent = commit_sent;
  }
  m_io.wake_at(a.wake_at);
  if (m_io.wants_rewrite(ended)) step(ev::LogFull{});
}

void Executor::append(act::Append& ap) {
  const std::string& txid = ap.txid;  // the action outlives this call; copied where kept
  uint8_t type = ap.type;
  if (type == k_rec_commit) {
    failpoint::hit("leader/afterVotes", txid);
    if (int e = failpoint::hit("leader/beforeDecisionFsync", txid))
      fatal(fmt::format("decision of {}: {}", txid, std::strerror(e)));
  }
  if (type == k_rec_end) failpoint::hit("leader/beforeEndRecord", txid);
  if (type == k_rec_heuristic) {
    // Once per mismatch: the core records each (txid, participant) once.
    if (auto m = decode_mismatch(ap.payload))
      m_io.note_error(fmt::format(
          "HEURISTIC MISMATCH: {} was decided {} here, but participant {} {} it on an "
          "operator's order (tpc client heuristics; forget it with tpc client forget {})",
          m->txid, m->decided_commit ? "commit" : "abort", m_core.members().slots.at(m->part).addr,
          m->their_commit ? "committed" : "aborted", m->txid));
  }
  if (type == k_rec_membership) {
    failpoint::hit("leader/beforeMembershipFsync", txid);
    // A change of the membership, for the operator's log (docs/membership.md).
    if (auto m = membership::decode(ap.payload))
      m_io.warn(fmt::format("membership epoch {}: {}", m->epoch,
                            membership::describe_change(m_core.members(), *m)));
  }
  if (m_store && type == k_rec_forget) m_store->forget_mismatches(txid);
  if (m_store && (type == k_rec_commit || type == k_rec_end)) {
    // The shared decision store: the commit point is the store's, not this log's.
    if (type == k_rec_commit)
      decide(txid, std::move(ap.payload), m_core.members_text(), m_io.now_us());
    if (type == k_rec_end) m_store->end(txid);
    return;
  }
  if (!ap.force) return m_io.append(type, std::move(ap.payload), txid, false, {});
  int64_t at = m_io.now_us();
  // With a shared store, a mismatch is durable once in this log and in the store.
  std::string copy = m_store && type == k_rec_heuristic ? ap.payload : "";
  m_io.append(type, std::move(ap.payload), txid, true, [this, txid, at, type, copy] {
    if (m_stopped) return;
    int64_t took = m_io.now_us() - at;
    if (type == k_rec_commit) failpoint::hit("leader/afterDecisionFsync", txid);
    if (type == k_rec_membership) failpoint::hit("leader/afterMembershipFsync", txid);
    if (!copy.empty()) return store_mismatch(txid, copy, took);
    step(ev::Durable{txid, took, type});
  });
}

void Executor::store_mismatch(const std::string& txid, const std::string& payload, int64_t took) {
  auto m = decode_mismatch(payload);
  TPC_CHECK(m.is_ok(), "HEURISTIC record this leader wrote is undecodable");
  m_store->record_mismatch(txid, m->part, payload, [this, txid, payload, took](Status s) {
    if (m_stopped) return;
    if (s) return step(ev::Durable{txid, took, k_rec_heuristic});
    m_io.warn(fmt::format("heuristic mismatch of {} not yet in the decision store: {}; retrying",
                          txid, s.message()));
    m_io.after(k_store_retry_ms, [this, txid, payload, took] {
      if (!m_stopped) store_mismatch(txid, payload, took);
    });
  });
}

void Executor::decide(const std::string& txid, std::string payload, const std::string& members,
                      int64_t since_us) {
  std::string copy = payload;
  m_store->decide(
      txid, std::move(payload), members, [this, txid, copy, members, since_us](Result<bool> r) {
        if (m_stopped) return;
        if (!r && r.status().code() == "EPOCH") {
          // Another leader changed the membership: the core takes the new one, then decides
          // again or aborts.
          step(ev::MembersSeen{Status::ok(), r.status().message(), -1, {}, false});
          return step(ev::Refused{txid, true});
        }
        if (!r) {
          // The store could not say: the transaction stays undecided (its participants
          // prepared), and the same decision goes again; it can only find this decision or a
          // settler's.
          m_io.warn(fmt::format("decision of {} not taken yet: {}; retrying", txid,
                                r.status().message()));
          m_io.after(k_store_retry_ms, [this, txid, copy, members, since_us] {
            if (!m_stopped) decide(txid, copy, members, since_us);
          });
          return;
        }
        if (*r) {
          failpoint::hit("leader/afterDecisionFsync", txid);
          step(ev::Durable{txid, m_io.now_us() - since_us});
        } else {
          m_io.warn(fmt::format(
              "decision of {}: the decision store holds an abort (settled by another leader)",
              txid));
          step(ev::Refused{txid});
        }
      });
}

void Executor::put_members(act::PutMembers p) {
  // For the operator's log: what changes, and who asked.
  auto was = membership::decode(p.expect), is = membership::decode(p.next);
  if (was && is)
    m_io.warn(fmt::format("membership epoch {} proposed to the decision store: {}", is->epoch,
                          membership::describe_change(*was, *is)));
  failpoint::hit("leader/beforeMembershipFsync", "epoch");
  int64_t asked = m_io.now_ms();
  m_store->put_members(p.expect, p.next, [this, asked](Result<std::string> r) {
    if (m_stopped) return;
    if (r) failpoint::hit("leader/afterMembershipFsync", "epoch");
    ev::MembersSeen e{r ? Status::ok() : r.status(), r ? *r : std::string(), asked, {}, true};
    step(std::move(e));
  });
}

void Executor::poll_members(int64_t every_ms) {
  if (m_stopped || !m_store) return;
  int64_t asked = m_io.now_ms();
  m_store->read_members([this, asked, every_ms](Result<Decisions::MembersView> r) {
    if (m_stopped) return;
    if (r)
      step(ev::MembersSeen{Status::ok(), r->members, asked, r->leaders, false});
    else
      step(ev::MembersSeen{r.status(), "", asked, {}, false});
    m_io.after(every_ms, [this, every_ms] { poll_members(every_ms); });
  });
}

void Executor::send(act::Send& s, bool after_commit_send) {
  size_t p = s.part;
  if (auto* c = std::get_if<protocol::Commit>(&s.msg)) {
    if (after_commit_send) failpoint::hit("leader/betweenCommitSends", c->txid);
    if (failpoint::hit("leader/sendCommit", c->txid)) return;  // lost; the core re-sends it
    m_io.request(p, s.msg, [this, txid = c->txid, p](Result<std::string> r) {
      auto k = protocol::parse_phase_two(r);
      step(ev::CommitReply{txid, p, k == protocol::PhaseTwo::acked,
                           k == protocol::PhaseTwo::heuristic_aborted});
    });
  } else if (auto* pr = std::get_if<protocol::Prepare>(&s.msg)) {
    m_io.request(p, s.msg, [this, txid = pr->txid, p](Result<std::string> r) {
      step(ev::Vote{txid, p, protocol::parse_vote(r)});
    });
  } else if (std::holds_alternative<protocol::Read>(s.msg)) {
    m_io.request(p, s.msg, [this, id = s.read, p](Result<std::string> r) {
      step(ev::ReadReply{id, p, protocol::parse_read_reply(r)});
    });
  } else if (std::holds_alternative<protocol::Scan>(s.msg)) {
    m_io.request(p, s.msg, [this, id = s.read, p](Result<std::string> r) {
      step(ev::ScanReply{id, p, protocol::parse_scan_reply(r)});
    });
  } else if (auto* ck = std::get_if<protocol::ScanCheck>(&s.msg)) {
    m_io.request(p, s.msg, [this, id = s.read, p, watch = ck->watch](Result<std::string> r) {
      step(ev::ScanChecked{id, p, watch, protocol::parse_scan_checked(r).clean});
    });
  } else if (std::holds_alternative<protocol::SyncBegin>(s.msg) ||
             std::holds_alternative<protocol::Sync>(s.msg)) {
    if (std::holds_alternative<protocol::Sync>(s.msg)) failpoint::hit("leader/sendSyncPage");
    m_io.request(p, s.msg, [this, id = s.read, p](Result<std::string> r) {
      step(ev::SyncReply{id, p, protocol::parse_acked(r)});
    });
  } else if (auto* ab = std::get_if<protocol::Abort>(&s.msg)) {
    // Only a contradicting heuristic outcome is reported: ABORT is not re-sent.
    m_io.request(p, s.msg, [this, txid = ab->txid, p](Result<std::string> r) {
      if (protocol::parse_phase_two(r) == protocol::PhaseTwo::heuristic_committed)
        step(ev::AbortReply{txid, p});
    });
  }
}

}  // namespace tpc::leader
