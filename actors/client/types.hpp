// Plain C++ types of the client API (no CAF, no protobuf).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace edda::client {

/// A message to send. Only `topic` and `body` are required.
struct message {
  std::string topic;
  std::string body;
  std::string key;                 ///< same key -> same partition, in order
  std::vector<std::string> tags;   ///< matched by subscriptions ("TagA")
  std::map<std::string, std::string> properties;
  int64_t deliver_at_ms = 0;       ///< wall-clock ms; later than now = delayed
  std::string id;                  ///< empty: the client assigns a unique id
};

/// What the node acknowledged: the message is durable.
struct send_result {
  std::string id;
  std::string topic;
  uint32_t partition = 0;
  uint64_t offset = 0;             ///< 0 for delayed messages (not yet in the log)
  bool delayed = false;
};

/// A delivered message, as the handler sees it. For a redelivery through the
/// retry topic, `topic` is the original topic.
struct received {
  message msg;
  std::string group;
  uint32_t partition = 0;
  uint64_t offset = 0;
  uint32_t reconsume_times = 0;    ///< failed deliveries before this one
  int64_t born_ms = 0;
  int64_t stored_ms = 0;
  std::string last_error;          ///< why the previous delivery failed
  bool from_retry = false;
  /// This delivery's number, for consumer::settle (a handler that returns
  /// consume_result::deferred; consumer_options::allow_deferred, else 0).
  /// Unique per consumer.
  uint64_t delivery = 0;
  /// A delivery of the same message that this one supersedes (it was not
  /// settled within the consume timeout and came back), 0 if none: that
  /// number can no longer be settled.
  uint64_t replaces = 0;
};

/// What a handler returns: done, or "deliver again later" (the next delay
/// level; after max_reconsume the message goes to the group's DLQ), or
/// "not taken" (release: neither acknowledged nor a failure; the group
/// delivers it again, to this or another member, once its consume timeout
/// passes: for a consumer that stops after N messages), or "decided later":
/// deferred, settled by consumer::settle with the delivery's number (for
/// applications that hand messages to other threads or processes; the
/// delivery stays in flight meanwhile).
enum class consume_result { success, retry_later, release, deferred };

enum class consume_mode { clustering, broadcast };
enum class consume_from { earliest, latest };

} // namespace edda::client
