// Failover (issue 13): three nodes at cluster.replication_factor 2 with
// cluster.failover = auto. When a node is killed for good, the controller
// elects its in-sync copy and the copy's node serves the dead node's
// partitions from it: every acknowledged message is consumed, keyed sends
// to those partitions are acknowledged again. A dead node that comes back
// (on its data dir, or on an empty one) follows its group as a standby
// and takes it back once its copy is in sync.
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "cluster_fixture.hpp"
#include "replication/group_record.hpp"
#include "wire/types.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <thread>

namespace edda::test {
namespace {

using namespace std::chrono_literals;
namespace pb = wire::v1;
using steady = std::chrono::steady_clock;

class ClusterFailoverTest : public ClusterFixture {
protected:
  ClusterFailoverTest()
      : ClusterFixture({"cluster.replication_factor=2",
                        "cluster.min_insync=1",
                        "cluster.replica_lag_max=3s",
                        "cluster.failover=auto"},
                       "edda-failover") {}

  /// `group`'s record in etcd (nullopt: none or etcd unreachable).
  std::optional<pb::ReplicaGroup> record(const std::string& group) {
    auto c = connect_etcd();
    if (!c)
      return std::nullopt;
    auto r = replication::read_group(**c, cluster_name(), group);
    if (!r || !*r)
      return std::nullopt;
    return **r;
  }

  /// `group`'s record once one copy is recorded in sync (nullopt, and a
  /// test failure, if not within 15 s).
  std::optional<pb::ReplicaGroup> in_sync(const std::string& group) {
    std::optional<pb::ReplicaGroup> r;
    if (!eventually(15s, [&] {
          r = record(group);
          return r && r->isr_size() == 1;
        })) {
      ADD_FAILURE() << group << "'s copy never recorded in sync";
      return std::nullopt;
    }
    return r;
  }

  /// `group`'s record once another node serves it after a failover and
  /// `seen_by` (default n2) links to it (nullopt, and a test failure, if
  /// not within 30 s).
  std::optional<pb::ReplicaGroup>
  served_elsewhere(const std::string& group,
                   const cluster_node* seen_by = nullptr) {
    auto& via = seen_by != nullptr ? *seen_by : node(1);
    std::optional<pb::ReplicaGroup> r;
    if (!eventually(30s, [&] {
          r = record(group);
          return r && !r->host().empty()
                 && connected_members(via).count(group) != 0;
        })) {
      ADD_FAILURE() << "the dead node's group " << group
                    << " is not served again";
      return std::nullopt;
    }
    return r;
  }

  /// Three nodes that see each other.
  void start_three() {
    start_nodes(3);
    ASSERT_TRUE(eventually(15s, [&] {
      return connected_members(node(1)).size() == 3;
    }));
  }

  /// Topic "pay" (6 partitions) and `per_node` acknowledged keyed writes
  /// on each node's partitions, sent through `via`; every node's copy in
  /// sync and recorded first.
  void load(const cluster_node& via, acked_producer& p, int per_node) {
    auto c = connect(via);
    ASSERT_TRUE(c) << render(c.error());
    ASSERT_TRUE(client::admin::create_topic(*c, "pay", 6));
    auto info = client::admin::describe_topic(*c, "pay");
    ASSERT_TRUE(info);
    for (size_t i = 0; i < node_count(); ++i) {
      auto name = node(i).name;
      ASSERT_TRUE(in_sync(name));
      auto key = key_on(*info, name);
      ASSERT_FALSE(key.empty());
      for (int j = 0; j < per_node; ++j)
        ASSERT_TRUE(p.send(key, name + " " + std::to_string(j)));
    }
  }

  /// Every acknowledged body of `p` is consumed through `via`.
  void all_consumed(const cluster_node& via, const acked_producer& p,
                    const std::string& group = "audit") {
    auto c = connect(via);
    ASSERT_TRUE(c) << render(c.error());
    inbox box;
    auto cons = box.consume(*c, group, "pay");
    ASSERT_TRUE(cons) << render(cons.error());
    EXPECT_TRUE(eventually(30s, [&] { return box.missing(p.acked).empty(); }))
      << box.missing(p.acked).size() << " of " << p.acked.size()
      << " acknowledged messages never consumed";
    (*cons)->stop();
  }

  /// Topic "pay" (6 partitions) created through `c`; `info` is set to its
  /// description and a key of a partition homed on `home` is returned.
  std::string pay_key_on(const client::connection& c, const std::string& home,
                         std::optional<pb::TopicInfo>& info) {
    EXPECT_TRUE(client::admin::create_topic(c, "pay", 6));
    auto d = client::admin::describe_topic(c, "pay");
    EXPECT_TRUE(d);
    if (!d)
      return {};
    info = *d;
    auto key = key_on(*d, home);
    EXPECT_FALSE(key.empty()) << "no partition homed on " << home;
    return key;
  }

  /// `n` is started again after its group was elected onto another node:
  /// it takes the group back (its own member, no host in the record, a
  /// higher epoch), the other node serves it no more, keyed sends to its partitions are
  /// acknowledged, and every write `p` had acknowledged is consumed from
  /// the group's own node.
  void expect_handed_back(cluster_node& n, acked_producer& p, const std::string& key,
                          uint64_t hosted_epoch) {
    auto began = steady::now();
    ASSERT_TRUE(restart(n)) << n.name << " did not start again";
    std::optional<pb::ReplicaGroup> back;
    ASSERT_TRUE(eventually(30s, [&] {
      back = record(n.name);
      return back && back->host().empty();
    })) << n.name << "'s group was not handed back";
    std::printf("group %s handed back to its node %lld ms after its restart: "
                "epoch %llu -> %llu\n",
                n.name.c_str(),
                static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(
                    steady::now() - began)
                    .count()),
                static_cast<unsigned long long>(hosted_epoch),
                static_cast<unsigned long long>(back->leader_epoch()));
    EXPECT_GT(back->leader_epoch(), hosted_epoch);
    EXPECT_TRUE(back->move_to().empty());
    // The members: the node itself, no longer served by `host`; the
    // standby gone.
    ASSERT_TRUE(eventually(15s, [&] {
      auto s = status_of(n);
      if (!s)
        return false;
      bool self = false, standby = false;
      for (auto& m : s->members()) {
        if (m.node_id() == n.name)
          self = m.self() && m.hosted_by().empty();
        standby = standby || !m.standby_for().empty();
      }
      return self && !standby;
    })) << "status of " << n.name << " does not show it serving itself";
    // Keyed sends to its partition are acknowledged (by the node itself).
    auto again = send_until_acked(p, key, "handed back");
    ASSERT_TRUE(again) << render(again.error());
    // Every acknowledged write, before, during and after the failover, is
    // consumed: read through the node that took its group back.
    auto c = connect(n);
    ASSERT_TRUE(c) << render(c.error());
    inbox box;
    auto cons = box.consume(*c, "audit-back", "pay");
    ASSERT_TRUE(cons) << render(cons.error());
    EXPECT_TRUE(eventually(30s, [&] { return box.missing(p.acked).empty(); }))
      << box.missing(p.acked).size() << " of " << p.acked.size()
      << " acknowledged messages never consumed after the hand-back";
    (*cons)->stop();
    // Its group is copied again: a follower in the recorded in-sync set.
    ASSERT_TRUE(eventually(20s, [&] {
      auto r = record(n.name);
      return r && r->isr_size() >= 1 && r->host().empty();
    })) << "no in-sync copy of " << n.name << " after the hand-back";
    // A later restart at home (kill -9 again) keeps the group and every
    // acknowledged write (its followers last written before the
    // hand-back's election are copied over, not streamed on).
    for (int i = 0; i < 10; ++i)
      ASSERT_TRUE(p.send(key, "at home " + std::to_string(i)));
    ASSERT_TRUE(restart(n));
    auto last = send_until_acked(p, key, "after a restart at home");
    ASSERT_TRUE(last) << render(last.error());
    auto r = record(n.name);
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->host().empty()) << "served by " << r->host();
    auto c2 = connect(n);
    ASSERT_TRUE(c2) << render(c2.error());
    inbox box2;
    auto cons2 = box2.consume(*c2, "audit-home", "pay");
    ASSERT_TRUE(cons2) << render(cons2.error());
    EXPECT_TRUE(eventually(30s, [&] { return box2.missing(p.acked).empty(); }))
      << box2.missing(p.acked).size() << " of " << p.acked.size()
      << " acknowledged messages never consumed after a restart at home";
    (*cons2)->stop();
  }

  /// Sends `body` with `key` through `p`, again every 200 ms for up to
  /// 20 s (the group may be moving): the last result.
  static caf::expected<client::send_result>
  send_until_acked(acked_producer& p, const std::string& key,
                   const std::string& body) {
    caf::expected<client::send_result> r{caf::error{}};
    auto deadline = steady::now() + 20s;
    while (steady::now() < deadline && !(r = p.send(key, body)))
      std::this_thread::sleep_for(200ms);
    return r;
  }

  /// The node (of this fixture) named `id`.
  cluster_node& by_name(const std::string& id) {
    return node(id);
  }
};

TEST_F(ClusterFailoverTest, AKilledNodesPartitionsAreServedFromItsCopy) {
  ASSERT_NO_FATAL_FAILURE(start_three());
  auto c = connect(node(1));
  ASSERT_TRUE(c) << render(c.error());
  auto victim = node(0).name;
  std::optional<pb::TopicInfo> info;
  auto key = pay_key_on(*c, victim, info);
  ASSERT_FALSE(HasFailure());
  // The victim's copy is in sync and recorded so in etcd.
  ASSERT_TRUE(eventually(15s, [&] {
    auto r = record(victim);
    return r && r->isr_size() == 1 && r->failover();
  })) << "the victim's follower never entered the recorded in-sync set";
  auto before = *record(victim);
  // Acknowledged messages on every partition, the victim's included.
  acked_producer p{*c, "pay"};
  std::set<std::string> on_victim;
  for (int i = 0; i < 120; ++i) {
    auto k = i % 3 == 0 ? key : "acct-" + std::to_string(i % 11);
    auto body = "debit " + std::to_string(i);
    auto r = p.send(k, body);
    ASSERT_TRUE(r) << body << ": " << render(r.error());
    if (info->partitions(static_cast<int>(r->partition)).home() == victim)
      on_victim.insert(body);
  }
  ASSERT_FALSE(on_victim.empty());
  auto killed = steady::now();
  kill9(node(0));
  // The controller elects the copy, its node serves the group.
  auto after = served_elsewhere(victim);
  ASSERT_TRUE(after);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
    steady::now() - killed);
  std::printf("group %s served on %s %lld ms after kill -9 (lease ttl 2 s); "
              "epoch %llu -> %llu, elected at seq %llu by token %llu\n",
              victim.c_str(), after->host().c_str(),
              static_cast<long long>(took.count()),
              static_cast<unsigned long long>(before.leader_epoch()),
              static_cast<unsigned long long>(after->leader_epoch()),
              static_cast<unsigned long long>(after->elected_seq()),
              static_cast<unsigned long long>(after->elected_by()));
  EXPECT_NE(after->host(), victim);
  EXPECT_GT(after->leader_epoch(), before.leader_epoch());
  EXPECT_NE(after->elected_by(), 0u);
  EXPECT_EQ(after->log_id(), before.log_id()) << "the same log goes on";
  EXPECT_EQ(before.isr(0), after->host()) << "only the in-sync copy";
  // edda cluster status names who serves it.
  auto s = status_of(node(2));
  ASSERT_TRUE(s);
  bool shown = false;
  for (auto& m : s->members())
    if (m.node_id() == victim)
      shown = m.hosted_by() == after->host();
  EXPECT_TRUE(shown) << s->DebugString();
  // ...and its group's record: host, epoch, in-sync set.
  bool listed = false;
  for (auto& g : s->groups())
    if (g.group() == victim)
      listed = g.host() == after->host()
               && g.leader_epoch() >= after->leader_epoch() && g.failover();
  EXPECT_TRUE(listed) << s->DebugString();
  EXPECT_EQ(s->groups_size(), 3);
  // Keyed sends to the dead node's partition are acknowledged again (the
  // producer finds the group at its new endpoint).
  auto again = send_until_acked(p, key, "after failover");
  ASSERT_TRUE(again) << render(again.error());
  EXPECT_EQ(info->partitions(static_cast<int>(again->partition)).home(),
            victim);
  // Everything acknowledged, before and after, is consumed.
  inbox box;
  auto cons = box.consume(*c, "audit", "pay");
  ASSERT_TRUE(cons) << render(cons.error());
  ASSERT_TRUE(eventually(30s, [&] { return box.missing(p.acked).empty(); }))
    << box.missing(p.acked).size() << " of " << p.acked.size()
    << " acknowledged messages never consumed, e.g. "
    << *box.missing(p.acked).begin();
  (*cons)->stop();
  // The group is copied again, to the node that does not serve it (a full
  // copy: the new leader keeps no commits in memory), and that copy enters
  // the recorded in-sync set.
  std::string third;
  for (auto& n : {node(1).name, node(2).name})
    if (n != after->host())
      third = n;
  ASSERT_TRUE(eventually(20s, [&] {
    auto r = record(victim);
    return r && r->isr_size() == 1 && r->isr(0) == third;
  })) << "no new in-sync copy of " << victim << " on " << third;
  // The dead node comes back on its data dir (killed, so it may hold
  // writes the elected copy lacks): it follows its group as a standby,
  // and once its copy is in sync the group is handed back to it.
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(p.send(key, "hosted " + std::to_string(i)));
  ASSERT_NO_FATAL_FAILURE(expect_handed_back(node(0), p, key,
                                             after->leader_epoch()));
}

TEST_F(ClusterFailoverTest, ANodeBackOnAnEmptyDataDirCatchesUpAndTakesItsGroupBack) {
  // The dead node's disk is lost: it comes back with node.name alone,
  // follows its group from nothing (a full copy) and serves it again.
  ASSERT_NO_FATAL_FAILURE(start_three());
  auto c = connect(node(1));
  ASSERT_TRUE(c) << render(c.error());
  auto victim = node(0).name;
  std::optional<pb::TopicInfo> info;
  auto key = pay_key_on(*c, victim, info);
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(in_sync(victim));
  acked_producer p{*c, "pay"};
  for (int i = 0; i < 60; ++i)
    ASSERT_TRUE(p.send(i % 2 == 0 ? key : "acct-" + std::to_string(i),
                       "before " + std::to_string(i)));
  kill9(node(0));
  auto hosted = served_elsewhere(victim);
  ASSERT_TRUE(hosted);
  std::error_code ec;
  std::filesystem::remove_all(node(0).data_dir, ec);
  ASSERT_FALSE(ec) << ec.message();
  // Writes while it is away, on its partition too.
  auto r = send_until_acked(p, key, "while away 0");
  ASSERT_TRUE(r) << render(r.error());
  for (int i = 1; i < 30; ++i)
    ASSERT_TRUE(p.send(key, "while away " + std::to_string(i)));
  ASSERT_NO_FATAL_FAILURE(
    expect_handed_back(node(0), p, key, hosted->leader_epoch()));
}

TEST_F(ClusterFailoverTest, AnOperatorMovesAGroupToANewReplicaAndBackOnline) {
  // Replacing a machine, online: a replica of n1's group on the third
  // node (beyond the factor), the group moved there (n1 keeps running as
  // its standby), then moved back home. Writes go on throughout; nothing
  // acknowledged is lost.
  ASSERT_NO_FATAL_FAILURE(start_three());
  auto c = connect(node(1));
  ASSERT_TRUE(c) << render(c.error());
  auto g = node(0).name;
  std::optional<pb::TopicInfo> info;
  auto key = pay_key_on(*c, g, info);
  ASSERT_FALSE(HasFailure());
  auto r = in_sync(g);
  ASSERT_TRUE(r);
  auto follower = r->isr(0);
  std::string other;
  for (auto& n : {node(1).name, node(2).name})
    if (n != follower)
      other = n;
  acked_producer p{*c, "pay"};
  for (int i = 0; i < 40; ++i)
    ASSERT_TRUE(p.send(i % 2 == 0 ? key : "acct-" + std::to_string(i),
                       "before " + std::to_string(i)));
  // Bad requests are refused clearly, changing nothing.
  auto before_bad = record(g);
  ASSERT_TRUE(before_bad);
  auto none = client::admin::move_group(*c, g, "nobody", "ops");
  ASSERT_FALSE(none);
  EXPECT_EQ(code_of(none.error()), errc::not_found) << render(none.error());
  auto no_copy = client::admin::move_group(*c, g, other, "ops");
  ASSERT_FALSE(no_copy);
  EXPECT_EQ(code_of(no_copy.error()), errc::unavailable)
    << render(no_copy.error());
  EXPECT_NE(render(no_copy.error()).find("add-replica"), std::string::npos)
    << render(no_copy.error());
  auto unknown = client::admin::add_replica(*c, "no-such-group", other, "ops");
  // Asked through the node that serves the group: refused, saying where
  // to ask.
  auto self_ask = connect(node(0));
  ASSERT_TRUE(self_ask) << render(self_ask.error());
  auto through = client::admin::move_group(*self_ask, g, follower, "ops");
  ASSERT_FALSE(through);
  EXPECT_NE(render(through.error()).find("ask through another node"),
            std::string::npos)
    << render(through.error());
  ASSERT_FALSE(unknown);
  EXPECT_EQ(code_of(unknown.error()), errc::not_found);
  auto after_bad = record(g);
  ASSERT_TRUE(after_bad);
  EXPECT_EQ(after_bad->SerializeAsString(), before_bad->SerializeAsString())
    << "a refused request changed the record";
  // A replica on `other`: answered once its copy is in sync.
  auto added = client::admin::add_replica(*c, g, other, "ops");
  ASSERT_TRUE(added) << render(added.error());
  EXPECT_NE(std::find(added->isr().begin(), added->isr().end(), other),
            added->isr().end());
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(p.send(key, "replicated " + std::to_string(i)));
  // Writes to the group's partition go on during each move, from another
  // client (some are refused while it moves; every acknowledged one must
  // be consumed afterwards).
  auto c2 = connect(node(1));
  ASSERT_TRUE(c2) << render(c2.error());
  acked_producer bg{*c2, "pay"};
  std::atomic<bool> writing{false};
  std::atomic<int> tried{0};
  std::thread writer;
  auto write_during = [&](const std::string& tag) {
    writing = true;
    writer = std::thread([&, tag] {
      for (int i = 0; i < 2000 && writing.load(); ++i) {
        (void) bg.send(key, tag + " " + std::to_string(i));
        ++tried;
        std::this_thread::sleep_for(5ms);
      }
    });
  };
  auto stop_writing = [&] {
    writing = false;
    if (writer.joinable())
      writer.join();
  };
  at_exit stop_writer{[&] { stop_writing(); }};
  // The move: answered once `other` serves the group.
  write_during("during the move away");
  auto moved_at = steady::now();
  auto moved = client::admin::move_group(*c, g, other, "ops");
  std::this_thread::sleep_for(300ms);
  stop_writing();
  ASSERT_TRUE(moved) << render(moved.error());
  std::printf("during the move away: %zu of %d writes acknowledged\n",
              bg.acked.size(), tried.load());
  p.acked.insert(bg.acked.begin(), bg.acked.end());
  std::printf("group %s moved to %s in %lld ms (epoch %llu)\n", g.c_str(),
              moved->host().c_str(),
              static_cast<long long>(
                std::chrono::duration_cast<std::chrono::milliseconds>(
                  steady::now() - moved_at)
                  .count()),
              static_cast<unsigned long long>(moved->epoch()));
  EXPECT_EQ(moved->host(), other);
  r = record(g);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->host(), other);
  EXPECT_TRUE(r->pinned());
  EXPECT_EQ(r->moved_by(), "ops");
  // Keyed sends to its partition are acknowledged there.
  auto there = send_until_acked(p, key, "moved 0");
  ASSERT_TRUE(there) << render(there.error());
  // n1 keeps running, as its group's standby, and is not handed the group
  // back by itself (pinned): its copy enters the in-sync set and stays.
  auto standby = replication::standby_id(g);
  // The same process, started again as the standby (not restarted here).
  ASSERT_TRUE(eventually(15s, [&] {
    auto s = status_of(node(1));
    if (!s)
      return false;
    for (auto& m : s->members())
      if (m.node_id() == standby)
        return true;
    return false;
  })) << "n1 did not follow its group as a standby";
  EXPECT_TRUE(node(0).running()) << "n1's process exited after the move";
  ASSERT_TRUE(eventually(30s, [&] {
    auto x = record(g);
    return x
           && std::find(x->isr().begin(), x->isr().end(), standby)
                != x->isr().end();
  })) << "n1's standby copy never in sync";
  std::this_thread::sleep_for(2s);
  r = record(g);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->host(), other) << "a pinned group moved back by itself";
  for (int i = 1; i < 10; ++i)
    ASSERT_TRUE(p.send(key, "moved " + std::to_string(i)));
  all_consumed(node(1), p, "audit-moved");
  // Back home: n1 serves its group again.
  auto acked_before = bg.acked.size();
  tried = 0;
  write_during("during the move home");
  // Asked through the node that neither serves it nor is its own (the
  // serving node stops serving it on the way: it would not answer).
  auto via = connect(node(follower));
  ASSERT_TRUE(via) << render(via.error());
  auto home = client::admin::move_group(*via, g, g, "ops");
  std::this_thread::sleep_for(300ms);
  stop_writing();
  ASSERT_TRUE(home) << render(home.error());
  std::printf("during the move home: %zu of %d writes acknowledged\n",
              bg.acked.size() - acked_before, tried.load());
  p.acked.insert(bg.acked.begin(), bg.acked.end());
  EXPECT_EQ(home->host(), g);
  r = record(g);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->host().empty());
  EXPECT_FALSE(r->pinned());
  auto back = send_until_acked(p, key, "home again");
  ASSERT_TRUE(back) << render(back.error());
  all_consumed(node(0), p, "audit-home");
}

TEST_F(ClusterFailoverTest, APausedLeaderIsDeposedAndAcknowledgesNothingOnResume) {
  ASSERT_NO_FATAL_FAILURE(start_three());
  auto c = connect(node(1));
  ASSERT_TRUE(c) << render(c.error());
  auto victim = node(0).name;
  std::optional<pb::TopicInfo> info;
  auto key = pay_key_on(*c, victim, info);
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(in_sync(victim));
  // A client straight on the victim, and acknowledged writes before.
  auto direct = connect(node(0));
  ASSERT_TRUE(direct) << render(direct.error());
  acked_producer mine{*direct, "pay"};
  acked_producer p{*c, "pay"};
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(mine.send(key, "before " + std::to_string(i)));
    ASSERT_TRUE(p.send("acct-" + std::to_string(i % 7),
                       "other " + std::to_string(i)));
  }
  // SIGSTOP past the lease: the controller elects its copy.
  pause(node(0));
  auto after = served_elsewhere(victim);
  ASSERT_TRUE(after);
  // Writes to the group's new leader while the old one is paused.
  for (int i = 0; i < 20; ++i) {
    auto r = send_until_acked(p, key, "new leader " + std::to_string(i));
    ASSERT_TRUE(r) << render(r.error());
  }
  // SIGCONT: the old leader sees the newer epoch and stops; whatever it is
  // sent meanwhile is never acknowledged.
  resume(node(0));
  int refused = 0, said_fenced = 0;
  for (int i = 0; i < 30; ++i) {
    auto r = mine.send(key, "to the deposed " + std::to_string(i));
    if (!r) {
      ++refused;
      // Refused by the deposed node (fenced), or the node is gone (it
      // stops at once).
      if (code_of(r.error()) == errc::fenced)
        ++said_fenced;
    }
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(refused, 30) << "the deposed leader acknowledged "
                         << 30 - refused << " writes";
  std::printf("deposed leader: %d of 30 sends refused as fenced, the rest "
              "found it gone\n",
              said_fenced);
  auto* proc = node(0).process();
  ASSERT_NE(proc, nullptr);
  ASSERT_TRUE(test::wait_exit(*proc, 20s)) << "the deposed node still runs";
  EXPECT_TRUE(WIFEXITED(proc->status) && WEXITSTATUS(proc->status) == 1)
    << proc->describe_status();
  // Every acknowledged write is served by the new leader.
  std::set<std::string> all = p.acked;
  all.insert(mine.acked.begin(), mine.acked.end());
  inbox box;
  auto cons = box.consume(*c, "audit", "pay");
  ASSERT_TRUE(cons) << render(cons.error());
  ASSERT_TRUE(eventually(30s, [&] { return box.missing(all).empty(); }))
    << box.missing(all).size() << " acknowledged messages never consumed";
  for (int i = 0; i < 30; ++i)
    EXPECT_FALSE(box.has("to the deposed " + std::to_string(i)));
  (*cons)->stop();
}

TEST_F(ClusterFailoverTest, TheControllersOwnNodeKilledIsFailedOverByTheNext) {
  // RocketMQ 7689: the controller and a leader die together. Here the
  // node holding the controller duty leads its own group: both go at once.
  ASSERT_NO_FATAL_FAILURE(start_three());
  auto [ctl, token] = owner_in_etcd("controller");
  ASSERT_TRUE(eventually(10s, [&] {
    std::tie(ctl, token) = owner_in_etcd("controller");
    return !ctl.empty();
  }));
  auto& victim = by_name(ctl);
  auto& via = victim.name == node(0).name ? node(1) : node(0);
  auto c = connect(via);
  ASSERT_TRUE(c);
  acked_producer p{*c, "pay"};
  ASSERT_NO_FATAL_FAILURE(load(via, p, 30));
  kill9(victim);
  // The duty moves (a higher token), and the new holder elects the dead
  // controller's copy.
  auto after = served_elsewhere(ctl, &via);
  ASSERT_TRUE(after);
  auto [next, next_token] = owner_in_etcd("controller");
  EXPECT_NE(next, ctl);
  EXPECT_GT(next_token, token);
  EXPECT_EQ(after->elected_by(), static_cast<uint64_t>(next_token))
    << "elected under the new holder's token";
  ASSERT_NO_FATAL_FAILURE(all_consumed(via, p));
}

TEST_F(ClusterFailoverTest, NoElectionWhileEtcdIsDownAndNoLiveNodeIsDeposed) {
  ASSERT_NO_FATAL_FAILURE(start_three());
  auto c = connect(node(1));
  ASSERT_TRUE(c);
  acked_producer p{*c, "pay"};
  ASSERT_NO_FATAL_FAILURE(load(node(1), p, 30));
  auto victim = node(0).name;
  auto before = record(victim);
  ASSERT_TRUE(before);
  auto incarnation = status_of(node(1))->incarnation();
  // The node dies and etcd is gone with it for longer than the lease:
  // nothing can be elected (every record is in etcd), and when etcd comes
  // back every lease may have expired at once.
  kill9(node(0));
  etcd().pause();
  std::this_thread::sleep_for(4s);
  etcd().resume();
  // The dead node's group is elected; the live nodes rejoin within the
  // controller's grace and keep their own groups (none is deposed).
  auto after = served_elsewhere(victim);
  ASSERT_TRUE(after);
  // The survivors' leases expired while etcd was away: they rejoined.
  EXPECT_TRUE(eventually(10s, [&] {
    auto s = status_of(node(1));
    return s && s->incarnation() > incarnation;
  })) << "the scenario did not happen: " << node(1).name
      << " kept its lease through the etcd outage";
  for (size_t i = 1; i < 3; ++i) {
    EXPECT_TRUE(node(i).running()) << node(i).name << " stopped (deposed?)";
    auto r = record(node(i).name);
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->host().empty())
      << node(i).name << "'s group was failed over while it lived";
  }
  ASSERT_NO_FATAL_FAILURE(all_consumed(node(1), p));
}

TEST_F(ClusterFailoverTest, ACleanRestartKeepsTheNodesGroup) {
  ASSERT_NO_FATAL_FAILURE(start_three());
  auto c = connect(node(1));
  ASSERT_TRUE(c);
  acked_producer p{*c, "pay"};
  ASSERT_NO_FATAL_FAILURE(load(node(1), p, 20));
  auto before = record(node(0).name);
  ASSERT_TRUE(before);
  // SIGTERM (an upgrade): the stopping node marks its record, and the
  // controller gives it restart time (30 s here) instead of the grace
  // (1 s) before electing a copy; it is back after 1.5 s.
  stop(node(0));
  auto stopped = record(node(0).name);
  ASSERT_TRUE(stopped);
  EXPECT_NE(stopped->stopped_ms(), 0) << "the clean stop was not recorded";
  std::this_thread::sleep_for(1500ms);
  EXPECT_TRUE(record(node(0).name)->host().empty())
    << "failed over within the grace after a clean stop";
  ASSERT_TRUE(restart(node(0)));
  std::this_thread::sleep_for(3s);
  auto after = record(node(0).name);
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->host().empty()) << "failed over during a restart";
  EXPECT_EQ(after->elected_by(), 0u);
  EXPECT_EQ(after->stopped_ms(), 0) << "the claim did not clear the mark";
  EXPECT_GT(after->leader_epoch(), before->leader_epoch());
  EXPECT_TRUE(node(0).running());
  ASSERT_NO_FATAL_FAILURE(all_consumed(node(1), p));
}

TEST_F(ClusterFailoverTest, OnlyAnInSyncCopyIsElectedAndALaggingOneCatchesUp) {
  // Replication factor 3: n1's copies are on n2 and n3. n3 (failover off,
  // so that it keeps its own group while down) falls behind n1.
  add_node({"n1", {"cluster.replication_factor=3"}, false, false, {}});
  add_node({"n2", {"cluster.replication_factor=3"}, false, false, {}});
  add_node({"n3", {"cluster.replication_factor=3", "cluster.failover=off"},
            false, false, {}});
  ASSERT_TRUE(expect_formed());
  auto c = connect(node(1));
  ASSERT_TRUE(c);
  ASSERT_TRUE(client::admin::create_topic(*c, "pay", 6));
  auto key = key_on(*c, "pay", "n1");
  ASSERT_FALSE(key.empty());
  ASSERT_TRUE(eventually(15s, [&] {
    auto r = record("n1");
    return r && r->isr_size() == 2;
  })) << "n1's two copies never recorded in sync";
  acked_producer p{*c, "pay"};
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(p.send(key, "both " + std::to_string(i)));
  kill9(node(2));
  ASSERT_TRUE(eventually(15s, [&] {
    auto r = record("n1");
    return r && r->isr_size() == 1 && r->isr(0) == "n2";
  })) << "n3 never left n1's in-sync set";
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(p.send(key, "only n2 " + std::to_string(i)));
  // n1 dies; n3 comes back with its older copy. The controller elects
  // n2's copy (in sync), never n3's.
  kill9(node(0));
  ASSERT_TRUE(restart(node(2)));
  auto after = served_elsewhere("n1");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->host(), "n2");
  // n3's copy, a prefix of the elected one (both last written by n1 at
  // the same epoch), streams on from the new leader and enters its
  // in-sync set.
  EXPECT_TRUE(eventually(20s, [&] {
    auto r = record("n1");
    return r && r->isr_size() == 1 && r->isr(0) == "n3";
  })) << "n3 never caught up with the elected leader";
  ASSERT_NO_FATAL_FAILURE(all_consumed(node(1), p));
}

/// n1 fails over, n2 does not (so that the follower killed and restarted
/// keeps its own group).
class ClusterUncleanElectionTest : public ClusterFailoverTest {};

TEST_F(ClusterUncleanElectionTest, OnlyAnOperatorElectsACopyThatIsNotInSync) {
  // Two nodes: n1's only possible copy is on n2 (with a third node, n1
  // would copy to it once n2 left, and a clean election would follow).
  // n2 runs with failover off, so that it keeps its own group while down.
  add_node({"n1", {"cluster.failover=auto"}, false, false, {}});
  add_node({"n2", {"cluster.failover=off"}, false, false, {}});
  ASSERT_TRUE(expect_formed());
  auto c = connect(node(0));
  ASSERT_TRUE(c);
  acked_producer p{*c, "pay"};
  ASSERT_NO_FATAL_FAILURE(load(node(0), p, 20));
  auto info = client::admin::describe_topic(*c, "pay");
  ASSERT_TRUE(info);
  auto key = key_on(*info, "n1");
  ASSERT_EQ(record("n1")->isr(0), "n2");
  auto& f = node("n2");
  auto& other = f;
  acked_producer q{*c, "pay"};
  // n1's follower goes: n1 goes on alone (min in sync 1), its in-sync set
  // recorded empty, and acknowledges writes its copy never gets.
  kill9(f);
  ASSERT_TRUE(eventually(15s, [&] {
    auto r = record("n1");
    return r && r->isr_size() == 0;
  }));
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(q.send(key, "only on n1 " + std::to_string(i)));
  kill9(node(0));
  ASSERT_TRUE(restart(f));
  auto oc = connect(other);
  ASSERT_TRUE(oc);
  // Its copy is behind: no clean election, the group waits.
  std::this_thread::sleep_for(5s);
  auto waiting = record("n1");
  ASSERT_TRUE(waiting);
  EXPECT_TRUE(waiting->host().empty()) << "a copy out of sync was elected";
  // An operator asks: the live copy with the most writes is elected,
  // recorded as unclean with who asked.
  auto r = client::admin::elect_unclean(*oc, "n1", "ops-oncall");
  ASSERT_TRUE(r) << render(r.error());
  EXPECT_EQ(r->host(), "n2");
  EXPECT_TRUE(r->unclean());
  auto rec = record("n1");
  ASSERT_TRUE(rec);
  EXPECT_TRUE(rec->unclean());
  EXPECT_EQ(rec->unclean_elected_by(), "ops-oncall");
  EXPECT_TRUE(rec->unclean_by().empty()) << "the request stayed pending";
  // Served again: what the copy had is there; the writes acknowledged
  // after it are lost, as the operator was told.
  ASSERT_TRUE(eventually(20s, [&] {
    return connected_members(other).count("n1") != 0;
  }));
  inbox box;
  auto cons = box.consume(*oc, "audit", "pay");
  ASSERT_TRUE(cons) << render(cons.error());
  EXPECT_TRUE(eventually(30s, [&] { return box.missing(p.acked).empty(); }))
    << box.missing(p.acked).size() << " written before the follower left "
    << "are missing";
  for (auto& b : q.acked)
    EXPECT_FALSE(box.has(b)) << b << " was on no copy, yet it is served";
  (*cons)->stop();
  // Asking for a group that is served is refused, saying so.
  auto again = client::admin::elect_unclean(*oc, "n1", "ops-oncall");
  ASSERT_FALSE(again);
  EXPECT_NE(render(again.error()).find("served by a live member"),
            std::string::npos)
    << render(again.error());
  auto unknown = client::admin::elect_unclean(*oc, "nope", "ops-oncall");
  ASSERT_FALSE(unknown);
  EXPECT_NE(render(unknown.error()).find("no replica group"), std::string::npos)
    << render(unknown.error());
}

} // namespace
} // namespace edda::test
