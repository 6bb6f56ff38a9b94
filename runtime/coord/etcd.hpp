// The etcd 3.4 implementation of coord::client, over gRPC (the primary etcd
// API: KV, Txn, Lease, Watch). Generated from the .proto files Debian ships
// in golang-etcd-server-dev; gRPC stays inside etcd.cpp.
//
// Endpoints are tried in order. An endpoint that gives no answer (refused,
// reset, no leader: UNAVAILABLE; silent: DEADLINE_EXCEEDED) is left for the
// next one, for this call and the later ones, within the call's one
// deadline (`call_timeout`, which every call has; each try gets its share
// of what is left, so a silent endpoint leaves time for the next). A write
// (compare-and-swap) that met a silent endpoint is not replayed on the next:
// it may have been applied (so its one try has the whole deadline; the next
// call goes to the next endpoint). A watch stays on the endpoint it was created on
// and ends (on_error) when that fails, or when a call leaves its endpoint
// (a stream to a blackholed endpoint would notice only after gRPC's
// keepalive, ~15 s): its owner watches anew, on the next endpoint. Watches
// ask etcd to cancel them when it has no leader. When no endpoint answers,
// calls fail with unavailable: "etcd at <endpoints> unreachable: ...".
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
/// retried until one endpoint answers or dial_timeout passes; each try at
/// most call_timeout). Errors: invalid_argument (no or malformed endpoint,
/// https), unavailable (nothing answered within dial_timeout, with each
/// endpoint's reason).
[[nodiscard]] caf::expected<client_ptr> connect_etcd(etcd_options opts);

} // namespace edda::coord
