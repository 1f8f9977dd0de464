// The members change online (docs/membership.md): tpc client member remove under write load,
// with real processes and kill -9.
#include <doctest/doctest.h>

#include <filesystem>

#include <fmt/format.h>

#include "common/util.h"
#include "harness.h"

using namespace tpc;
using namespace tpc::it;

namespace {
// `tpc client member ARGS...` as a process of its own (it waits for the change to end), its
// output in DIR/NAME.log.
std::unique_ptr<Process> member_command(Cluster& c, const std::vector<std::string>& args,
                                        const std::string& name) {
  std::vector<std::string> argv{TPC_BINARY, "client", "--leader", c.leader_addr(), "member"};
  argv.insert(argv.end(), args.begin(), args.end());
  return std::make_unique<Process>(argv, c.dir() + "/" + name + ".log");
}

// Every key the writer wrote reads (through the leader) as one of the values it may hold.
int check_reads(Cluster& c, Writer& w) {
  int wrong = 0;
  for (auto& [k, values] : w.may_hold) {
    auto r = c.client({"get", k});
    std::string v = r.out.empty() ? r.out : r.out.substr(0, r.out.size() - 1);
    if (r.code != 0 || !values.count(v)) {
      ++wrong;
      MESSAGE("key " << k << " reads as '" << v << "' (exit " << r.code << ")");
    }
  }
  return wrong;
}

// Three participants, each key on two of them.
Cluster::Options two_copies_of_three() {
  Cluster::Options o;
  o.participants = 3;
  o.replicas = 2;
  return o;
}

// `tpc client member ARGS...` run while the writer keeps writing (one write after another,
// bounded in count and time); its exit code (-1: still running after 60 s) and what it said.
struct Change {
  int code = -1;
  std::string said;
};
Change change_under_writes(Cluster& c, Writer& w, const std::vector<std::string>& args) {
  auto cmd = member_command(c, args, args[0]);
  int during = 0, during_ok = 0;
  int64_t start = now_ms();
  while (cmd->alive() && now_ms() - start < 60000 && during < 100000) {
    ++during;
    during_ok += w.put();
  }
  Change r;
  r.code = cmd->wait_exit(5000);
  r.said = read_file(c.dir() + "/" + args[0] + ".log");
  MESSAGE(fmt::format("member {} took {} ms: {} of {} writes committed meanwhile; it said: {}",
                      args[0], now_ms() - start, during_ok, during, r.said));
  for (auto& [why, n] : w.failures) MESSAGE(why << ": " << n);
  return r;
}

// Sums participants' key counts until they are `want` (the prune after a change is applied in
// the background), or the deadline passes. Returns the last sum.
long wait_total_keys(Cluster& c, const std::vector<int>& parts, long want) {
  long total = -1;
  wait_for(
      [&] {
        total = 0;
        for (int i : parts) total += c.stat(i, "keys");
        return total == want;
      },
      10000);
  return total;
}

// The steps of a member add or remove: the first change (joining or leaving) before and
// after its fsync, the copy of the keys a slot gains (a SYNC page), the cutover before and
// after its fsync.
const std::vector<std::pair<std::string, int>> k_move_steps = {{"leader/beforeMembershipFsync", 1},
                                                               {"leader/afterMembershipFsync", 1},
                                                               {"leader/sendSyncPage", 1},
                                                               {"leader/beforeMembershipFsync", 2},
                                                               {"leader/afterMembershipFsync", 2}};

// A leader killed with kill -9 at each of `steps` (failpoint, nth hit) while `args` runs under
// writes: restarted without the failpoint, it recovers, the command returns done, and `check`
// then holds. `prepare` runs on the fresh cluster before the command.
void leader_killed_at_steps(const std::vector<std::pair<std::string, int>>& steps,
                            const std::function<std::vector<std::string>(Cluster&)>& prepare,
                            const std::function<void(Cluster&, Writer&)>& check) {
  for (auto& [fp, nth] : steps) {
    CAPTURE(fp);
    CAPTURE(nth);
    auto o = two_copies_of_three();
    o.leader_env = crash_at(fp, nth);
    Cluster c(o);
    REQUIRE(c.wait_ready());
    Writer w(c, 60);
    for (int i = 0; i < 120; ++i) REQUIRE(w.put());
    REQUIRE(c.wait_settled());  // `prepare` may count the keys a participant holds
    auto cmd = member_command(c, prepare(c), "member");
    bool crashed = false;
    int64_t start = now_ms();
    // Writes go on; the leader that crashed at its failpoint is restarted without it. The
    // command asks again and returns once the change is done.
    for (int i = 0; i < 100000 && now_ms() - start < 40000 && cmd->alive(); ++i) {
      if (!c.leader()->alive()) {
        crashed = true;
        c.start_leader({{"TPC_FAILPOINTS", ""}});
      }
      w.put();
    }
    CHECK(crashed);
    REQUIRE(cmd->wait_exit(5000) == 0);
    auto list = c.client({"--json", "member", "list"});
    CHECK(list.code == 0);
    CHECK_FALSE(contains(list.out, "leaving"));
    CHECK_FALSE(contains(list.out, "joining"));
    check(c, w);
  }
}
}  // namespace

TEST_SUITE("membership") {
  TEST_CASE("member remove under writes, then kill -9 the removed node: reads and writes go on") {
    Cluster c(two_copies_of_three());
    REQUIRE(c.wait_ready());
    Writer w(c, 300);
    for (int i = 0; i < 300; ++i) REQUIRE(w.put());
    // A put is answered once its decision is durable; its COMMIT may still be on the way.
    REQUIRE(c.wait_settled());
    long before[3];
    for (int i = 0; i < 3; ++i) before[i] = c.stat(i, "keys");
    CHECK(before[0] + before[1] + before[2] == 600);

    // Participant id 2 leaves while one writer keeps writing.
    auto [code, said] = change_under_writes(c, w, {"remove", "2"});
    REQUIRE(code == 0);
    CHECK(contains(said, "removed: " + c.participant_addr(1)));
    auto list = c.client({"--json", "member", "list"});
    CHECK(
        contains(list.out, "\"address\":\"" + c.participant_addr(1) + "\",\"state\":\"removed\""));
    // Removing it again says it is removed; an unknown id is refused.
    auto again = c.client({"member", "remove", "2"});
    CHECK(again.code == 0);
    CHECK(c.client({"member", "remove", "9"}).code == 1);
    // Only its keys moved: each of the two left holds every key (two replicas).
    CHECK(c.stat(0, "keys") == 300);
    CHECK(c.stat(2, "keys") == 300);

    // kill -9 the removed node: every write and every read succeeds.
    c.participant(1)->kill9();
    int after = 0, after_ok = 0;
    for (int i = 0; i < 600; ++i, ++after) after_ok += w.put();
    MESSAGE(fmt::format("after the kill: {} of {} writes committed", after_ok, after));
    CHECK(after_ok == after);
    CHECK(check_reads(c, w) == 0);
    CHECK(c.stat(-1, "out") == 0);
    // A backup takes the two left (the removed one is in no placement, and dead).
    auto b = c.client({"backup", c.dir() + "/backup"});
    CHECK(b.code == 0);
    std::string manifest = read_file(c.dir() + "/backup/manifest");
    CHECK(contains(manifest, c.participant_addr(0)));
    CHECK_FALSE(contains(manifest, "participant 2 " + c.participant_addr(1)));
    CHECK(contains(manifest, c.participant_addr(2)));
    // It records the membership: the removed participant is there, as removed.
    CHECK(contains(manifest, c.participant_addr(1) + " removed"));
  }

  TEST_CASE("a backup of a grown and shrunk cluster restores into a new cluster of another shape") {
    Cluster c(two_copies_of_three());
    REQUIRE(c.wait_ready());
    Writer w(c, 200);
    for (int i = 0; i < 400; ++i) REQUIRE(w.put());
    // The members change: one added, one removed (placement names are no addresses of
    // --peers now).
    int n = c.add_participant();
    REQUIRE(c.client({"member", "add", c.participant_addr(n)}).code == 0);
    REQUIRE(c.client({"member", "remove", "1"}).code == 0);
    for (int i = 0; i < 100; ++i) REQUIRE(w.put());
    std::string backup = c.dir() + "/backup";
    REQUIRE(c.client({"backup", backup}).code == 0);
    // What each key holds at the backup, read through the leader.
    std::map<std::string, std::string> want;
    for (auto& [k, values] : w.may_hold) {
      auto r = c.client({"get", k});
      REQUIRE(r.code == 0);
      want[k] = r.out.substr(0, r.out.size() - 1);
    }
    REQUIRE(want.size() == 200);

    // A new cluster: two participants, each key on one of them.
    Cluster::Options o;
    o.participants = 2;
    o.replicas = 1;
    Cluster fresh(o);
    REQUIRE(fresh.wait_ready());
    auto r = fresh.client({"restore", backup});
    MESSAGE(r.out << r.err);
    REQUIRE(r.code == 0);
    CHECK(contains(r.out, "restored 200 keys"));
    // The copies were read, never changed.
    CHECK_FALSE(std::filesystem::exists(backup + "/participant-2/data.db-wal"));
    for (auto& [k, v] : want) {
      auto g = fresh.client({"get", k});
      CHECK(g.code == 0);
      CHECK(g.out == v + "\n");
    }
    CHECK(fresh.stat(0, "keys") + fresh.stat(1, "keys") == 200);
    // Again: refused, the cluster holds keys; with --force, the same values once more.
    auto again = fresh.client({"restore", backup});
    CHECK(again.code == 2);
    CHECK(contains(again.err, "holds keys"));
    CHECK(fresh.client({"restore", "--force", backup}).code == 0);
    CHECK(fresh.stat(0, "keys") + fresh.stat(1, "keys") == 200);
    // Not a backup: a usage error.
    CHECK(fresh.client({"restore", c.dir()}).code == 2);
  }

  TEST_CASE("member remove of a participant killed just before: its keys come from the others") {
    Cluster c(two_copies_of_three());
    REQUIRE(c.wait_ready());
    Writer w(c, 300);
    for (int i = 0; i < 300; ++i) REQUIRE(w.put());
    c.participant(1)->kill9();
    // It leaves serving nothing: marked leaving-out once down past --exclude-after, its keys
    // are copied from their other owners.
    auto [code, said] = change_under_writes(c, w, {"remove", "2"});
    REQUIRE(code == 0);
    CHECK(contains(said, "removed: " + c.participant_addr(1)));
    CHECK(c.stat(0, "keys") == 300);
    CHECK(c.stat(2, "keys") == 300);
    CHECK(check_reads(c, w) == 0);
    int after_ok = 0;
    for (int i = 0; i < 200; ++i) after_ok += w.put();
    CHECK(after_ok == 200);
    CHECK(c.stat(-1, "out") == 0);
  }

  TEST_CASE("a leader killed at each step of member remove recovers one membership") {
    // The removal's steps: leaving (a membership change), the copy of the keys each slot
    // gains (SYNC pages), the cutover (a membership change).
    leader_killed_at_steps(
        k_move_steps,
        [](Cluster&) {
          return std::vector<std::string>{"remove", "3"};
        },
        [](Cluster& c, Writer& w) {
          auto list = c.client({"--json", "member", "list"});
          CHECK(contains(list.out,
                         "\"address\":\"" + c.participant_addr(2) + "\",\"state\":\"removed\""));
          CHECK(c.stat(-1, "in_sync") == 2);
          // The removed node killed: every key reads as acknowledged, from the two left.
          c.participant(2)->kill9();
          CHECK(check_reads(c, w) == 0);
          for (int i = 0; i < 2; ++i) CHECK(c.stat(i, "keys") == 60);
        });
  }

  TEST_CASE("member add under writes: the new participant takes its share, the others drop it") {
    Cluster c(two_copies_of_three());
    REQUIRE(c.wait_ready());
    Writer w(c, 400);
    for (int i = 0; i < 400; ++i) REQUIRE(w.put());
    CHECK(wait_total_keys(c, {0, 1, 2}, 800) == 800);
    int n = c.add_participant();
    auto [code, said] = change_under_writes(c, w, {"add", c.participant_addr(n)});
    REQUIRE(code == 0);
    CHECK(contains(said, "added: " + c.participant_addr(n)));
    // Adding it again says it is a participant.
    CHECK(c.client({"member", "add", c.participant_addr(n)}).code == 0);
    // Two copies of each key over four participants: about half of them on the new one, and
    // every key still on two (the others dropped what it took).
    long mine = c.stat(n, "keys");
    MESSAGE("the new participant holds " << mine << " of 400 keys");
    CHECK(mine > 400 * 2 / 4 * 6 / 10);
    CHECK(mine < 400 * 2 / 4 * 14 / 10);
    CHECK(wait_total_keys(c, {0, 1, 2, n}, 800) == 800);
    // Reads and writes go on, with the new one a voter of its keys.
    int after_ok = 0;
    for (int i = 0; i < 200; ++i) after_ok += w.put();
    CHECK(after_ok == 200);
    CHECK(check_reads(c, w) == 0);
    CHECK(c.stat(-1, "in_sync") == 4);
    // A leader restarted with the --peers the cluster was made with says they are outdated,
    // and uses the membership: the fourth participant stays, every key reads.
    c.leader()->terminate();
    c.start_leader();
    REQUIRE(wait_for([&] { return c.stat(-1, "in_sync") == 4; }, 10000));
    CHECK(contains(c.log_of_leader(), "--peers is outdated"));
    CHECK(check_reads(c, w) == 0);
  }

  TEST_CASE(
      "member replace at a new port after the old node was killed: all keys readable, "
      "the others unchanged") {
    Cluster c(two_copies_of_three());
    REQUIRE(c.wait_ready());
    Writer w(c, 300);
    for (int i = 0; i < 300; ++i) REQUIRE(w.put());
    // A put is answered once its decision is durable; its COMMIT may still be on the way.
    REQUIRE(c.wait_settled());
    long before[3];
    for (int i = 0; i < 3; ++i) before[i] = c.stat(i, "keys");
    c.participant(1)->kill9();
    int n = c.add_participant();
    auto [code, said] = change_under_writes(c, w, {"replace", "2", c.participant_addr(n)});
    REQUIRE(code == 0);
    CHECK(contains(said, "participant 1 is " + c.participant_addr(n)));
    // No key moved: the others hold what they held, the new node what the old one held.
    CHECK(c.stat(0, "keys") == before[0]);
    CHECK(c.stat(2, "keys") == before[2]);
    CHECK(c.stat(n, "keys") == before[1]);
    CHECK(check_reads(c, w) == 0);
    int after_ok = 0;
    for (int i = 0; i < 200; ++i) after_ok += w.put();
    CHECK(after_ok == 200);
    CHECK(c.stat(-1, "in_sync") == 3);
    auto list = c.client({"--json", "member", "list"});
    CHECK(
        contains(list.out, "\"address\":\"" + c.participant_addr(n) + "\",\"state\":\"in-sync\""));
  }

  TEST_CASE("a leader killed at each step of member add and replace recovers one membership") {
    // Add: joining (a change), the copy of the keys it gains, the cutover (a change).
    leader_killed_at_steps(
        k_move_steps,
        [](Cluster& c) {
          int n = c.add_participant();
          return std::vector<std::string>{"add", c.participant_addr(n)};
        },
        [](Cluster& c, Writer& w) {
          CHECK(c.stat(-1, "in_sync") == 4);
          CHECK(check_reads(c, w) == 0);
          CHECK(wait_total_keys(c, {0, 1, 2, 3}, 120) == 120);
        });
    // Replace of a killed node: out at the new address (a change), catching-up (a change),
    // the copy, in-sync (a change).
    long held = 0;  // the keys of the node replaced, before it was killed
    leader_killed_at_steps(
        {{"leader/afterMembershipFsync", 1},
         {"leader/afterMembershipFsync", 2},
         {"leader/sendSyncPage", 1},
         {"leader/beforeMembershipFsync", 3}},
        [&held](Cluster& c) {
          held = c.stat(0, "keys");
          c.participant(0)->kill9();
          int n = c.add_participant();
          return std::vector<std::string>{"replace", "1", c.participant_addr(n)};
        },
        [&held](Cluster& c, Writer& w) {
          CHECK(c.stat(-1, "in_sync") == 3);
          CHECK(check_reads(c, w) == 0);
          CHECK(c.stat(3, "keys") == held);
        });
  }
}
