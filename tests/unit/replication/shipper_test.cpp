// The leader's shipping and the follower's replica host in one process:
// a write is answered only once its follower has it (min_insync 2), a
// follower that stops answering leaves the in-sync set and the writes are
// then refused (or, at min_insync 1, go on), and a follower that answers
// again catches up and ends with the leader's contents.
#include "replication/follower.hpp"
#include "replication/group_record.hpp"
#include "replication/replica_host.hpp"
#include "replication/shipper.hpp"
#include "replica_contents.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/metrics.hpp"
#include "coord/fake.hpp"
#include "storage/environment.hpp"
#include "storage/writer_actor.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/after.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <thread>

namespace edda::replication {
namespace {

namespace pb = wire::pb;
using storage::db;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;


/// Ships a relay swallowed on purpose (drop_nth).
std::atomic<int> dropped_ships{0};

/// Between the shipper and the replica host: passes ships on while open;
/// while closed it swallows them unanswered (a stalled follower).
struct relay_state {
  caf::actor host;
  std::shared_ptr<std::atomic<bool>> open;
  std::shared_ptr<std::atomic<int>> seen;
  int drop_nth = 0; ///< the n-th ship with batches is swallowed (0: none)
  int with_batches = 0;
};

caf::behavior relay(caf::stateful_actor<relay_state>* self, caf::actor host,
                    std::shared_ptr<std::atomic<bool>> open,
                    std::shared_ptr<std::atomic<int>> seen) {
  self->state.host = std::move(host);
  self->state.open = std::move(open);
  self->state.seen = std::move(seen);
  return {
    [=](pb::ReplShip& s) -> caf::result<pb::ReplAck> {
      ++*self->state.seen;
      auto rp = self->make_response_promise<pb::ReplAck>();
      if (s.batches_size() > 0
          && ++self->state.with_batches == self->state.drop_nth) {
        ++dropped_ships;
        return rp; // this one is lost: the ships after it leave a gap
      }
      if (self->state.open->load())
        return rp.delegate(self->state.host, std::move(s));
      return rp; // never answered: the shipper's request times out
    },
    [=](int drop_nth) { self->state.drop_nth = drop_nth; },
  };
}

using test::contents;
using test::sys_config;

class ShipperTest : public ::testing::Test {
protected:
  void SetUp() override {
    char tmpl[] = "/tmp/edda-shipper-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    storage::options o;
    o.dir = dir_ + "/leader";
    o.map_size = 64ull << 20;
    o.mode = edda::config::durability::nosync;
    std::filesystem::create_directories(o.dir);
    auto env = storage::environment::open(o);
    ASSERT_TRUE(env) << render(env.error());
    leader_ = *env;
  }

  void TearDown() override {
    self_.reset();
    if (sys_) {
      for (auto& a : {writer_, shipper_, host_, relay_, recorder_})
        if (a)
          caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
      writer_ = shipper_ = host_ = relay_ = recorder_ = nullptr;
      sys_.reset();
    }
    leader_.reset();
    std::filesystem::remove_all(dir_);
  }

  /// The leader (group "n1", epoch 2) with one follower "n2" behind the
  /// relay.
  void start(uint32_t min_insync, std::chrono::milliseconds lag_max,
             size_t window_bytes = size_t{256} << 20) {
    sys_ = std::make_unique<caf::actor_system>(cfg_);
    self_ = std::make_unique<caf::scoped_actor>(*sys_);
    replica_host_options ro;
    ro.node_id = "n2";
    ro.dir = dir_ + "/replicas";
    ro.map_size = 64ull << 20;
    ro.mode = edda::config::durability::nosync;
    host_ = spawn_replica_host(*sys_, ro);
    relay_ = sys_->spawn(relay, host_, open_, seen_);
    shipper_options so;
    so.group = "n1";
    so.env = leader_;
    so.window_bytes = window_bytes;
    so.last_seq = read_position(*leader_).seq;
    so.log_id = read_position(*leader_).log_id;
    if (so.log_id.empty())
      so.log_id = new_unique_id();
    so.epoch = epoch_;
    so.election_epoch = election_epoch_;
    so.elected_seq = elected_seq_;
    so.start_epoch = start_epoch_;
    if (store_) {
      auto claim = claim_group(*store_, "t", "n1", so.log_id, 1, 0);
      ASSERT_TRUE(claim) << render(claim.error());
      so.epoch = claim->epoch;
      recorder_ = spawn_group_recorder(*sys_, store_, "t", "n1", claim->epoch,
                                       claim->mod_revision);
      so.recorder = recorder_;
    }
    so.min_insync = min_insync;
    so.lag_max = lag_max;
    so.request_timeout = 300ms;
    shipper_ = spawn_shipper(*sys_, so);
    storage::commit_stream cs;
    cs.epoch = so.epoch;
    cs.log_id = so.log_id;
    cs.gated = true;
    cs.ship = [sh = shipper_](pb::ReplBatch&& b) {
      caf::anon_send(sh, std::move(b));
    };
    writer_ = storage::spawn_writer(*sys_, leader_, true, 0ms, cs);
    caf::anon_send(shipper_, wire::serving_atom::value, writer_);
    caf::anon_send(shipper_, wire::link_atom::value, std::string{"n2"},
                   relay_);
  }

  /// Writes key `k`; the writer's answer (or error) and how long it took.
  caf::expected<pb::WriteResult> write(const std::string& k,
                                       steady::duration* took = nullptr) {
    return write(k, "value of " + k, took);
  }
  caf::expected<pb::WriteResult> write(const std::string& k,
                                       const std::string& value,
                                       steady::duration* took = nullptr) {
    pb::WriteBatch b;
    auto* op = b.add_ops();
    op->set_db(static_cast<uint32_t>(db::log));
    op->set_key(k);
    op->set_value(value);
    caf::expected<pb::WriteResult> out{caf::error{}};
    auto t0 = steady::now();
    (*self_)
      ->request(writer_, 20s, std::move(b))
      .receive([&](pb::WriteResult& r) { out = std::move(r); },
               [&](caf::error& e) { out = std::move(e); });
    if (took)
      *took = steady::now() - t0;
    return out;
  }

  /// Stops every actor (the envs stay).
  void stop_actors() {
    self_.reset();
    for (auto& a : {writer_, shipper_, host_, relay_, recorder_})
      if (a)
        caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    writer_ = shipper_ = host_ = relay_ = recorder_ = nullptr;
    sys_.reset();
  }

  /// The follower's replica position, asked of its host.
  uint64_t follower_seq() {
    pb::ReplShip probe;
    probe.set_group("n1");
    uint64_t at = 0;
    (*self_)
      ->request(host_, 5s, probe)
      .receive([&](const pb::ReplAck& a) {
                 at = a.unfinished_copy() ? 0 : a.seq(); // not yet usable
               },
               [&](caf::error&) {});
    return at;
  }

  /// The follower's replica, opened after its host is stopped.
  std::shared_ptr<storage::environment>
  replica(const std::string& group = "n1") {
    caf::anon_send_exit(relay_, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(host_, caf::exit_reason::user_shutdown);
    relay_ = host_ = nullptr;
    // The detached host closes its environment when it ends.
    for (int i = 0; i < 200; ++i) {
      storage::options o;
      o.dir = replica_dir(dir_ + "/replicas", group);
      o.map_size = 64ull << 20;
      if (auto env = storage::environment::open(o))
        return *env;
      std::this_thread::sleep_for(10ms);
    }
    return nullptr;
  }

  sys_config cfg_;
  uint64_t epoch_ = 2;          ///< the leader's epoch at start()
  uint64_t election_epoch_ = 0; ///< set: it was elected (a failover)
  uint64_t elected_seq_ = 0;
  uint64_t start_epoch_ = 0;    ///< the leader's storage's epoch at start()
  std::string dir_;
  std::shared_ptr<storage::environment> leader_;
  std::unique_ptr<caf::actor_system> sys_;
  std::unique_ptr<caf::scoped_actor> self_;
  caf::actor writer_, shipper_, host_, relay_, recorder_;
  coord::fake_store fake_;
  coord::client_ptr store_; ///< set before start(): a recorder on the fake
  std::shared_ptr<std::atomic<bool>> open_
    = std::make_shared<std::atomic<bool>>(true);
  std::shared_ptr<std::atomic<int>> seen_ = std::make_shared<std::atomic<int>>(0);
};

TEST_F(ShipperTest, AWriteIsAnsweredOnlyOnceTheFollowerHasIt) {
  start(2, 2000ms);
  for (int i = 0; i < 50; ++i) {
    auto r = write("k" + std::to_string(i));
    ASSERT_TRUE(r) << i << ": " << render(r.error());
    // Answered: the follower's replica has it.
    auto at = follower_seq();
    EXPECT_GE(at, static_cast<uint64_t>(i + 1))
      << "write " << i << " answered before the follower had it";
  }
  EXPECT_GT(seen_->load(), 0);
  auto env = replica();
  ASSERT_TRUE(env);
  EXPECT_EQ(contents(*env), contents(*leader_));
  EXPECT_EQ(read_position(*env).epoch, 2u);
  EXPECT_EQ(read_position(*env).seq, read_position(*leader_).seq);
}

TEST_F(ShipperTest, ShipsInFlightTogetherAndALostOneIsSentAgainAfterItsGap) {
  start(2, 3000ms);
  ASSERT_TRUE(write("first"));
  caf::anon_send(relay_, 3); // the third ship from now on is lost
  // Writes from several clients at once: commits follow each other while
  // earlier ships are in flight.
  auto ships = metrics::counter("replication.ships").load();
  auto dropped = dropped_ships.load();
  constexpr int n = 100; // 6.4 MiB: ships of at most 1 MiB
  for (int i = 0; i < n; ++i) {
    pb::WriteBatch b;
    auto* op = b.add_ops();
    op->set_db(static_cast<uint32_t>(db::log));
    op->set_key("burst-" + std::to_string(i));
    op->set_value(std::string(64u << 10, 'b'));
    (*self_)->send(writer_, std::move(b));
    if (i % 10 == 9)
      std::this_thread::sleep_for(5ms); // about ten commits of 640 KiB
  }
  int ok = 0, failed = 0;
  for (int i = 0; i < n; ++i)
    (*self_)->receive([&](const pb::WriteResult&) { ++ok; },
                      [&](caf::error&) { ++failed; },
                      caf::after(std::chrono::seconds(20)) >> [&] {
                        ++failed;
                      });
  EXPECT_EQ(ok, n) << failed << " failed";
  EXPECT_GE(metrics::counter("replication.ships").load(), ships + 5);
  EXPECT_EQ(dropped_ships.load(), dropped + 1) << "no ship was lost";
  auto env = replica();
  ASSERT_TRUE(env);
  EXPECT_EQ(contents(*env), contents(*leader_));
  EXPECT_EQ(read_position(*env).seq, read_position(*leader_).seq);
}

TEST_F(ShipperTest, AStalledFollowerLeavesTheInSyncSetAndWritesAreRefused) {
  start(2, 500ms);
  ASSERT_TRUE(write("before"));
  open_->store(false); // the follower stops answering
  steady::duration took{};
  auto r = write("during", &took);
  ASSERT_FALSE(r) << "acknowledged while only the leader has it";
  EXPECT_EQ(code_of(r.error()), errc::unavailable) << render(r.error());
  auto text = render(r.error());
  EXPECT_NE(text.find("only 1 of cluster.min_insync 2"), std::string::npos)
    << text;
  EXPECT_NE(text.find("n2"), std::string::npos) << text;
  // Refused after lag_max (0.5 s), not at the caller's timeout (20 s).
  EXPECT_LT(took, 5s);
  // Later writes are refused at once while it is out.
  auto r2 = write("during-2", &took);
  EXPECT_FALSE(r2);
  EXPECT_LT(took, 2s);
  // It answers again: it catches up, rejoins, and writes are acknowledged.
  open_->store(true);
  auto deadline = steady::now() + 10s;
  caf::expected<pb::WriteResult> ok{caf::error{}};
  while (steady::now() < deadline && !(ok = write("after")))
    std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(ok) << render(ok.error());
  auto env = replica();
  ASSERT_TRUE(env);
  // Everything stored on the leader (refused writes included: stored, not
  // acknowledged) reached the follower.
  EXPECT_EQ(contents(*env), contents(*leader_));
}

TEST_F(ShipperTest, TheInSyncSetIsRecordedAndAFollowerLeavesOnlyOnceRecorded) {
  store_ = fake_.connect();
  start(2, 300ms);
  ASSERT_TRUE(write("a"));
  auto recorded = [&] {
    auto r = read_group(*fake_.connect(), "t", "n1");
    std::vector<std::string> out;
    if (r && *r)
      out.assign((*r)->isr().begin(), (*r)->isr().end());
    return out;
  };
  auto deadline = steady::now() + 5s;
  while (steady::now() < deadline
         && recorded() != std::vector<std::string>{"n2"})
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(recorded(), std::vector<std::string>{"n2"})
    << "a caught-up follower enters the record";
  // The follower stalls while etcd is unreachable for the leader: it
  // cannot leave the recorded set, so writes wait (neither acknowledged
  // without it nor refused) past lag_max.
  fake_.cut(store_, true);
  open_->store(false);
  std::atomic<int> outcome{0}; // 1 acknowledged, 2 refused
  std::thread w([&] {
    auto r = write("during the cut");
    outcome = r ? 1 : 2;
  });
  std::this_thread::sleep_for(1500ms); // 5 x lag_max
  EXPECT_EQ(outcome.load(), 0) << "answered while etcd still names n2";
  EXPECT_EQ(recorded(), std::vector<std::string>{"n2"});
  // etcd answers again: the set without n2 is written, then the write is
  // refused (min in sync 2).
  fake_.cut(store_, false);
  w.join();
  EXPECT_EQ(outcome.load(), 2);
  EXPECT_TRUE(recorded().empty());
  // n2 answers again: it catches up and enters the record again.
  open_->store(true);
  deadline = steady::now() + 10s;
  while (steady::now() < deadline && recorded().empty())
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(recorded(), std::vector<std::string>{"n2"});
  EXPECT_TRUE(write("after"));
}

TEST_F(ShipperTest, ARecordTakenByAnotherLeaderStopsEveryAcknowledgement) {
  store_ = fake_.connect();
  start(1, 300ms);
  ASSERT_TRUE(write("a"));
  // Another node takes the group (what a failover's controller will do).
  auto c = fake_.connect();
  auto key = group_key("t", "n1");
  auto rec = *read_group(*c, "t", "n1");
  rec->set_leader("n2");
  rec->set_leader_epoch(rec->leader_epoch() + 1);
  ASSERT_TRUE(c->cas_put(key, rec->SerializeAsString(),
                         c->get(key)->first->mod_revision));
  // The recorder's watch sees it: fenced, nothing acknowledged any more.
  auto deadline = steady::now() + 5s;
  caf::expected<pb::WriteResult> r{pb::WriteResult{}};
  while (steady::now() < deadline && (r = write("late")))
    std::this_thread::sleep_for(50ms);
  ASSERT_FALSE(r) << "acknowledged by a deposed leader";
  EXPECT_EQ(code_of(r.error()), errc::fenced) << render(r.error());
}

TEST_F(ShipperTest, AtMinInsyncOneWritesGoOnWithoutTheFollowerWhichCatchesUp) {
  start(1, 300ms);
  open_->store(false);
  for (int i = 0; i < 20; ++i) {
    steady::duration took{};
    auto r = write("k" + std::to_string(i), &took);
    ASSERT_TRUE(r) << render(r.error());
  }
  open_->store(true);
  auto deadline = steady::now() + 10s;
  while (steady::now() < deadline
         && follower_seq() < read_position(*leader_).seq)
    std::this_thread::sleep_for(20ms);
  auto env = replica();
  ASSERT_TRUE(env);
  EXPECT_EQ(contents(*env), contents(*leader_));
}

TEST_F(ShipperTest, AFollowerBehindTheKeptCommitsGetsAFullCopyAndStreamsOn) {
  // At most 8 KiB of commits kept in memory.
  start(1, 300ms, 8u << 10);
  ASSERT_TRUE(write("first"));
  auto deadline = steady::now() + 5s;
  while (steady::now() < deadline
         && follower_seq() < read_position(*leader_).seq)
    std::this_thread::sleep_for(10ms);
  // The follower stalls while 40 KiB is written: the commits it misses
  // are no longer kept.
  open_->store(false);
  for (int i = 0; i < 40; ++i)
    ASSERT_TRUE(write("missed-" + std::to_string(i), std::string(1024, 'm')));
  auto copies = metrics::counter("replication.copies").load();
  open_->store(true);
  // Small writes go on while it is copied (kept for it after the copy's
  // snapshot) and after.
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(write("during-" + std::to_string(i)));
    std::this_thread::sleep_for(10ms);
  }
  deadline = steady::now() + 15s;
  while (steady::now() < deadline
         && follower_seq() < read_position(*leader_).seq)
    std::this_thread::sleep_for(20ms);
  auto after_copy = metrics::counter("replication.copies").load();
  EXPECT_GT(after_copy, copies);
  // Then it streams: more writes arrive without another copy.
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(write("streamed-" + std::to_string(i)));
  deadline = steady::now() + 5s;
  while (steady::now() < deadline
         && follower_seq() < read_position(*leader_).seq)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(metrics::counter("replication.copies").load(), after_copy);
  auto env = replica();
  ASSERT_TRUE(env);
  EXPECT_EQ(contents(*env), contents(*leader_));
  EXPECT_EQ(read_position(*env).seq, read_position(*leader_).seq);
  EXPECT_FALSE(env->read().get(db::meta, "repl_copy")) << "copy left marked";
}

TEST_F(ShipperTest, AFollowerOfAWipedLeadersOldLogIsNeverOverwritten) {
  start(2, 300ms);
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(write("acked-" + std::to_string(i)));
  stop_actors();
  // The leader comes back with an empty data dir (a new log) and writes
  // more commits than the old log had before its follower answers: only
  // the log id tells the copy apart.
  leader_.reset();
  std::filesystem::remove_all(dir_ + "/leader");
  std::filesystem::create_directories(dir_ + "/leader");
  storage::options o;
  o.dir = dir_ + "/leader";
  o.map_size = 64ull << 20;
  auto env = storage::environment::open(o);
  ASSERT_TRUE(env);
  leader_ = *env;
  open_->store(false);
  start(1, 300ms);
  for (int i = 0; i < 25; ++i)
    ASSERT_TRUE(write("new-" + std::to_string(i)));
  ASSERT_GT(read_position(*leader_).seq, 10u);
  open_->store(true);
  std::this_thread::sleep_for(1s); // probes and retries meanwhile
  auto copy = replica();
  ASSERT_TRUE(copy);
  auto c = contents(*copy);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(c.count("2/acked-" + std::to_string(i)), 1u)
      << "an acknowledged write of the old log was overwritten";
  EXPECT_EQ(c.count("2/new-0"), 0u) << "the new log was mixed in";
  EXPECT_NE(read_position(*copy).log_id, read_position(*leader_).log_id);
}

TEST_F(ShipperTest, ADeposedLeadersUnacknowledgedSuffixIsTruncatedByACopy) {
  // The leader acknowledges 10 writes (its follower has them), then, its
  // follower stalled and min in sync 1, stores 5 more that no copy has.
  start(1, 300ms);
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(write("acked-" + std::to_string(i)));
  auto deadline = steady::now() + 5s;
  while (steady::now() < deadline
         && follower_seq() < read_position(*leader_).seq)
    std::this_thread::sleep_for(10ms);
  auto elected_at = follower_seq();
  ASSERT_EQ(elected_at, read_position(*leader_).seq);
  open_->store(false);
  for (int i = 0; i < 5; ++i)
    (void) write("deposed-" + std::to_string(i)); // may be refused: fine
  ASSERT_GT(read_position(*leader_).seq, elected_at);
  stop_actors();
  // The follower's copy is elected (it serves the group at epoch 3), and
  // the deposed leader's storage comes back as its follower: the two
  // directories swap roles.
  leader_.reset();
  auto copy_dir = replica_dir(dir_ + "/replicas", "n1");
  std::filesystem::rename(dir_ + "/leader", dir_ + "/old");
  std::filesystem::rename(copy_dir, dir_ + "/leader");
  std::filesystem::rename(dir_ + "/old", copy_dir);
  storage::options o;
  o.dir = dir_ + "/leader";
  o.map_size = 64ull << 20;
  auto env = storage::environment::open(o);
  ASSERT_TRUE(env) << render(env.error());
  leader_ = *env;
  ASSERT_EQ(read_position(*leader_).seq, elected_at);
  open_->store(true);
  // Not elected (a plain restart at a higher epoch): the follower ahead is
  // never overwritten (it might hold the only copy of acknowledged writes).
  epoch_ = 3;
  start(1, 300ms);
  ASSERT_TRUE(write("restart-0"));
  std::this_thread::sleep_for(1s);
  {
    auto kept = replica();
    ASSERT_TRUE(kept);
    EXPECT_EQ(contents(*kept).count("2/deposed-0"), 1u)
      << "a follower ahead was overwritten without an election";
  }
  stop_actors();
  // Elected at epoch 4 from that copy's position: the follower's writes
  // beyond it were never acknowledged; it gets a full copy.
  epoch_ = 4;
  election_epoch_ = 4;
  elected_seq_ = read_position(*leader_).seq;
  start(1, 300ms);
  ASSERT_TRUE(write("elected-0"));
  // (The follower starts ahead: wait for it to be exactly at the leader.)
  deadline = steady::now() + 10s;
  while (steady::now() < deadline
         && follower_seq() != read_position(*leader_).seq)
    std::this_thread::sleep_for(20ms);
  auto copy = replica();
  ASSERT_TRUE(copy);
  auto c = contents(*copy);
  EXPECT_EQ(c, contents(*leader_));
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(c.count("2/acked-" + std::to_string(i)), 1u);
  EXPECT_EQ(c.count("2/deposed-0"), 0u) << "the deposed suffix is still there";
  EXPECT_EQ(c.count("2/elected-0"), 1u);
  EXPECT_EQ(read_position(*copy).epoch, 4u);
}

TEST_F(ShipperTest, AnElectedLeadersFollowerAtItsOwnEpochStreamsOn) {
  // Leader and follower both last written at epoch 2, up to the same seq.
  start(1, 300ms);
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(write("before-" + std::to_string(i)));
  auto deadline = steady::now() + 5s;
  while (steady::now() < deadline
         && follower_seq() < read_position(*leader_).seq)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(follower_seq(), read_position(*leader_).seq);
  stop_actors();
  // This storage is elected (epoch 3, claimed at 4): the follower's copy
  // is a prefix of its log (the same epoch's leader wrote both), so it
  // streams on; no full copy.
  auto copies = metrics::counter("replication.copies").load();
  epoch_ = 4;
  election_epoch_ = 3;
  elected_seq_ = read_position(*leader_).seq;
  start_epoch_ = read_position(*leader_).epoch;
  ASSERT_EQ(start_epoch_, 2u);
  start(1, 300ms);
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(write("after-" + std::to_string(i)));
  deadline = steady::now() + 5s;
  while (steady::now() < deadline
         && follower_seq() < read_position(*leader_).seq)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(metrics::counter("replication.copies").load(), copies)
    << "a follower at the elected copy's own epoch was copied over";
  auto copy = replica();
  ASSERT_TRUE(copy);
  EXPECT_EQ(contents(*copy), contents(*leader_));
  EXPECT_EQ(read_position(*copy).epoch, 4u);
}

TEST_F(ShipperTest, ALateCopierOfAnEarlierCopyCannotWriteIntoTheNextOne) {
  start(1, 300ms);
  auto send = [&](pb::ReplCopy::Phase phase, const std::string& id,
                  const std::string& key = {}) {
    pb::ReplShip ship;
    ship.set_group("g2"); // a group no shipper here writes
    ship.mutable_copy()->set_phase(phase);
    ship.mutable_copy()->set_copy_id(id);
    if (!key.empty()) {
      auto* op = ship.mutable_copy()->add_ops();
      op->set_db(static_cast<uint32_t>(db::log));
      op->set_key(key);
      op->set_value("from copy " + id);
    }
    caf::error err;
    (*self_)
      ->request(host_, 5s, ship)
      .receive([](const pb::ReplAck&) {}, [&](caf::error& e) { err = e; });
    return err;
  };
  EXPECT_FALSE(send(pb::ReplCopy::BEGIN, "copy-a"));
  EXPECT_FALSE(send(pb::ReplCopy::DATA, "copy-a", "a1"));
  // A new round begins another copy; the first copier is still sending.
  EXPECT_FALSE(send(pb::ReplCopy::BEGIN, "copy-b"));
  auto late = send(pb::ReplCopy::DATA, "copy-a", "stale");
  EXPECT_EQ(code_of(late), errc::invalid_argument) << render(late);
  EXPECT_EQ(code_of(send(pb::ReplCopy::END, "copy-a")),
            errc::invalid_argument);
  EXPECT_FALSE(send(pb::ReplCopy::DATA, "copy-b", "b1"));
  EXPECT_EQ(code_of(send(pb::ReplCopy::BEGIN, "")), errc::invalid_argument);
  auto env = replica("g2");
  ASSERT_TRUE(env);
  auto r = env->read();
  EXPECT_FALSE(r.get(db::log, "a1")) << "the first copy was not emptied";
  EXPECT_FALSE(r.get(db::log, "stale")) << "a late copier wrote";
  EXPECT_TRUE(r.get(db::log, "b1"));
}

TEST_F(ShipperTest, AReplicaHostRefusesAGroupThatIsNotANodeIdAndAnOldEpoch) {
  start(1, 300ms);
  ASSERT_TRUE(write("a"));
  pb::ReplShip bad;
  bad.set_group("../etc");
  caf::error err;
  (*self_)
    ->request(host_, 5s, bad)
    .receive([](const pb::ReplAck&) {}, [&](caf::error& e) { err = e; });
  EXPECT_EQ(code_of(err), errc::invalid_argument) << render(err);
  // Wait until the follower has the first commit, then an epoch-1 batch.
  auto deadline = steady::now() + 5s;
  uint64_t at = 0;
  while (steady::now() < deadline && (at = follower_seq()) == 0)
    std::this_thread::sleep_for(5ms);
  ASSERT_GT(at, 0u);
  pb::ReplShip old;
  old.set_group("n1");
  old.set_leader_epoch(1);
  auto* b = old.add_batches();
  b->set_leader_epoch(1);
  b->set_seq(at + 1);
  auto* op = b->add_ops();
  op->set_db(static_cast<uint32_t>(db::log));
  op->set_key("stale");
  op->set_value("from a deposed leader");
  err = caf::error{};
  (*self_)
    ->request(host_, 5s, old)
    .receive([](const pb::ReplAck&) {}, [&](caf::error& e) { err = e; });
  EXPECT_EQ(code_of(err), errc::fenced) << render(err);
  auto env = replica();
  ASSERT_TRUE(env);
  EXPECT_FALSE(env->read().get(db::log, "stale"));
}

} // namespace
} // namespace edda::replication
