#include "node_child.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

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
  // "..., client api (gRPC) on 127.0.0.1:PORT"
  auto api = buf.find("client api (gRPC) on ");
  if (api != std::string::npos) {
    auto tail = buf.substr(api + 21);
    n.api_endpoint = tail.substr(0, tail.find_first_of(" \r\n"));
  }
  return n;
}

namespace {

uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0
      && ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

} // namespace

etcd_child start_etcd() {
  etcd_child e;
  auto tmpl = std::string{"/tmp/edda-bench-etcd-XXXXXX"};
  if (mkdtemp(tmpl.data()) == nullptr) {
    std::cerr << "edda bench: cannot create a temporary dir for etcd\n";
    return e;
  }
  e.dir = tmpl;
  auto client = free_port(), peer = free_port();
  auto curl = "http://127.0.0.1:" + std::to_string(client);
  auto purl = "http://127.0.0.1:" + std::to_string(peer);
  std::fflush(nullptr);
  auto pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    int log = ::open((e.dir + "/etcd.log").c_str(),
                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log >= 0) {
      dup2(log, 1);
      dup2(log, 2);
    }
    std::vector<std::string> args{"etcd", "--name", "bench", "--data-dir",
                                  e.dir + "/data", "--listen-client-urls",
                                  curl, "--advertise-client-urls", curl,
                                  "--listen-peer-urls", purl,
                                  "--initial-advertise-peer-urls", purl,
                                  "--initial-cluster", "bench=" + purl,
                                  "--heartbeat-interval", "10",
                                  "--election-timeout", "50"};
    std::vector<char*> cargs;
    for (auto& a : args)
      cargs.push_back(a.data());
    cargs.push_back(nullptr);
    execvp("etcd", cargs.data());
    _exit(127);
  }
  e.pid = pid;
  auto endpoint = "127.0.0.1:" + std::to_string(client);
  // Ready when the client port accepts a connection (etcd listens once it
  // serves), at most 10 s.
  for (int i = 0; i < 200; ++i) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      std::cerr << "edda bench: etcd exited at start (is etcd-server "
                   "installed? scripts/setup installs it); see "
                << e.dir << "/etcd.log\n";
      e.pid = -1;
      return e;
    }
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(client);
    bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr))
              == 0;
    ::close(fd);
    if (up) {
      e.endpoint = endpoint;
      return e;
    }
    ::usleep(50000);
  }
  std::cerr << "edda bench: etcd did not listen within 10 s\n";
  stop_etcd(e);
  return e;
}

void stop_etcd(etcd_child& e) {
  if (e.pid > 0) {
    ::kill(e.pid, SIGTERM);
    waitpid(e.pid, nullptr, 0);
    e.pid = -1;
  }
  if (!e.dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(e.dir, ec);
  }
}

std::vector<std::string>
cluster_node_settings(std::vector<std::string> base, const std::string& etcd,
                      const std::string& name, uint64_t index,
                      uint64_t replication, uint64_t min_insync,
                      bool failover) {
  base.push_back("cluster.etcd=" + etcd);
  base.push_back("cluster.name=" + name);
  base.push_back("node.name=n" + std::to_string(index));
  base.push_back("cluster.lease_ttl=3s");
  base.push_back("cluster.replication_factor=" + std::to_string(replication));
  base.push_back("cluster.min_insync=" + std::to_string(min_insync));
  base.push_back(std::string{"cluster.failover="}
                 + (failover ? "auto" : "off"));
  return base;
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
