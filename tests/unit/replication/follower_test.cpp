// A replica applying its leader's shipped commits: in order, once, never
// from a deposed leader, never with a gap, never half.
#include "replication/follower.hpp"
#include "replica_contents.hpp"

#include "base/errc.hpp"
#include "storage/environment.hpp"
#include "storage/writer_actor.hpp"
#include "wire/types.hpp"

#include "records.pb.h"
#include "replication.pb.h"

#include <caf/actor_system.hpp>
#include <caf/after.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace edda::replication {
namespace {

namespace pb = wire::v1;
using storage::db;

class FollowerTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto tmpl = (std::filesystem::temp_directory_path() / "edda-repl-XXXXXX")
                  .string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    open();
  }
  void TearDown() override {
    env_.reset();
    std::filesystem::remove_all(dir_);
  }
  void open() {
    env_.reset();
    storage::options o;
    o.dir = dir_;
    o.map_size = 64ull << 20;
    auto e = storage::environment::open(o);
    ASSERT_TRUE(e) << render(e.error());
    env_ = *e;
  }
  /// A batch putting "k<seq>" = value into db saga.
  static pb::ReplBatch batch(uint64_t epoch, uint64_t seq,
                             const std::string& value) {
    pb::ReplBatch b;
    b.set_leader_epoch(epoch);
    b.set_seq(seq);
    auto* op = b.add_ops();
    op->set_db(static_cast<uint32_t>(db::saga));
    op->set_key("k" + std::to_string(seq));
    op->set_value(value);
    return b;
  }
  std::string get(const std::string& key) {
    auto r = env_->read();
    auto v = r.get(db::saga, key);
    return v ? std::string{*v} : std::string{"<none>"};
  }
  std::string dir_;
  std::shared_ptr<storage::environment> env_;
};

TEST_F(FollowerTest, AppliesInOrderAndKeepsItsPositionWithTheData) {
  EXPECT_EQ(read_position(*env_).seq, 0u);
  for (uint64_t s = 1; s <= 3; ++s) {
    auto v = apply(*env_, batch(1, s, "v" + std::to_string(s)));
    ASSERT_TRUE(v) << render(v.error());
    EXPECT_EQ(*v, verdict::apply);
  }
  EXPECT_EQ(get("k3"), "v3");
  open(); // the position is on disk with the data it describes
  auto at = read_position(*env_);
  EXPECT_EQ(at.epoch, 1u);
  EXPECT_EQ(at.seq, 3u);
  EXPECT_EQ(get("k1"), "v1");
}

TEST_F(FollowerTest, AResentBatchIsADuplicateAndChangesNothing) {
  ASSERT_TRUE(apply(*env_, batch(1, 1, "first")));
  auto again = apply(*env_, batch(1, 1, "other bytes"));
  ASSERT_TRUE(again) << render(again.error());
  EXPECT_EQ(*again, verdict::duplicate);
  EXPECT_EQ(get("k1"), "first");
  EXPECT_EQ(read_position(*env_).seq, 1u);
}

TEST_F(FollowerTest, AGapIsRefusedNamingTheSeqExpected) {
  ASSERT_TRUE(apply(*env_, batch(1, 1, "a")));
  auto gap = apply(*env_, batch(1, 3, "c"));
  ASSERT_FALSE(gap);
  EXPECT_EQ(code_of(gap.error()), errc::invalid_argument);
  EXPECT_NE(render(gap.error()).find("expects 2"), std::string::npos)
    << render(gap.error());
  EXPECT_EQ(get("k3"), "<none>");
  EXPECT_EQ(read_position(*env_).seq, 1u);
}

TEST_F(FollowerTest, ADeposedLeadersBatchIsFencedAndANewLeaderGoesOn) {
  ASSERT_TRUE(apply(*env_, batch(1, 1, "a")));
  // A new leader (epoch 2) goes on from seq 2; the replica takes epoch 2.
  auto next = apply(*env_, batch(2, 2, "b"));
  ASSERT_TRUE(next) << render(next.error());
  EXPECT_EQ(read_position(*env_).epoch, 2u);
  // The old leader's late write, even at the next seq: refused.
  auto stale = apply(*env_, batch(1, 3, "late"));
  ASSERT_FALSE(stale);
  EXPECT_EQ(code_of(stale.error()), errc::fenced) << render(stale.error());
  EXPECT_EQ(get("k3"), "<none>");
  EXPECT_EQ(read_position(*env_).seq, 2u);
}

TEST_F(FollowerTest, ABatchOfAnotherLogIsRefusedEvenAtTheNextSeq) {
  auto first = batch(1, 1, "a");
  first.set_log_id("log-a");
  ASSERT_TRUE(apply(*env_, first));
  EXPECT_EQ(read_position(*env_).log_id, "log-a");
  // The leader's data dir was wiped: a new log, from seq 1 again or on.
  for (uint64_t seq : {1u, 2u}) {
    auto other = batch(2, seq, "from the new log");
    other.set_log_id("log-b");
    auto r = apply(*env_, other);
    ASSERT_FALSE(r) << "seq " << seq << " of another log taken";
    EXPECT_EQ(code_of(r.error()), errc::fenced) << render(r.error());
    EXPECT_NE(render(r.error()).find("log-a"), std::string::npos);
  }
  EXPECT_EQ(get("k1"), "a");
  EXPECT_EQ(read_position(*env_).seq, 1u);
  auto next = batch(1, 2, "b");
  next.set_log_id("log-a");
  EXPECT_TRUE(apply(*env_, next));
}

TEST_F(FollowerTest, ANewLeaderOverlappingTheOldLeadersSuffixIsRefused) {
  // This replica got seq 1-2 from the leader of epoch 1; the new leader
  // (epoch 2) had only seq 1 and writes its own seq 2.
  ASSERT_TRUE(apply(*env_, batch(1, 1, "a")));
  ASSERT_TRUE(apply(*env_, batch(1, 2, "old leader's")));
  auto r = apply(*env_, batch(2, 2, "new leader's"));
  ASSERT_FALSE(r) << "taken for a duplicate, the old suffix would stay";
  EXPECT_EQ(code_of(r.error()), errc::fenced);
  EXPECT_NE(render(r.error()).find("truncated"), std::string::npos)
    << render(r.error());
}

TEST_F(FollowerTest, ABadOrOversizedBatchWritesNothing) {
  ASSERT_TRUE(apply(*env_, batch(1, 1, "a")));
  auto bad = batch(1, 2, "b");
  auto* op = bad.add_ops();
  op->set_db(99); // no such db
  op->set_key("x");
  auto r = apply(*env_, bad);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::invalid_argument);
  EXPECT_EQ(get("k2"), "<none>") << "the good op of a bad batch is not kept";
  EXPECT_EQ(read_position(*env_).seq, 1u);
  auto big = batch(1, 2, std::string(2048, 'x'));
  auto r2 = apply(*env_, big, 1024);
  ASSERT_FALSE(r2);
  EXPECT_EQ(code_of(r2.error()), errc::message_too_large);
  EXPECT_EQ(read_position(*env_).seq, 1u);
  // Sent again within bounds, seq 2 applies.
  ASSERT_TRUE(apply(*env_, batch(1, 2, "b")));
  EXPECT_EQ(get("k2"), "b");
}

using test::contents;

// The leader's storage writer numbers each group commit and ships what it
// applied; a follower applying that stream ends with the same contents,
// and a restarted leader goes on numbering from its kept position.
TEST_F(FollowerTest, AFollowerOfTheWritersStreamEndsIdenticalToTheLeader) {
  auto leader_dir = dir_ + "-leader";
  std::filesystem::create_directories(leader_dir);
  storage::options o;
  o.dir = leader_dir;
  o.map_size = 64ull << 20;
  auto leader = storage::environment::open(o);
  ASSERT_TRUE(leader) << render(leader.error());
  std::mutex mtx;
  std::vector<pb::ReplBatch> shipped;
  storage::commit_stream stream;
  stream.epoch = 3;
  stream.ship = [&](pb::ReplBatch&& b) {
    std::lock_guard<std::mutex> guard{mtx};
    shipped.push_back(std::move(b));
  };
  auto write_some = [&](int from, int to) {
    test::sys_config cfg;
    caf::actor_system sys{cfg};
    auto writer = storage::spawn_writer(sys, *leader, true,
                                        std::chrono::milliseconds{0}, stream);
    caf::scoped_actor self{sys};
    for (int i = from; i < to; ++i) {
      pb::WriteBatch b;
      auto* op = b.add_ops();
      op->set_db(static_cast<uint32_t>(db::log));
      op->set_key("m" + std::to_string(i));
      op->set_value("body " + std::to_string(i));
      if (i % 5 == 4) { // now and then a delete of an earlier one
        auto* del = b.add_ops();
        del->set_db(static_cast<uint32_t>(db::log));
        del->set_key("m" + std::to_string(i - 2));
        del->set_kind(pb::WriteOp::DEL);
      }
      if (i == from + 3) { // a bad batch: refused alone, never shipped
        auto* bad = b.add_ops();
        bad->set_db(99);
        bad->set_key("x");
      }
      self->request(writer, std::chrono::seconds(10), std::move(b))
        .receive([](const pb::WriteResult&) {}, [](caf::error&) {});
    }
    caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
  };
  write_some(0, 20);
  write_some(20, 30); // a restarted leader numbers on
  std::lock_guard<std::mutex> guard{mtx};
  ASSERT_FALSE(shipped.empty());
  for (size_t i = 0; i < shipped.size(); ++i) {
    EXPECT_EQ(shipped[i].seq(), i + 1) << "gapless, across the restart";
    EXPECT_EQ(shipped[i].leader_epoch(), 3u);
    auto v = apply(*env_, shipped[i]);
    ASSERT_TRUE(v) << render(v.error());
  }
  EXPECT_EQ(contents(*env_), contents(**leader));
  EXPECT_EQ(get("k1"), "<none>");
  auto r = env_->read();
  EXPECT_FALSE(r.get(db::log, "m3")) << "the refused batch was not shipped";
  EXPECT_TRUE(r.get(db::log, "m29"));
  EXPECT_EQ(read_position(*env_).seq, shipped.size());
  leader->reset();
  std::filesystem::remove_all(leader_dir);
}

// A group commit of a shipped stream stays within what a replica takes
// whole: writes queued together are split over several commits.
TEST_F(FollowerTest, AShippedGroupCommitIsCappedAndEveryWriteAnswered) {
  auto leader_dir = dir_ + "-big";
  std::filesystem::create_directories(leader_dir);
  storage::options o;
  o.dir = leader_dir;
  o.map_size = 512ull << 20;
  o.mode = edda::config::durability::nosync;
  auto leader = storage::environment::open(o);
  ASSERT_TRUE(leader) << render(leader.error());
  std::mutex mtx;
  std::vector<size_t> commit_bytes;
  storage::commit_stream stream;
  stream.epoch = 1;
  stream.ship = [&](pb::ReplBatch&& b) {
    std::lock_guard<std::mutex> guard{mtx};
    commit_bytes.push_back(b.ByteSizeLong());
  };
  {
    test::sys_config cfg;
    caf::actor_system sys{cfg};
    // Deferrable writes wait up to 200 ms for one commit together.
    auto writer = storage::spawn_writer(sys, *leader, true,
                                        std::chrono::milliseconds{200}, stream);
    caf::scoped_actor self{sys};
    std::string big(10u << 20, 'x');
    for (int i = 0; i < 8; ++i) { // 80 MiB queued at once
      pb::WriteBatch b;
      b.set_deferrable(true);
      auto* op = b.add_ops();
      op->set_db(static_cast<uint32_t>(db::log));
      op->set_key("big" + std::to_string(i));
      op->set_value(big);
      self->send(writer, std::move(b));
    }
    int answered = 0;
    for (int i = 0; i < 8; ++i)
      self->receive([&](const pb::WriteResult&) { ++answered; },
                    [&](caf::error&) {},
                    caf::after(std::chrono::seconds(30)) >> [] {});
    EXPECT_EQ(answered, 8);
    caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
  }
  std::lock_guard<std::mutex> guard{mtx};
  ASSERT_GE(commit_bytes.size(), 3u) << "80 MiB in commits of at most 32";
  for (auto b : commit_bytes)
    EXPECT_LE(b, storage::max_shipped_commit_bytes + (1u << 20));
  leader->reset();
  std::filesystem::remove_all(leader_dir);
}

} // namespace
} // namespace edda::replication
