// A connection to an edda node: in-process (embedded node) or remote: over
// the node's client door (edda.api.v1 over gRPC, the default) or its node
// port (CAF's middleman, BASP: connect_options::door = false). Producers, consumers and admin
// calls take a connection and behave the same either way.
//
// Thread-safety: a connection may be copied and used from any thread. A
// node-port connection owns a small actor system, a door connection a gRPC
// channel; either lives until the last copy (and every producer / consumer
// made from it) is gone.
#pragma once

#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace edda::client {

struct connection_impl;

struct connect_options {
  std::chrono::milliseconds heartbeat{100};   ///< 0 disables heartbeats
  std::chrono::milliseconds connection_timeout{1000};
  std::chrono::milliseconds request_timeout{30000};
  /// In a cluster, producers send each batch, half message and end straight
  /// to the home node of its partition (by the cluster map the node hands
  /// out), not through this node, which would pass it on (one hop more).
  /// No effect on a single node or an in-process connection.
  bool direct_routing = true;
  /// Talk to the node's client door (edda.api.v1 over gRPC; host:port is
  /// then its api.listen address, by default the node port + 10) rather
  /// than its node port (CAF's BASP, for nodes and tools: false). Any
  /// node's door serves the whole cluster: the node routes
  /// (direct_routing does not apply). Every client class works over it:
  /// admin calls, idempotency keys, sagas' start / show / list / commands,
  /// producers, consumers, transaction producers and participant hosts
  /// (sagas/remote.hpp: participant_host::start; start_async is for
  /// in-process connections and node ports). Over the door a client also recovers from a node
  /// that was hung (SIGSTOP) and resumed, which a node-port client of CAF
  /// 0.17 may not.
  bool door = true;
  /// The door's token for this client (a secret of api.tokens), sent as
  /// "authorization: Bearer <token>". Empty: none (a node without
  /// api.tokens).
  std::string token;
};

class connection {
public:
  /// Connects to the node listening on host:port (its client door with
  /// opts.door). Errors: unavailable (nothing listens there, or the peer is
  /// not edda), unauthenticated (door: a missing or wrong token).
  [[nodiscard]] static caf::expected<connection>
  open(const std::string& host, uint16_t port, connect_options opts = {});

  /// "host:port" (or "embedded").
  [[nodiscard]] std::string endpoint() const;

  /// For the embedded node and internals.
  explicit connection(std::shared_ptr<connection_impl> impl);
  [[nodiscard]] const std::shared_ptr<connection_impl>& impl() const {
    return impl_;
  }

private:
  std::shared_ptr<connection_impl> impl_;
};

/// Parses "host:port"; without ":port", `default_port` (the client door's
/// 7430; a node port's default is 7420).
[[nodiscard]] bool parse_endpoint(const std::string& text, std::string& host,
                                  uint16_t& port, uint16_t default_port = 7430);

} // namespace edda::client
