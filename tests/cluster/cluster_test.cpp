// A cluster of edda nodes on one etcd, as a user sees it: membership and
// links (edda cluster status), partitions placed across nodes and served
// from any node, keyless sends skipping a dead home and keyed ones failing
// fast, a consumer group whose coordinator moves to a survivor with a higher
// fencing token when its node dies, a node that was SIGSTOPped past its
// lease fencing itself and rejoining, and two nodes with one id.
#include "base/ids.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "client/transaction_producer.hpp"
#include "sagas/remote.hpp"
#include "cluster/placement.hpp"
#include "cluster_fixture.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <set>

namespace edda::test {
namespace {

using namespace std::chrono_literals;

class ClusterTest : public ClusterFixture {};

TEST_F(ClusterTest, ThreeNodesFormOneClusterWithLinksBetweenAll) {
  start_nodes(3);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_TRUE(eventually(10s, [&] {
      return connected_members(node(i))
             == std::set<std::string>{"n1", "n2", "n3"};
    })) << node(i).name << " does not see every member linked";
  auto s = status_of(node(0));
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->clustered());
  EXPECT_EQ(s->cluster_name(), cluster_name());
  EXPECT_EQ(s->node_id(), "n1");
  EXPECT_FALSE(s->fenced());
  EXPECT_LT(s->renewed_ms_ago(), 2000);
  // A node that leaves on SIGTERM revokes its lease: the others see it gone
  // at once, not a TTL later.
  stop(node(2));
  EXPECT_TRUE(eventually(1500ms, [&] {
    auto s = status_of(node(0));
    return s && s->members_size() == 2;
  }));
}

TEST_F(ClusterTest, PartitionsAreSpreadAndServedFromAnyNode) {
  start_nodes(3);
  auto c1 = connect(node(0));
  ASSERT_TRUE(c1) << render(c1.error());
  auto created = client::admin::create_topic(*c1, "orders", 6);
  ASSERT_TRUE(created) << render(created.error());
  auto c3 = connect(node(2));
  ASSERT_TRUE(c3);
  auto d = client::admin::describe_topic(*c3, "orders");
  ASSERT_TRUE(d) << render(d.error());
  ASSERT_EQ(d->partitions_size(), 6);
  EXPECT_EQ(partitions_per_home(*d),
            (std::map<std::string, int>{{"n1", 2}, {"n2", 2}, {"n3", 2}}));

  // Keyed messages through n2 land on their partitions' homes; a group
  // consuming through n3 gets every one, in order per key.
  auto c2 = connect(node(1));
  ASSERT_TRUE(c2);
  {
    client::producer p{*c2};
    for (int i = 0; i < 60; ++i) {
      client::message m;
      m.topic = "orders";
      m.key = "k" + std::to_string(i % 12);
      m.body = "m" + std::to_string(i);
      auto r = p.send(m);
      ASSERT_TRUE(r) << render(r.error());
    }
  }
  inbox got;
  auto cons = got.consume(*c3, "billing", "orders");
  ASSERT_TRUE(cons) << render(cons.error());
  ASSERT_TRUE(eventually(20s, [&] { return got.distinct() == 60; }))
    << got.distinct() << " of 60 consumed";
  std::lock_guard<std::mutex> guard{got.mtx};
  for (auto& [body, n] : got.count)
    EXPECT_EQ(n, 1) << body << " delivered " << n << " times";
  for (auto& [key, bodies] : got.by_key) {
    std::vector<int> order;
    for (auto& b : bodies)
      order.push_back(std::stoi(b.substr(1)));
    EXPECT_TRUE(std::is_sorted(order.begin(), order.end()))
      << "key " << key << " out of order";
  }
  // The group's coordinator is owned in etcd, with a fencing token, and
  // the status shows it and the partitions each node holds (6, and the
  // group's retry topic: one on each member).
  auto [owner, token] = owner_in_etcd("group/billing");
  EXPECT_FALSE(owner.empty());
  EXPECT_GT(token, 0);
  auto st = status_of(node(1));
  ASSERT_TRUE(st);
  bool listed = false;
  for (auto& o : st->owners())
    listed = listed
             || (o.resource() == "group/billing" && o.node_id() == owner
                 && static_cast<int64_t>(o.token()) == token);
  EXPECT_TRUE(listed) << st->ShortDebugString();
  for (auto& m : st->members())
    EXPECT_EQ(m.partitions(), 3u) << m.node_id();
}

TEST_F(ClusterTest, DeadLettersAndGroupsOfEveryNodeAreListedAndRedrivenFromAny) {
  start_nodes(3);
  auto c1 = connect(node(0));
  ASSERT_TRUE(c1);
  ASSERT_TRUE(client::admin::create_topic(*c1, "payments", 3));
  // Every message fails until redriven; after one retry it is a dead
  // letter, kept on the node of the partition it came from.
  std::atomic<bool> redriven{false};
  inbox after;
  client::consumer_options co;
  co.group = "pay-g";
  co.topic = "payments";
  co.retry_delays_ms = {100};
  co.max_reconsume = 1;
  auto cons = client::consumer::start(
    *c1, co, [&](const client::received& r) {
      if (!redriven.load())
        return client::consume_result::retry_later;
      return after.record(r);
    });
  ASSERT_TRUE(cons) << render(cons.error());
  {
    client::producer p{*c1};
    for (int i = 0; i < 12; ++i) {
      client::message m;
      m.topic = "payments";
      m.key = "k" + std::to_string(i);
      m.body = "charge " + std::to_string(i);
      auto r = p.send(m);
      ASSERT_TRUE(r) << render(r.error());
    }
  }
  auto c3 = connect(node(2));
  ASSERT_TRUE(c3);
  ASSERT_TRUE(eventually(20s, [&] {
    auto l = client::admin::dlq_list(*c3, "pay-g");
    return l && l->entries_size() == 12;
  })) << "every node's dead letters, listed through one: " << [&] {
    auto l = client::admin::dlq_list(*c3, "pay-g");
    return l ? std::to_string(l->entries_size()) : render(l.error());
  }();
  // Dead letters stay on the nodes of their partitions (each node holds
  // some); every node lists them all.
  for (int n = 0; n < 3; ++n) {
    auto c = connect(node(n));
    ASSERT_TRUE(c);
    auto l = client::admin::dlq_list(*c, "pay-g");
    ASSERT_TRUE(l);
    EXPECT_EQ(l->entries_size(), 12) << "through node " << n;
  }
  auto groups = client::admin::list_groups(*c3);
  ASSERT_TRUE(groups) << render(groups.error());
  int listed = 0;
  for (auto& g : groups->groups())
    if (g.group() == "pay-g") {
      ++listed;
      EXPECT_EQ(g.members_size(), 1) << "as its coordinator tells it";
      EXPECT_GT(g.generation(), 0u);
    }
  EXPECT_EQ(listed, 1);
  auto unknown = client::admin::dlq_list(*c3, "no-such-group");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(code_of(unknown.error()), errc::unknown_group);
  // Redriven through another node: all 12 come back once.
  redriven = true;
  auto r = client::admin::dlq_redrive(*c3, "pay-g");
  ASSERT_TRUE(r) << render(r.error());
  EXPECT_EQ(r->count(), 12u);
  ASSERT_TRUE(eventually(20s, [&] { return after.distinct() == 12; }))
    << after.distinct() << " of 12 redelivered";
  auto l = client::admin::dlq_list(*c1, "pay-g");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->entries_size(), 0);
  auto again = client::admin::dlq_redrive(*c1, "pay-g", {"no-such-id"});
  ASSERT_FALSE(again);
  EXPECT_EQ(code_of(again.error()), errc::not_found);
  // With a node down, lists gathered from the others say whose part they
  // miss, also after its lease ran out (it stays a registered node).
  EXPECT_EQ(l->unreachable_size(), 0);
  kill9(node(1));
  ASSERT_TRUE(eventually(10s, [&] {
    auto s = status_of(node(0));
    return s && s->members_size() == 2;
  }));
  auto partial = client::admin::dlq_list(*c1, "pay-g");
  ASSERT_TRUE(partial) << "dlq list with n2 down: " << render(partial.error());
  ASSERT_EQ(partial->unreachable_size(), 1);
  EXPECT_EQ(partial->unreachable(0), "n2");
  auto gl = client::admin::list_groups(*c3);
  ASSERT_TRUE(gl);
  ASSERT_EQ(gl->unreachable_size(), 1);
  EXPECT_EQ(gl->unreachable(0), "n2");
}

TEST_F(ClusterTest, KeylessSendsSkipADeadHomeAndKeyedOnesFailFast) {
  start_nodes(3);
  auto c1 = connect(node(0));
  ASSERT_TRUE(c1);
  ASSERT_TRUE(client::admin::create_topic(*c1, "pay", 6));
  auto d = client::admin::describe_topic(*c1, "pay");
  ASSERT_TRUE(d);
  std::set<uint32_t> on_n3;
  for (auto& p : d->partitions())
    if (p.home() == "n3")
      on_n3.insert(p.partition());
  ASSERT_EQ(on_n3.size(), 2u);
  kill9(node(2));
  // n3's lease runs out (TTL 2 s): it is no member any more.
  ASSERT_TRUE(eventually(6s, [&] {
    auto s = status_of(node(0));
    return s && s->members_size() == 2;
  }));
  client::producer p{*c1};
  for (int i = 0; i < 30; ++i) {
    client::message m;
    m.topic = "pay";
    m.body = "keyless" + std::to_string(i);
    auto r = p.send(m);
    ASSERT_TRUE(r) << "keyless send " << i << ": " << render(r.error());
    EXPECT_EQ(on_n3.count(r->partition), 0u)
      << "went to partition " << r->partition << " of the dead node";
  }
  // A key of a partition on n3 fails fast, without waiting for a timeout.
  std::string key;
  for (int i = 0; key.empty() && i < 1000; ++i)
    if (on_n3.count(edda::shard_of("key" + std::to_string(i), 6)) != 0)
      key = "key" + std::to_string(i);
  client::message m;
  m.topic = "pay";
  m.key = key;
  m.body = "keyed";
  auto err = send_fails_fast(p, m);
  EXPECT_EQ(code_of(err), errc::partition_unavailable) << render(err);
  // n3 comes back with its partitions.
  ASSERT_TRUE(restart(node(2)));
  ASSERT_TRUE(eventually(10s, [&] { return static_cast<bool>(p.send(m)); }));
}

TEST_F(ClusterTest, AGroupTakesBackTheReturningNodesPartitions) {
  start_nodes(3);
  auto c1 = connect(node(0));
  ASSERT_TRUE(c1);
  ASSERT_TRUE(client::admin::create_topic(*c1, "back", 3));
  auto d = client::admin::describe_topic(*c1, "back");
  ASSERT_TRUE(d);
  int32_t on_n3 = -1;
  for (auto& p : d->partitions())
    if (p.home() == "n3")
      on_n3 = static_cast<int32_t>(p.partition());
  ASSERT_GE(on_n3, 0);
  inbox got;
  auto cons = got.consume(*c1, "returning", "back");
  ASSERT_TRUE(cons) << render(cons.error());
  kill9(node(2));
  ASSERT_TRUE(eventually(6s, [&] {
    auto s = status_of(node(0));
    return s && s->members_size() == 2;
  }));
  ASSERT_TRUE(restart(node(2)));
  // A key of n3's partition: the running member gets it once n3 is back.
  std::string key;
  for (int i = 0; key.empty() && i < 1000; ++i)
    if (static_cast<int32_t>(edda::shard_of("r" + std::to_string(i), 3))
        == on_n3)
      key = "r" + std::to_string(i);
  client::producer p{*c1};
  client::message m;
  m.topic = "back";
  m.key = key;
  m.body = "after-return";
  ASSERT_TRUE(eventually(10s, [&] { return static_cast<bool>(p.send(m)); }));
  EXPECT_TRUE(eventually(10s, [&] {
    std::lock_guard<std::mutex> guard{got.mtx};
    return got.count.count("after-return") != 0;
  })) << "the group did not take back the returning node's partition";
}

// topic alter --partitions on a cluster: the new partitions go to the
// least-loaded live nodes, a running group consumes them without a restart,
// nothing acknowledged is lost; a shrink is refused.
TEST_F(ClusterTest, AlterAddsPartitionsOnLiveNodesAndTheGroupConsumesThem) {
  start_nodes(3);
  auto c1 = connect(node(0));
  ASSERT_TRUE(c1);
  ASSERT_TRUE(client::admin::create_topic(*c1, "grow", 3));
  inbox got;
  auto cons = got.consume(*c1, "growers", "grow");
  ASSERT_TRUE(cons) << render(cons.error());
  acked_producer p{*c1, "grow"};
  auto& acked = p.acked;
  auto send = [&](const std::string& key, const std::string& body) {
    return static_cast<bool>(p.send(key, body));
  };
  for (int i = 0; i < 9; ++i)
    ASSERT_TRUE(send("k" + std::to_string(i), "before" + std::to_string(i)));
  ASSERT_TRUE(eventually(15s, [&] { return got.missing(acked).empty(); }));

  auto grown = client::admin::alter_topic(*c1, "grow", 6);
  ASSERT_TRUE(grown) << render(grown.error());
  ASSERT_EQ(grown->meta().partitions(), 6u);
  // Every node held as many partitions (one of "grow", one of the group's
  // retry topic): the three new ones go one to each. describe shows them
  // from any node.
  auto c3 = connect(node(2));
  ASSERT_TRUE(c3);
  auto d = client::admin::describe_topic(*c3, "grow");
  ASSERT_TRUE(d) << render(d.error());
  ASSERT_EQ(d->partitions_size(), 6);
  EXPECT_EQ(partitions_per_home(*d),
            (std::map<std::string, int>{{"n1", 2}, {"n2", 2}, {"n3", 2}}));
  // Keys of the new partitions: their messages reach the running consumer
  // (the group took the new partitions online); old partitions go on.
  std::set<std::string> on_new;
  for (int i = 0; on_new.size() < 6 && i < 1000; ++i) {
    auto key = "n" + std::to_string(i);
    if (shard_of(key, 6) < 3)
      continue;
    auto body = "new-" + key;
    ASSERT_TRUE(eventually(10s, [&] { return send(key, body); })) << key;
    on_new.insert(body);
  }
  ASSERT_EQ(on_new.size(), 6u);
  for (int i = 0; i < 6; ++i)
    ASSERT_TRUE(send("k" + std::to_string(i), "after" + std::to_string(i)));
  EXPECT_TRUE(eventually(20s, [&] { return got.missing(on_new).empty(); }))
    << got.missing(on_new).size()
    << " sent to the new partitions not consumed (no rebalance?)";
  EXPECT_TRUE(eventually(10s, [&] { return got.missing(acked).empty(); }))
    << got.missing(acked).size() << " of " << acked.size() << " lost";

  // Fewer (or as many) partitions: refused, naming the topic and the count.
  for (uint32_t n : {4u, 6u}) {
    auto shrink = client::admin::alter_topic(*c1, "grow", n);
    ASSERT_FALSE(shrink) << n;
    EXPECT_EQ(code_of(shrink.error()), errc::invalid_argument)
      << render(shrink.error());
    EXPECT_NE(render(shrink.error()).find("topic 'grow' has 6 partitions"),
              std::string::npos)
      << render(shrink.error());
    EXPECT_NE(render(shrink.error()).find("can only grow"), std::string::npos)
      << render(shrink.error());
  }
  auto still = client::admin::describe_topic(*c1, "grow");
  ASSERT_TRUE(still);
  EXPECT_EQ(still->partitions_size(), 6);
}

TEST_F(ClusterTest, AlterWhileANodeIsDeadPlacesNewPartitionsOnLiveNodesOnly) {
  start_nodes(3);
  auto c1 = connect(node(0));
  ASSERT_TRUE(c1);
  ASSERT_TRUE(client::admin::create_topic(*c1, "half", 3));
  kill9(node(2));
  ASSERT_TRUE(eventually(6s, [&] {
    auto s = status_of(node(0));
    return s && s->members_size() == 2;
  }));
  auto grown = client::admin::alter_topic(*c1, "half", 7);
  ASSERT_TRUE(grown) << render(grown.error());
  ASSERT_EQ(grown->meta().partitions(), 7u);
  auto d = client::admin::describe_topic(*c1, "half");
  ASSERT_TRUE(d) << render(d.error());
  ASSERT_EQ(d->partitions_size(), 7);
  EXPECT_EQ(partitions_per_home(*d, 3),
            (std::map<std::string, int>{{"n1", 2}, {"n2", 2}}));
  // Each new partition takes messages at once.
  client::producer p{*c1};
  std::set<uint32_t> reached;
  for (int i = 0; reached.size() < 4 && i < 1000; ++i) {
    auto key = "h" + std::to_string(i);
    auto part = static_cast<uint32_t>(shard_of(key, 7));
    if (part < 3 || reached.count(part) != 0)
      continue;
    client::message m;
    m.topic = "half";
    m.key = key;
    m.body = key;
    auto r = p.send(m);
    ASSERT_TRUE(r) << "partition " << part << ": " << render(r.error());
    EXPECT_EQ(r->partition, part);
    reached.insert(part);
  }
  EXPECT_EQ(reached.size(), 4u);
}

TEST_F(ClusterTest, AGroupCoordinatorMovesToASurvivorWithAHigherToken) {
  start_nodes(3);
  // The group's desired owner is the same on every node (rendezvous over
  // the members); the client talks to another node, which stays up.
  auto desired = cluster::owner_of("group/audit", node_ids({"n1", "n2", "n3"})).value();
  auto& via = node(desired == "n1" ? "n2" : "n1");
  auto c1 = connect(via);
  ASSERT_TRUE(c1);
  ASSERT_TRUE(client::admin::create_topic(*c1, "events", 3));
  inbox got;
  auto cons = got.consume(*c1, "audit", "events");
  ASSERT_TRUE(cons) << render(cons.error());
  auto [old_owner, old_token] = owner_in_etcd("group/audit");
  ASSERT_EQ(old_owner, desired);
  auto& owner_node = node(old_owner);
  kill9(owner_node);
  // A survivor takes the group over once the dead node's lease expires
  // (TTL 2 s), with a higher token; the consumer finds it and goes on.
  ASSERT_TRUE(eventually(15s, [&] {
    auto [o, t] = owner_in_etcd("group/audit");
    return !o.empty() && o != old_owner;
  }));
  auto [new_owner, new_token] = owner_in_etcd("group/audit");
  EXPECT_GT(new_token, old_token);
  client::producer p{*c1};
  for (int i = 0; i < 30; ++i) {
    client::message m;
    m.topic = "events";
    m.body = "after" + std::to_string(i);
    ASSERT_TRUE(p.send(m));
  }
  EXPECT_TRUE(eventually(15s, [&] { return got.distinct() >= 30; }))
    << got.distinct() << " of 30 consumed after the coordinator moved";
}

TEST_F(ClusterTest, ANodePausedPastItsLeaseFencesItselfAndRejoins) {
  start_nodes(2);
  ASSERT_TRUE(eventually(10s, [&] {
    return connected_members(node(0)).size() == 2;
  }));
  auto before = status_of(node(1));
  ASSERT_TRUE(before);
  pause(node(1));
  // Its lease (2 s) expires while it is stopped: n1 sees it gone.
  ASSERT_TRUE(eventually(8s, [&] {
    auto s = status_of(node(0));
    return s && s->members_size() == 1;
  }));
  resume(node(1));
  // At once on SIGCONT it knows it cannot trust its lease, fences, and
  // joins again with a new lease and incarnation.
  ASSERT_TRUE(eventually(10s, [&] {
    auto s = status_of(node(1));
    return s && !s->fenced() && s->incarnation() > before->incarnation()
           && s->members_size() == 2;
  }));
  auto log = read_file(node(1).process()->log_path);
  EXPECT_NE(log.find("fenced: no lease renewal"), std::string::npos) << log;
  EXPECT_TRUE(eventually(10s, [&] {
    return connected_members(node(0)).size() == 2;
  }));
}

TEST_F(ClusterTest, ASecondNodeWithTheSameIdIsRefused) {
  start_nodes(1);
  // Same node.name, another data dir: refused with a clear error.
  auto [rc, out] = run_until_exit({"n1", {}, false, false, {}}, root() + "/dup");
  EXPECT_GT(rc, 0) << out;
  EXPECT_NE(out.find("already a live member"), std::string::npos) << out;
  // The live one is untouched.
  auto s = status_of(node(0));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->members_size(), 1);
}


TEST_F(ClusterTest, TransactionsLiveOnTheirPartitionsHomeAndCheckBackSettles) {
  // Check-back soon after a half message without an end.
  start_nodes(3, {"", {"txn.check_after=1500ms", "txn.max_check_interval=1s"},
                 false, false, {}});
  auto c1 = connect(node(0));
  ASSERT_TRUE(c1);
  ASSERT_TRUE(client::admin::create_topic(*c1, "tx", 6));
  auto d = client::admin::describe_topic(*c1, "tx");
  ASSERT_TRUE(d);
  std::map<uint32_t, std::string> home;
  for (auto& p : d->partitions())
    home[p.partition()] = p.home();
  // The application's own record of what it decided.
  std::mutex mtx;
  std::map<std::string, client::txn_outcome> decided; // by txn id
  auto checker = [&](const client::txn_check& c) {
    std::lock_guard<std::mutex> guard{mtx};
    auto i = decided.find(c.txn_id);
    return i == decided.end() ? client::txn_outcome::unknown : i->second;
  };
  client::txn_producer_options to;
  to.group = "wallets";
  auto tp = client::transaction_producer::start(*c1, to, checker);
  ASSERT_TRUE(tp) << render(tp.error());
  std::set<std::string> committed, rolled_back, lost_on_n3;
  for (int i = 0; i < 36; ++i) {
    client::message m;
    m.topic = "tx";
    m.key = "acct" + std::to_string(i);
    m.body = "t" + std::to_string(i);
    // Every third: commit decided but not reported (a lost end), settled
    // by check-back from the node that holds the half message.
    auto kind = i % 3;
    auto r = (*tp)->send_in_transaction(
      m, [&](const client::message&, const std::string& txn) {
        std::lock_guard<std::mutex> guard{mtx};
        decided[txn] = kind == 1 ? client::txn_outcome::rollback
                                 : client::txn_outcome::commit;
        return kind == 2 ? client::txn_outcome::unknown : decided[txn];
      });
    ASSERT_TRUE(r) << render(r.error());
    uint32_t tid = 0, p = 0;
    ASSERT_TRUE(txn_home(r->txn_id, tid, p)) << r->txn_id;
    EXPECT_EQ(p, shard_of(m.key, 6)) << "a keyed transaction keeps its key's "
                                        "partition";
    if (kind == 1) {
      rolled_back.insert(m.body);
    } else {
      committed.insert(m.body);
      if (kind == 2 && home[p] == "n3")
        lost_on_n3.insert(m.body);
    }
  }
  ASSERT_FALSE(lost_on_n3.empty());
  // n3 dies before its check-back ran, and comes back: it checks back then
  // (with producers registered with it again) and commits them.
  kill9(node(2));
  ASSERT_TRUE(restart(node(2)));
  inbox got;
  auto cons = got.consume(*c1, "ledger", "tx");
  ASSERT_TRUE(cons) << render(cons.error());
  ASSERT_TRUE(eventually(30s, [&] { return got.distinct() >= committed.size(); }))
    << got.distinct() << " of " << committed.size() << " committed delivered";
  // Nothing rolled back is delivered, nothing twice, and no transaction is
  // left in doubt on any node.
  std::this_thread::sleep_for(500ms); // a late duplicate would show here
  {
    std::lock_guard<std::mutex> guard{got.mtx};
    for (auto& b : rolled_back)
      EXPECT_EQ(got.count.count(b), 0u) << b << " was rolled back";
    for (auto& b : committed)
      EXPECT_EQ(got.count[b], 1) << b;
  }
  auto pending = client::admin::txn_list(*c1);
  ASSERT_TRUE(pending);
  EXPECT_EQ(pending->records_size(), 0);
}


TEST_F(ClusterTest, SagasLiveOnTheirIdsHomeAndResumeWhenItComesBack) {
  std::vector<std::string> s = {"saga.types=[\"pay = debit, credit\"]",
                                "saga.step_timeout=1s",
                                "saga.step_attempts=20",
                                "saga.step_backoff=100ms"};
  start_nodes(3, {"", s, false, false, {}});
  auto c1 = connect(node(0));
  ASSERT_TRUE(c1);
  // Participants in this process, registered with every node; each key
  // applied at most once.
  std::mutex mtx;
  std::map<std::string, int> applied; // idempotency key -> times
  auto step = [&](const sagas::step_request& r) {
    std::lock_guard<std::mutex> guard{mtx};
    ++applied[r.idempotency_key + (r.compensate ? "/undo" : "")];
    return sagas::step_result::success();
  };
  sagas::host_options ho;
  ho.workers = 2;
  auto host = sagas::participant_host::start(
    *c1, {{"pay.debit", step}, {"pay.credit", step},
          {"pay.debit.undo", step}, {"pay.credit.undo", step}}, ho);
  ASSERT_TRUE(host) << render(host.error());
  // Ids spread over the three homes.
  std::map<std::string, std::string> home_of;
  for (int i = 0; i < 30; ++i) {
    auto id = "pay-" + std::to_string(i);
    home_of[id] = cluster::owner_of("saga/" + id, node_ids({"n1", "n2", "n3"})).value();
  }
  // Every node must see every participant (they register every 2 s).
  ASSERT_TRUE(eventually(10s, [&] {
    auto r = client::admin::saga_start(*c1, "pay", "probe", "{}",
                                       std::chrono::seconds(5));
    return r && r->record().state() == 3;
  }));
  for (auto& [id, home] : home_of) {
    auto r = client::admin::saga_start(*c1, "pay", id, "{\"amount\": 1}");
    ASSERT_TRUE(r) << id << ": " << render(r.error());
  }
  // Started through n1, shown through n3: routed to the id's home.
  auto c3 = connect(node(2));
  ASSERT_TRUE(c3);
  auto done = [&](const std::string& id) {
    auto r = client::admin::saga_show(*c3, id);
    return r && r->state() == 3;
  };
  ASSERT_TRUE(eventually(20s, [&] {
    for (auto& [id, h] : home_of)
      if (!done(id))
        return false;
    return true;
  }));
  // A start again with the same id is the same saga, from any node.
  auto again = client::admin::saga_start(*c3, "pay", "pay-0", "{}");
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->existed());
  // Sagas whose home is down wait for it; they resume when it is back.
  kill9(node(1));
  std::vector<std::string> on_n2;
  for (int i = 30; i < 60; ++i) {
    auto id = "pay-" + std::to_string(i);
    auto home = cluster::owner_of("saga/" + id, node_ids({"n1", "n2", "n3"})).value();
    auto r = client::admin::saga_start(*c1, "pay", id, "{}");
    if (home == "n2") {
      on_n2.push_back(id);
      EXPECT_FALSE(r) << id << " started on a dead home";
    } else {
      EXPECT_TRUE(r) << id << ": " << (r ? "" : render(r.error()));
    }
  }
  ASSERT_FALSE(on_n2.empty());
  ASSERT_TRUE(restart(node(1)));
  for (auto& id : on_n2)
    ASSERT_TRUE(eventually(10s, [&] {
      return static_cast<bool>(client::admin::saga_start(*c1, "pay", id, "{}"));
    }));
  auto list = client::admin::saga_list(*c3, [] {
    wire::v1::SagaList q;
    q.set_limit(1000);
    return q;
  }());
  ASSERT_TRUE(list);
  EXPECT_GE(list->records_size(), 31) << "sagas of every node are listed";
  ASSERT_TRUE(eventually(20s, [&] {
    for (int i = 0; i < 60; ++i)
      if (!done("pay-" + std::to_string(i)))
        return false;
    return true;
  }));
  std::lock_guard<std::mutex> guard{mtx};
  for (auto& [key, n] : applied)
    EXPECT_EQ(n, 1) << key << " applied " << n << " times";
}

} // namespace
} // namespace edda::test
