// What the fault tests share: `edda node` as a child process of the test
// (fork + exec, its stdout read for the listening line, kill -9 and reap),
// a fixture that owns a temp dir, a data dir and a free port and kills every
// node it started in TearDown (keeping the dir and printing the node logs
// when the test failed), and small polling helpers.
#pragma once

#include "client/connection.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace edda::fault {

namespace ch = std::chrono;
namespace fs = std::filesystem;
using clock_type = ch::steady_clock;
using ch::milliseconds;
using ch::seconds;

/// Polls `pred` every `step` until it holds or `timeout` passes.
inline bool eventually(milliseconds timeout,
                       const std::function<bool()>& pred,
                       milliseconds step = milliseconds(20)) {
  auto deadline = clock_type::now() + timeout;
  for (;;) {
    if (pred())
      return true;
    if (clock_type::now() >= deadline)
      return false;
    std::this_thread::sleep_for(step);
  }
}

/// The seed of a fault test's random choices: $EDDA_FAULT_SEED if set (to
/// replay a run), else a fresh one. Printed either way.
inline uint64_t fault_seed() {
  uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("EDDA_FAULT_SEED"))
    seed = std::strtoull(s, nullptr, 10);
  std::printf("[ seed     ] EDDA_FAULT_SEED=%llu\n",
              static_cast<unsigned long long>(seed));
  return seed;
}

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

inline bool can_bind(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

/// A port nothing listens on right now. Preferably below the ephemeral
/// range: while the node is down, the client keeps connecting to its port,
/// and a connect from an ephemeral port to an unused port in that range can
/// connect to itself (TCP simultaneous open) and then hold the port the
/// restarted node needs. Falls back to binding port 0.
inline uint16_t free_port() {
  unsigned low = 32768;
  std::ifstream range{"/proc/sys/net/ipv4/ip_local_port_range"};
  range >> low;
  if (low > 11000) {
    std::mt19937 rng{std::random_device{}()};
    std::uniform_int_distribution<unsigned> pick{10000, low - 1};
    for (int i = 0; i < 50; ++i) {
      auto port = static_cast<uint16_t>(pick(rng));
      if (can_bind(port))
        return port;
    }
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0
      && ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string tail_of(const std::string& text, size_t n = 3000) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

/// A short connect/request timeout: admin calls must fail fast, not after
/// the default 30 s, when the node is not there.
inline client::connect_options quick_options() {
  client::connect_options o;
  o.request_timeout = seconds(5);
  return o;
}

// -- the node as a child process ------------------------------------------------

struct node_process {
  pid_t pid = -1;
  int out_fd = -1;       // read end of the child's stdout
  std::string log_path;  // the child's stderr
  std::string out;       // stdout read so far
  bool reaped = false;
  int status = 0;        // waitpid status once reaped

  bool exited_by_sigkill() const {
    return reaped && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  }
  bool exited_nonzero() const {
    return reaped && WIFEXITED(status) && WEXITSTATUS(status) != 0;
  }
  std::string describe_status() const {
    if (!reaped)
      return "running";
    if (WIFEXITED(status))
      return "exit code " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status))
      return "signal " + std::to_string(WTERMSIG(status));
    return "status " + std::to_string(status);
  }
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
  /// (with the fixture's `--set` settings). The
  /// child execs right away, so it starts without any of our CAF threads.
  node_process& start_node(const std::string& data_dir, uint16_t port,
                           const std::string& failpoints = {}) {
    auto n = std::make_unique<node_process>();
    n->log_path = root_ + "/node-" + std::to_string(nodes_.size()) + ".log";
    std::vector<std::string> args = {EDDA_BINARY,  "node",
                                     "--data-dir", data_dir,
                                     "--listen",   "127.0.0.1:"
                                                     + std::to_string(port)};
    for (auto& s : settings_) {
      args.emplace_back("--set");
      args.push_back(s);
    }
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e)
      if (std::strncmp(*e, "EDDA_FAILPOINTS=", 16) != 0)
        env.emplace_back(*e);
    if (!failpoints.empty())
      env.push_back("EDDA_FAILPOINTS=" + failpoints);
    // Everything the child needs is built before fork: between fork and exec
    // a child of a multi-threaded process may only make plain system calls.
    std::vector<char*> argv, envp;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env)
      envp.push_back(e.data());
    envp.push_back(nullptr);
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe2: " << std::strerror(errno);
      return *nodes_.emplace_back(std::move(n));
    }
    int log_fd = ::open(n->log_path.c_str(),
                        O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid == 0) {
      // If the test dies (ctest timeout, crash), take the node with it.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent)
        ::_exit(126);
      ::dup2(null_fd, 0);
      ::dup2(out[1], 1);
      ::dup2(log_fd, 2);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(log_fd);
    ::close(null_fd);
    if (pid < 0) {
      ADD_FAILURE() << "fork: " << std::strerror(errno);
      ::close(out[0]);
      return *nodes_.emplace_back(std::move(n));
    }
    n->pid = pid;
    n->out_fd = out[0];
    return *nodes_.emplace_back(std::move(n));
  }

  /// Reads the child's stdout until its "listening" line. False if the child
  /// closed stdout (it exited) or the deadline passed.
  bool wait_listening(node_process& n, milliseconds timeout) {
    auto deadline = clock_type::now() + timeout;
    auto ready = [&] {
      auto at = n.out.find("listening on");
      return at != std::string::npos
             && n.out.find('\n', at) != std::string::npos;
    };
    while (!ready()) {
      auto left = ch::duration_cast<milliseconds>(deadline - clock_type::now());
      if (n.out_fd < 0 || left.count() <= 0)
        return false;
      pollfd p{n.out_fd, POLLIN, 0};
      int rc = ::poll(&p, 1, static_cast<int>(left.count()));
      if (rc < 0 && errno == EINTR)
        continue;
      if (rc <= 0)
        return false;
      char buf[512];
      auto got = ::read(n.out_fd, buf, sizeof(buf));
      if (got < 0 && errno == EINTR)
        continue;
      if (got <= 0)
        return false; // EOF: the node exited
      n.out.append(buf, static_cast<size_t>(got));
    }
    return true;
  }

  /// Polls for the child's exit. True once it is reaped.
  bool wait_exit(node_process& n, milliseconds timeout) {
    return eventually(timeout, [&] {
      if (n.reaped)
        return true;
      if (n.pid <= 0)
        return false;
      int status = 0;
      auto rc = ::waitpid(n.pid, &status, WNOHANG);
      if (rc == n.pid) {
        n.reaped = true;
        n.status = status;
        ::close(n.out_fd);
        n.out_fd = -1;
      }
      return n.reaped;
    }, milliseconds(5));
  }

  /// kill -9 and reap (SIGKILL also ends a SIGSTOPped process).
  void kill9(node_process& n) {
    if (n.pid <= 0 || n.reaped)
      return;
    ::kill(n.pid, SIGKILL);
    if (!wait_exit(n, seconds(10)))
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
  std::vector<std::unique_ptr<node_process>> nodes_;

private:
  std::string prefix_;
  std::vector<std::string> settings_;
};

/// Runs `f` at scope exit (stops helper threads before their state goes,
/// also when an ASSERT returns early).
template <class F>
struct at_exit {
  F f;
  ~at_exit() {
    f();
  }
};
template <class F>
at_exit(F) -> at_exit<F>;

} // namespace edda::fault
