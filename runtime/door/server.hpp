// The client door: a gRPC server of edda.api.v1 (runtime/wire/api.proto)
// through which services in any language produce, consume, start sagas and
// administer the node. Every call is served through the node's in-process
// client connection, so it behaves as the C++ client does (cluster routing
// included: any node's door serves the whole cluster).
//
// Bounds (config [api]): a message is checked against api.max_request_size
// before it is read; a produce stream is read only while fewer than
// api.produce_window of its records are unacknowledged; a consume stream
// has at most its window of deliveries unsettled; calls open at once are
// capped in all and per client address; an HTTP/2 handshake must finish
// within api.handshake_timeout; a connection idle for api.idle_timeout, or
// silent to keepalive pings, is closed. With api.tokens set, a call
// without one of them is refused (UNAUTHENTICATED) and logged.
//
// Thread-safety: start/stop/port from any thread. Keeps gRPC out of this
// header (the build cost of grpc++ stays in runtime/door).
#pragma once

#include "client/connection.hpp"
#include "config/settings.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace edda::door {

class server {
public:
  /// Listens on `host`:`port` (port 0: the OS picks) and serves through
  /// `node` (an in-process connection; it must outlive the server).
  /// Errors: unavailable (cannot listen), bad_config.
  [[nodiscard]] static caf::expected<std::unique_ptr<server>>
  start(const config::node_settings& settings, const std::string& host,
        uint16_t port, client::connection node);

  /// Stops accepting, ends every call (streams are cancelled after 1 s:
  /// their unsettled deliveries go back to their groups), and returns once
  /// every call has finished.
  void stop();
  ~server();

  /// The port it listens on.
  [[nodiscard]] uint16_t port() const;

  struct impl;

private:
  explicit server(std::unique_ptr<impl> i);
  std::unique_ptr<impl> impl_;
};

/// Where api.listen puts the door: false for "off". "auto" is
/// node.listen_host and node.listen_port + 10 (0 if that port is 0).
[[nodiscard]] bool api_address(const config::node_settings& s,
                               std::string& host, uint16_t& port);

} // namespace edda::door
