#include "participant/executor.h"

#include <cstring>

#include <fmt/format.h>

#include "common/failpoint.h"
#include "common/util.h"

namespace tpc::participant {

void Executor::step(Event e) {
  if (m_stopped) return;
  m_io.before_step(e);
  Actions a;
  m_core.step(m_io.now_ms(), m_io.wall_ms(), std::move(e), a);
  execute(a);
  if (!m_stopped) m_io.after_step();
}

void Executor::execute(Actions& a) {
  bool finished = false;  // a transaction ended: the log may have outgrown its threshold
  for (auto& action : a.list) {
    if (m_stopped) return;
    if (auto* ap = std::get_if<act::Append>(&action)) {
      finished |= ap->type == k_rec_committed || ap->type == k_rec_aborted;
      append(*ap);
    } else if (auto* ap = std::get_if<act::Apply>(&action)) {
      apply(*ap);
    } else if (auto* r = std::get_if<act::Reply>(&action)) {
      m_io.reply(r->client, r->msg);
      if (auto* v = std::get_if<protocol::Vote>(&r->msg);
          v && v->kind == protocol::Vote::yes && failpoint::detail::g_any)
        m_io.post([] { failpoint::hit("participant/afterVoteSend"); });
    } else if (auto* q = std::get_if<act::Ask>(&action)) {
      m_io.ask(*q);
    } else if (auto* rw = std::get_if<act::Rewrite>(&action)) {
      rewrite(*rw);
    } else if (auto* n = std::get_if<act::Note>(&action)) {
      m_io.note(*n);
    }
  }
  m_io.wake_at(a.wake_at);
  if (a.flush && !m_flush_posted) {
    m_flush_posted = true;
    m_io.post([this] {
      m_flush_posted = false;
      step(ev::Flush{});
    });
  }
  if (m_io.wants_rewrite(finished)) step(ev::LogFull{});
}

void Executor::append(act::Append& ap) {
  const std::string& txid = ap.txid;  // the action outlives this call; copied where kept
  uint8_t type = ap.type;
  if (ap.mode == act::Append::none) {
    m_io.append(type, std::move(ap.payload), txid, ap.mode, {});
    return;
  }
  if (type == k_rec_prepared)
    if (int e = failpoint::hit("participant/beforePrepareFsync", txid))
      fatal(fmt::format("prepare of {} failed: {}", txid, std::strerror(e)));
  if (type == k_rec_committed) failpoint::hit("participant/afterApplyCommit", txid);
  int64_t at = m_io.now_us();
  m_io.append(type, std::move(ap.payload), txid, ap.mode, [this, txid, type, at] {
    if (m_stopped) return;
    if (type == k_rec_prepared)
      if (int e = failpoint::hit("participant/afterPrepareFsync", txid))
        fatal(fmt::format("after prepare of {}: {}", txid, std::strerror(e)));
    step(ev::Durable{type, txid, m_io.now_us() - at});
  });
}

void Executor::apply(act::Apply& ap) {
  for (auto& [txid, ops] : ap.batch) failpoint::hit("participant/beforeApplyCommit", txid);
  store::Store& s = m_io.store();
  Status st = s.begin_batch();
  for (auto& [txid, ops] : ap.batch)
    if (st) st = s.apply(txid, *ops);
  if (st) st = s.end_batch();
  if (st && ap.durable) st = s.make_durable();
  if (!st) fatal("cannot apply commits: " + st.to_string());
  step(ev::Applied{});
}

void Executor::rewrite(act::Rewrite& rw) {
  // Commits the log is about to forget must be durable in the store first.
  store::Store& s = m_io.store();
  if (Status st = s.make_durable(); !st) fatal("cannot checkpoint the store: " + st.to_string());
  // Transactions applied so far have no PREPARED record in the rewritten log: once it is
  // durable, their "applied" marks can go.
  uint64_t applied_upto = s.applied_seq();
  m_io.rewrite(std::move(rw.live), [this, applied_upto] {
    if (m_stopped) return;
    if (Status st = m_io.store().prune_applied(applied_upto); !st)
      fatal("cannot prune applied marks: " + st.to_string());
  });
}

}  // namespace tpc::participant
