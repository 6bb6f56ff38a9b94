// Internal: consumer over the client door (see consumer.hpp). No gRPC here.
#pragma once

#include "client/consumer.hpp"
#include "client/door_link.hpp"

#include <memory>

namespace edda::client {

class door_consumer {
public:
  /// Subscribes over a Consume stream; the error of the subscription.
  [[nodiscard]] static caf::expected<std::shared_ptr<door_consumer>>
  start(std::shared_ptr<door_link> link, const consumer_options& opts,
        handler h);

  ~door_consumer();
  /// Leaves the group (ends the stream: what it holds goes back at once).
  void stop();
  std::vector<uint64_t> settle(const std::vector<settlement>& batch);
  [[nodiscard]] consumer_counters counters() const;

  struct state;

private:
  explicit door_consumer(std::shared_ptr<state> st) : st_(std::move(st)) {
  }
  std::shared_ptr<state> st_;
};

} // namespace edda::client
