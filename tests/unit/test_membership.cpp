// The membership as data: placement, the states' rules, the encoding.
#include <doctest/doctest.h>

#include <algorithm>

#include "membership/membership.h"

using namespace tpc;
using namespace tpc::membership;

namespace {
const std::vector<std::string> addrs3 = {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"};
}

TEST_SUITE("membership") {
  TEST_CASE("placement: replicas owners per key, deterministic and spread") {
    std::vector<int> load(3);
    for (int i = 0; i < 3000; ++i) {
      auto o = place(addrs3, 2, "key" + std::to_string(i));
      REQUIRE(o.size() == 2);
      CHECK(std::is_sorted(o.begin(), o.end()));
      CHECK(o == place(addrs3, 2, "key" + std::to_string(i)));
      for (auto s : o) ++load[s];
    }
    for (int l : load) CHECK(l > 1700);
    CHECK(place(addrs3, 0, "x") == std::vector<size_t>{0, 1, 2});
    CHECK(place(addrs3, 7, "x") == std::vector<size_t>{0, 1, 2});
  }

  TEST_CASE("placement follows the slot's name, not its address") {
    auto m = Membership::initial(addrs3, 2);
    auto before = m.owners("some-key");
    m.slots[0].addr = "10.0.0.9:7000";  // moved
    CHECK(m.owners("some-key") == before);
  }

  TEST_CASE("writers are the owners not out, readers the in-sync ones") {
    auto m = Membership::initial(addrs3, 0);
    m.slots[1].state = State::out;
    m.slots[2].state = State::catching_up;
    CHECK(m.owners("k") == std::vector<size_t>{0, 1, 2});
    CHECK(m.writes(0));
    CHECK_FALSE(m.writes(1));
    CHECK(m.writes(2));
    CHECK(m.readers("k") == std::vector<size_t>{0});
    CHECK(m.describe_owners("k") ==
          "127.0.0.1:1 (in-sync), 127.0.0.1:2 (out), 127.0.0.1:3 (catching-up)");
  }

  TEST_CASE("a slot may be marked out only while every key keeps an in-sync owner") {
    auto full = Membership::initial(addrs3, 0);
    CHECK(full.may_exclude(0));
    full.slots[0].state = State::out;
    CHECK_FALSE(full.may_exclude(0));  // already out
    CHECK(full.may_exclude(1));
    full.slots[1].state = State::catching_up;
    CHECK_FALSE(full.may_exclude(2));  // the last in-sync copy of every key
    CHECK(full.may_exclude(1));        // a learner may go out again
    auto two = Membership::initial(addrs3, 2);
    CHECK(two.may_exclude(2));
    two.slots[2].state = State::out;
    CHECK_FALSE(two.may_exclude(0));  // keys owned by slots 0 and 2 would have no in-sync copy
  }

  TEST_CASE("encoding round-trips and refuses damage") {
    auto m = Membership::initial({"127.0.0.1:1", "host with space:2"}, 0, 1);
    m.epoch = 42;
    m.slots[1].state = State::catching_up;
    m.slots[1].addr = "[::1]:9";
    std::string line = encode(m);
    CHECK(line ==
          "tpcm1 42 0 1 2 127.0.0.1:1 127.0.0.1:1 in-sync host%20with%20space:2 [::1]:9 "
          "catching-up");
    auto d = decode(line);
    REQUIRE(d);
    CHECK(*d == m);
    for (std::string bad :
         {"", "tpcm2 1 0 1 1 a a in-sync", "tpcm1 0 0 1 1 a a in-sync", "tpcm1 1 0 0 1 a a in-sync",
          "tpcm1 1 0 1 2 a a in-sync", "tpcm1 1 0 1 1 a a lost",
          "tpcm1 1 3 1 2 a a in-sync b b out", "tpcm1 1 0 1 1 a", "tpcm1 -1 0 1 1 a a out"}) {
      CAPTURE(bad);
      auto r = decode(bad);
      REQUIRE_FALSE(r);
      CHECK(r.status().code() == "CORRUPT");
    }
  }
}

TEST_SUITE("membership changes") {
  namespace {
  // How many of n keys change owner sets between two placements of the same slots.
  int keys_moved(const Membership& m, int n) {
    int moved = 0;
    for (int i = 0; i < n; ++i) {
      std::string k = "key" + std::to_string(i);
      moved += m.owners(k) != m.next_owners(k);
    }
    return moved;
  }
  }  // namespace

  TEST_CASE("an address changed moves no key, one slot added moves about 1/(N+1) to it alone") {
    auto m = Membership::initial({"a:1", "b:1", "c:1"}, 1);
    // Replace: the slot keeps its name, so its keys; nothing is moving.
    auto replaced = m;
    replaced.slots[1].addr = "d:9";
    for (int i = 0; i < 1000; ++i)
      CHECK(replaced.owners("key" + std::to_string(i)) == m.owners("key" + std::to_string(i)));
    // Add a fourth slot: joining, in the next placement only.
    m.slots.push_back(Slot{"e:1", "e:1", State::joining});
    CHECK(m.moving());
    CHECK(m.placed(0));
    CHECK_FALSE(m.placed(3));
    CHECK(m.placed_next(3));
    const int n = 20000;
    int moved = keys_moved(m, n), to_new = 0;
    for (int i = 0; i < n; ++i) {
      std::string k = "key" + std::to_string(i);
      auto now = m.owners(k), next = m.next_owners(k);
      CHECK(std::find(now.begin(), now.end(), 3u) == now.end());  // owns nothing yet
      if (now != next) {
        // A key that moves, moves to the new slot and from one other: nothing else moves.
        CHECK(next == std::vector<size_t>{3});
        CHECK(m.gains(k) == std::vector<size_t>{3});
        CHECK(m.learns(3, k));
        CHECK_FALSE(m.learns(now[0], k));
        // Written on both while it moves, read from the old owner only.
        std::vector<size_t> both = {now[0], 3};
        CHECK(m.writers(k) == both);
        CHECK(m.readers(k) == now);
        ++to_new;
      } else {
        CHECK(m.gains(k).empty());
        CHECK(m.writers(k) == now);
      }
    }
    CHECK(moved == to_new);
    CHECK(moved > n / 4 - n / 25);  // about a quarter: 1/(N+1) with N = 3
    CHECK(moved < n / 4 + n / 25);
    // The cutover: the new slot in-sync and owning its share, one epoch later.
    auto after = m.cutover();
    CHECK(after.epoch == m.epoch + 1);
    CHECK(after.slots[3].state == State::in_sync);
    CHECK_FALSE(after.moving());
    for (int i = 0; i < 200; ++i) {
      std::string k = "key" + std::to_string(i);
      CHECK(after.owners(k) == m.next_owners(k));
    }
  }

  TEST_CASE("one slot removed moves only its own keys, to the others, then it is removed") {
    auto m = Membership::initial({"a:1", "b:1", "c:1", "d:1"}, 2);
    m.slots[2].state = State::leaving;
    const int n = 20000;
    int moved = 0, owned_by_leaving = 0;
    for (int i = 0; i < n; ++i) {
      std::string k = "key" + std::to_string(i);
      auto now = m.owners(k), next = m.next_owners(k);
      bool had = std::find(now.begin(), now.end(), 2u) != now.end();
      owned_by_leaving += had;
      moved += now != next;
      CHECK(had == (now != next));  // only keys of the leaving slot change owners
      CHECK(std::find(next.begin(), next.end(), 2u) == next.end());
      if (had) {
        CHECK(m.gains(k).size() == 1);    // one slot takes its copy
        CHECK(m.readers(k) == now);       // it still serves reads until the cutover
        CHECK(m.writers(k).size() == 3);  // both owners and the gainer
        CHECK(m.learns(m.gains(k)[0], k));
      }
    }
    CHECK(moved == owned_by_leaving);
    CHECK(moved > n / 2 - n / 25);  // 2 of 4 copies: about half the keys have one there
    CHECK(moved < n / 2 + n / 25);
    auto after = m.cutover();
    CHECK(after.slots[2].state == State::removed);
    CHECK(after.copies() == 2);
    CHECK_FALSE(after.writes(2));
    CHECK(after.owners("x") == m.next_owners("x"));
    // Encoded with its tombstone, the slot indices stay stable.
    auto d = decode(encode(after));
    REQUIRE(d);
    CHECK(*d == after);
  }

  TEST_CASE("with full replication a joining slot gains every key, a leaving one gives none") {
    auto m = Membership::initial({"a:1", "b:1"}, 0);
    m.slots.push_back(Slot{"c:1", "c:1", State::joining});
    CHECK(m.owners("k") == std::vector<size_t>{0, 1});
    CHECK(m.next_owners("k") == std::vector<size_t>{0, 1, 2});
    CHECK(m.gains("k") == std::vector<size_t>{2});
    auto r = Membership::initial({"a:1", "b:1", "c:1"}, 0);
    r.slots[0].state = State::leaving;
    CHECK(r.gains("k").empty());
    CHECK(r.next_owners("k") == std::vector<size_t>{1, 2});
    CHECK(r.readers("k") == std::vector<size_t>{0, 1, 2});
  }

  TEST_CASE("exclusion while members change: a joining slot may go, leaving ones count as copies") {
    auto m = Membership::initial({"a:1", "b:1"}, 1);
    m.slots.push_back(Slot{"c:1", "c:1", State::joining});
    CHECK(m.may_exclude(2));  // it owns nothing yet: the add rolls back
    auto r = Membership::initial({"a:1", "b:1", "c:1"}, 2);
    r.slots[0].state = State::leaving;
    r.slots[1].state = State::out;
    CHECK_FALSE(r.may_exclude(0));  // leaving: it stays until the removal ends
    CHECK_FALSE(r.may_exclude(2));
    auto gone = Membership::initial({"a:1", "b:1"}, 0);
    gone.slots[1].state = State::removed;
    CHECK_FALSE(gone.may_exclude(1));
    CHECK_FALSE(gone.writes(1));
    CHECK(gone.owners("k") == std::vector<size_t>{0});
    // A membership with no slot in the placement in effect does not decode.
    CHECK_FALSE(decode("tpcm1 1 0 1 1 a a joining"));
    CHECK(decode("tpcm1 2 0 1 2 a a in-sync b b removed"));
  }
}
