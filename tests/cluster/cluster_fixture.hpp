// A gtest fixture for multi-process cluster tests: one real etcd
// (etcd_process.hpp) and N `edda node` processes (support/
// node_process.hpp), each with its own name (n1, n2, ...), data dir under
// the test's temp root, free 127.0.0.1 port, and the cluster settings
// (cluster.etcd, node.name, cluster.name unique per test, a short
// cluster.lease_ttl) plus the test's own. A node's etcd traffic, or the
// traffic to it from peers and clients, can go through a relay (relay.hpp)
// so that a test can cut, delay or reset that link alone.
//
// Faults on a node, by pid: kill -9, SIGTERM, SIGSTOP, SIGCONT, and a
// restart on the same data dir and port. etcd's own faults: etcd().
//
// TearDown (also after a failed or aborted test) kills every node still
// running, stops every relay and etcd, by pid; when the test failed it
// prints each node's and etcd's log tail and keeps the temp root (etcd's
// log is copied into it as etcd.log). Every wait polls with a deadline.
//
// Use: `class my_test : public ClusterFixture {};`, then
// `start_nodes(3)` or `add_node({...})`, and node(i) / node("n2").
//
// Thread-safety: none; the test thread drives the fixture. Relays may be
// commanded from any thread (relay.hpp).
//
// Errors: a node that does not start (or restart) within 20 s, a relay or
// etcd that cannot start, a node that does not die: the fixture reports a
// test failure (ADD_FAILURE / a fatal failure in SetUp) with the node's
// stdout and log tail; the functions then return, the node not running.
#pragma once

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "client/admin.hpp"
#include "client/connection.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "cluster.pb.h"
#include "coord/etcd.hpp"
#include "etcd_process.hpp"
#include "relay.hpp"
#include "support/node_process.hpp"
#include "support/util.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef EDDA_BINARY
#error "EDDA_BINARY must name the edda binary ($<TARGET_FILE:edda>)"
#endif

namespace edda::test {

/// How one node of the cluster is started.
struct node_options {
  /// Its node.name; empty: "n<index>" (n1, n2, ... in the order added).
  std::string name;
  /// Extra `--set KEY=VALUE` for this node; a key given here replaces the
  /// fixture's value of that key.
  std::vector<std::string> settings;
  /// cluster.etcd is a relay in front of etcd (cluster_node::etcd_relay):
  /// cut it to cut this node, and only it, from etcd.
  bool etcd_via_relay = false;
  /// node.advertise is a relay in front of the node's port
  /// (cluster_node::peer_relay): peers and clients that use the advertised
  /// address reach the node through it.
  bool advertise_via_relay = false;
  /// EDDA_FAILPOINTS for this node's processes (failpoint.hpp); a test may
  /// clear it before a restart.
  std::string failpoints;
};

/// One node of the cluster. Its name, data dir, port and relays stay the
/// same across restarts; `runs` holds every process started for it.
struct cluster_node {
  std::string name;
  std::string data_dir;
  uint16_t port = 0;
  node_options opts;
  std::unique_ptr<relay> etcd_relay; ///< set with opts.etcd_via_relay
  std::unique_ptr<relay> peer_relay; ///< set with opts.advertise_via_relay
  std::vector<std::unique_ptr<node_process>> runs; ///< oldest first

  /// The latest process (nullptr before the first start).
  node_process* process() const {
    return runs.empty() ? nullptr : runs.back().get();
  }
  /// The latest process's pid, -1 if there is none.
  pid_t pid() const {
    return runs.empty() ? -1 : runs.back()->pid;
  }
  /// Started and not reaped (it may be SIGSTOPped).
  bool running() const {
    auto* p = process();
    return p != nullptr && p->pid > 0 && !p->reaped;
  }
  /// "127.0.0.1:PORT", where the node listens.
  std::string endpoint() const {
    return "127.0.0.1:" + std::to_string(port);
  }
  /// The address peers use: the peer relay's, else endpoint().
  std::string advertised() const {
    return peer_relay ? peer_relay->address() : endpoint();
  }
};

/// Messages a consumer got, by body (a consumer's handler records them).
struct inbox {
  std::mutex mtx;
  std::map<std::string, int> count;
  std::map<std::string, std::vector<std::string>> by_key; // in arrival order
  client::consume_result record(const client::received& r) {
    std::lock_guard<std::mutex> guard{mtx};
    ++count[r.msg.body];
    if (!r.msg.key.empty())
      by_key[r.msg.key].push_back(r.msg.body);
    return client::consume_result::success;
  }
  size_t distinct() {
    std::lock_guard<std::mutex> guard{mtx};
    return count.size();
  }
  bool has(const std::string& body) {
    std::lock_guard<std::mutex> guard{mtx};
    return count.count(body) != 0;
  }
  /// Starts a consumer of `topic` in `group` on `c` that records here.
  caf::expected<std::unique_ptr<client::consumer>>
  consume(const client::connection& c, const std::string& group,
          const std::string& topic) {
    client::consumer_options co;
    co.group = group;
    co.topic = topic;
    return client::consumer::start(
      c, co, [this](const client::received& r) { return record(r); });
  }
  /// Those of `bodies` not received yet.
  std::set<std::string> missing(const std::set<std::string>& bodies) {
    std::lock_guard<std::mutex> guard{mtx};
    std::set<std::string> out;
    for (auto& b : bodies)
      if (count.count(b) == 0)
        out.insert(b);
    return out;
  }
};

/// A producer to one topic that remembers the bodies acknowledged.
struct acked_producer {
  acked_producer(const client::connection& c, std::string t)
    : p(c), topic(std::move(t)) {}
  client::producer p;
  std::string topic;
  std::set<std::string> acked;
  caf::expected<client::send_result> send(const std::string& key,
                                          const std::string& body) {
    client::message m;
    m.topic = topic;
    m.key = key;
    m.body = body;
    auto r = p.send(std::move(m));
    if (r)
      acked.insert(body);
    return r;
  }
};

class ClusterFixture : public ::testing::Test {
protected:
  /// `base` with `over` applied: a KEY=VALUE of `over` replaces the entry
  /// of `base` with the same KEY, others are appended.
  static std::vector<std::string> merged(std::vector<std::string> base,
                                         const std::vector<std::string>& over) {
    auto key = [](const std::string& s) {
      return s.substr(0, s.find('='));
    };
    for (auto& s : over) {
      auto it = std::find_if(base.begin(), base.end(),
                             [&](auto& b) { return key(b) == key(s); });
      if (it != base.end())
        *it = s;
      else
        base.push_back(s);
    }
    return base;
  }

  /// `settings`: `--set KEY=VALUE` for every node, after (and replacing)
  /// the fixture's defaults: cluster.lease_ttl=2s.
  explicit ClusterFixture(std::vector<std::string> settings = {},
                          std::string prefix = "edda-cluster")
      : prefix_(std::move(prefix)),
        settings_(merged({"cluster.lease_ttl=2s"}, settings)) {}

  void SetUp() override {
    namespace fs = std::filesystem;
    std::string tmpl
      = (fs::temp_directory_path() / (prefix_ + "-XXXXXX")).string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    root_ = tmpl;
    cluster_name_ = unique_cluster_name();
    auto e = etcd_process::start();
    ASSERT_TRUE(e) << render(e.error());
    etcd_ = std::move(*e);
  }

  void TearDown() override {
    bool failed = HasFailure();
    stop_all();
    if (failed) {
      print_logs();
      std::fprintf(stderr, "kept %s for inspection\n", root_.c_str());
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  // -- the cluster ------------------------------------------------------------

  /// The etcd of this test (faults: stop, kill9, pause, resume, restart).
  etcd_process& etcd() {
    return *etcd_;
  }
  /// "127.0.0.1:PORT" of etcd's client port.
  std::string etcd_address() const {
    return "127.0.0.1:" + std::to_string(etcd_->client_port());
  }
  /// cluster.name of every node: the test's name and a random suffix.
  const std::string& cluster_name() const {
    return cluster_name_;
  }
  /// The test's temp dir (kept when the test failed).
  const std::string& root() const {
    return root_;
  }

  /// Adds a node and starts it; returns once it listens (or the start
  /// failed: a test failure, the node not running).
  cluster_node& add_node(node_options o = {}) {
    auto n = std::make_unique<cluster_node>();
    n->name = o.name.empty() ? "n" + std::to_string(nodes_.size() + 1) : o.name;
    n->data_dir = root_ + "/" + n->name;
    n->port = free_port();
    if (n->port == 0)
      ADD_FAILURE() << "no free port for " << n->name;
    if (o.etcd_via_relay)
      n->etcd_relay = make_relay(etcd_->client_port(), n->name + " -> etcd");
    if (o.advertise_via_relay)
      n->peer_relay = make_relay(n->port, "-> " + n->name);
    n->opts = std::move(o);
    auto& node = *nodes_.emplace_back(std::move(n));
    launch(node);
    return node;
  }

  /// Adds and starts `count` nodes with the same options (names n<i>).
  void start_nodes(size_t count, const node_options& o = {}) {
    auto first = nodes_.size();
    for (size_t i = 0; i < count; ++i) {
      auto each = o;
      each.name.clear();
      add_node(each);
    }
    // A test starts from a formed cluster.
    expect_formed(first);
  }

  /// Waits until each node from the `first` added on sees all of them
  /// linked (the node of the smaller id makes each link, a moment after
  /// both joined; one node seeing the others says nothing of their links
  /// to each other); a failure after 15 s. False then.
  bool expect_formed(size_t first = 0) {
    std::set<std::string> all;
    for (auto i = first; i < nodes_.size(); ++i)
      all.insert(nodes_[i]->name);
    bool ok = true;
    for (auto i = first; i < nodes_.size(); ++i) {
      std::set<std::string> seen;
      if (!eventually(std::chrono::seconds(15), [&] {
            seen = connected_members(*nodes_[i]);
            return std::includes(seen.begin(), seen.end(), all.begin(),
                                 all.end());
          })) {
        ADD_FAILURE() << nodes_[i]->name << " sees " << seen.size() << " of "
                      << all.size() << " nodes linked after 15 s";
        ok = false;
      }
    }
    return ok;
  }

  /// The i-th node added (0-based).
  cluster_node& node(size_t i) {
    if (i >= nodes_.size())
      throw std::out_of_range("ClusterFixture::node: no node "
                              + std::to_string(i));
    return *nodes_[i];
  }
  /// The node named `name`.
  cluster_node& node(const std::string& name) {
    for (auto& n : nodes_)
      if (n->name == name)
        return *n;
    throw std::out_of_range("ClusterFixture::node: no node " + name);
  }
  size_t node_count() const {
    return nodes_.size();
  }

  /// The `--set` settings `n` is started with (in order).
  std::vector<std::string> settings_of(const cluster_node& n) const {
    auto etcd = n.etcd_relay ? n.etcd_relay->address() : etcd_address();
    std::vector<std::string> base = {
      "cluster.etcd=" + etcd,
      "node.name=" + n.name,
      "cluster.name=" + cluster_name_,
    };
    if (n.peer_relay)
      base.push_back("node.advertise=" + n.peer_relay->address());
    return merged(merged(base, settings_), n.opts.settings);
  }

  // -- faults on a node (by pid) ---------------------------------------------

  /// SIGKILL and reap.
  void kill9(cluster_node& n) {
    if (auto* p = n.process(); p != nullptr && !test::kill9(*p))
      ADD_FAILURE() << n.name << " (pid " << p->pid
                    << ") did not die after SIGKILL";
  }

  /// SIGTERM (and SIGCONT, in case it is paused); waits for the exit,
  /// SIGKILL after `grace`.
  void stop(cluster_node& n, milliseconds grace = seconds(10)) {
    auto* p = n.process();
    if (p == nullptr || !n.running())
      return;
    ::kill(p->pid, SIGTERM);
    ::kill(p->pid, SIGCONT);
    if (!test::wait_exit(*p, grace))
      kill9(n);
  }

  /// SIGSTOP; returns once the node is stopped.
  void pause(cluster_node& n) {
    if (auto* p = n.process(); p != nullptr && !test::pause(*p, seconds(5)))
      ADD_FAILURE() << n.name << " (pid " << p->pid
                    << ") did not stop on SIGSTOP (" << p->describe_status()
                    << ")";
  }

  /// SIGCONT; returns once the node runs again.
  void resume(cluster_node& n) {
    if (auto* p = n.process(); p != nullptr && !test::resume(*p, seconds(5)))
      ADD_FAILURE() << n.name << " (pid " << p->pid
                    << ") did not continue on SIGCONT (" << p->describe_status()
                    << ")";
  }

  /// Kills the node if it still runs (kill -9), then starts it again on
  /// the same data dir, port and settings; returns once it listens. True
  /// if it does.
  bool restart(cluster_node& n) {
    kill9(n);
    return launch(n);
  }


  /// A start that must be refused: `edda node` for a node `o` (its name,
  /// default "refused") on `data_dir` and a free port, with the settings
  /// such a node would get, run until it exits (at most `limit`; then
  /// SIGKILL). Its exit code (-1: it did not exit by itself, e.g. it
  /// started) and its stdout and stderr. The fixture does not keep it.
  std::pair<int, std::string> run_until_exit(node_options o,
                                             const std::string& data_dir,
                                             milliseconds limit = seconds(20)) {
    cluster_node n;
    n.name = o.name.empty() ? "refused" : o.name;
    n.data_dir = data_dir;
    n.port = free_port();
    n.opts = std::move(o);
    node_launch l;
    l.binary = EDDA_BINARY;
    l.data_dir = n.data_dir;
    l.port = n.port;
    l.settings = settings_of(n);
    l.log_path = root_ + "/" + n.name + "-refused-"
                 + std::to_string(++refused_runs_) + ".log";
    auto p = spawn_node(l);
    if (p->pid < 0)
      return {-1, p->error};
    test::wait_listening(*p, limit); // reads stdout until it exits
    if (!test::wait_exit(*p, seconds(5)))
      test::kill9(*p);
    int code = WIFEXITED(p->status) && !p->exited_by_sigkill()
                 ? WEXITSTATUS(p->status)
                 : -1;
    return {code, p->out + read_file(l.log_path)};
  }

  /// Kills every node still running, stops every relay and etcd. What
  /// TearDown does; a test may call it to check that nothing is left.
  void stop_all() {
    for (auto& n : nodes_)
      kill9(*n);
    for (auto& n : nodes_) {
      if (n->etcd_relay)
        n->etcd_relay->stop();
      if (n->peer_relay)
        n->peer_relay->stop();
    }
    if (etcd_) {
      etcd_->stop();
      etcd_log_ = etcd_->log_tail(etcd_log_limit);
    }
  }

  // -- clients ----------------------------------------------------------------

  /// A client connection to `n` (at its own port, not through a relay; to
  /// its client door with clients_over_door_).
  caf::expected<client::connection>
  connect(const cluster_node& n, client::connect_options o = quick_options()) {
    if (clients_over_door_) {
      auto* p = n.process();
      o.door = true;
      return client::connection::open("127.0.0.1", p ? api_port_of(*p) : 0, o);
    }
    o.door = false;
    return client::connection::open("127.0.0.1", n.port, o);
  }

  /// Clients (connect) use the nodes' client doors: for nodes whose node
  /// port takes mutual TLS (network.tls_*).
  bool clients_over_door_ = false;

  /// The node's counter `name` (edda node status), 0 if absent or if `n`
  /// does not answer.
  uint64_t counter_of(const cluster_node& n, const std::string& name) {
    auto c = connect(n);
    if (!c)
      return 0;
    auto s = client::admin::node_status(*c);
    if (!s)
      return 0;
    auto i = s->counters().find(name);
    return i == s->counters().end() ? 0 : i->second;
  }

  /// Sends `m`, which must fail within a second (fail fast, never wait
  /// for a timeout); returns the error.
  caf::error send_fails_fast(client::producer& p, const client::message& m) {
    auto t0 = clock_type::now();
    auto r = p.send(m);
    auto took = ch::duration_cast<milliseconds>(clock_type::now() - t0);
    EXPECT_LT(took.count(), 1000) << "the failing send took that long";
    if (r) {
      ADD_FAILURE() << "the send to " << m.topic << " succeeded";
      return caf::error{};
    }
    return r.error();
  }

  /// The cluster as `n` sees it (edda cluster status); nullopt if `n` does
  /// not answer.
  std::optional<wire::v1::ClusterStatus> status_of(const cluster_node& n) {
    auto c = connect(n);
    if (!c)
      return std::nullopt;
    auto s = client::admin::cluster_status(*c);
    if (!s)
      return std::nullopt;
    return *s;
  }

  /// Node ids `n` lists as members whose links are up.
  std::set<std::string> connected_members(const cluster_node& n) {
    std::set<std::string> out;
    if (auto s = status_of(n))
      for (auto& m : s->members())
        if (m.connected())
          out.insert(m.node_id());
    return out;
  }

  /// A key ("key<i>") whose partition of the topic `info` is homed on
  /// `home`; empty if none of 10000 is.
  static std::string key_on(const wire::v1::TopicInfo& info,
                            const std::string& home) {
    auto n = static_cast<size_t>(info.partitions_size());
    for (int i = 0; n > 0 && i < 10000; ++i) {
      auto k = "key" + std::to_string(i);
      if (info.partitions(static_cast<int>(shard_of(k, n))).home() == home)
        return k;
    }
    return {};
  }

  /// How many of the partitions `from`.. of the topic `info` each node
  /// is home of.
  static std::map<std::string, int>
  partitions_per_home(const wire::v1::TopicInfo& info, int from = 0) {
    std::map<std::string, int> out;
    for (int i = from; i < info.partitions_size(); ++i)
      ++out[info.partitions(i).home()];
    return out;
  }

  /// key_on() for `topic` as `c` describes it; empty if it cannot.
  static std::string key_on(const client::connection& c,
                            const std::string& topic, const std::string& home) {
    auto info = client::admin::describe_topic(c, topic);
    return info ? key_on(*info, home) : std::string{};
  }

  /// Who owns `resource` ("group/<g>") in etcd and its fencing token
  /// (the key's create_revision); {"", 0} if nobody does.
  std::pair<std::string, int64_t> owner_in_etcd(const std::string& resource) {
    auto c = connect_etcd();
    if (!c)
      return {"", 0};
    auto r = (*c)->get("/edda/" + cluster_name() + "/owners/" + resource);
    if (!r || !r->first)
      return {"", 0};
    wire::v1::OwnerRecord rec;
    rec.ParseFromString(r->first->value);
    return {rec.node_id(), r->first->create_revision};
  }

  /// A coord client straight to etcd (not through any relay).
  caf::expected<coord::client_ptr> connect_etcd(milliseconds timeout
                                                = seconds(2)) const {
    return connect_etcd_at(etcd_address(), timeout);
  }

  /// A coord client to etcd at `address` ("127.0.0.1:PORT", e.g. a
  /// relay's address), with `timeout` to dial and for each call.
  static caf::expected<coord::client_ptr>
  connect_etcd_at(const std::string& address, milliseconds timeout) {
    coord::etcd_options opts;
    opts.endpoints = {address};
    opts.call_timeout = timeout;
    opts.dial_timeout = timeout;
    return coord::connect_etcd(opts);
  }

private:
  static constexpr size_t etcd_log_limit = size_t{1} << 24;


  /// The current test's name in [A-Za-z0-9_.-] and a random suffix, at
  /// most 64 characters (cluster.name's rule).
  static std::string unique_cluster_name() {
    std::string name = "t";
    if (auto* info = ::testing::UnitTest::GetInstance()->current_test_info())
      name = info->name();
    for (auto& c : name)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-'
          && c != '.')
        c = '-';
    name = name.substr(0, 48);
    std::mt19937_64 rng{std::random_device{}()};
    char suffix[17];
    std::snprintf(suffix, sizeof(suffix), "%016llx",
                  static_cast<unsigned long long>(rng()));
    return name + "-" + std::string{suffix, 12};
  }

  std::unique_ptr<relay> make_relay(uint16_t target, const std::string& what) {
    auto r = relay::start(0, "127.0.0.1", target);
    if (!r) {
      ADD_FAILURE() << "relay " << what << ": " << render(r.error());
      return nullptr;
    }
    return std::move(*r);
  }

  /// Starts a new process for `n` and waits for its listening line.
  bool launch(cluster_node& n) {
    node_launch l;
    l.binary = EDDA_BINARY;
    l.data_dir = n.data_dir;
    l.port = n.port;
    l.settings = settings_of(n);
    l.failpoints = n.opts.failpoints;
    l.log_path
      = root_ + "/" + n.name + "-" + std::to_string(n.runs.size()) + ".log";
    auto& p = *n.runs.emplace_back(spawn_node(l));
    if (p.pid < 0) {
      ADD_FAILURE() << n.name << ": " << p.error;
      return false;
    }
    // A node whose group was failed over listens once it took it back
    // (a full copy first): longer than a plain start.
    if (test::wait_listening(p, seconds(40)))
      return true;
    test::wait_exit(p, milliseconds(500));
    ADD_FAILURE() << n.name << " did not report listening ("
                  << p.describe_status() << "); stdout: " << p.out
                  << "; stderr: " << tail_of(read_file(p.log_path));
    kill9(n);
    return false;
  }

  void print_logs() {
    for (auto& n : nodes_)
      for (auto& p : n->runs)
        std::fprintf(stderr, "--- %s, pid %d (%s), stderr %s:\n%s\n",
                     n->name.c_str(), p->pid, p->describe_status().c_str(),
                     p->log_path.c_str(),
                     tail_of(read_file(p->log_path)).c_str());
    if (etcd_) {
      auto path = root_ + "/etcd.log";
      std::ofstream{path} << etcd_log_;
      std::fprintf(stderr, "--- etcd, log %s:\n%s\n", path.c_str(),
                   tail_of(etcd_log_).c_str());
    }
  }

  std::string prefix_;
  std::vector<std::string> settings_;
  std::string root_;
  std::string cluster_name_;
  std::unique_ptr<etcd_process> etcd_;
  std::string etcd_log_;
  std::vector<std::unique_ptr<cluster_node>> nodes_;
  int refused_runs_ = 0;
};

} // namespace edda::test
