#include "node/tls.hpp"

#include "base/errc.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <filesystem>
#include <memory>

namespace edda::node {

namespace {

/// OpenSSL's reason for the last failure, for an error message.
std::string openssl_reason() {
  auto code = ERR_get_error();
  ERR_clear_error();
  if (code == 0)
    return "unknown reason";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

} // namespace

caf::error load_tls(caf::actor_system_config& cfg,
                    const config::node_settings& s) {
  if (s.tls_certificate.empty() && s.tls_key.empty() && s.tls_ca.empty())
    return {};
  for (auto [name, value] : {std::pair{"network.tls_certificate",
                                       &s.tls_certificate},
                             std::pair{"network.tls_key", &s.tls_key},
                             std::pair{"network.tls_ca", &s.tls_ca}})
    if (value->empty())
      return make_error(errc::bad_config,
                        std::string{name}
                          + " is empty: mutual TLS needs "
                            "network.tls_certificate, network.tls_key and "
                            "network.tls_ca together");
  namespace fs = std::filesystem;
  std::error_code ec;
  auto cert = fs::absolute(s.tls_certificate, ec).string();
  auto key = fs::absolute(s.tls_key, ec).string();
  auto ca = fs::absolute(s.tls_ca, ec).string();
  // CAF reads the files only when a connection comes (and a file it cannot
  // load then ends the process): try them now, as CAF will.
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx{
    SSL_CTX_new(TLS_method()), SSL_CTX_free};
  if (!ctx)
    return make_error(errc::bad_config, "TLS: " + openssl_reason());
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert.c_str()) != 1)
    return make_error(errc::bad_config,
                      "network.tls_certificate: cannot load " + cert + " ("
                        + openssl_reason() + ")");
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM)
      != 1)
    return make_error(errc::bad_config,
                      "network.tls_key: cannot load " + key + " as the key of "
                        + cert + " (" + openssl_reason() + ")");
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    return make_error(errc::bad_config,
                      "network.tls_key: " + key + " is not the key of "
                        + cert + " (" + openssl_reason() + ")");
  if (SSL_CTX_load_verify_locations(ctx.get(), ca.c_str(), nullptr) != 1)
    return make_error(errc::bad_config, "network.tls_ca: cannot load " + ca
                                          + " (" + openssl_reason() + ")");
  if (!openssl_error_queue_cleared())
    return make_error(errc::bad_config,
                      "TLS: CAF's calls to OpenSSL do not go through this "
                      "program's SSL_read and SSL_write (see "
                      "runtime/node/openssl_errors.cpp): link it as the edda "
                      "binary is linked");
  // Any openssl.* key set makes CAF verify the peer and require its
  // certificate, on both sides of a connection.
  cfg.load<caf::openssl::manager>();
  cfg.set("openssl.certificate", cert);
  cfg.set("openssl.key", key);
  cfg.set("openssl.cafile", ca);
  return {};
}

} // namespace edda::node
