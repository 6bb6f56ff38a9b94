// Reliable-message saga steps across nodes: a step whose message goes to a
// partition homed on another node is sent as a transactional message (half
// there, commit once the step is recorded, check-back answered from the
// saga record), so the message is on its topic exactly once if and only if
// the step is done, also when the saga's node is killed in between.
#include "base/ids.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "cluster/placement.hpp"
#include "cluster_fixture.hpp"
#include "sagas/remote.hpp"

#include <map>
#include <mutex>
#include <set>

namespace edda::test {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t completed = 3; // saga_state::completed

const std::vector<std::string> saga_settings = {
  "saga.types=[\"ship = reserve, notify>shipments\"]",
  "saga.step_timeout=1s", "saga.step_attempts=30", "saga.step_backoff=100ms",
  "txn.check_after=1s", "txn.max_check_interval=1s"};

/// How often `got` received `body`.
int times(inbox& got, const std::string& body) {
  std::lock_guard<std::mutex> guard{got.mtx};
  auto i = got.count.find(body);
  return i == got.count.end() ? 0 : i->second;
}

class ClusterSagaTest : public ClusterFixture {
protected:
  /// Serves the steps of "ship" (each idempotency key counted) from a
  /// process connected to `c`.
  void serve(client::connection& c) {
    auto step = [this](const sagas::step_request& r) {
      std::lock_guard<std::mutex> guard{mtx_};
      ++applied_[r.idempotency_key + (r.compensate ? "/undo" : "")];
      return sagas::step_result::success();
    };
    sagas::host_options ho;
    ho.workers = 2;
    auto host = sagas::participant_host::start(
      c, {{"ship.reserve", step}, {"ship.reserve.undo", step},
          {"ship.notify.undo", step}},
      ho);
    ASSERT_TRUE(host) << render(host.error());
    host_ = std::move(*host);
  }

  /// Partition homes of `topic`.
  std::map<uint32_t, std::string> homes(client::connection& c,
                                        const std::string& topic) {
    std::map<uint32_t, std::string> out;
    if (auto d = client::admin::describe_topic(c, topic))
      for (auto& p : d->partitions())
        out[p.partition()] = p.home();
    return out;
  }

  /// A saga id whose home is `home` among `members` and whose message
  /// (keyed by the id) goes to a partition homed on `target`.
  std::string id_for(const std::string& prefix, const std::string& home,
                     const std::vector<std::string>& members,
                     const std::map<uint32_t, std::string>& parts,
                     const std::string& target) {
    for (int i = 0; i < 10000; ++i) {
      auto id = prefix + std::to_string(i);
      if (cluster::owner_of("saga/" + id, node_ids(members)).value() == home
          && parts.at(shard_of(id, parts.size())) == target)
        return id;
    }
    return {};
  }

  std::mutex mtx_;
  std::map<std::string, int> applied_; // idempotency key -> times
  std::unique_ptr<sagas::participant_host> host_;
};

TEST_F(ClusterSagaTest, MessageStepsReachPartitionsOnOtherNodesExactlyOnce) {
  start_nodes(3, {"", saga_settings, false, false, {}});
  auto c1 = connect(node(0));
  ASSERT_TRUE(c1);
  ASSERT_TRUE(client::admin::create_topic(*c1, "shipments", 3));
  auto parts = homes(*c1, "shipments");
  ASSERT_EQ(parts.size(), 3u);
  serve(*c1);
  // Every node must see the participants (they register every 2 s).
  ASSERT_TRUE(eventually(10s, [&] {
    auto r = client::admin::saga_start(*c1, "ship", "probe", "{}", 5s);
    return r && r->record().state() == completed;
  }));
  std::vector<std::string> members = {"n1", "n2", "n3"};
  std::map<std::string, bool> remote; // saga id -> message to another node
  for (int i = 0; i < 30; ++i) {
    auto id = "ship-" + std::to_string(i);
    remote[id] = parts[shard_of(id, 3)]
                 != cluster::owner_of("saga/" + id, node_ids(members)).value();
    auto r = client::admin::saga_start(*c1, "ship", id,
                                       "{\"n\": " + std::to_string(i) + "}");
    ASSERT_TRUE(r) << id << ": " << render(r.error());
  }
  size_t n_remote = 0;
  for (auto& [id, r] : remote)
    n_remote += r ? 1 : 0;
  ASSERT_GT(n_remote, 0u);
  ASSERT_LT(n_remote, remote.size());
  auto c3 = connect(node(2));
  ASSERT_TRUE(c3);
  ASSERT_TRUE(eventually(30s, [&] {
    for (auto& [id, r] : remote) {
      auto s = client::admin::saga_show(*c3, id);
      if (!s || s->state() != completed)
        return false;
    }
    return true;
  }));
  // A message to another node went as a transaction (saga show says
  // which); one to a partition of the saga's own node with its write.
  for (auto& [id, r] : remote) {
    auto s = client::admin::saga_show(*c3, id);
    ASSERT_TRUE(s);
    ASSERT_EQ(s->steps_size(), 2);
    auto& out = s->steps(1).output();
    EXPECT_EQ(out.find("(transaction ") != std::string::npos, r)
      << id << ": " << out;
    EXPECT_EQ(s->steps(1).txn_id().empty(), !r) << id;
  }
  // Each saga's message is on the topic once, keyed by its id.
  inbox got;
  auto cons = got.consume(*c1, "ship-audit", "shipments");
  ASSERT_TRUE(cons) << render(cons.error());
  ASSERT_TRUE(eventually(20s, [&] {
    for (int i = 0; i < 30; ++i)
      if (times(got, "{\"n\": " + std::to_string(i) + "}") == 0)
        return false;
    return true;
  }));
  std::this_thread::sleep_for(500ms); // a late duplicate would show here
  for (int i = 0; i < 30; ++i) {
    auto body = "{\"n\": " + std::to_string(i) + "}";
    EXPECT_EQ(times(got, body), 1) << body;
    std::lock_guard<std::mutex> guard{got.mtx};
    EXPECT_EQ(got.by_key["ship-" + std::to_string(i)],
              std::vector<std::string>{body});
  }
  auto pending = client::admin::txn_list(*c1);
  ASSERT_TRUE(pending);
  EXPECT_EQ(pending->records_size(), 0) << "no saga message left in doubt";
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& [key, n] : applied_)
    EXPECT_EQ(n, 1) << key << " applied " << n << " times";
}

TEST_F(ClusterSagaTest, ASagaNodeKilledAroundARemoteMessageSettlesByCheckBack) {
  // n1 runs the sagas and dies right after a step recorded its message's
  // transaction, before the commit: the check-back from n2 commits it.
  node_options o1{"", saga_settings, false, false, {}};
  o1.failpoints = "saga.before_remote_commit=crash@1";
  add_node(o1);
  add_node({"", saga_settings, false, false, {}});
  auto c2 = connect(node(1));
  ASSERT_TRUE(c2);
  ASSERT_TRUE(client::admin::create_topic(*c2, "shipments", 2));
  auto parts = homes(*c2, "shipments");
  ASSERT_EQ(parts.size(), 2u);
  std::set<std::string> on;
  for (auto& [p, h] : parts)
    on.insert(h);
  ASSERT_EQ(on, (std::set<std::string>{"n1", "n2"}))
    << "one partition on each node";
  std::vector<std::string> members = {"n1", "n2"};
  auto probe = id_for("probe-", "n1", members, parts, "n1");
  auto a = id_for("a-", "n1", members, parts, "n2");
  auto b = id_for("b-", "n1", members, parts, "n2");
  ASSERT_FALSE(probe.empty() || a.empty() || b.empty());
  serve(*c2);
  ASSERT_TRUE(eventually(10s, [&] {
    auto r = client::admin::saga_start(*c2, "ship", probe, "{}", 5s);
    return r && r->record().state() == completed;
  }));
  ASSERT_TRUE(client::admin::saga_start(*c2, "ship", a, "{\"saga\": \"a\"}"));
  ASSERT_TRUE(wait_exit(*node(0).process(), 20s))
    << "n1 did not reach its failpoint";
  // Back, now to die after storing a half message and before the step is
  // recorded: the attempt runs again after the restart, and the first
  // half is rolled back by check-back.
  node(0).opts.failpoints = "saga.after_remote_half=crash@1";
  ASSERT_TRUE(restart(node(0)));
  ASSERT_TRUE(eventually(30s, [&] {
    auto s = client::admin::saga_show(*c2, a);
    return s && s->state() == completed;
  }));
  ASSERT_TRUE(client::admin::saga_start(*c2, "ship", b, "{\"saga\": \"b\"}"));
  ASSERT_TRUE(wait_exit(*node(0).process(), 20s))
    << "n1 did not reach its second failpoint";
  node(0).opts.failpoints.clear();
  ASSERT_TRUE(restart(node(0)));
  ASSERT_TRUE(eventually(30s, [&] {
    auto s = client::admin::saga_show(*c2, b);
    return s && s->state() == completed;
  }));
  // Every transaction settled: a's committed, b's first rolled back.
  ASSERT_TRUE(eventually(30s, [&] {
    auto pending = client::admin::txn_list(*c2);
    return pending && pending->records_size() == 0;
  }));
  auto sa = client::admin::saga_show(*c2, a);
  ASSERT_TRUE(sa);
  ASSERT_FALSE(sa->steps(1).txn_id().empty());
  auto ta = client::admin::txn_show(*c2, sa->steps(1).txn_id());
  ASSERT_TRUE(ta) << render(ta.error());
  EXPECT_EQ(ta->state(), wire::v1::TxnRecord::COMMITTED);
  EXPECT_EQ(ta->resolved_by(), "check-back");
  EXPECT_EQ(ta->producer_group(), "edda.sagas.n1");
  // b's first half was rolled back by the restarted n1's answer.
  EXPECT_GE(counter_of(node(0), "sagas.checks_rollback"), 1u);
  inbox got;
  auto cons = got.consume(*c2, "ship-audit", "shipments");
  ASSERT_TRUE(cons) << render(cons.error());
  ASSERT_TRUE(eventually(20s, [&] {
    return times(got, "{\"saga\": \"a\"}") > 0
           && times(got, "{\"saga\": \"b\"}") > 0;
  }));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(times(got, "{\"saga\": \"a\"}"), 1);
  EXPECT_EQ(times(got, "{\"saga\": \"b\"}"), 1);
}

} // namespace
} // namespace edda::test
