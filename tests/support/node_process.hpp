// `edda node` as a child process of a test: fork + exec with its stdout read
// for the "listening on" line and its stderr in a log file, kill -9 and
// reap, SIGSTOP and SIGCONT. Used by the fault tests (fault/node_process.hpp)
// and the cluster fixture (cluster/cluster_fixture.hpp).
//
// Thread-safety: none; one test thread drives a node_process. The child is
// started with PR_SET_PDEATHSIG, so it dies with the thread that started it
// (a ctest timeout or a crash of the test leaves no node behind).
//
// Errors: spawn_node() returns a node_process with pid -1 and says why in
// its `error`; the waits return false when their deadline passes.
#pragma once

#include "client/connection.hpp"
#include "util.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

extern char** environ;

namespace edda::test {

/// A short connect/request timeout: admin calls must fail fast, not after
/// the default 30 s, when the node is not there. Over the node port (the
/// port tests pass with these); set door for the client door.
inline client::connect_options quick_options() {
  client::connect_options o;
  o.request_timeout = seconds(5);
  o.door = false;
  return o;
}

struct node_process {
  pid_t pid = -1;
  int out_fd = -1;       // read end of the child's stdout
  std::string log_path;  // the child's stderr
  std::string out;       // stdout read so far
  bool reaped = false;
  int status = 0;        // waitpid status once reaped
  bool paused = false;   // stopped by pause(), not resumed yet
  std::string error;     // why the spawn failed (pid -1)

  bool exited_by_sigkill() const {
    return reaped && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  }
  bool exited_nonzero() const {
    return reaped && WIFEXITED(status) && WEXITSTATUS(status) != 0;
  }
  std::string describe_status() const {
    if (!reaped)
      return paused ? "paused (SIGSTOP)" : "running";
    if (WIFEXITED(status))
      return "exit code " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status))
      return "signal " + std::to_string(WTERMSIG(status));
    return "status " + std::to_string(status);
  }
};

/// What to run: `BINARY node --data-dir DIR --listen 127.0.0.1:PORT` (the
/// client door on an OS-picked port) with `--set S` for each of `settings`, stderr to `log_path`, and
/// EDDA_FAILPOINTS=`failpoints` in the environment (unset when empty).
struct node_launch {
  std::string binary;
  std::string data_dir;
  uint16_t port = 0;
  uint16_t api_port = 0; ///< the client door's; 0: the OS picks one
  std::vector<std::string> settings;
  std::string failpoints;
  std::string log_path;
};

/// fork + exec of the node. The child execs right away, so it starts
/// without any of the test's threads. On failure pid is -1 and `error` set.
inline std::unique_ptr<node_process> spawn_node(const node_launch& l) {
  auto n = std::make_unique<node_process>();
  n->log_path = l.log_path;
  std::vector<std::string> args = {l.binary,     "node",
                                   "--data-dir", l.data_dir,
                                   "--listen",   "127.0.0.1:"
                                                   + std::to_string(l.port),
                                   // The client door on a port of its own
                                   // (auto, port + 10, may be taken).
                                   "--set",
                                   "api.listen=127.0.0.1:"
                                     + std::to_string(l.api_port),
                                   // The admin port: the OS picks.
                                   "--set", "node.admin_listen=127.0.0.1:0"};
  for (auto& s : l.settings) {
    args.emplace_back("--set");
    args.push_back(s);
  }
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "EDDA_FAILPOINTS=", 16) != 0)
      env.emplace_back(*e);
  if (!l.failpoints.empty())
    env.push_back("EDDA_FAILPOINTS=" + l.failpoints);
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
    n->error = std::string{"pipe2: "} + std::strerror(errno);
    return n;
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
  int fork_errno = errno;
  ::close(out[1]);
  ::close(log_fd);
  ::close(null_fd);
  if (pid < 0) {
    n->error = std::string{"fork: "} + std::strerror(fork_errno);
    ::close(out[0]);
    return n;
  }
  n->pid = pid;
  n->out_fd = out[0];
  return n;
}

/// Reads the child's stdout until its "listening" line. False if the child
/// closed stdout (it exited) or the deadline passed.
inline bool wait_listening(node_process& n, milliseconds timeout) {
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

/// The port after `mark` ("... on HOST:PORT") in the node's listening
/// line, 0 if there is none (call after wait_listening).
inline uint16_t port_in_line(const node_process& n, const std::string& mark) {
  auto at = n.out.rfind(mark);
  if (at == std::string::npos)
    return 0;
  auto colon = n.out.find(':', at + mark.size());
  auto end = n.out.find_first_not_of("0123456789", colon + 1);
  if (colon == std::string::npos || end == colon + 1)
    return 0;
  return static_cast<uint16_t>(
    std::stoul(n.out.substr(colon + 1, end - colon - 1)));
}

/// The client door's port ("client api (gRPC) on HOST:PORT"), 0 if none.
inline uint16_t api_port_of(const node_process& n) {
  return port_in_line(n, "client api (gRPC) on ");
}

/// The admin port ("admin (HTTP) on HOST:PORT"), 0 if none.
inline uint16_t admin_port_of(const node_process& n) {
  return port_in_line(n, "admin (HTTP) on ");
}

/// Records a waitpid status of `n`: its exit, a stop or a continue.
inline void note_status(node_process& n, int status) {
  if (WIFSTOPPED(status)) {
    n.paused = true;
  } else if (WIFCONTINUED(status)) {
    n.paused = false;
  } else {
    n.reaped = true;
    n.paused = false;
    n.status = status;
    if (n.out_fd >= 0)
      ::close(n.out_fd);
    n.out_fd = -1;
  }
}

/// Polls for the child's exit. True once it is reaped.
inline bool wait_exit(node_process& n, milliseconds timeout) {
  return eventually(timeout, [&] {
    if (n.reaped)
      return true;
    if (n.pid <= 0)
      return false;
    int status = 0;
    auto rc = ::waitpid(n.pid, &status, WNOHANG);
    if (rc == n.pid)
      note_status(n, status);
    return n.reaped;
  }, milliseconds(5));
}

/// SIGSTOP: the node keeps its sockets but runs no more (peers see a hung
/// process, not a dead one). True once it is stopped; false if it exited
/// or did not stop within `timeout`.
inline bool pause(node_process& n, milliseconds timeout) {
  if (n.pid <= 0 || n.reaped)
    return false;
  if (n.paused)
    return true;
  ::kill(n.pid, SIGSTOP);
  eventually(timeout, [&] {
    int status = 0;
    if (::waitpid(n.pid, &status, WNOHANG | WUNTRACED) == n.pid)
      note_status(n, status);
    return n.paused || n.reaped;
  }, milliseconds(1));
  return n.paused;
}

/// SIGCONT after pause(). True once the node runs again; false if it
/// exited or did not continue within `timeout`.
inline bool resume(node_process& n, milliseconds timeout) {
  if (n.pid <= 0 || n.reaped)
    return false;
  if (!n.paused)
    return true;
  ::kill(n.pid, SIGCONT);
  eventually(timeout, [&] {
    int status = 0;
    if (::waitpid(n.pid, &status, WNOHANG | WCONTINUED) == n.pid)
      note_status(n, status);
    return !n.paused || n.reaped;
  }, milliseconds(1));
  return !n.paused && !n.reaped;
}

/// kill -9 and reap (SIGKILL also ends a SIGSTOPped process). True when
/// the node is gone (or was never started); false if it did not die
/// within 10 s.
inline bool kill9(node_process& n) {
  if (n.pid <= 0 || n.reaped)
    return true;
  ::kill(n.pid, SIGKILL);
  return wait_exit(n, seconds(10));
}

} // namespace edda::test
