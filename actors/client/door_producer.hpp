// Internal: producer over the client door (see producer.hpp). No gRPC here.
#pragma once

#include "client/door_link.hpp"
#include "client/producer.hpp"

#include <memory>
#include <thread>

namespace edda::client {

class door_producer {
public:
  door_producer(std::shared_ptr<door_link> link, producer_options opts);
  /// Waits for outstanding sends, then ends the stream.
  ~door_producer();

  /// `m` is checked by producer::send_async; `cb` runs on a stream's
  /// reader thread.
  void send_async(message m, producer::callback cb);
  void flush();

private:
  struct state;
  std::shared_ptr<state> st_;
  std::thread writer_;
};

} // namespace edda::client
