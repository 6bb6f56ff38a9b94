#include "etcd_process.hpp"

#include "base/errc.hpp"
#include "coord/etcd.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <sstream>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#ifndef EDDA_ETCD_BINARY
#error "EDDA_ETCD_BINARY must name the etcd binary"
#endif
#ifndef EDDA_ETCDCTL_BINARY
#error "EDDA_ETCDCTL_BINARY must name the etcdctl binary"
#endif

namespace edda::test {

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

std::string url(uint16_t port) {
  return "http://127.0.0.1:" + std::to_string(port);
}

/// Forks and execs `argv[0]` with stdout and stderr to `out_path`
/// (appended). The child dies with the calling thread. 0 on failure.
pid_t spawn(const std::vector<std::string>& args, const std::string& out_path,
            bool die_with_parent) {
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  auto parent = ::getpid();
  auto pid = ::fork();
  if (pid != 0)
    return pid < 0 ? 0 : pid;
  // Child: only async-signal-safe calls until exec.
  if (die_with_parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
      ::_exit(127);
  }
  int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) {
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::close(fd);
  }
  int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd >= 0)
    ::dup2(null_fd, STDIN_FILENO);
  ::execv(argv[0], argv.data());
  ::_exit(127);
}

/// True if `pid` exited (and was reaped) by now.
bool reap(pid_t pid, bool block) {
  int status = 0;
  for (;;) {
    auto r = ::waitpid(pid, &status, block ? 0 : WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD))
      return true;
    if (r < 0 && errno == EINTR)
      continue;
    return false;
  }
}

} // namespace

caf::expected<std::unique_ptr<etcd_process>> etcd_process::start() {
  std::unique_ptr<etcd_process> p{new etcd_process};
  auto tmp = std::filesystem::temp_directory_path() / "edda-etcd-XXXXXX";
  std::string templ = tmp.string();
  if (::mkdtemp(templ.data()) == nullptr)
    return make_error(errc::unavailable, std::string{"etcd_process: mkdtemp: "}
                                           + std::strerror(errno));
  p->dir_ = templ;
  p->data_dir_ = p->dir_ + "/data";
  p->log_path_ = p->dir_ + "/etcd.log";
  caf::error err;
  for (int attempt = 0; attempt < 5; ++attempt) {
    p->client_port_ = free_port();
    p->peer_port_ = free_port();
    if (p->client_port_ == 0 || p->peer_port_ == 0
        || p->client_port_ == p->peer_port_)
      continue;
    err = p->launch();
    if (!err)
      return p;
    if (!p->exited_during_start_)
      return err;
    // Maybe a port was taken in between: start afresh on new ones.
    std::error_code ec;
    std::filesystem::remove_all(p->data_dir_, ec);
  }
  return err;
}

caf::error etcd_process::launch() {
  std::vector<std::string> args{
    EDDA_ETCD_BINARY,
    "--name",
    "t",
    "--data-dir",
    data_dir_,
    "--listen-client-urls",
    url(client_port_),
    "--advertise-client-urls",
    url(client_port_),
    "--listen-peer-urls",
    url(peer_port_),
    "--initial-advertise-peer-urls",
    url(peer_port_),
    "--initial-cluster",
    "t=" + url(peer_port_),
    "--heartbeat-interval",
    "10",
    "--election-timeout",
    "50",
    "--logger",
    "zap",
  };
  {
    std::ofstream log(log_path_, std::ios::app);
    log << "=== etcd_process: starting on client port " << client_port_
        << ", peer port " << peer_port_ << "\n";
  }
  exited_during_start_ = false;
  pid_ = spawn(args, log_path_, true);
  if (pid_ == 0)
    return make_error(errc::unavailable, std::string{"etcd_process: fork: "}
                                           + std::strerror(errno));
  // Ready when a client read succeeds (a leader is elected); bounded.
  auto deadline = steady::now() + 10s;
  coord::etcd_options opts;
  opts.endpoints = {endpoint()};
  opts.call_timeout = 200ms;
  opts.dial_timeout = 200ms;
  caf::error last;
  while (steady::now() < deadline) {
    if (reap(pid_, false)) {
      pid_ = 0;
      exited_during_start_ = true;
      return make_error(errc::unavailable,
                        "etcd_process: etcd exited during start; log:\n"
                          + log_tail());
    }
    auto c = coord::connect_etcd(opts);
    if (c)
      return {};
    last = c.error();
  }
  kill9();
  return make_error(errc::unavailable,
                    "etcd_process: etcd did not answer within 10 s ("
                      + render(last) + "); log:\n" + log_tail());
}

etcd_process::~etcd_process() {
  stop();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string etcd_process::endpoint() const {
  return url(client_port_);
}

void etcd_process::stop() {
  if (pid_ == 0)
    return;
  ::kill(pid_, SIGTERM);
  ::kill(pid_, SIGCONT);
  auto deadline = steady::now() + 5s;
  while (steady::now() < deadline) {
    if (reap(pid_, false)) {
      pid_ = 0;
      return;
    }
    std::this_thread::sleep_for(5ms);
  }
  kill9();
}

void etcd_process::kill9() {
  if (pid_ == 0)
    return;
  ::kill(pid_, SIGKILL);
  reap(pid_, true);
  pid_ = 0;
}

void etcd_process::pause() {
  if (pid_ == 0)
    return;
  ::kill(pid_, SIGSTOP);
  // A signal is delivered some time after kill() returns: wait for it.
  int status = 0;
  while (::waitpid(pid_, &status, WUNTRACED) == pid_ && !WIFSTOPPED(status)) {
  }
}

void etcd_process::resume() {
  if (pid_ == 0)
    return;
  ::kill(pid_, SIGCONT);
  int status = 0;
  while (::waitpid(pid_, &status, WCONTINUED) == pid_
         && !WIFCONTINUED(status)) {
  }
}

caf::error etcd_process::restart() {
  stop();
  return launch();
}

caf::expected<std::string>
etcd_process::etcdctl(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{EDDA_ETCDCTL_BINARY,
                                "--endpoints=" + endpoint(),
                                "--dial-timeout=2s", "--command-timeout=5s"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto out_path = dir_ + "/etcdctl.out";
  std::error_code ec;
  std::filesystem::remove(out_path, ec);
  auto pid = spawn(argv, out_path, false);
  if (pid == 0)
    return make_error(errc::unavailable, "etcdctl: fork failed");
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  auto out = read_file(out_path);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return make_error(errc::unavailable, "etcdctl failed: " + out);
  return out;
}

std::string etcd_process::log_tail(size_t max_bytes) const {
  auto text = read_file(log_path_);
  if (text.size() > max_bytes)
    text.erase(0, text.size() - max_bytes);
  return text;
}

} // namespace edda::test
