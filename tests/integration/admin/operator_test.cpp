// Operator commands of the `edda` CLI run as a user runs them, against a
// node in this process through its client door: `group describe` (members,
// their addresses, lag per partition) and `backup` (a consistent copy
// taken while writes go on, opened by a second node).
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/connection.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "config/settings.hpp"
#include "node/embedded_node.hpp"
#include "support/run_edda.hpp"
#include "support/util.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using edda::test::eventually;
using edda::test::run_result;
namespace client = edda::client;
namespace admin = edda::client::admin;

class OperatorCommandTest : public ::testing::Test {
protected:
  static edda::config::node_settings settings(const std::string& data) {
    edda::config::node_settings s;
    s.data_dir = data;
    s.listen_port = 0; // the door and the admin port: the OS picks
    s.mode = edda::config::durability::nosync;
    s.map_size = 256ull << 20;
    s.log_level = "error";
    return s;
  }

  /// `edda ARGS... --node <the door>`.
  run_result edda(std::vector<std::string> args, uint16_t door) {
    args.push_back("--node");
    args.push_back("127.0.0.1:" + std::to_string(door));
    return edda::test::run_command(EDDA_BINARY, args, dir_.path());
  }

  static void send(client::producer& p, const std::string& topic, int i) {
    client::message m;
    m.topic = topic;
    m.key = "k" + std::to_string(i);
    m.body = "m" + std::to_string(i);
    auto r = p.send(m);
    ASSERT_TRUE(r) << edda::render(r.error());
  }

  static uint64_t end_offset(const client::connection& c,
                             const std::string& topic) {
    auto d = admin::describe_topic(c, topic);
    EXPECT_TRUE(d) << edda::render(d.error());
    uint64_t total = 0;
    if (d)
      for (auto& p : d->partitions())
        total += p.end_offset();
    return total;
  }

  edda::test::temp_dir dir_;
};

TEST_F(OperatorCommandTest, GroupDescribeShowsMembersTheirAddressesAndLag) {
  auto node = edda::node::embedded_node::start(settings(dir_.path() + "/data"));
  ASSERT_TRUE(node) << edda::render(node.error());
  auto& n = **node;
  ASSERT_NE(n.api_port(), 0);
  auto conn = n.connect();
  ASSERT_TRUE(admin::create_topic(conn, "orders", 2));
  client::producer p{conn};
  for (int i = 0; i < 6; ++i)
    send(p, "orders", i);
  // A member of group billing over the door, as a service would be.
  auto remote = client::connection::open("127.0.0.1", n.api_port(), {});
  ASSERT_TRUE(remote) << edda::render(remote.error());
  std::atomic<int> got{0};
  client::consumer_options o;
  o.group = "billing";
  o.topic = "orders";
  o.client_id = "biller-1";
  auto c = client::consumer::start(*remote, o, [&](const client::received&) {
    ++got;
    return client::consume_result::success;
  });
  ASSERT_TRUE(c) << edda::render(c.error());
  ASSERT_TRUE(eventually(10s, [&] { return got.load() == 6; }));
  ASSERT_TRUE(eventually(10s, [&] {
    auto r = edda({"group", "describe", "billing"}, n.api_port());
    return r.exit_code == 0 && r.out.find("total lag 0") != std::string::npos;
  }));
  auto live = edda({"group", "describe", "billing"}, n.api_port());
  EXPECT_EQ(live.exit_code, 0) << live.err;
  EXPECT_NE(live.out.find("group billing: clustering"), std::string::npos)
    << live.out;
  EXPECT_NE(live.out.find("1 members"), std::string::npos) << live.out;
  // The member, where the node saw it connect from, and what it reads.
  EXPECT_NE(live.out.find("biller-1\tdoor ipv4:127.0.0.1:"), std::string::npos)
    << live.out;
  EXPECT_NE(live.out.find("orders (*)"), std::string::npos) << live.out;
  // One row per partition: committed = end, lag 0, its member.
  uint64_t ends = 0;
  auto described = admin::describe_topic(conn, "orders");
  ASSERT_TRUE(described) << edda::render(described.error());
  for (auto& pi : described->partitions()) {
    auto row = "orders\t" + std::to_string(pi.partition()) + "\t"
               + std::to_string(pi.end_offset()) + "\t"
               + std::to_string(pi.end_offset()) + "\t0\t0\tbiller-1";
    EXPECT_NE(live.out.find(row), std::string::npos) << row << "\n" << live.out;
    ends += pi.end_offset();
  }
  EXPECT_EQ(ends, 6u);
  auto json = edda({"group", "describe", "billing", "--json"}, n.api_port());
  EXPECT_EQ(json.exit_code, 0) << json.err;
  EXPECT_NE(json.out.find("\"client_id\":\"biller-1\""), std::string::npos)
    << json.out;

  // The member leaves; two more messages: no members, lag 2, still known.
  (*c)->stop();
  send(p, "orders", 6);
  send(p, "orders", 7);
  ASSERT_TRUE(eventually(10s, [&] {
    auto r = edda({"group", "describe", "billing"}, n.api_port());
    return r.exit_code == 0 && r.out.find("0 members") != std::string::npos;
  }));
  auto idle = edda({"group", "describe", "billing"}, n.api_port());
  EXPECT_NE(idle.out.find("total lag 2"), std::string::npos) << idle.out;

  // Mistakes: an unknown group (the node says unknown_group: exit 3, not
  // found), no group (a usage error, exit 2), help.
  auto unknown = edda({"group", "describe", "nobody"}, n.api_port());
  EXPECT_EQ(unknown.exit_code, 3);
  EXPECT_NE(unknown.err.find("no group 'nobody'"), std::string::npos)
    << unknown.err;
  auto none = edda({"group", "describe"}, n.api_port());
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.err.find("needs one GROUP"), std::string::npos) << none.err;
  auto topic = edda({"topic", "describe", "nothing"}, n.api_port());
  EXPECT_EQ(topic.exit_code, 3) << topic.err;
  auto help = edda::test::run_command(EDDA_BINARY, {"group", "-h"}, dir_.path());
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("edda group describe GROUP"), std::string::npos)
    << help.out;
}

TEST_F(OperatorCommandTest, BackupIsAConsistentCopyTakenWhileWritesGoOn) {
  auto node = edda::node::embedded_node::start(settings(dir_.path() + "/data"));
  ASSERT_TRUE(node) << edda::render(node.error());
  auto& n = **node;
  auto conn = n.connect();
  ASSERT_TRUE(admin::create_topic(conn, "ledger", 1));
  client::producer p{conn};
  for (int i = 0; i < 200; ++i)
    send(p, "ledger", i);
  // Writes go on while the copy is taken (bounded: 2,000 or 20 s).
  std::atomic<bool> stop{false};
  std::atomic<int> acked{200};
  std::thread writer{[&] {
    client::producer wp{conn};
    auto until = std::chrono::steady_clock::now() + 20s;
    for (int i = 200; i < 2200 && !stop && std::chrono::steady_clock::now() < until;
         ++i) {
      client::message m;
      m.topic = "ledger";
      m.body = "w" + std::to_string(i);
      if (wp.send(m))
        ++acked;
    }
  }};
  ASSERT_TRUE(eventually(10s, [&] { return acked.load() > 300; }));
  // storage.backup_dir defaults to the data dir + ".backups".
  auto copy = dir_.path() + "/data.backups/first";
  auto r = edda({"backup", "first", "--by", "tester"}, n.api_port());
  int at_end_of_backup = acked.load();
  stop = true;
  writer.join();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto status = admin::node_status(conn);
  ASSERT_TRUE(status);
  EXPECT_NE(r.out.find("backup of node " + status->node_id() + " written to "
                       + copy + "/data.mdb"),
            std::string::npos)
    << r.out;
  ASSERT_TRUE(std::filesystem::exists(copy + "/data.mdb"));
  EXPECT_FALSE(std::filesystem::exists(copy + "/data.mdb.partial"));

  // Refused: a name that exists, a name that is a path, no `by`.
  auto again = edda({"backup", "first"}, n.api_port());
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("a backup named 'first' exists"), std::string::npos)
    << again.err;
  for (auto bad : {"../escape", "/etc/x", "..", "a b"}) {
    auto path = admin::backup(conn, bad, "tester");
    ASSERT_FALSE(path) << bad;
    EXPECT_EQ(edda::code_of(path.error()), edda::errc::invalid_argument) << bad;
    EXPECT_NE(edda::render(path.error()).find("a backup NAME is"),
              std::string::npos)
      << edda::render(path.error());
  }
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/escape"));
  auto anonymous = admin::backup(conn, "second", "");
  ASSERT_FALSE(anonymous);
  EXPECT_EQ(edda::code_of(anonymous.error()), edda::errc::invalid_argument);
  uint64_t live_end = end_offset(conn, "ledger");

  // The copy opens as a node's data: every message acknowledged before the
  // backup began is in it, nothing after its end, and no gap.
  auto restored_settings = settings(copy);
  restored_settings.backup_dir = "off";
  auto restored = edda::node::embedded_node::start(restored_settings, {});
  ASSERT_TRUE(restored) << edda::render(restored.error());
  auto rc = (*restored)->connect();
  auto d = admin::describe_topic(rc, "ledger");
  ASSERT_TRUE(d) << edda::render(d.error());
  ASSERT_EQ(d->partitions_size(), 1);
  auto copied = d->partitions(0).end_offset();
  EXPECT_GE(copied, 300u);
  EXPECT_LE(copied, static_cast<uint64_t>(at_end_of_backup));
  EXPECT_LE(copied, live_end);
  EXPECT_EQ(d->partitions(0).message_count(), copied);
  auto rs = admin::node_status(rc);
  ASSERT_TRUE(rs);
  EXPECT_EQ(rs->node_id(), status->node_id());
  // storage.backup_dir = off: refused, and said why.
  auto off = admin::backup(rc, "third", "tester");
  ASSERT_FALSE(off);
  EXPECT_EQ(edda::code_of(off.error()), edda::errc::unavailable);
  EXPECT_NE(edda::render(off.error()).find("backups are off"), std::string::npos);
}

TEST_F(OperatorCommandTest, ResetOffsetsFindMessagesAndRetentionAsAUserTypesThem) {
  auto node = edda::node::embedded_node::start(settings(dir_.path() + "/data"));
  ASSERT_TRUE(node) << edda::render(node.error());
  auto& n = **node;
  auto conn = n.connect();
  auto door = n.api_port();
  auto created = edda({"topic", "create", "pay", "--partitions", "2",
                       "--retention", "72h"},
                      door);
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_NE(created.out.find("retention 3d"), std::string::npos) << created.out;
  client::producer p{conn};
  for (int i = 0; i < 6; ++i)
    send(p, "pay", i); // keys k0..k5, bodies m0..m5
  auto consumed = edda({"consume", "--topic", "pay", "--group", "books",
                        "--count", "6", "--quiet"},
                       door);
  ASSERT_EQ(consumed.exit_code, 0) << consumed.err;

  // A dry run shows where each partition would go and changes nothing.
  auto dry = edda({"group", "reset-offsets", "books", "--topic", "pay",
                   "--to-earliest"},
                  door);
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("a dry run, nothing changed"), std::string::npos)
    << dry.out;
  auto lag = [&] {
    uint64_t total = 0;
    auto d = admin::describe_topic(conn, "pay");
    EXPECT_TRUE(d);
    if (d)
      for (auto& g : d->groups())
        if (g.cursor() == "books")
          total += g.lag();
    return total;
  };
  EXPECT_EQ(lag(), 0u);
  auto done = edda({"group", "reset-offsets", "books", "--topic", "pay",
                    "--to-earliest", "--execute", "--by", "carol"},
                   door);
  ASSERT_EQ(done.exit_code, 0) << done.err;
  EXPECT_NE(done.out.find("done (by carol)"), std::string::npos) << done.out;
  EXPECT_EQ(lag(), 6u);
  auto unknown = edda({"group", "reset-offsets", "nobody", "--topic", "pay",
                       "--to-latest"},
                      door);
  EXPECT_EQ(unknown.exit_code, 3) << unknown.err; // not found
  auto no_target = edda({"group", "reset-offsets", "books", "--topic", "pay"},
                        door);
  EXPECT_EQ(no_target.exit_code, 2) << no_target.err; // usage

  // find by key prints one line a message; show prints one in full.
  auto found = edda({"message", "find", "--topic", "pay", "--key", "k4"}, door);
  ASSERT_EQ(found.exit_code, 0) << found.err;
  EXPECT_NE(found.out.find("\tk4\tm4\n"), std::string::npos) << found.out;
  EXPECT_NE(found.out.find("1 message (read"), std::string::npos) << found.out;
  auto json = edda({"message", "find", "--topic", "pay", "--since", "now-1h",
                    "--json"},
                   door);
  ASSERT_EQ(json.exit_code, 0) << json.err;
  auto id_at = json.out.find("\"id\":\"");
  ASSERT_NE(id_at, std::string::npos) << json.out;
  auto id = json.out.substr(id_at + 6, 32);
  auto shown = edda({"message", "show", id}, door);
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find("message " + id), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find("  topic       pay, partition "), std::string::npos)
    << shown.out;
  auto missing = edda({"message", "show", "0123456789abcdef0123456789abcdef"},
                      door);
  EXPECT_EQ(missing.exit_code, 3) << missing.err;

  // Retention by size, online: describe shows the low watermark move.
  auto alter = edda({"topic", "alter", "pay", "--retention-bytes", "1"}, door);
  ASSERT_EQ(alter.exit_code, 0) << alter.err;
  EXPECT_NE(alter.out.find("retention 3d and 1 byte a partition"),
            std::string::npos)
    << alter.out;
  ASSERT_TRUE(eventually(10s, [&] {
    auto d = edda({"topic", "describe", "pay"}, door);
    // The newest message of each partition stays (offsets go on from it).
    return d.exit_code == 0 && d.out.find("1 messages, low watermark")
                                 != std::string::npos;
  }));
  auto bad = edda({"topic", "alter", "pay", "--retention", "forever"}, door);
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
}

} // namespace
