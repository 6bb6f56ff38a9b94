// A raw TCP peer for bad-input tests: connect to a node's port on
// 127.0.0.1 and send it bytes no edda client would (garbage, a truncated
// or lying CAF 0.17 BASP header), then see whether the node hangs up.
// Header-only; the caller closes each fd it got.
//
// Thread-safety: every function may be called from any thread.
#pragma once

#include "support/util.hpp" // eventually()

#include <arpa/inet.h>
#include <cerrno>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

namespace edda::test {

/// A connected socket to 127.0.0.1:`port`, or -1.
inline int raw_connect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0
      && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    fd = -1;
  }
  return fd;
}

/// Sends all of `bytes`; false if the peer is gone.
inline bool write_all(int fd, const std::string& bytes) {
  for (size_t done = 0; done < bytes.size();) {
    auto n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n <= 0)
      return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

/// True once the peer closed `fd` (EOF or reset) within `limit`; reads
/// and drops what it sends meanwhile.
inline bool closed_by_peer(int fd, milliseconds limit) {
  char buf[4096];
  return eventually(
    limit,
    [&] {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0)
        return false;
      auto n = ::recv(fd, buf, sizeof(buf), 0);
      return n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN);
    },
    milliseconds(10));
}

/// A CAF 0.17 BASP header (32 bytes, network byte order): operation, two
/// padding bytes, flags, payload_len, operation_data, source and dest actor.
inline std::string basp_header(uint8_t op, uint32_t payload_len) {
  std::string h(32, '\0');
  h[0] = static_cast<char>(op);
  for (int i = 0; i < 4; ++i)
    h[4 + i] = static_cast<char>((payload_len >> (24 - 8 * i)) & 0xff);
  return h;
}

/// BASP operations (caf/io/basp/message_type.hpp).
constexpr uint8_t basp_client_handshake = 1;
constexpr uint8_t basp_direct_message = 2;

} // namespace edda::test
