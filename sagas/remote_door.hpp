// Internal: participant_host over the client door (a Participate stream per
// worker). No gRPC or CAF here.
#pragma once

#include "client/door_link.hpp"
#include "sagas/remote.hpp"

#include <atomic>
#include <map>
#include <memory>

namespace edda::sagas {

class door_host {
public:
  /// Registers every worker (one stream each, one call at a time); the
  /// first registration's error.
  [[nodiscard]] static caf::expected<std::shared_ptr<door_host>>
  start(std::shared_ptr<client::door_link> link,
        std::map<std::string, step_function> handlers,
        const host_options& opts);
  /// Ends the streams (a call in progress when its stream ends is failed
  /// by the node, retryably) and joins the workers.
  ~door_host();
  [[nodiscard]] uint64_t served() const;

  struct state;

private:
  explicit door_host(std::shared_ptr<state> st) : st_(std::move(st)) {
  }
  std::shared_ptr<state> st_;
};

} // namespace edda::sagas
