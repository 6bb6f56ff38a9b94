// How an actor system reaches a node port: over mutual TLS when it loaded
// CAF's openssl module (a node with network.tls_*), else plain BASP.
// Blocking (as CAF's remote_actor): call from a detached actor or a user
// thread.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/remote_actor.hpp>

#include <cstdint>
#include <string>

namespace edda {

[[nodiscard]] inline caf::expected<caf::actor>
remote_node(caf::actor_system& sys, const std::string& host, uint16_t port) {
  if (sys.has_openssl_manager())
    return caf::openssl::remote_actor(sys, host, port);
  return sys.middleman().remote_actor(host, port);
}

} // namespace edda
