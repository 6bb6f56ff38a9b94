// What the fault tests share: a fixture that owns a temp dir, a data dir and
// a free port, starts `edda node` as a child process (support/
// node_process.hpp) and kills every node it started in TearDown (keeping
// the dir and printing the node logs when the test failed); the seed of a
// test's random choices; and the shared helpers (support/util.hpp) under
// their old names in edda::fault.
#pragma once

#include "support/node_process.hpp"
#include "support/util.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace edda::fault {

namespace ch = std::chrono;
namespace fs = std::filesystem;
using ch::milliseconds;
using ch::seconds;
using test::at_exit;
using test::can_bind;
using test::clock_type;
using test::eventually;
using test::fault_seed;
using test::free_port;
using test::node_process;
using test::quick_options;
using test::read_file;
using test::tail_of;


/// Random choices of a fault test (kill points, delays), from its seed.
class random_points {
public:
  explicit random_points(uint64_t seed) : rng_(seed) {}
  /// Uniform in [lo, hi].
  int operator()(int lo, int hi) {
    return std::uniform_int_distribution<int>{lo, hi}(rng_);
  }

private:
  std::mt19937_64 rng_;
};

/// A temp root with `data/`, a free port, and every node started from here
/// killed at the end. `prefix` names the temp dir; `settings` are passed to
/// every node as `--set KEY=VALUE`.
class NodeFixture : public ::testing::Test {
protected:
  explicit NodeFixture(std::string prefix, std::vector<std::string> settings = {})
    : prefix_(std::move(prefix)), settings_(std::move(settings)) {
  }

  void SetUp() override {
    std::string tmpl
      = (fs::temp_directory_path() / (prefix_ + "-XXXXXX")).string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    ASSERT_NE(::mkdtemp(buf.data()), nullptr) << std::strerror(errno);
    root_ = buf.data();
    data_dir_ = root_ + "/data";
    port_ = free_port();
    ASSERT_NE(port_, 0);
    do
      api_port_ = free_port();
    while (api_port_ == port_);
    ASSERT_NE(api_port_, 0);
  }

  void TearDown() override {
    // Kill every node we started, also when the test failed half way.
    for (auto& n : nodes_)
      kill9(*n);
    if (HasFailure()) {
      for (auto& n : nodes_)
        std::fprintf(stderr, "--- node %d (%s), stderr %s:\n%s\n", n->pid,
                     n->describe_status().c_str(), n->log_path.c_str(),
                     tail_of(read_file(n->log_path)).c_str());
      std::fprintf(stderr, "kept %s for inspection\n", root_.c_str());
      return;
    }
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  /// fork + exec of `edda node --data-dir DIR --listen 127.0.0.1:PORT`
  /// (with the fixture's `--set` settings).
  node_process& start_node(const std::string& data_dir, uint16_t port,
                           const std::string& failpoints = {}) {
    test::node_launch l;
    l.binary = EDDA_BINARY;
    l.data_dir = data_dir;
    l.port = port;
    l.api_port = port == port_ ? api_port_ : 0; // kept across restarts
    l.settings = settings_;
    l.failpoints = failpoints;
    l.log_path = root_ + "/node-" + std::to_string(nodes_.size()) + ".log";
    auto& n = *nodes_.emplace_back(test::spawn_node(l));
    if (n.pid < 0)
      ADD_FAILURE() << n.error;
    return n;
  }

  /// Reads the child's stdout until its "listening" line. False if the child
  /// closed stdout (it exited) or the deadline passed.
  bool wait_listening(node_process& n, milliseconds timeout) {
    return test::wait_listening(n, timeout);
  }

  /// Polls for the child's exit. True once it is reaped.
  bool wait_exit(node_process& n, milliseconds timeout) {
    return test::wait_exit(n, timeout);
  }

  /// kill -9 and reap (SIGKILL also ends a SIGSTOPped process).
  void kill9(node_process& n) {
    if (!test::kill9(n))
      ADD_FAILURE() << "node " << n.pid << " did not die after SIGKILL";
  }

  /// Starts a node on our data dir and port and waits for its listening line.
  node_process& start_listening_node(const std::string& failpoints = {}) {
    auto& n = start_node(data_dir_, port_, failpoints);
    if (!wait_listening(n, seconds(20))) {
      wait_exit(n, milliseconds(500));
      ADD_FAILURE() << "node did not report listening (" << n.describe_status()
                    << "); stdout: " << n.out
                    << "; stderr: " << tail_of(read_file(n.log_path));
    }
    return n;
  }

  /// A client connection to the node on port_: over its client door, or
  /// its node port (short request timeout).
  caf::expected<client::connection> open_client(bool door) {
    auto o = test::quick_options();
    o.door = door;
    return client::connection::open("127.0.0.1", door ? api_port_ : port_, o);
  }

  /// Every node's stderr, in start order.
  std::string all_node_logs() {
    std::string out;
    for (auto& n : nodes_)
      out += read_file(n->log_path);
    return out;
  }

  std::string root_;
  std::string data_dir_;
  uint16_t port_ = 0;
  uint16_t api_port_ = 0; // the client door of the node on port_
  std::vector<std::unique_ptr<node_process>> nodes_;

private:
  std::string prefix_;
  std::vector<std::string> settings_;
};

} // namespace edda::fault
