// edda's error codes. Every module returns caf::error / caf::expected values
// built from these; they serialize across nodes with their text context.
#pragma once

#include <caf/error.hpp>

#include <cstdint>
#include <string>

namespace caf {
class actor_system_config;
} // namespace caf

namespace edda {

/// Error codes of category "edda". Numbers are fixed; never reuse one.
enum class errc : uint8_t {
  none = 0,
  invalid_argument = 1,      ///< a request field is malformed or out of range
  unknown_topic = 2,         ///< no topic of that name
  unknown_group = 3,         ///< no consumer group of that name
  topic_exists = 4,          ///< create of a topic that already exists
  message_too_large = 5,     ///< message over broker.max_message_size
  invalid_tag_expression = 6,///< subscription expression does not parse
  storage_full = 7,          ///< LMDB map full: writes stopped, nothing lost
  storage_error = 8,         ///< any other LMDB failure
  data_dir_unusable = 9,     ///< data dir missing and not creatable, or read-only
  data_dir_locked = 10,      ///< another node holds the data dir
  bad_config = 11,           ///< config file or option rejected
  malformed_message = 12,    ///< a payload that does not parse
  timeout = 13,              ///< a deadline passed
  not_found = 14,            ///< an id (message, dead letter, ...) is unknown
  subscription_conflict = 15,///< member subscription differs from its group's
  unavailable = 16,          ///< node stopping, or peer unreachable
  unknown_txn = 17,          ///< end/check for a transaction id never seen
  txn_conflict = 18,         ///< outcome contradicts an outcome already recorded
  invalid_producer_group = 19,
  shutting_down = 20,
  txn_outcome_unknown = 21, ///< local transaction undecided: check-back settles it
  unknown_saga_type = 22,   ///< start of a saga type nobody registered
  invalid_saga = 23,        ///< a saga definition that does not validate
  not_owner = 24,           ///< this node does not own the resource (cluster)
  partition_unavailable = 25, ///< the home of a keyed partition is down
  fenced = 26,              ///< a stale owner or token: refused, counted
  compacted = 27,           ///< a watch from a revision the store forgot
  unauthenticated = 28,     ///< the client door refused the client's token
};

/// The errc named `name` ("unknown_topic"), errc::none if none is.
[[nodiscard]] errc errc_named(const std::string& name);

[[nodiscard]] const char* to_string(errc x);

/// Builds an error of category "edda" with a human-readable context.
[[nodiscard]] caf::error make_error(errc x);
[[nodiscard]] caf::error make_error(errc x, std::string what);

/// The errc of `e`, or errc::none if `e` is not of category "edda".
[[nodiscard]] errc code_of(const caf::error& e);

/// One line for humans: "message_too_large: 5 MiB over the 4 MiB limit".
/// Works for CAF's own errors (sec) too.
[[nodiscard]] std::string render(const caf::error& e);

/// Registers the "edda" category so that actor_system::render() can name it.
void register_error_category(caf::actor_system_config& cfg);

} // namespace edda
