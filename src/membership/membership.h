// The cluster's membership as data (spec: docs/membership.md): which participants there are,
// where each key lives, and which copies of a key are current. Versioned by an epoch that
// grows by one at every change; the leader core makes every change (a durable record before
// it is used) and the participants and the simulator read it.
//
// A slot is a place in the cluster with a stable index; placement hashes the slot's name (the
// address it was created with), so that keys never move when an address does. Each slot is
// in one state:
//   in-sync      holds every committed write of its keys: it votes and serves reads;
//   catching-up  back after being out: takes new writes as a learner (its vote does not count)
//                while it copies what it missed from in-sync copies; serves no read;
//   out          excluded (unreachable past --exclude-after): takes no write, serves no read.
// While the members change (member add, remove), two placements are in play: the one in
// effect, and the next one, which the cutover puts in effect:
//   joining      being added: in the next placement only; takes the writes of the keys it
//                gains as a learner; serves no read; in-sync at the cutover;
//   leaving      being removed: in the placement in effect only; votes and serves reads of
//                its keys until the cutover, then removed;
//   leaving-out  being removed while out (its node dead, or unreachable): in the placement in
//                effect only, like leaving, but takes no write and serves no read (its keys
//                are copied from their in-sync owners); removed at the cutover;
//   removed      no longer in the cluster: in no placement, never contacted; kept so that
//                slot indices stay stable.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tpc::membership {

inline constexpr size_t k_max_slots = 1024;  // slots of a membership, removed ones included

// Owners of `key` among the slots named `names`: rendezvous hashing of the key over the names.
// `replicas` 0 or >= names.size(): every slot. Sorted by slot index.
std::vector<size_t> place(const std::vector<std::string>& names, size_t replicas,
                          const std::string& key);

enum class State : uint8_t { in_sync, catching_up, out, joining, leaving, leaving_out, removed };
// "in-sync", "catching-up", "out", "joining", "leaving", "leaving-out", "removed"
const char* name(State s);
std::optional<State> parse_state(std::string_view s);
// Being removed: leaving or leaving-out (in the placement in effect, not in the next one).
inline bool leaves(State s) { return s == State::leaving || s == State::leaving_out; }

struct Slot {
  std::string name;  // placement name: the address the slot was created with
  std::string addr;  // HOST:PORT it is reached at
  State state = State::in_sync;
  friend bool operator==(const Slot&, const Slot&) = default;
};

struct Membership {
  uint64_t epoch = 1;
  size_t replicas = 0;    // owners of each key; 0: every slot
  size_t min_insync = 1;  // a write needs this many in-sync owners of each of its keys
  std::vector<Slot> slots;
  friend bool operator==(const Membership&, const Membership&) = default;

  // The first epoch of a cluster made of `addrs` (each slot in-sync, named by its address).
  static Membership initial(const std::vector<std::string>& addrs, size_t replicas,
                            size_t min_insync = 1);

  size_t size() const { return slots.size(); }
  // Whether slot `s` is in the placement in effect (not joining, not removed), and in the next
  // one (not leaving, not removed). The two differ only while a slot is joining or leaving
  // (leaving-out included).
  bool placed(size_t s) const;
  bool placed_next(size_t s) const;
  bool moving() const;
  // The owners of `key` in the placement in effect, whatever their state; in the next one.
  std::vector<size_t> owners(const std::string& key) const;
  std::vector<size_t> next_owners(const std::string& key) const;
  // The slots that gain `key` at the cutover: next owners that are no owners now.
  std::vector<size_t> gains(const std::string& key) const;
  // Whether slot `s` takes writes (a write of a key it owns, or gains, is prepared there):
  // every slot but out, leaving-out and removed ones.
  bool writes(size_t s) const {
    return slots[s].state != State::out && slots[s].state != State::leaving_out &&
           slots[s].state != State::removed;
  }
  // The slots a write of `key` is prepared on: its owners and gainers that take writes.
  std::vector<size_t> writers(const std::string& key) const;
  // Whether slot `s` writes `key` as a learner (its vote does not count for it): a
  // catching-up owner, or a gainer.
  bool learns(size_t s, const std::string& key) const;
  // The owners that serve reads of `key`: in-sync and leaving ones.
  std::vector<size_t> readers(const std::string& key) const;
  // Effective replica count of the placement in effect (replicas 0 or too many: every slot).
  size_t copies() const;
  // Whether keys are spread: fewer copies of each than slots in the placement in effect (not
  // every key on every placed slot).
  bool spread() const;
  size_t count(State s) const;
  // Whether slot `s` may be marked out: every key keeps an in-sync owner. With rendezvous
  // placement every set of `copies()` slots owns some key, so: fewer than copies() placed
  // slots would be not in-sync (a leaving slot still counts as one). A leaving slot is marked
  // leaving-out instead (marked out, it would come back as a plain member and the removal would
  // be lost); a joining slot owns nothing yet: marking it out
  // costs no copy (the add then rolls back).
  bool may_exclude(size_t s) const;
  // Whether placement is the one of initial(addresses): every slot named by its address, none
  // joining, leaving or removed (then a participant can derive it from the addresses alone).
  bool placed_by_address() const;
  // The membership after the move: joining slots in-sync, leaving (and leaving-out) ones
  // removed, the next
  // placement in effect; the epoch one higher.
  Membership cutover() const;
  // "owners 127.0.0.1:5001 (in-sync), 127.0.0.1:5002 (out)": for error messages.
  std::string describe_owners(const std::string& key) const;
};

// "participant 127.0.0.1:5003 is out (was in-sync); ...": what `next` changes of `was`, for
// the operator's log.
std::string describe_change(const Membership& was, const Membership& next);

// One line, no newline: "tpcm1 EPOCH REPLICAS MIN-INSYNC N {NAME ADDR STATE}" (tokens escaped
// as in the line protocol). Used by the leader's log record, the decision store and status.
std::string encode(const Membership& m);
// Error CORRUPT names what is wrong.
Result<Membership> decode(std::string_view line);

}  // namespace tpc::membership
