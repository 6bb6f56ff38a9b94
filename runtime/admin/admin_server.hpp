// The admin port: HTTP (cpp-httplib) for operators and their tools.
//   GET /metrics  the node's state in the Prometheus text format
//   GET /health   200 while the node answers (a liveness probe)
//   GET /ready    200 once it serves: started (recovery done) and, in a
//                 cluster, holding its lease, not fenced (a readiness probe)
//   GET /         the web console, and its JSON routes under /api/
//                 (console_api.hpp; POST there for its actions)
// Anything else gets a 4xx with a one-line reason; a method other than GET
// or HEAD (or POST under /api/) is refused before its body is read. Four threads serve, one
// request per connection, each read or write waiting at most 5 s (a client
// that trickles bytes can still hold a thread: the port has no
// authentication and binds 127.0.0.1 unless told otherwise). Every answer
// is read through the node's in-process client connection, as the CLI's
// would be.
//
// Thread-safety: start/stop/port from any thread. Keeps httplib out of
// this header.
#pragma once

#include "client/connection.hpp"
#include "config/settings.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace edda::admin {

class server {
public:
  /// Listens on `host`:`port` (0: the OS picks) and answers through `node`
  /// (in-process; it must outlive the server). Errors: unavailable.
  [[nodiscard]] static caf::expected<std::unique_ptr<server>>
  start(const std::string& host, uint16_t port, client::connection node);

  /// Stops listening and returns once no request is served.
  void stop();
  ~server();

  [[nodiscard]] uint16_t port() const;

  struct impl;

private:
  explicit server(std::unique_ptr<impl> i);
  std::unique_ptr<impl> impl_;
};

/// Where node.admin_listen puts the admin port: false for "off". "auto" is
/// 127.0.0.1 and node.listen_port + 20 (0 if that port is 0).
[[nodiscard]] bool admin_address(const config::node_settings& s,
                                 std::string& host, uint16_t& port);

/// The text of /metrics, read from the node behind `node` now.
[[nodiscard]] std::string collect_metrics(const client::connection& node);

} // namespace edda::admin
