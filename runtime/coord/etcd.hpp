// The etcd 3.4 implementation of coord::client, over gRPC (the primary etcd
// API: KV, Txn, Lease, Watch). Generated from the .proto files Debian ships
// in golang-etcd-server-dev; gRPC stays inside etcd.cpp.
//
// Endpoints are tried in order; a call that fails with UNAVAILABLE moves to
// the next one, within the same deadline (`call_timeout`, which every call
// has). A watch stays on the endpoint it was created on and ends (on_error)
// when that fails; watches ask etcd to cancel them when it has no leader.
// Plain http only (no TLS). Destroying the client does not end its watches:
// each ends when it is cancelled or destroyed.
#pragma once

#include "coord/coord.hpp"

#include <chrono>
#include <string>
#include <vector>

namespace edda::coord {

struct etcd_options {
  /// "http://127.0.0.1:2379" or "127.0.0.1:2379"; at least one.
  std::vector<std::string> endpoints;
  std::chrono::milliseconds call_timeout{2000};
  std::chrono::milliseconds dial_timeout{2000};
};

/// Connects to etcd and checks that it answers (a range read of one key,
/// retried until one endpoint answers or dial_timeout passes). Errors:
/// invalid_argument (no or malformed endpoint, https), unavailable (nothing
/// answered within dial_timeout, with each endpoint's reason).
[[nodiscard]] caf::expected<client_ptr> connect_etcd(etcd_options opts);

} // namespace edda::coord
