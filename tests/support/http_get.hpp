// A minimal HTTP/1.0 GET on 127.0.0.1 for tests of the admin port, without
// linking an HTTP library into every test.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace edda::test {

struct http_reply {
  int status = 0; ///< 0: no answer (connect failed, or nothing came back)
  std::string body;
};

/// GET `path` from 127.0.0.1:`port`; waits at most 5 s for the answer.
inline http_reply http_get(uint16_t port, const std::string& path) {
  http_reply out;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return out;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0
      || ::write(fd, req.data(), req.size())
           != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return out;
  }
  std::string all;
  char buf[4096];
  for (;;) {
    auto got = ::read(fd, buf, sizeof(buf));
    if (got <= 0)
      break;
    all.append(buf, static_cast<size_t>(got));
  }
  ::close(fd);
  if (all.rfind("HTTP/1.", 0) != 0 || all.size() < 12)
    return out;
  out.status = std::atoi(all.substr(9, 3).c_str());
  auto head_end = all.find("\r\n\r\n");
  if (head_end != std::string::npos)
    out.body = all.substr(head_end + 4);
  return out;
}

} // namespace edda::test
