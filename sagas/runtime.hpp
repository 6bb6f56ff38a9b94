// The saga runtime of a node: saga_shard actors (a saga belongs to shard
// shard_of(id, shards)) that start sagas and own one saga_instance
// actor per running saga.
//
// Each shard sits behind a keeper actor (what shard_for() and shards()
// return) that restarts it after a crash; instances are linked to their
// shard and resumed by the new one.
//
// An instance persists every transition through the group-commit writer
// before the side effect it authorises (write-ahead), so after a crash (of
// the instance, its shard, or the whole node) the shard reloads every saga
// that is not terminal and resumes it: a step that was in flight is sent
// again with the same idempotency key.
//
// Protocol (to shard_for(id)):
//   SagaStart   -> SagaStarted | unknown_saga_type, invalid_argument
//                  (wait: once the saga has ended)
//   SagaGet     -> SagaRecord  | not_found
//   SagaCommand -> SagaRecord  | not_found, invalid_argument
//   SagaList    -> SagaRecords (any shard)
// and to directory():
//   ParticipantRegister -> ParticipantRegistered | invalid_argument
#pragma once

#include "broker/context.hpp"
#include "sagas/saga.hpp"

#include <caf/fwd.hpp>

#include <memory>
#include <string>
#include <vector>

namespace edda::sagas {

struct runtime_options {
  uint32_t shards = 4;
  /// Function participants on their own threads (production). Deterministic
  /// tests pass false so that the test scheduler runs them.
  bool detached_participants = true;
  /// The node's topic manager: reliable-message steps append through it.
  caf::actor topics;
  /// The node's txn coordinator. In a cluster a reliable-message step whose
  /// partition lives on another node sends its message as a transaction;
  /// the saga checker registers here (and with every member) to answer its
  /// check-back (saga_checker.hpp).
  caf::actor txn;
};

class saga_runtime {
public:
  saga_runtime(caf::actor_system& sys, broker::context_ptr ctx,
               runtime_options opts = {});
  ~saga_runtime();
  saga_runtime(const saga_runtime&) = delete;
  saga_runtime& operator=(const saga_runtime&) = delete;

  /// Registers a saga type (before start). Errors: invalid_saga.
  [[nodiscard]] caf::error add(saga_definition def);

  /// Spawns the shards; each resumes its sagas that are not terminal.
  void start();

  /// Stops shards, instances and function participants.
  void stop();

  [[nodiscard]] caf::actor shard_for(const std::string& saga_id) const;
  [[nodiscard]] const std::vector<caf::actor>& shards() const;
  /// Where participant processes register their names (after start()).
  [[nodiscard]] const caf::actor& directory() const;

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

} // namespace edda::sagas
