#include "relay.hpp"

#include "base/errc.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <mutex>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace edda::test {

namespace {

using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// Bytes one direction of a connection holds in the relay at most.
constexpr size_t direction_capacity = 128 * 1024;
/// Bytes read with one recv.
constexpr size_t read_size = 16 * 1024;
/// Connections accepted in one turn of the loop at most.
constexpr int accepts_per_turn = 64;

/// Closes `fd` with an RST (SO_LINGER 0) instead of a FIN.
void close_with_rst(int fd) {
  if (fd < 0)
    return;
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  ::close(fd);
}

void close_fd(int fd) {
  if (fd >= 0)
    ::close(fd);
}

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

std::string errno_text(const char* what) {
  return std::string{what} + ": " + std::strerror(errno);
}

/// Bytes read from one side, waiting until `due` to be written to the other.
struct chunk {
  std::string data;
  size_t off = 0;
  steady::time_point due;
};

/// One direction of a connection: read from `src`, written to `dst`.
struct direction {
  std::deque<chunk> q;
  size_t queued = 0;
  bool src_eof = false; ///< src sent FIN
  bool done = false;    ///< FIN passed on (shutdown of dst's write side)
};

enum class phase { pending, connecting, open };

/// An accepted connection and the relay's connection to the target.
struct link {
  int client = -1;
  int target = -1;
  phase ph = phase::pending;
  direction up;       ///< client -> target
  direction down;     ///< target -> client
  bool ready = false; ///< poll reported one of its sockets
  bool closed = false;
};

enum class op { cut, restore, reset, delay };

struct command {
  op what;
  milliseconds ms{0};
  uint64_t ticket = 0;
};

} // namespace

struct relay::state {
  uint16_t port = 0;
  sockaddr_in target{};
  relay_options opts;
  int listen_fd = -1;
  int wake_fd = -1;
  std::thread thread;
  std::mutex stop_mu; ///< serializes stop()

  // Commands, from any thread to the loop.
  std::mutex mu;
  std::condition_variable cv;
  std::vector<command> commands;
  uint64_t next_ticket = 0;
  uint64_t applied = 0;
  bool stopping = false;
  bool finished = false;

  // The loop's own state.
  bool cut = false;
  milliseconds delay{0};
  std::vector<std::unique_ptr<link>> links;

  std::atomic<bool> cut_flag{false};
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> refused{0};
  std::atomic<uint64_t> open{0};
  std::atomic<uint64_t> to_target{0};
  std::atomic<uint64_t> to_client{0};

  ~state() {
    close_fd(listen_fd);
    close_fd(wake_fd);
  }

  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof(one));
  }

  /// Queues a command and waits until the loop applied it (or ended).
  void submit(op what, milliseconds ms = milliseconds{0}) {
    std::unique_lock lock{mu};
    if (finished || stopping)
      return;
    auto ticket = ++next_ticket;
    commands.push_back(command{what, ms, ticket});
    wake();
    // The loop never blocks but in poll, which the wake ends: bounded
    // anyway, so that a bug cannot hang a test.
    cv.wait_for(lock, std::chrono::seconds(10),
                [&] { return applied >= ticket || finished; });
  }

  // -- the loop ---------------------------------------------------------------

  void run() {
    std::vector<pollfd> fds;
    std::vector<link*> owners;
    for (;;) {
      std::vector<command> todo;
      {
        std::lock_guard lock{mu};
        if (stopping)
          break;
        todo.swap(commands);
      }
      for (auto& c : todo)
        apply(c);
      if (!todo.empty()) {
        std::lock_guard lock{mu};
        applied = todo.back().ticket;
        cv.notify_all();
      }
      reap_closed();
      fds.clear();
      owners.clear();
      fds.push_back(pollfd{wake_fd, POLLIN, 0});
      owners.push_back(nullptr);
      fds.push_back(pollfd{listen_fd, POLLIN, 0});
      owners.push_back(nullptr);
      auto now = steady::now();
      int timeout = -1;
      for (auto& l : links) {
        l->ready = false;
        if (l->ph == phase::pending) {
          // Accepted while cut, never connected: only its client's close
          // is watched (see drop_pending).
          fds.push_back(pollfd{l->client, POLLRDHUP, 0});
          owners.push_back(l.get());
          continue;
        }
        if (cut)
          continue; // not even errors: a cut link must not spin the loop
        if (l->ph == phase::connecting) {
          fds.push_back(pollfd{l->target, POLLOUT, 0});
          owners.push_back(l.get());
          continue;
        }
        short client_ev = 0;
        short target_ev = 0;
        want(l->up, client_ev, target_ev, now, timeout);
        want(l->down, target_ev, client_ev, now, timeout);
        if (client_ev != 0) {
          fds.push_back(pollfd{l->client, client_ev, 0});
          owners.push_back(l.get());
        }
        if (target_ev != 0) {
          fds.push_back(pollfd{l->target, target_ev, 0});
          owners.push_back(l.get());
        }
      }
      int rc = ::poll(fds.data(), fds.size(), timeout);
      if (rc < 0) {
        if (errno == EINTR)
          continue;
        break; // cannot happen with valid fds; end rather than spin
      }
      if (fds[0].revents != 0) {
        uint64_t n = 0;
        [[maybe_unused]] auto got = ::read(wake_fd, &n, sizeof(n));
      }
      for (size_t i = 2; i < fds.size(); ++i)
        if (fds[i].revents != 0)
          owners[i]->ready = true;
      now = steady::now();
      for (auto& l : links) {
        if (l->closed)
          continue;
        if (l->ph == phase::pending) {
          if (l->ready)
            drop_pending(*l);
          continue;
        }
        if (cut)
          continue;
        if (l->ph == phase::connecting) {
          if (l->ready)
            finish_connect(*l);
        } else if (l->ph == phase::open) {
          // Ready sockets, and any link with data that came due.
          if (l->ready || due(l->up, now) || due(l->down, now))
            transfer(*l);
        }
      }
      if (fds[1].revents != 0)
        accept_some();
    }
    // Stopping: a plain close of everything.
    close_fd(listen_fd);
    listen_fd = -1;
    for (auto& l : links) {
      close_fd(l->client);
      close_fd(l->target);
    }
    links.clear();
    open = 0;
    std::lock_guard lock{mu};
    finished = true;
    cv.notify_all();
  }

  static bool due(const direction& d, steady::time_point now) {
    return !d.q.empty() && d.q.front().due <= now;
  }

  /// Adds the poll events direction `d` needs on its source and
  /// destination, and lowers `timeout` to its next due chunk.
  void want(const direction& d, short& src_ev, short& dst_ev,
            steady::time_point now, int& timeout) {
    if (!d.src_eof && d.queued < direction_capacity)
      src_ev |= POLLIN;
    if (d.q.empty())
      return;
    auto due = d.q.front().due;
    if (due <= now) {
      dst_ev |= POLLOUT;
      return;
    }
    auto ms = std::chrono::ceil<milliseconds>(due - now).count();
    int wait = static_cast<int>(std::max<int64_t>(1, ms));
    timeout = timeout < 0 ? wait : std::min(timeout, wait);
  }

  void apply(const command& c) {
    switch (c.what) {
      case op::cut:
        cut = true;
        cut_flag = true;
        break;
      case op::restore:
        cut = false;
        cut_flag = false;
        for (auto& l : links)
          if (l->ph == phase::pending && !l->closed)
            start_connect(*l);
        break;
      case op::reset:
        for (auto& l : links)
          reset_link(*l);
        break;
      case op::delay:
        delay = c.ms;
        break;
    }
  }

  void accept_some() {
    for (int i = 0; i < accepts_per_turn; ++i) {
      int fd
        = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0)
        return; // EAGAIN, or an aborted connection: try again next turn
      if (links.size() >= opts.max_connections) {
        ++refused; // counted first: the client may look once it sees the RST
        close_with_rst(fd);
        continue;
      }
      set_nodelay(fd);
      auto l = std::make_unique<link>();
      l->client = fd;
      ++accepted;
      open = links.size() + 1;
      if (!cut)
        start_connect(*l);
      links.push_back(std::move(l));
    }
  }

  void start_connect(link& l) {
    l.target = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l.target < 0) {
      reset_link(l);
      return;
    }
    set_nodelay(l.target);
    int rc = ::connect(l.target, reinterpret_cast<const sockaddr*>(&target),
                       sizeof(target));
    if (rc == 0)
      l.ph = phase::open;
    else if (errno == EINPROGRESS)
      l.ph = phase::connecting;
    else
      reset_link(l);
  }

  void finish_connect(link& l) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(l.target, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
      err = errno;
    if (err == 0)
      l.ph = phase::open;
    else if (err != EINPROGRESS)
      reset_link(l); // the target refused: the client sees an RST
  }

  /// Moves what can move in both directions; on an error the link is reset
  /// (the error passed on to the other peer as an RST).
  void transfer(link& l) {
    auto now = steady::now();
    if (!pump(l.up, l.client, l.target, to_target, now)
        || !pump(l.down, l.target, l.client, to_client, now)) {
      reset_link(l);
      return;
    }
    if (l.up.done && l.down.done) {
      close_fd(l.client);
      close_fd(l.target);
      l.client = l.target = -1;
      l.closed = true;
    }
  }

  /// Reads what `src` has (up to the capacity), writes what came due to
  /// `dst`, and passes a FIN on once everything before it is written.
  /// False on a socket error.
  bool pump(direction& d, int src, int dst, std::atomic<uint64_t>& counter,
            steady::time_point now) {
    char buf[read_size];
    while (!d.src_eof && d.queued < direction_capacity) {
      auto want = std::min(read_size, direction_capacity - d.queued);
      auto n = ::recv(src, buf, want, 0);
      if (n > 0) {
        d.q.push_back(
          chunk{std::string(buf, static_cast<size_t>(n)), 0, now + delay});
        d.queued += static_cast<size_t>(n);
        continue;
      }
      if (n == 0) {
        d.src_eof = true;
        break;
      }
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      return false;
    }
    while (!d.q.empty() && d.q.front().due <= now) {
      auto& c = d.q.front();
      auto n = ::send(dst, c.data.data() + c.off, c.data.size() - c.off,
                      MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          break;
        return false;
      }
      c.off += static_cast<size_t>(n);
      d.queued -= static_cast<size_t>(n);
      counter += static_cast<uint64_t>(n);
      if (c.off == c.data.size())
        d.q.pop_front();
    }
    if (d.src_eof && d.q.empty() && !d.done) {
      ::shutdown(dst, SHUT_WR);
      d.done = true;
    }
    return true;
  }

  /// A client that gave up on a connection accepted while cut: its SYN,
  /// as it were, never crossed the partition, so the target never hears
  /// of it. Dropping it keeps clients that retry during a long cut from
  /// filling the connection limit.
  void drop_pending(link& l) {
    close_fd(l.client);
    l.client = -1;
    l.closed = true;
  }

  void reset_link(link& l) {
    close_with_rst(l.client);
    close_with_rst(l.target);
    l.client = l.target = -1;
    l.closed = true;
  }

  void reap_closed() {
    links.erase(std::remove_if(links.begin(), links.end(),
                               [](const auto& l) { return l->closed; }),
                links.end());
    open = links.size();
  }
};

caf::expected<std::unique_ptr<relay>>
relay::start(uint16_t listen_port, const std::string& target_host,
             uint16_t target_port, relay_options opts) {
  auto st = std::make_unique<state>();
  st->opts = opts;
  st->target.sin_family = AF_INET;
  st->target.sin_port = htons(target_port);
  if (::inet_pton(AF_INET, target_host.c_str(), &st->target.sin_addr) != 1)
    return make_error(errc::invalid_argument, "relay: target host '"
                                                + target_host
                                                + "' is not an IPv4 address");
  st->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (st->wake_fd < 0)
    return make_error(errc::unavailable, errno_text("relay: eventfd"));
  st->listen_fd
    = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (st->listen_fd < 0)
    return make_error(errc::unavailable, errno_text("relay: socket"));
  int one = 1;
  ::setsockopt(st->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(listen_port);
  if (::bind(st->listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr))
      != 0)
    return make_error(
      errc::unavailable,
      errno_text(
        ("relay: bind 127.0.0.1:" + std::to_string(listen_port)).c_str()));
  if (::listen(st->listen_fd, 128) != 0)
    return make_error(errc::unavailable, errno_text("relay: listen"));
  socklen_t len = sizeof(addr);
  if (::getsockname(st->listen_fd, reinterpret_cast<sockaddr*>(&addr), &len)
      != 0)
    return make_error(errc::unavailable, errno_text("relay: getsockname"));
  st->port = ntohs(addr.sin_port);
  auto* raw = st.get();
  st->thread = std::thread{[raw] {
    raw->run();
  }};
  return std::unique_ptr<relay>{new relay{std::move(st)}};
}

relay::relay(std::unique_ptr<state> st) : st_(std::move(st)) {}

relay::~relay() {
  stop();
}

uint16_t relay::port() const {
  return st_->port;
}

std::string relay::address() const {
  return "127.0.0.1:" + std::to_string(st_->port);
}

void relay::cut() {
  st_->submit(op::cut);
}

void relay::restore() {
  st_->submit(op::restore);
}

void relay::reset() {
  st_->submit(op::reset);
}

void relay::delay(std::chrono::milliseconds d) {
  st_->submit(op::delay, std::max(d, std::chrono::milliseconds{0}));
}

bool relay::is_cut() const {
  return st_->cut_flag;
}

void relay::stop() {
  std::lock_guard stop_lock{st_->stop_mu};
  {
    std::lock_guard lock{st_->mu};
    st_->stopping = true;
    st_->wake();
  }
  if (st_->thread.joinable())
    st_->thread.join();
}

uint64_t relay::connections_accepted() const {
  return st_->accepted;
}

uint64_t relay::connections_refused() const {
  return st_->refused;
}

uint64_t relay::connections_open() const {
  return st_->open;
}

uint64_t relay::bytes_to_target() const {
  return st_->to_target;
}

uint64_t relay::bytes_to_client() const {
  return st_->to_client;
}

} // namespace edda::test
