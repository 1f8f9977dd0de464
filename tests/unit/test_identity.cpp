// The view of the cluster a participant was admitted with, against a leader's JOIN.
#include <doctest/doctest.h>

#include "node/identity.h"
#include "protocol/codec.h"

using namespace tpc;
using node::Membership;

namespace {
const std::string k_cluster = "3f1c9a2e-0000-4000-8000-000000000001";

Membership view(std::vector<std::string> addrs, size_t replicas = 0, std::string store = "") {
  Membership m;
  m.cluster = k_cluster;
  m.replicas = replicas;
  m.store = std::move(store);
  for (size_t i = 0; i < addrs.size(); ++i)
    m.members.push_back({addrs[i], std::to_string(i + 1), ""});
  return m;
}
}  // namespace

TEST_SUITE("identity") {
  TEST_CASE("a JOIN with the admitted view agrees, whatever node ids were pinned since") {
    auto was = view({"a:1", "b:2", "c:3"});
    auto now = was;
    now.members[1].node = "9a0bd771-0000-4000-8000-000000000002";  // admitted since
    CHECK(node::view_difference(was, now).empty());
    // Effective replica counts: 0 and 3 of 3 are both "every participant".
    now.replicas = 3;
    CHECK(node::view_difference(was, now).empty());
  }

  TEST_CASE("each difference of view is named") {
    auto was = view({"a:1", "b:2", "c:3"}, 2);
    // Two replicas of two participants is every participant: that differs too.
    CHECK(node::view_difference(was, view({"a:1", "b:2"}, 2)) ==
          "--peers a:1,b:2, not a:1,b:2,c:3; --replicas all, not 2");
    CHECK(node::view_difference(was, view({"a:1", "b:2", "c:3"}, 1)) == "--replicas 1, not 2");
    CHECK(node::view_difference(was, view({"a:1", "b:2", "c:3"}, 2, "etcd/prod")) ==
          "decisions in etcd/prod, not in the leader's own log");
    auto other = was;
    other.cluster = "3f1c9a2e-0000-4000-8000-000000000009";
    other.slot = 2;
    other.members[2].id = "7";
    CHECK(node::view_difference(was, other) ==
          "cluster 3f1c9a2e-0000-4000-8000-000000000009, not " + k_cluster +
              "; participant c:3 has --id 7, not 3; this participant at place 2, not 0");
  }

  TEST_CASE("JOIN carries the decision store, and a JOIN of an older leader without it reads") {
    auto m = view({"a:1", "b:2"}, 0, "etcd/prod");
    std::string line = node::encode_join(m);
    CHECK(line.substr(line.size() - 16) == " store=etcd/prod");
    auto back = node::decode_join(protocol::split(line));
    REQUIRE(back.is_ok());
    CHECK(back->store == "etcd/prod");
    auto old = node::decode_join(protocol::split(node::encode_join(view({"a:1", "b:2"}))));
    REQUIRE(old.is_ok());
    CHECK(old->store.empty());
    CHECK(!node::decode_join(protocol::split(line + " x")).is_ok());
    // And the leader's membership epoch.
    m.epoch = 12;
    auto with_epoch = node::decode_join(protocol::split(node::encode_join(m)));
    REQUIRE(with_epoch.is_ok());
    CHECK(with_epoch->epoch == 12);
    CHECK(with_epoch->store == "etcd/prod");
    CHECK(!node::decode_join(protocol::split(line + " epoch=0")).is_ok());
    CHECK(!node::decode_join(protocol::split(line + " epoch=3 x")).is_ok());
    CHECK(!node::decode_join(protocol::split(node::encode_join(view({"a:1"})) + " store=local"))
               .is_ok());
  }
}

TEST_SUITE("identity") {
  TEST_CASE("a participant's rule for a leader's JOIN: each refusal, in order, and acceptance") {
    node::Identity me;
    me.role = "participant";
    me.node = "9a0bd771-0000-4000-8000-000000000001";
    auto offered = view({"a:1", "b:2"});
    offered.members[0].node = me.node;
    offered.epoch = 3;
    auto code = [&](const node::Membership* admitted, uint64_t epoch, const node::Membership& m,
                    const std::string& cert = "", std::vector<std::string> hosts = {},
                    const std::string& adv = "h1:5000") {
      Status s = node::judge_join(me, admitted, epoch, m, cert, hosts, adv);
      return s ? std::string("OK") : s.code();
    };
    // Not joined yet, never admitted: any cluster, this node at its place.
    CHECK(code(nullptr, 0, offered) == "OK");
    // Joined: only its own cluster.
    me.cluster = "another-cluster";
    CHECK(code(nullptr, 0, offered) == "CLUSTER");
    me.cluster = k_cluster;
    CHECK(code(nullptr, 0, offered) == "OK");
    // Admitted with another view.
    auto was = view({"a:1", "b:2", "c:3"});
    CHECK(code(&was, 0, offered) == "VIEW");
    auto same = view({"a:1", "b:2"});
    CHECK(code(&same, 0, offered) == "OK");
    // Another view at a newer epoch than the admitted one is a change of the membership
    // (member add, remove, replace); at the same epoch it is another view.
    was.epoch = 2;
    CHECK(code(&was, 0, offered) == "OK");
    was.epoch = 3;
    CHECK(code(&was, 0, offered) == "VIEW");
    was.cluster = "another-cluster";
    was.epoch = 2;
    CHECK(code(&was, 0, offered) == "VIEW");
    // Over TLS: the certificate must name the host the leader advertises.
    CHECK(code(&same, 0, offered, "leader", {"h2"}) == "DENIED");
    CHECK(code(&same, 0, offered, "leader", {"h1"}) == "OK");
    CHECK(code(&same, 0, offered, "leader", {"h1"}, "") == "DENIED");
    // A leader of an older epoch than this participant was given; an unsaid epoch (0) passes.
    CHECK(code(&same, 4, offered) == "EPOCH");
    CHECK(code(&same, 3, offered) == "OK");
    auto unsaid = offered;
    unsaid.epoch = 0;
    CHECK(code(&same, 4, unsaid) == "OK");
    // Another node at this participant's place.
    auto other = offered;
    other.members[0].node = "9a0bd771-0000-4000-8000-000000000002";
    CHECK(code(&same, 0, other) == "IDENTITY");
    other.slot = 5;  // no such place
    CHECK(code(nullptr, 0, other) == "IDENTITY");
  }
}

TEST_SUITE("identity") {
  TEST_CASE("a JOIN carries the placement when it is not the addresses', else it is derived") {
    auto j = view({"a:1", "b:2", "c:3"}, 2);
    j.epoch = 4;
    // Placement by the addresses: no members= token, and the participant derives it.
    std::string line = node::encode_join(j);
    CHECK(line.find("members=") == std::string::npos);
    auto p = node::placement_of(j);
    REQUIRE(p);
    CHECK(p->slots[1].name == "b:2");
    CHECK(p->copies() == 2);
    // Slot 1 moved to another address (its name, so its keys, stay): the line says so.
    auto m = membership::Membership::initial({"a:1", "b:2", "c:3"}, 2);
    m.epoch = 4;
    m.slots[1].addr = "d:9";
    m.slots[2].state = membership::State::leaving;
    CHECK_FALSE(m.placed_by_address());
    j.members[1].addr = "d:9";
    j.placement = membership::encode(m);
    line = node::encode_join(j);
    CHECK(line.find(" members=tpcm1%20") != std::string::npos);
    auto back = node::decode_join(protocol::split(line));
    REQUIRE(back);
    CHECK(back->placement == j.placement);
    CHECK(back->epoch == 4);
    p = node::placement_of(*back);
    REQUIRE(p);
    CHECK(*p == m);
    for (int i = 0; i < 100; ++i) {
      std::string k = "k" + std::to_string(i);
      CHECK(p->owners(k) == membership::place({"a:1", "b:2", "c:3"}, 2, k));
    }
    // A membership line that does not decode, or of another size, is refused.
    j.placement = "tpcm1 garbage";
    CHECK_FALSE(node::placement_of(j));
    j.placement = membership::encode(membership::Membership::initial({"a:1"}, 0));
    CHECK_FALSE(node::placement_of(j));
    CHECK_FALSE(
        node::decode_join(protocol::split("JOIN " + k_cluster + " 0 0 1 a:1 1 - members=")));
  }
}
