// Mutual TLS on the node port (network.tls_certificate, tls_key, tls_ca):
// only peers holding a certificate signed by the CA get past the TLS
// handshake, so nothing of BASP (CAF 0.17 allocates the payload length an
// unauthenticated handshake header announces) is reachable by others.
#pragma once

#include "config/settings.hpp"

#include <caf/error.hpp>

namespace caf {
class actor_system_config;
} // namespace caf

namespace edda::node {

/// With TLS settings: checks that the certificate, the key and the CA load
/// and belong together (OpenSSL), then loads CAF's openssl module into
/// `cfg` (after the middleman) with their absolute paths. Without: nothing.
/// Errors: bad_config, naming the setting and the file.
[[nodiscard]] caf::error load_tls(caf::actor_system_config& cfg,
                                  const config::node_settings& s);

/// True if CAF's TLS calls go through this executable's SSL_read and
/// SSL_write, which clear OpenSSL's error queue first (openssl_errors.cpp:
/// without it, one dead peer drops every TLS link of the node).
[[nodiscard]] bool openssl_error_queue_cleared();

} // namespace edda::node
