// The cluster fixture itself (cluster_fixture.hpp), with what nodes do
// today (they take the cluster settings but do not cluster yet): nodes
// start with their settings and answer, kill -9 and restart on the same
// data dir and port, SIGSTOP and SIGCONT, SIGTERM, etcd reachable directly
// and through a relay that cuts one node's link, a node reached through
// its advertised relay, and nothing left running after stop_all().
#include "client/admin.hpp"
#include "cluster_fixture.hpp"

#include <algorithm>
#include <csignal>
#include <fstream>
#include <gtest/gtest.h>
#include <iterator>
#include <string>
#include <vector>

namespace edda::test {
namespace {

using namespace std::chrono_literals;

/// The arguments `pid` runs with (/proc/PID/cmdline).
std::vector<std::string> args_of(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/cmdline"};
  std::string all{std::istreambuf_iterator<char>{in}, {}};
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < all.size()) {
    auto end = all.find('\0', pos);
    if (end == std::string::npos)
      end = all.size();
    out.push_back(all.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

/// How many times `--set setting` is among `args`.
size_t count_setting(const std::vector<std::string>& args,
                     const std::string& setting) {
  size_t n = 0;
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--set" && args[i + 1] == setting)
      ++n;
  return n;
}

bool has_setting(pid_t pid, const std::string& setting) {
  return count_setting(args_of(pid), setting) == 1;
}

/// The kernel's state letter of `pid` (R, S, T, ...; '?' if gone).
char state_of(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string stat{std::istreambuf_iterator<char>{in}, {}};
  auto at = stat.rfind(')');
  return at == std::string::npos || at + 2 >= stat.size() ? '?' : stat[at + 2];
}

/// Short timeouts: a call to a node that is not there fails fast.
client::connect_options fast() {
  client::connect_options o;
  o.connection_timeout = 1s;
  o.request_timeout = 1s;
  o.door = false; // the node port
  return o;
}

/// node_status over a fresh connection to 127.0.0.1:port.
caf::expected<client::admin::pb::NodeStatus>
status_at(uint16_t port, client::connect_options o = fast()) {
  auto c = client::connection::open("127.0.0.1", port, o);
  if (!c)
    return c.error();
  return client::admin::node_status(*c);
}

bool answers(uint16_t port) {
  return static_cast<bool>(status_at(port));
}

class cluster_fixture_test : public ClusterFixture {};

TEST_F(cluster_fixture_test, nodes_start_with_the_cluster_settings_and_answer) {
  start_nodes(3);
  ASSERT_EQ(node_count(), 3u);
  EXPECT_EQ(cluster_name().rfind(
              "nodes_start_with_the_cluster_settings_and_answer-", 0),
            0u)
    << cluster_name();
  std::vector<uint16_t> ports;
  for (size_t i = 0; i < node_count(); ++i) {
    auto& n = node(i);
    SCOPED_TRACE(n.name);
    ASSERT_TRUE(n.running());
    EXPECT_EQ(n.name, "n" + std::to_string(i + 1));
    EXPECT_EQ(n.data_dir, root() + "/" + n.name);
    ports.push_back(n.port);
    auto c = connect(n);
    ASSERT_TRUE(c) << render(c.error());
    auto st = client::admin::node_status(*c);
    ASSERT_TRUE(st) << render(st.error());
    EXPECT_EQ(st->data_dir(), n.data_dir);
    EXPECT_EQ(st->listen(), n.endpoint());
    EXPECT_TRUE(has_setting(n.pid(), "cluster.etcd=" + etcd_address()));
    EXPECT_TRUE(has_setting(n.pid(), "node.name=" + n.name));
    EXPECT_TRUE(has_setting(n.pid(), "cluster.name=" + cluster_name()));
    EXPECT_TRUE(has_setting(n.pid(), "cluster.lease_ttl=2s"));
  }
  std::sort(ports.begin(), ports.end());
  EXPECT_EQ(std::unique(ports.begin(), ports.end()), ports.end());
  EXPECT_EQ(&node("n2"), &node(1));

  // etcd is up and takes the cluster's keys.
  auto etcd = connect_etcd();
  ASSERT_TRUE(etcd) << render(etcd.error());
  auto key = "/edda/" + cluster_name() + "/probe";
  auto put = (*etcd)->cas_put(key, "up", 0);
  ASSERT_TRUE(put) << render(put.error());
  EXPECT_TRUE(put->succeeded);
  auto got = (*etcd)->get(key);
  ASSERT_TRUE(got) << render(got.error());
  ASSERT_TRUE(got->first.has_value());
  EXPECT_EQ(got->first->value, "up");
}

TEST_F(cluster_fixture_test, kill9_and_restart_keep_the_data_dir_and_port) {
  start_nodes(3);
  auto& n2 = node("n2");
  {
    auto c = connect(n2);
    ASSERT_TRUE(c) << render(c.error());
    auto t = client::admin::create_topic(*c, "orders", 2);
    ASSERT_TRUE(t) << render(t.error());
  }
  auto old_pid = n2.pid();
  kill9(n2);
  EXPECT_FALSE(n2.running());
  EXPECT_TRUE(n2.process()->exited_by_sigkill())
    << n2.process()->describe_status();
  EXPECT_FALSE(answers(n2.port));
  EXPECT_TRUE(answers(node("n1").port));
  EXPECT_TRUE(answers(node("n3").port));

  auto port = n2.port;
  ASSERT_TRUE(restart(n2));
  EXPECT_TRUE(n2.running());
  EXPECT_NE(n2.pid(), old_pid);
  EXPECT_EQ(n2.runs.size(), 2u);
  EXPECT_EQ(n2.port, port);
  EXPECT_TRUE(has_setting(n2.pid(), "node.name=n2"));
  auto c = connect(n2);
  ASSERT_TRUE(c) << render(c.error());
  auto st = client::admin::node_status(*c);
  ASSERT_TRUE(st) << render(st.error());
  EXPECT_EQ(st->data_dir(), n2.data_dir);
  auto t = client::admin::describe_topic(*c, "orders");
  ASSERT_TRUE(t) << "the topic did not survive: " << render(t.error());

  // A restart of a running node kills it first.
  old_pid = n2.pid();
  ASSERT_TRUE(restart(n2));
  EXPECT_NE(n2.pid(), old_pid);
  EXPECT_TRUE(n2.runs[1]->exited_by_sigkill());
  EXPECT_TRUE(eventually(5s, [&] { return answers(n2.port); }));
}

TEST_F(cluster_fixture_test, sigstop_and_sigcont_a_node) {
  start_nodes(2);
  auto& n1 = node("n1");
  ASSERT_TRUE(answers(n1.port));
  pause(n1);
  EXPECT_EQ(state_of(n1.pid()), 'T');
  EXPECT_TRUE(n1.running()) << "paused is not gone";
  auto t0 = clock_type::now();
  // The kernel still accepts the TCP connection; the node never answers.
  EXPECT_FALSE(answers(n1.port)) << "a stopped node answered";
  EXPECT_LT(clock_type::now() - t0, 10s);
  EXPECT_TRUE(answers(node("n2").port));
  resume(n1);
  EXPECT_NE(state_of(n1.pid()), 'T');
  EXPECT_TRUE(eventually(10s, [&] { return answers(n1.port); }));
}

TEST_F(cluster_fixture_test, a_relay_cuts_one_node_from_etcd) {
  auto& direct = add_node();
  node_options o;
  o.etcd_via_relay = true;
  auto& cut_off = add_node(o);
  ASSERT_TRUE(cut_off.etcd_relay);
  EXPECT_FALSE(direct.etcd_relay);
  auto via = cut_off.etcd_relay->address();
  EXPECT_TRUE(has_setting(cut_off.pid(), "cluster.etcd=" + via));
  EXPECT_TRUE(has_setting(direct.pid(), "cluster.etcd=" + etcd_address()));

  // What the node would see: etcd through its relay.
  auto c = connect_etcd_at(via, 2s);
  ASSERT_TRUE(c) << render(c.error());
  auto key = "/edda/" + cluster_name() + "/k";
  auto put = (*c)->cas_put(key, "v", 0);
  ASSERT_TRUE(put) << render(put.error());
  EXPECT_TRUE(put->succeeded);

  cut_off.etcd_relay->cut();
  auto t0 = clock_type::now();
  auto got = (*c)->get(key);
  EXPECT_FALSE(got) << "a read through a cut relay succeeded";
  EXPECT_LT(clock_type::now() - t0, 5s);
  EXPECT_FALSE(connect_etcd_at(via, 500ms));
  auto d = connect_etcd();
  ASSERT_TRUE(d) << "etcd itself must stay reachable: " << render(d.error());
  auto direct_get = (*d)->get(key);
  ASSERT_TRUE(direct_get) << render(direct_get.error());
  EXPECT_TRUE(direct_get->first.has_value());
  EXPECT_TRUE(answers(cut_off.port)) << "the node does not use etcd yet";

  cut_off.etcd_relay->restore();
  EXPECT_TRUE(eventually(10s,
                         [&] {
                           auto r = (*c)->get(key);
                           return r && r->first && r->first->value == "v";
                         }))
    << "the old client did not read again after restore";
  EXPECT_TRUE(connect_etcd_at(via, 2s));
}

TEST_F(cluster_fixture_test, a_node_reached_through_its_advertised_relay) {
  node_options o;
  o.advertise_via_relay = true;
  auto& n = add_node(o);
  ASSERT_TRUE(n.peer_relay);
  EXPECT_EQ(n.advertised(), n.peer_relay->address());
  EXPECT_TRUE(has_setting(n.pid(), "node.advertise=" + n.advertised()));
  auto via = n.peer_relay->port();
  EXPECT_TRUE(answers(via));
  EXPECT_GE(n.peer_relay->connections_accepted(), 1u);

  n.peer_relay->cut();
  EXPECT_FALSE(answers(via)) << "answered through a cut relay";
  EXPECT_TRUE(answers(n.port)) << "the node's own port is not cut";
  n.peer_relay->restore();
  EXPECT_TRUE(eventually(10s, [&] { return answers(via); }));

  // Restarted, the node keeps its relay.
  ASSERT_TRUE(restart(n));
  EXPECT_TRUE(has_setting(n.pid(), "node.advertise=" + n.advertised()));
  EXPECT_TRUE(eventually(10s, [&] { return answers(via); }));
}

TEST_F(cluster_fixture_test, stop_all_leaves_no_process_behind) {
  node_options o;
  o.etcd_via_relay = true;
  start_nodes(2, o);
  pause(node(1));
  std::vector<pid_t> pids = {node(0).pid(), node(1).pid(), etcd().pid()};
  auto relay_port = node(0).etcd_relay->port();
  for (auto pid : pids)
    ASSERT_GT(pid, 0);
  stop_all();
  for (auto pid : pids)
    EXPECT_TRUE(::kill(pid, 0) == -1 && errno == ESRCH)
      << "pid " << pid << " is still there (or not reaped)";
  EXPECT_FALSE(node(0).running());
  EXPECT_FALSE(node(1).running());
  EXPECT_EQ(etcd().pid(), 0);
  EXPECT_TRUE(eventually(2s, [&] { return can_bind(relay_port); }))
    << "the relay still listens on " << relay_port;
}

class cluster_fixture_settings_test : public ClusterFixture {
protected:
  cluster_fixture_settings_test()
      : ClusterFixture({"cluster.lease_ttl=3s", "node.stop_grace=2s"}) {}
};

TEST_F(cluster_fixture_settings_test, test_and_node_settings_replace_defaults) {
  node_options o;
  o.settings = {"cluster.lease_ttl=4s"};
  auto& a = add_node(o);
  auto& b = add_node();
  auto args_a = args_of(a.pid());
  auto args_b = args_of(b.pid());
  EXPECT_EQ(count_setting(args_a, "cluster.lease_ttl=4s"), 1u);
  EXPECT_EQ(count_setting(args_a, "cluster.lease_ttl=3s"), 0u);
  EXPECT_EQ(count_setting(args_a, "cluster.lease_ttl=2s"), 0u);
  EXPECT_EQ(count_setting(args_b, "cluster.lease_ttl=3s"), 1u);
  EXPECT_EQ(count_setting(args_b, "cluster.lease_ttl=2s"), 0u);
  EXPECT_EQ(count_setting(args_a, "node.stop_grace=2s"), 1u);
  EXPECT_EQ(count_setting(args_b, "node.stop_grace=2s"), 1u);

  // SIGTERM: the node stops cleanly.
  stop(a);
  EXPECT_FALSE(a.running());
  EXPECT_TRUE(WIFEXITED(a.process()->status)
              && WEXITSTATUS(a.process()->status) == 0)
    << a.process()->describe_status();
  EXPECT_TRUE(answers(b.port));
}

} // namespace
} // namespace edda::test
