// CAF 0.17.6's TLS transport (libcaf_openssl) calls SSL_read, SSL_write,
// SSL_connect and SSL_accept without clearing OpenSSL's error queue first,
// then asks SSL_get_error what happened. OpenSSL requires the thread's
// queue to be empty before such a call: otherwise SSL_get_error reports an
// error left by an earlier call. All of a node's connections share the
// middleman's thread, so once one peer died (OpenSSL queues "unexpected
// eof" or the socket's errno), the next "would block" on any other
// connection read as a failure and CAF closed it too: killing one node of a
// TLS cluster dropped every link of the others, again and again.
//
// This executable defines the four functions. The dynamic linker looks in
// the executable first, so libcaf_openssl's calls come here; each clears
// the queue and calls OpenSSL's own (dlvsym, RTLD_NEXT). Calls made by
// other libraries (gRPC) get the same, harmless, clearing.
//
// SSL_accept also says why a handshake on the node port failed (CAF drops
// such a connection without a word): a WARN line per peer address at most
// once a minute, and network.tls_refused counts every one.
#include "node/tls.hpp"

#include "base/log.hpp"
#include "base/metrics.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

namespace {

constexpr const char* openssl_version = "OPENSSL_3.0.0";

template <class F>
F next_openssl(const char* name) {
  auto f = reinterpret_cast<F>(dlvsym(RTLD_NEXT, name, openssl_version));
  if (f == nullptr)
    f = reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
  if (f == nullptr) {
    std::fprintf(stderr, "edda: OpenSSL's %s not found (libssl not loaded?)\n",
                 name);
    std::abort();
  }
  return f;
}

/// "ip:port" of the peer on `fd`, or "an unknown peer".
std::string peer_of(int fd, std::string& ip) {
  sockaddr_storage sa{};
  socklen_t len = sizeof(sa);
  char buf[INET6_ADDRSTRLEN] = {0};
  if (fd < 0 || ::getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0)
    return "an unknown peer";
  uint16_t port = 0;
  if (sa.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&sa);
    ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
    port = ntohs(in->sin_port);
  } else if (sa.ss_family == AF_INET6) {
    auto* in = reinterpret_cast<sockaddr_in6*>(&sa);
    ::inet_ntop(AF_INET6, &in->sin6_addr, buf, sizeof(buf));
    port = ntohs(in->sin6_port);
  }
  ip = buf;
  return ip + ":" + std::to_string(port);
}

/// A handshake that SSL_accept gave up on (not one that waits for bytes),
/// with the peer as it was before the call (a peer that sends an alert and
/// resets is gone by the time the call returns).
void failed_accept(SSL* ssl, int ret, const std::string& peer,
                   const std::string& ip) {
  auto kind = SSL_get_error(ssl, ret); // reads the queue, leaves it for CAF
  if (kind != SSL_ERROR_SSL && kind != SSL_ERROR_SYSCALL)
    return;
  edda::metrics::counter("network.tls_refused")++;
  static std::mutex mtx;
  static std::map<std::string, std::chrono::steady_clock::time_point> said;
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> guard{mtx};
    if (said.size() > 4096)
      said.clear(); // many addresses: a scan; the counter has them all
    auto i = said.find(ip);
    if (i != said.end() && now - i->second < std::chrono::minutes(1))
      return;
    said[ip] = now;
  }
  std::string why;
  if (auto code = ERR_peek_last_error(); code != 0) {
    auto* r = ERR_reason_error_string(code);
    why = r != nullptr ? r : "error " + std::to_string(code);
  } else {
    why = "the peer closed the connection during the handshake";
  }
  EDDA_WARN("node", "refused a TLS connection from "
                      << peer << " on the node port: " << why
                      << " (a peer needs a certificate signed by this "
                         "node's network.tls_ca, and to trust its "
                         "certificate; clients use the client door; at most "
                         "one line a minute per address, every one counted "
                         "in network.tls_refused)");
}

using io_fn = int (*)(SSL*, void*, int);
using write_fn = int (*)(SSL*, const void*, int);
using handshake_fn = int (*)(SSL*);

} // namespace

#define EDDA_EXPORTED __attribute__((visibility("default")))

extern "C" {

EDDA_EXPORTED int SSL_read(SSL* ssl, void* buf, int num) {
  static auto real = next_openssl<io_fn>("SSL_read");
  ERR_clear_error();
  return real(ssl, buf, num);
}

EDDA_EXPORTED int SSL_write(SSL* ssl, const void* buf, int num) {
  static auto real = next_openssl<write_fn>("SSL_write");
  ERR_clear_error();
  return real(ssl, buf, num);
}

EDDA_EXPORTED int SSL_connect(SSL* ssl) {
  static auto real = next_openssl<handshake_fn>("SSL_connect");
  ERR_clear_error();
  return real(ssl);
}

EDDA_EXPORTED int SSL_accept(SSL* ssl) {
  static auto real = next_openssl<handshake_fn>("SSL_accept");
  ERR_clear_error();
  // A handshake is a few calls; the address costs one getpeername each.
  std::string ip;
  auto peer = peer_of(SSL_get_fd(ssl), ip);
  auto ret = real(ssl);
  if (ret <= 0)
    failed_accept(ssl, ret, peer, ip);
  return ret;
}

} // extern "C"

namespace edda::node {

bool openssl_error_queue_cleared() {
  // What libcaf_openssl's calls resolve to: the first definition in the
  // process's global scope.
  return dlsym(RTLD_DEFAULT, "SSL_read") == reinterpret_cast<void*>(&SSL_read)
         && dlsym(RTLD_DEFAULT, "SSL_write")
              == reinterpret_cast<void*>(&SSL_write);
}

} // namespace edda::node
