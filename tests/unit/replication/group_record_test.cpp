// The replica group's record in etcd (the in-memory fake store): the epoch
// a leader claims goes above its own and the record's, a record led by
// another node is refused, a new log keeps where the old one's copies are.
#include "replication/group_record.hpp"

#include "base/errc.hpp"
#include "coord/fake.hpp"
#include "wire/types.hpp"

#include <gtest/gtest.h>

namespace edda::replication {
namespace {

namespace pb = wire::pb;

TEST(GroupRecordTest, EachClaimRaisesTheEpochAboveTheRecordAndTheDataDir) {
  coord::fake_store fake;
  auto c = fake.connect();
  auto first = claim_group(*c, "t", "n1", "log-a", 0, 1);
  ASSERT_TRUE(first) << render(first.error());
  EXPECT_EQ(first->epoch, 1u);
  auto again = claim_group(*c, "t", "n1", "log-a", 1, 2);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->epoch, 2u);
  // A data dir that kept a higher epoch than the record (etcd restored
  // from an old backup): still above both.
  auto ahead = claim_group(*c, "t", "n1", "log-a", 7, 3);
  ASSERT_TRUE(ahead);
  EXPECT_EQ(ahead->epoch, 8u);
  auto rec = read_group(*c, "t", "n1");
  ASSERT_TRUE(rec && *rec);
  EXPECT_EQ((*rec)->leader(), "n1");
  EXPECT_EQ((*rec)->leader_epoch(), 8u);
  EXPECT_EQ((*rec)->log_id(), "log-a");
  EXPECT_EQ((*rec)->isr_size(), 0) << "followers enter once caught up";
  EXPECT_EQ(group_key("t", "n1"), "/edda/t/groups/n1");
}

TEST(GroupRecordTest, ANewLogKeepsWhereTheOldLogsCopiesAre) {
  coord::fake_store fake;
  auto c = fake.connect();
  ASSERT_TRUE(claim_group(*c, "t", "n1", "log-a", 0, 1));
  ASSERT_TRUE(c->cas_put(group_key("t", "n1"), [&] {
    auto r = *read_group(*c, "t", "n1");
    r->add_isr("n2");
    return r->SerializeAsString();
  }(), c->get(group_key("t", "n1"))->first->mod_revision));
  // The data dir was replaced: another log, epoch from the record.
  auto wiped = claim_group(*c, "t", "n1", "log-b", 0, 2);
  ASSERT_TRUE(wiped);
  EXPECT_EQ(wiped->epoch, 2u);
  auto rec = *read_group(*c, "t", "n1");
  EXPECT_EQ(rec->log_id(), "log-b");
  EXPECT_EQ(rec->previous_log_id(), "log-a");
  ASSERT_EQ(rec->previous_isr_size(), 1);
  EXPECT_EQ(rec->previous_isr(0), "n2");
  EXPECT_EQ(rec->isr_size(), 0);
}

TEST(GroupRecordTest, AGroupLedByAnotherNodeIsRefusedAndEtcdDownIsUnavailable) {
  coord::fake_store fake;
  auto c = fake.connect();
  pb::ReplicaGroup other;
  other.set_leader("n2");
  other.set_leader_epoch(5);
  ASSERT_TRUE(c->cas_put(group_key("t", "n1"), other.SerializeAsString(), 0));
  auto r = claim_group(*c, "t", "n1", "log-a", 0, 1);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::fenced) << render(r.error());
  EXPECT_NE(render(r.error()).find("led by n2"), std::string::npos);
  auto d = fake.connect();
  fake.cut(d, true);
  auto down = claim_group(*d, "t", "n9", "log-a", 0, 1);
  ASSERT_FALSE(down);
  EXPECT_EQ(code_of(down.error()), errc::unavailable) << render(down.error());
}

TEST(GroupRecordTest, OnlyTheElectedCopyTakesAGroupBackAndTheElectionIsKept) {
  // The controller elected the standby's copy (log-a, epoch 3, seq 40) for
  // a hand-back (host = n1~standby).
  coord::fake_store fake;
  auto c = fake.connect();
  pb::ReplicaGroup rec;
  rec.set_leader("n1");
  rec.set_leader_epoch(4);
  rec.set_log_id("log-a");
  rec.set_host(standby_id("n1"));
  rec.set_elected_epoch(4);
  rec.set_elected_seq(40);
  rec.set_elected_copy_epoch(3);
  rec.set_elected_by(77);
  ASSERT_TRUE(c->cas_put(group_key("t", "n1"), rec.SerializeAsString(), 0));
  EXPECT_FALSE(refuse_if_served_elsewhere(*c, "t", "n1"))
    << "the group is handed back: not served elsewhere";
  claim_options o;
  // A stale data dir of the same node (an older epoch of the log, even
  // with more writes) is refused, so is another log or a shorter copy.
  o.local_seq = 90;
  auto stale = claim_group(*c, "t", "n1", "log-a", 1, 1, o);
  ASSERT_FALSE(stale);
  EXPECT_EQ(code_of(stale.error()), errc::fenced) << render(stale.error());
  EXPECT_NE(render(stale.error()).find("not that copy"), std::string::npos)
    << render(stale.error());
  o.local_seq = 40;
  EXPECT_FALSE(claim_group(*c, "t", "n1", "log-b", 3, 1, o));
  o.local_seq = 39;
  EXPECT_FALSE(claim_group(*c, "t", "n1", "log-a", 3, 1, o));
  // The elected copy claims it at home: the host empties, the election is
  // kept in the record and told to this leader (and to later ones).
  o.local_seq = 41;
  auto ok = claim_group(*c, "t", "n1", "log-a", 3, 1, o);
  ASSERT_TRUE(ok) << render(ok.error());
  EXPECT_EQ(ok->epoch, 5u);
  EXPECT_EQ(ok->election_epoch, 4u);
  EXPECT_EQ(ok->elected_seq, 40u);
  EXPECT_EQ(ok->elected_copy_epoch, 3u);
  auto after = read_group(*c, "t", "n1");
  ASSERT_TRUE(after && *after);
  EXPECT_TRUE((*after)->host().empty());
  EXPECT_EQ((*after)->elected_by(), 77u);
  auto again = claim_group(*c, "t", "n1", "log-a", 5, 1, o);
  ASSERT_TRUE(again) << render(again.error());
  EXPECT_EQ(again->election_epoch, 4u) << "a later restart still knows it";
}

} // namespace
} // namespace edda::replication
