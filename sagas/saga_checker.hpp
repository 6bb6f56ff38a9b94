// saga_checker: answers the check-back of the transactions that carry the
// messages of reliable-message steps whose partition lives on another node
// (saga_instance.cpp, emit_remote).
//
// Such a step stores its message as a half message on the partition's
// home, then records itself done with the transaction's id, then commits.
// If the commit does not arrive (this node stopped in between, or the home
// was unreachable), the home's txn coordinator asks the producer group
// `edda.sagas.<node id>` (saga_producer_group()), whose only member is this
// node's checker; it answers from the saga record as stored in LMDB, never
// from an instance's memory:
//   * the step is recorded with this transaction: commit;
//   * the step's attempt was recorded without it (the attempt failed, or a
//     later attempt sent another), or the saga ended without it: rollback;
//   * it was sent before this node's last restart (its `saga_boot` is not
//     this run's) and is not recorded: rollback (that run died between the
//     half and the record; the attempt runs again with a new half);
//   * otherwise (the attempt is not recorded yet): unknown, ask again later.
//
// In a cluster only. The checker registers with the txn coordinator of
// every member (this node's, and each linked peer's through its gateway)
// at start, when a link comes up, and again every 2 s (a coordinator forgets
// a producer whose link dropped).
//
// Protocol:
//   CheckTxn -> CheckAnswer     from a txn coordinator
//   MembershipView, (link_atom, node, gateway)   from the cluster actor
//   tick_atom                   from itself
//   stop_atom                   from saga_runtime::stop()
#pragma once

#include "broker/context.hpp"

#include <caf/fwd.hpp>

#include <cstdint>
#include <string>

namespace edda::wire::v1 {
class SagaRecord;
} // namespace edda::wire::v1

namespace edda::sagas {

enum class check_outcome { unknown, commit, rollback };

/// The decision for the transaction `txn_id` sent by attempt `attempt` of
/// step `step`, from the stored record (null: none stored); `earlier_run`:
/// it was sent before this node's last restart.
[[nodiscard]] check_outcome
outcome_from_record(const wire::v1::SagaRecord* rec, const std::string& step,
                    uint32_t attempt, const std::string& txn_id,
                    bool earlier_run = false);

/// Spawns the checker of this node's sagas; `txn`: this node's txn
/// coordinator (its keeper); `boot`: this run's id (runtime_shared).
[[nodiscard]] caf::actor spawn_saga_checker(caf::actor_system& sys,
                                            broker::context_ptr ctx,
                                            caf::actor txn, std::string boot);

} // namespace edda::sagas
