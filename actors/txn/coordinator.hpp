// txn_coordinator: transactional messages (RocketMQ-style half messages)
// with the known weak spots fixed.
//
//   producer                coordinator                      topic
//     HalfMessage ----------> store PREPARED (invisible) + due index
//     <---------- HalfAck (durable)
//     run the local transaction
//     EndTxn(COMMIT) -------> append message + record COMMITTED, one txn --> log
//     <---------- EndResult (durable)
//   no outcome by next_check: CheckTxn -> the producer that sent it if it is
//   alive, else any live member of its producer group.
//
// Rules:
//  * outcomes are keyed by txn id: a repeated or late commit is a no-op that
//    reports `already`, never a second message; a commit after a rollback
//    (or the reverse) is txn_conflict;
//  * a check that could not be delivered (no live producer of the group) does
//    not use up the budget; an answered `unknown`, a checker error or a
//    checker timeout does (txn.max_checks); backoff doubles from
//    txn.check_after up to txn.max_check_interval;
//  * after the last check the final policy (txn.final_policy, default
//    rollback) is applied, recorded (resolved_by "policy") and alerted;
//  * pending transactions are indexed by due time: a slow one never delays
//    the others; on restart every PREPARED record is loaded and checked.
//
// Protocol: RegisterProducer -> ProducerRegistered, HalfMessage -> HalfAck,
// EndTxn -> EndResult, TxnList -> TxnRecords, TxnShow -> TxnRecord.
// Errors: invalid_producer_group, invalid_argument, unknown_topic,
// message_too_large, unknown_txn, txn_conflict, storage_*.
#pragma once

#include "broker/context.hpp"

#include <caf/fwd.hpp>

namespace edda::txn {

[[nodiscard]] caf::actor spawn_coordinator(caf::actor_system& sys,
                                           broker::context_ptr ctx,
                                           caf::actor topics);

/// Validates a producer group name: 1-120 of [A-Za-z0-9_.-].
[[nodiscard]] caf::error check_producer_group(const std::string& name);

} // namespace edda::txn
