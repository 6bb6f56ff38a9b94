// A TCP relay for fault injection in tests (in the manner of toxiproxy, but
// in the test process and without root): it listens on 127.0.0.1 and
// forwards every accepted connection to one target, both directions, on one
// thread of its own (a poll loop over every connection). Point a client at
// port() instead of the target, then cut, reset or slow down the link.
//
// Commands (from any thread, at any time; each affects the current and the
// future connections, and has taken effect when it returns):
//  * cut(): a blackhole. Nothing is read or written any more, in either
//    direction; every socket stays open, so the peers see no FIN and no RST
//    (their kernels still ACK and answer TCP keepalives: only an
//    application-level timeout notices). A connection accepted while cut
//    is held too: the relay does not even connect to the target until
//    restore() (a SYN lost in the partition); if its client closes it
//    before, the relay drops it, and the target never hears of it.
//  * restore(): forward again. Bytes sent while cut are held, not dropped:
//    they wait in the kernel's socket buffers (and the relay's) and are
//    delivered, in order, after restore() - a partition that heals while
//    TCP retransmits. Dropping them would corrupt the byte stream (a TCP
//    connection cannot lose bytes in the middle), which no network can do;
//    a test that wants a connection to lose data ends it with reset().
//  * reset(): closes every current connection, both sockets, with an RST
//    (SO_LINGER 0): the peers see ECONNRESET (or EOF). Later connections
//    are not affected; a cut stays in force.
//  * delay(d): each direction holds every chunk it reads for `d` before
//    writing it, so a round trip takes at least 2 d. Applies to data read
//    from then on; delay(0) ends it.
// A connection whose target refuses (or a relay stopped) is closed with an
// RST too. At most `max_connections` are open at once; one accepted over
// that is closed with an RST at once and counted in connections_refused().
// Each direction buffers at most 128 KiB in the relay (then it stops
// reading: back-pressure, as a slow network would).
//
// Thread-safety: every member function may be called from any thread.
// stop() (or the destructor) ends the relay's thread and closes every
// socket (a plain close: the peers see EOF, or an RST where the relay left
// data unread); afterwards nothing runs.
//
// Errors: start() returns invalid_argument (target host not an IPv4
// address) or unavailable (socket, bind or listen failed, with why).
#pragma once

#include <caf/expected.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace edda::test {

struct relay_options {
  /// Connections open at once; more are closed with an RST on accept.
  size_t max_connections = 256;
};

class relay {
public:
  /// Listens on 127.0.0.1:`listen_port` (0: a free port, see port()) and
  /// forwards to `target_host`:`target_port` (a numeric IPv4 address).
  [[nodiscard]] static caf::expected<std::unique_ptr<relay>>
  start(uint16_t listen_port, const std::string& target_host,
        uint16_t target_port, relay_options opts = {});

  /// stop().
  ~relay();
  relay(const relay&) = delete;
  relay& operator=(const relay&) = delete;

  /// The port the relay listens on.
  [[nodiscard]] uint16_t port() const;
  /// "127.0.0.1:PORT".
  [[nodiscard]] std::string address() const;

  void cut();
  void restore();
  void reset();
  void delay(std::chrono::milliseconds d);

  [[nodiscard]] bool is_cut() const;

  /// Ends the thread and closes every socket. Idempotent.
  void stop();

  /// Connections accepted and forwarded (or held while cut).
  [[nodiscard]] uint64_t connections_accepted() const;
  /// Connections accepted over max_connections and closed at once.
  [[nodiscard]] uint64_t connections_refused() const;
  /// Connections open now.
  [[nodiscard]] uint64_t connections_open() const;
  /// Bytes written to the target (client -> target).
  [[nodiscard]] uint64_t bytes_to_target() const;
  /// Bytes written to the clients (target -> client).
  [[nodiscard]] uint64_t bytes_to_client() const;

private:
  struct state;
  explicit relay(std::unique_ptr<state> st);
  std::unique_ptr<state> st_;
};

} // namespace edda::test
