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
