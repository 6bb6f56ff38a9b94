// Small helpers every process-level test shares: polling with a deadline,
// free 127.0.0.1 ports, reading a log file, running code at scope exit, the
// seed of a fault test's random choices, a temp dir removed at the end.
// Header-only, no dependency beyond the C++ and POSIX libraries.
//
// Thread-safety: every function may be called from any thread.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

namespace edda::test {

namespace ch = std::chrono;
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

/// True if a socket can bind 127.0.0.1:port right now.
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

/// A port nothing listens on right now (0 on failure; another process may
/// take it before it is used). Preferably below the ephemeral range: while
/// a server is down, its clients keep connecting to its port, and a connect
/// from an ephemeral port to an unused port in that range can connect to
/// itself (TCP simultaneous open) and then hold the port the restarted
/// server needs. Falls back to binding port 0.
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

/// The whole file ("" if it cannot be read).
inline std::string read_file(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The last `n` bytes of `text`, "..." in front when cut.
inline std::string tail_of(const std::string& text, size_t n = 3000) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

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

/// A fresh directory under /tmp ("/tmp/<prefix>-XXXXXX"), removed with
/// everything in it.
class temp_dir {
public:
  explicit temp_dir(const std::string& prefix = "edda-test") {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  [[nodiscard]] const std::string& path() const {
    return path_;
  }

private:
  std::string path_;
};

} // namespace edda::test
