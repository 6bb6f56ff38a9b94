#include "node_child.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>

namespace edda::bench {

namespace {

/// Removes data dirs of earlier runs that were killed before they could
/// clean up (/tmp/edda-bench-<pid>-*, with <pid> no longer running).
void remove_stale_dirs() {
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator("/tmp", ec)) {
    auto name = e.path().filename().string();
    if (name.rfind("edda-bench-", 0) != 0)
      continue;
    auto rest = name.substr(11);
    auto dash = rest.find('-');
    if (dash == std::string::npos)
      continue;
    pid_t pid = 0;
    try {
      pid = static_cast<pid_t>(std::stol(rest.substr(0, dash)));
    } catch (...) {
      continue;
    }
    if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) {
      std::error_code ignored;
      std::filesystem::remove_all(e.path(), ignored);
      std::filesystem::remove_all(e.path().string() + "-floor", ignored);
    }
  }
}

} // namespace

/// Starts `edda node` and reads its listening line. Empty endpoint on error
/// (the reason goes to stderr).
node_process start_node(const std::string& self_exe,
                        const std::string& durability,
                        const std::string& data_dir,
                        const std::vector<std::string>& settings) {
  node_process n;
  n.data_dir = data_dir;
  if (n.data_dir.empty()) {
    remove_stale_dirs();
    auto tmpl = "/tmp/edda-bench-" + std::to_string(::getpid()) + "-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::cerr << "edda bench: cannot create a temporary data dir in /tmp\n";
      return n;
    }
    n.data_dir = tmpl;
    n.owns_dir = true;
  }
  int fds[2];
  if (pipe(fds) != 0)
    return n;
  std::fflush(nullptr);
  auto pid = fork();
  if (pid == 0) {
    // The node goes when the driver goes, however it ends.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0)
      dup2(devnull, 2); // the node's log; errors show up as no ready line
    std::vector<std::string> args{self_exe, "node", "--set",
                                  "node.data_dir=" + n.data_dir, "--set",
                                  "node.listen_port=0", "--set",
                                  "storage.durability=" + durability};
    for (auto& s : settings) {
      args.push_back("--set");
      args.push_back(s);
    }
    std::vector<char*> cargs;
    for (auto& a : args)
      cargs.push_back(a.data());
    cargs.push_back(nullptr);
    execv(self_exe.c_str(), cargs.data());
    _exit(127);
  }
  ::close(fds[1]);
  n.pid = pid;
  std::string buf;
  char c;
  while (::read(fds[0], &c, 1) == 1 && c != '\n')
    buf += c;
  ::close(fds[0]);
  // "edda node listening on 127.0.0.1:PORT (...)"
  auto at = buf.find("listening on ");
  if (at == std::string::npos) {
    std::cerr << "edda bench: the node did not start (" << self_exe
              << " node --set " << "node.data_dir=" << n.data_dir
              << "); run it by hand to see why\n";
    ::kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    n.pid = -1;
    return n;
  }
  auto rest = buf.substr(at + 13);
  n.endpoint = rest.substr(0, rest.find(' '));
  return n;
}

void stop_node(node_process& n) {
  if (n.pid > 0) {
    ::kill(n.pid, SIGTERM);
    waitpid(n.pid, nullptr, 0);
  }
  if (n.owns_dir) {
    std::error_code ec;
    std::filesystem::remove_all(n.data_dir, ec);
  }
}

} // namespace edda::bench
