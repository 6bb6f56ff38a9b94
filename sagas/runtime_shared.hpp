// Internal to the saga runtime: what its actors are given when they are
// spawned (the saga types with the actors that carry out their steps, the
// topic manager, the outboxes) and the record helpers that shards and
// instances both use. Nothing here changes after start(): the actors share
// no mutable state. Include only in actor translation units (it pulls in
// the generated protobuf headers).
#pragma once

#include "broker/context.hpp"
#include "sagas/saga.hpp"
#include "storage/environment.hpp"
#include "wire/types.hpp"

#include <caf/actor.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace edda::sagas {

/// Who carries out each part of a step.
struct step_actors {
  caf::actor action, compensation, confirm;
};

/// Per type: the definition and its step actors.
struct type_entry {
  definition_ptr def;
  std::vector<step_actors> steps;
};

using registry = std::map<std::string, type_entry>;

/// What shards and instances are given at spawn, fixed once the runtime
/// has started and only read: the types, the topics (reliable-message
/// steps append through it) and the outboxes (commands to named
/// participants go through them). Who serves a name is not here: the
/// participant_directory owns that and tells the outboxes and keepers.
struct runtime_shared {
  registry reg;
  caf::actor topics;
  std::vector<caf::actor> outboxes;
  /// This process's run of the runtime (a fresh id at each start): the
  /// half messages of remote message steps carry it, so that the checker
  /// knows one sent before a restart (saga_checker.hpp).
  std::string boot;
};
using shared_env = std::shared_ptr<const runtime_shared>;

inline saga_state state_of(const wire::v1::SagaRecord& r) {
  return static_cast<saga_state>(r.state());
}

/// The producer group under which a node's sagas send the messages of
/// reliable-message steps whose partition lives on another node (as
/// transactions); its checker answers from the saga records
/// (saga_checker.hpp).
inline std::string saga_producer_group(const std::string& node_id) {
  return broker::node_group_prefix + ("sagas." + node_id);
}

/// The write that stores a record's bytes (db saga, key: its id).
inline wire::v1::WriteBatch record_write(const std::string& id,
                                         std::string bytes) {
  wire::v1::WriteBatch b;
  auto* op = b.add_ops();
  op->set_db(static_cast<uint32_t>(storage::db::saga));
  op->set_key(id);
  op->set_value(std::move(bytes));
  return b;
}

/// The write that stores `rec` as it is now.
inline wire::v1::WriteBatch record_write(const wire::v1::SagaRecord& rec) {
  return record_write(rec.id(), rec.SerializeAsString());
}

} // namespace edda::sagas
