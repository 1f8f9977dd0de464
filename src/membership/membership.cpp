#include "membership/membership.h"

#include <algorithm>
#include <iterator>

#include <fmt/format.h>

#include "common/crc32c.h"
#include "common/util.h"
#include "protocol/codec.h"

namespace tpc::membership {

namespace {
uint64_t mix(uint64_t x) {  // splitmix64 finalizer
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
}  // namespace

namespace {
// Rendezvous hashing over those of n slots that `in(i)` admits, whose names' CRCs
// `name_crc(i)` gives.
template <typename NameCrc, typename In>
std::vector<size_t> place_by(size_t n, size_t replicas, const std::string& key, NameCrc name_crc,
                             In in) {
  std::vector<size_t> out;
  size_t placed = 0;
  for (size_t i = 0; i < n; ++i) placed += in(i);
  if (replicas == 0 || replicas >= placed) {
    out.reserve(placed);
    for (size_t i = 0; i < n; ++i)
      if (in(i)) out.push_back(i);
    return out;
  }
  uint32_t kh = crc32c(key);
  std::vector<std::pair<uint64_t, size_t>> scored;
  scored.reserve(placed);
  for (size_t i = 0; i < n; ++i)
    if (in(i)) scored.emplace_back(mix((static_cast<uint64_t>(name_crc(i)) << 32) | kh), i);
  std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(replicas),
                    scored.end(), std::greater<>());
  for (size_t i = 0; i < replicas; ++i) out.push_back(scored[i].second);
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

std::vector<size_t> place(const std::vector<std::string>& names, size_t replicas,
                          const std::string& key) {
  return place_by(
      names.size(), replicas, key, [&](size_t i) { return crc32c(names[i]); },
      [](size_t) { return true; });
}

const char* name(State s) {
  switch (s) {
    case State::in_sync:
      return "in-sync";
    case State::catching_up:
      return "catching-up";
    case State::out:
      return "out";
    case State::joining:
      return "joining";
    case State::leaving:
      return "leaving";
    case State::leaving_out:
      return "leaving-out";
    case State::removed:
      return "removed";
  }
  return "?";
}

std::optional<State> parse_state(std::string_view s) {
  for (State x : {State::in_sync, State::catching_up, State::out, State::joining, State::leaving,
                  State::leaving_out, State::removed})
    if (s == name(x)) return x;
  return std::nullopt;
}

Membership Membership::initial(const std::vector<std::string>& addrs, size_t replicas,
                               size_t min_insync) {
  Membership m;
  m.replicas = replicas == 0 || replicas >= addrs.size() ? 0 : replicas;
  m.min_insync = min_insync;
  for (auto& a : addrs) m.slots.push_back(Slot{a, a, State::in_sync});
  return m;
}

bool Membership::placed(size_t s) const {
  return slots[s].state != State::joining && slots[s].state != State::removed;
}

bool Membership::placed_next(size_t s) const {
  return !leaves(slots[s].state) && slots[s].state != State::removed;
}

bool Membership::moving() const {
  return std::any_of(slots.begin(), slots.end(),
                     [](const Slot& s) { return s.state == State::joining || leaves(s.state); });
}

std::vector<size_t> Membership::owners(const std::string& key) const {
  return place_by(
      slots.size(), replicas, key, [&](size_t i) { return crc32c(slots[i].name); },
      [&](size_t i) { return placed(i); });
}

std::vector<size_t> Membership::next_owners(const std::string& key) const {
  if (!moving()) return owners(key);
  return place_by(
      slots.size(), replicas, key, [&](size_t i) { return crc32c(slots[i].name); },
      [&](size_t i) { return placed_next(i); });
}

std::vector<size_t> Membership::gains(const std::string& key) const {
  if (!moving()) return {};
  auto now = owners(key), next = next_owners(key);
  std::vector<size_t> out;
  std::set_difference(next.begin(), next.end(), now.begin(), now.end(), std::back_inserter(out));
  return out;
}

std::vector<size_t> Membership::writers(const std::string& key) const {
  auto now = owners(key);
  std::vector<size_t> all;
  if (moving()) {
    auto next = next_owners(key);
    std::set_union(now.begin(), now.end(), next.begin(), next.end(), std::back_inserter(all));
  } else {
    all = std::move(now);
  }
  all.erase(std::remove_if(all.begin(), all.end(), [&](size_t s) { return !writes(s); }),
            all.end());
  return all;
}

bool Membership::learns(size_t s, const std::string& key) const {
  if (slots[s].state == State::catching_up) return true;
  auto g = gains(key);
  return std::find(g.begin(), g.end(), s) != g.end();
}

std::vector<size_t> Membership::readers(const std::string& key) const {
  auto o = owners(key);
  o.erase(std::remove_if(o.begin(), o.end(),
                         [&](size_t s) {
                           return slots[s].state != State::in_sync &&
                                  slots[s].state != State::leaving;
                         }),
          o.end());
  return o;
}

size_t Membership::copies() const {
  size_t n = 0;
  for (size_t i = 0; i < slots.size(); ++i) n += placed(i);
  return replicas == 0 || replicas >= n ? n : replicas;
}

bool Membership::spread() const {
  size_t n = 0;
  for (size_t i = 0; i < slots.size(); ++i) n += placed(i);
  return copies() < n;
}

size_t Membership::count(State st) const {
  return static_cast<size_t>(
      std::count_if(slots.begin(), slots.end(), [&](const Slot& s) { return s.state == st; }));
}

bool Membership::may_exclude(size_t s) const {
  if (s >= slots.size()) return false;
  State st = slots[s].state;
  // (A leaving slot is marked leaving-out, not out: the removal goes on.)
  if (st == State::out || st == State::removed || st == State::leaving_out) return false;
  if (st == State::joining) return true;
  auto current = [](State x) { return x == State::in_sync || x == State::leaving; };
  size_t not_current = 0;
  for (size_t i = 0; i < slots.size(); ++i) not_current += placed(i) && !current(slots[i].state);
  if (current(st)) ++not_current;
  return not_current < copies();
}

bool Membership::placed_by_address() const {
  return !moving() && std::all_of(slots.begin(), slots.end(), [](const Slot& s) {
    return s.name == s.addr && s.state != State::removed;
  });
}

Membership Membership::cutover() const {
  Membership next = *this;
  ++next.epoch;
  for (auto& slot : next.slots) {
    if (slot.state == State::joining) slot.state = State::in_sync;
    if (leaves(slot.state)) slot.state = State::removed;
  }
  return next;
}

std::string Membership::describe_owners(const std::string& key) const {
  std::string out;
  for (auto s : owners(key))
    out += fmt::format("{}{} ({})", out.empty() ? "" : ", ", slots[s].addr, name(slots[s].state));
  return out;
}

std::string encode(const Membership& m) {
  std::string out =
      fmt::format("tpcm1 {} {} {} {}", m.epoch, m.replicas, m.min_insync, m.slots.size());
  for (auto& s : m.slots)
    out +=
        fmt::format(" {} {} {}", protocol::escape(s.name), protocol::escape(s.addr), name(s.state));
  return out;
}

Result<Membership> decode(std::string_view line) {
  auto bad = [](const std::string& why) { return Status::error("CORRUPT", "membership: " + why); };
  auto t = protocol::split(line);
  if (t.size() < 5 || t[0] != "tpcm1") return bad("not a tpcm1 line");
  auto epoch = parse_int(t[1]);
  auto replicas = parse_int(t[2]);
  auto min_insync = parse_int(t[3]);
  auto n = parse_int(t[4]);
  if (!epoch || *epoch <= 0 || !replicas || *replicas < 0 || !min_insync || *min_insync <= 0 ||
      !n || *n <= 0 || static_cast<size_t>(*n) > k_max_slots)
    return bad("bad epoch, replica count, min-insync or slot count");
  if (t.size() != 5 + 3 * static_cast<size_t>(*n))
    return bad(fmt::format("{} slots, but {} tokens", *n, t.size()));
  Membership m;
  m.epoch = static_cast<uint64_t>(*epoch);
  m.replicas = static_cast<size_t>(*replicas);
  m.min_insync = static_cast<size_t>(*min_insync);
  for (size_t i = 0; i < static_cast<size_t>(*n); ++i) {
    auto nm = protocol::unescape(t[5 + 3 * i]);
    auto addr = protocol::unescape(t[6 + 3 * i]);
    auto st = parse_state(t[7 + 3 * i]);
    if (!nm || !addr || !st || nm->empty() || addr->empty())
      return bad(fmt::format("slot {} is malformed", i));
    m.slots.push_back(Slot{std::move(*nm), std::move(*addr), *st});
  }
  if (m.replicas >= m.slots.size() && m.replicas != 0) return bad("replicas past the slot count");
  size_t placed = 0;
  for (size_t i = 0; i < m.slots.size(); ++i) placed += m.placed(i);
  if (placed == 0) return bad("no slot in the placement in effect");
  return m;
}

std::string describe_change(const Membership& was, const Membership& next) {
  std::string what;
  auto sep = [&] { return what.empty() ? "" : "; "; };
  for (size_t p = 0; p < next.size(); ++p) {
    const auto& n = next.slots[p];
    if (p >= was.size()) {
      what += fmt::format("{}participant {} is {} (added)", sep(), n.addr, name(n.state));
      continue;
    }
    const auto& w = was.slots[p];
    if (n.addr != w.addr)
      what += fmt::format("{}participant {} is at {} now (was {}), {}", sep(), p, n.addr, w.addr,
                          name(n.state));
    else if (n.state != w.state)
      what += fmt::format("{}participant {} is {} (was {})", sep(), n.addr, name(n.state),
                          name(w.state));
  }
  return what;
}

}  // namespace tpc::membership
