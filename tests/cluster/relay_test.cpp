// The fault-injection relay (relay.hpp) in front of an echo server on
// 127.0.0.1: forwarding, cut (held, sockets open), restore, reset (RST),
// delay, many connections, the connection limit, stop.
#include "base/errc.hpp"
#include "relay.hpp"
#include "support/util.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <gtest/gtest.h>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace edda::test {
namespace {

using namespace std::chrono_literals;

/// Echoes every byte back on each connection; closes a connection on EOF.
/// One thread, a poll loop; stopped in the destructor.
class echo_server {
public:
  echo_server() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr))
          == 0
        && ::listen(listen_fd_, 128) == 0
        && ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len)
             == 0)
      port_ = ntohs(addr.sin_port);
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread{[this] {
      run();
    }};
  }

  ~echo_server() {
    stop_ = true;
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof(one));
    thread_.join();
    for (int fd : conns_)
      ::close(fd);
    ::close(listen_fd_);
    ::close(wake_fd_);
  }

  uint16_t port() const {
    return port_;
  }
  /// Connections accepted so far.
  int accepted() const {
    return accepted_;
  }
  /// Connections open now.
  int open() const {
    return open_;
  }

private:
  void run() {
    std::vector<pollfd> fds;
    while (!stop_) {
      fds.clear();
      fds.push_back(pollfd{wake_fd_, POLLIN, 0});
      fds.push_back(pollfd{listen_fd_, POLLIN, 0});
      for (int fd : conns_)
        fds.push_back(pollfd{fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), -1) < 0)
        continue;
      std::vector<int> keep;
      if (fds[1].revents != 0) {
        int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          keep.push_back(fd);
          ++accepted_;
        }
      }
      for (size_t i = 2; i < fds.size(); ++i) {
        int fd = fds[i].fd;
        if (fds[i].revents == 0) {
          keep.push_back(fd);
          continue;
        }
        char buf[16384];
        auto n = ::recv(fd, buf, sizeof(buf), 0);
        if (n > 0 && send_all(fd, std::string(buf, n))) {
          keep.push_back(fd);
          continue;
        }
        ::close(fd); // EOF, RST or a failed send
      }
      conns_.swap(keep);
      open_ = static_cast<int>(conns_.size());
    }
  }

  static bool send_all(int fd, const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      auto n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  int listen_fd_ = -1;
  int wake_fd_ = -1;
  uint16_t port_ = 0;
  std::vector<int> conns_; // the loop's
  std::atomic<int> accepted_{0};
  std::atomic<int> open_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// A client socket connected to 127.0.0.1:port (blocking); closed at the end.
struct client_socket {
  int fd = -1;
  explicit client_socket(uint16_t port) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ~client_socket() {
    if (fd >= 0)
      ::close(fd);
  }
  client_socket(const client_socket&) = delete;
  client_socket& operator=(const client_socket&) = delete;

  bool send(const std::string& data) const {
    size_t off = 0;
    while (off < data.size()) {
      auto n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  /// What a read with a deadline saw.
  struct got {
    std::string data;
    bool eof = false;
    int error = 0; ///< errno of a failed recv (ECONNRESET, ...)
    bool timed_out() const {
      return !eof && error == 0;
    }
  };

  /// Reads until `n` bytes came, the peer closed, or `timeout` passed.
  got read(size_t n, milliseconds timeout) const {
    got g;
    auto deadline = clock_type::now() + timeout;
    while (g.data.size() < n) {
      auto left = ch::duration_cast<milliseconds>(deadline - clock_type::now());
      if (left.count() <= 0)
        break;
      pollfd p{fd, POLLIN, 0};
      int rc = ::poll(&p, 1, static_cast<int>(left.count()));
      if (rc <= 0)
        continue;
      char buf[65536];
      auto r = ::recv(fd, buf, std::min(sizeof(buf), n - g.data.size()), 0);
      if (r > 0) {
        g.data.append(buf, static_cast<size_t>(r));
      } else if (r == 0) {
        g.eof = true;
        break;
      } else if (errno != EINTR) {
        g.error = errno;
        break;
      }
    }
    return g;
  }

  /// True while the kernel holds the connection as established (no FIN or
  /// RST came in).
  bool established() const {
    tcp_info info{};
    socklen_t len = sizeof(info);
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0)
      return false;
    pollfd p{fd, POLLRDHUP, 0};
    bool hung_up = ::poll(&p, 1, 0) > 0;
    return info.tcpi_state == TCP_ESTABLISHED && !hung_up;
  }
};

std::unique_ptr<relay> start_relay(uint16_t target, relay_options o = {}) {
  auto r = relay::start(0, "127.0.0.1", target, o);
  if (!r) {
    ADD_FAILURE() << render(r.error());
    return nullptr;
  }
  return std::move(*r);
}

/// One round trip of `msg` through `c`, within `timeout`.
bool round_trip(const client_socket& c, const std::string& msg,
                milliseconds timeout = 5s) {
  return c.send(msg) && c.read(msg.size(), timeout).data == msg;
}

TEST(relay, forwards_both_directions_and_counts) {
  echo_server echo;
  auto r = start_relay(echo.port());
  ASSERT_TRUE(r);
  EXPECT_NE(r->port(), 0);
  EXPECT_EQ(r->address(), "127.0.0.1:" + std::to_string(r->port()));
  client_socket c{r->port()};
  ASSERT_GE(c.fd, 0);
  EXPECT_TRUE(round_trip(c, "hello"));
  EXPECT_TRUE(round_trip(c, "world!"));
  EXPECT_EQ(r->connections_accepted(), 1u);
  EXPECT_EQ(r->connections_open(), 1u);
  EXPECT_EQ(r->bytes_to_target(), 11u);
  // Counted once send() returned: the client may have the bytes before.
  EXPECT_TRUE(eventually(2s, [&] { return r->bytes_to_client() == 11; }))
    << r->bytes_to_client();
  EXPECT_EQ(echo.accepted(), 1);
}

TEST(relay, cut_holds_the_data_and_keeps_every_socket_open) {
  echo_server echo;
  auto r = start_relay(echo.port());
  ASSERT_TRUE(r);
  client_socket before{r->port()};
  ASSERT_TRUE(round_trip(before, "ping"));
  r->cut();
  EXPECT_TRUE(r->is_cut());
  ASSERT_TRUE(before.send("held"));
  auto g = before.read(4, 400ms);
  EXPECT_TRUE(g.timed_out())
    << "got '" << g.data << "' eof " << g.eof << " errno " << g.error;
  EXPECT_TRUE(g.data.empty());
  EXPECT_TRUE(before.established());
  EXPECT_EQ(echo.open(), 1) << "the target's socket must stay open too";
  EXPECT_EQ(r->bytes_to_target(), 4u);

  // A connection made while cut is accepted, but not passed on.
  client_socket during{r->port()};
  ASSERT_GE(during.fd, 0);
  ASSERT_TRUE(eventually(2s, [&] { return r->connections_accepted() == 2; }));
  ASSERT_TRUE(during.send("late"));
  g = during.read(4, 300ms);
  EXPECT_TRUE(g.timed_out());
  EXPECT_TRUE(during.established());
  EXPECT_EQ(echo.accepted(), 1) << "no connect to the target while cut";

  // Restore: what was sent while cut arrives, in order.
  r->restore();
  EXPECT_FALSE(r->is_cut());
  EXPECT_EQ(before.read(4, 5s).data, "held");
  EXPECT_EQ(during.read(4, 5s).data, "late");
  EXPECT_EQ(echo.accepted(), 2);
  EXPECT_TRUE(round_trip(before, "again"));
  EXPECT_TRUE(round_trip(during, "again"));
}

TEST(relay, restore_after_cut_lets_new_and_old_connections_work) {
  echo_server echo;
  auto r = start_relay(echo.port());
  ASSERT_TRUE(r);
  client_socket old{r->port()};
  ASSERT_TRUE(round_trip(old, "a"));
  for (int i = 0; i < 3; ++i) {
    r->cut();
    ASSERT_TRUE(old.send("x"));
    EXPECT_TRUE(old.read(1, 100ms).timed_out());
    r->restore();
    EXPECT_EQ(old.read(1, 5s).data, "x") << "round " << i;
  }
  client_socket fresh{r->port()};
  EXPECT_TRUE(round_trip(fresh, "fresh"));
  EXPECT_TRUE(round_trip(old, "old"));
}

TEST(relay, clients_that_give_up_while_cut_do_not_fill_the_limit) {
  echo_server echo;
  relay_options o;
  o.max_connections = 4;
  auto r = start_relay(echo.port(), o);
  ASSERT_TRUE(r);
  r->cut();
  for (int i = 0; i < 12; ++i) {
    {
      client_socket c{r->port()};
      ASSERT_GE(c.fd, 0) << i;
      ASSERT_TRUE(c.send("lost"));
      ASSERT_TRUE(eventually(
        2s, [&] { return r->connections_accepted() == uint64_t(i) + 1; }));
    }
    ASSERT_TRUE(eventually(2s, [&] { return r->connections_open() == 0; }))
      << "connection " << i << " was not dropped";
  }
  EXPECT_EQ(r->connections_accepted(), 12u);
  EXPECT_EQ(r->connections_refused(), 0u);
  r->restore();
  client_socket after{r->port()};
  EXPECT_TRUE(round_trip(after, "after"));
  EXPECT_EQ(echo.accepted(), 1) << "the target heard of a dropped connection";
}

TEST(relay, reset_ends_every_connection_with_an_rst) {
  echo_server echo;
  auto r = start_relay(echo.port());
  ASSERT_TRUE(r);
  std::vector<std::unique_ptr<client_socket>> cs;
  for (int i = 0; i < 3; ++i) {
    cs.push_back(std::make_unique<client_socket>(r->port()));
    ASSERT_TRUE(round_trip(*cs.back(), "hi"));
  }
  r->reset();
  for (auto& c : cs) {
    auto g = c->read(1, 5s);
    EXPECT_FALSE(g.timed_out());
    EXPECT_EQ(g.error, ECONNRESET) << "eof " << g.eof;
  }
  EXPECT_TRUE(eventually(5s, [&] { return echo.open() == 0; }))
    << "the target's side was not closed";
  EXPECT_TRUE(eventually(2s, [&] { return r->connections_open() == 0; }));
  client_socket after{r->port()};
  EXPECT_TRUE(round_trip(after, "after"));
}

TEST(relay, reset_while_cut_ends_the_held_connections) {
  echo_server echo;
  auto r = start_relay(echo.port());
  ASSERT_TRUE(r);
  client_socket c{r->port()};
  ASSERT_TRUE(round_trip(c, "hi"));
  r->cut();
  r->reset();
  auto g = c.read(1, 5s);
  EXPECT_EQ(g.error, ECONNRESET) << "eof " << g.eof;
  EXPECT_TRUE(r->is_cut()) << "reset does not end a cut";
  r->restore();
  client_socket after{r->port()};
  EXPECT_TRUE(round_trip(after, "after"));
}

TEST(relay, delay_adds_latency_in_each_direction) {
  echo_server echo;
  auto r = start_relay(echo.port());
  ASSERT_TRUE(r);
  client_socket c{r->port()};
  ASSERT_TRUE(round_trip(c, "warm"));
  r->delay(250ms);
  auto t0 = clock_type::now();
  ASSERT_TRUE(round_trip(c, "slow"));
  auto took = clock_type::now() - t0;
  EXPECT_GE(took, 500ms) << "250 ms each way";
  EXPECT_LT(took, 3s);
  r->delay(0ms);
  t0 = clock_type::now();
  ASSERT_TRUE(round_trip(c, "fast"));
  EXPECT_LT(clock_type::now() - t0, 250ms);
}

TEST(relay, many_connections_at_once) {
  echo_server echo;
  auto r = start_relay(echo.port());
  ASSERT_TRUE(r);
  constexpr int n = 100;
  std::vector<std::unique_ptr<client_socket>> cs;
  for (int i = 0; i < n; ++i) {
    cs.push_back(std::make_unique<client_socket>(r->port()));
    ASSERT_GE(cs.back()->fd, 0) << i;
    ASSERT_TRUE(cs.back()->send("conn-" + std::to_string(i) + ";"));
  }
  for (int i = 0; i < n; ++i) {
    auto want = "conn-" + std::to_string(i) + ";";
    EXPECT_EQ(cs[i]->read(want.size(), 5s).data, want) << i;
  }
  EXPECT_EQ(r->connections_accepted(), static_cast<uint64_t>(n));
  EXPECT_EQ(r->connections_open(), static_cast<uint64_t>(n));
  EXPECT_EQ(echo.accepted(), n);
  cs.clear();
  EXPECT_TRUE(eventually(5s, [&] { return r->connections_open() == 0; }))
    << r->connections_open() << " still open after the clients closed";
}

TEST(relay, connections_over_the_limit_are_refused) {
  echo_server echo;
  relay_options o;
  o.max_connections = 4;
  auto r = start_relay(echo.port(), o);
  ASSERT_TRUE(r);
  std::vector<std::unique_ptr<client_socket>> cs;
  for (int i = 0; i < 4; ++i) {
    cs.push_back(std::make_unique<client_socket>(r->port()));
    ASSERT_TRUE(round_trip(*cs.back(), "ok"));
  }
  client_socket extra{r->port()};
  auto g = extra.read(1, 5s);
  EXPECT_FALSE(g.timed_out()) << "the fifth connection was not closed";
  EXPECT_EQ(r->connections_refused(), 1u);
  EXPECT_EQ(r->connections_accepted(), 4u);
  cs.pop_back();
  ASSERT_TRUE(eventually(5s, [&] { return r->connections_open() == 3; }));
  client_socket again{r->port()};
  EXPECT_TRUE(round_trip(again, "room again"));
}

TEST(relay, a_megabyte_each_way_arrives_intact) {
  echo_server echo;
  auto r = start_relay(echo.port());
  ASSERT_TRUE(r);
  client_socket c{r->port()};
  ASSERT_GE(c.fd, 0);
  std::string data(1 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<char>((i * 131) % 251);
  std::atomic<bool> sent{false};
  std::thread writer{[&] {
    sent = c.send(data);
  }};
  at_exit join{[&] {
    writer.join();
  }};
  auto g = c.read(data.size(), 20s);
  EXPECT_EQ(g.data.size(), data.size());
  EXPECT_TRUE(g.data == data) << "the echoed bytes differ";
  EXPECT_TRUE(eventually(5s, [&] { return sent.load(); }));
  EXPECT_EQ(r->bytes_to_target(), data.size());
  EXPECT_TRUE(
    eventually(2s, [&] { return r->bytes_to_client() == data.size(); }))
    << r->bytes_to_client();
}

TEST(relay, half_close_is_passed_on) {
  echo_server echo;
  auto r = start_relay(echo.port());
  ASSERT_TRUE(r);
  client_socket c{r->port()};
  ASSERT_TRUE(c.send("last words"));
  ASSERT_EQ(::shutdown(c.fd, SHUT_WR), 0);
  auto g = c.read(100, 5s);
  EXPECT_EQ(g.data, "last words");
  EXPECT_TRUE(g.eof) << "the echo server's close did not come through";
  EXPECT_TRUE(eventually(5s, [&] { return r->connections_open() == 0; }));
}

TEST(relay, a_target_that_refuses_resets_the_client) {
  auto port = free_port();
  ASSERT_NE(port, 0);
  auto r = start_relay(port);
  ASSERT_TRUE(r);
  client_socket c{r->port()};
  ASSERT_GE(c.fd, 0) << "the relay itself accepts";
  auto g = c.read(1, 5s);
  EXPECT_EQ(g.error, ECONNRESET) << "eof " << g.eof;
  EXPECT_TRUE(eventually(2s, [&] { return r->connections_open() == 0; }));
}

TEST(relay, stop_closes_every_socket_and_returns) {
  echo_server echo;
  auto r = start_relay(echo.port());
  ASSERT_TRUE(r);
  client_socket a{r->port()};
  client_socket b{r->port()};
  ASSERT_TRUE(round_trip(a, "a"));
  ASSERT_TRUE(round_trip(b, "b"));
  r->cut(); // stop also ends held connections
  auto port = r->port();
  auto t0 = clock_type::now();
  r->stop();
  EXPECT_LT(clock_type::now() - t0, 1s);
  EXPECT_FALSE(a.read(1, 5s).timed_out());
  EXPECT_FALSE(b.read(1, 5s).timed_out());
  EXPECT_TRUE(eventually(5s, [&] { return echo.open() == 0; }));
  client_socket late{port};
  EXPECT_LT(late.fd, 0) << "nothing listens after stop";
  // Commands after stop return at once and change nothing.
  r->cut();
  r->reset();
  r->stop();
}

TEST(relay, a_target_host_that_is_not_an_ipv4_address_is_refused) {
  auto r = relay::start(0, "not-an-address", 1);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::invalid_argument);
}

TEST(relay, a_port_in_use_is_unavailable) {
  echo_server echo;
  auto r = relay::start(echo.port(), "127.0.0.1", echo.port());
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::unavailable);
  EXPECT_NE(render(r.error()).find("bind"), std::string::npos)
    << render(r.error());
}

} // namespace
} // namespace edda::test
