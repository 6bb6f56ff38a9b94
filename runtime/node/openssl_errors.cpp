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
#include "node/tls.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

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
  return real(ssl);
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
