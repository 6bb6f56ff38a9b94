// Blocking administrative calls (topics, groups, dead letters, status).
// Each waits at most the connection's request timeout. Errors: those of the
// node (unknown_topic, topic_exists, invalid_argument, unknown_group, ...),
// or unavailable / timeout when the node cannot be reached.
#pragma once

#include "broker.pb.h"
#include "cluster.pb.h"
#include "replication.pb.h"
#include "client/connection.hpp"

#include <caf/expected.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace edda::client::admin {

namespace pb = edda::wire::v1;

[[nodiscard]] caf::expected<pb::TopicInfo>
create_topic(const connection& c, const std::string& name, uint32_t partitions);
[[nodiscard]] caf::expected<pb::TopicInfo>
alter_topic(const connection& c, const std::string& name, uint32_t partitions);
/// Sets a topic's retention (0 = keep for ever), online: partitions drop
/// what falls out of it within a few seconds (AlterTopic for all fields).
[[nodiscard]] caf::expected<pb::TopicInfo>
alter_topic(const connection& c, const pb::AlterTopic& req);
[[nodiscard]] caf::expected<pb::Done> delete_topic(const connection& c,
                                                   const std::string& name);
[[nodiscard]] caf::expected<pb::TopicInfo>
describe_topic(const connection& c, const std::string& name);
[[nodiscard]] caf::expected<pb::TopicList>
list_topics(const connection& c, bool include_internal = false);
[[nodiscard]] caf::expected<pb::GroupList> list_groups(const connection& c);
[[nodiscard]] caf::expected<pb::DlqEntries>
dlq_list(const connection& c, const std::string& group, uint32_t limit = 0,
         uint32_t max_body = 0);
/// Redrives the given dead letters (all if `ids` is empty) through the
/// group's retry topic.
[[nodiscard]] caf::expected<pb::DlqRedriven>
dlq_redrive(const connection& c, const std::string& group,
            const std::vector<std::string>& ids = {});
/// edda group reset-offsets: moves group `req.group()`'s committed offsets
/// on topic `req.topic()` (a dry run unless req.execute()). Errors:
/// unknown_group, unknown_topic, invalid_argument (live members without
/// force, a broadcast group), unavailable (a partition's home is down:
/// the reply of the others is in the error's text).
[[nodiscard]] caf::expected<pb::OffsetsReset>
reset_offsets(const connection& c, const pb::ResetOffsets& req);
/// edda message show / find (pb::FindMessages). Errors: unknown_topic,
/// invalid_argument (no id, key or since), not_found (show: no message
/// with that id).
[[nodiscard]] caf::expected<pb::FoundMessages>
find_messages(const connection& c, const pb::FindMessages& req);
[[nodiscard]] caf::expected<pb::NodeStatus> node_status(const connection& c);
/// A transaction's state as operators read it: "in doubt", "committed",
/// "rolled back".
[[nodiscard]] const char* txn_state_name(pb::TxnRecord::State s);
/// edda backup NAME: a consistent copy of the node's LMDB data, taken while
/// it serves, written to storage.backup_dir/NAME/data.mdb on the node's
/// machine (BackupDone.dir says where), asked by `by` (logged). `compact`
/// leaves free pages out. Answered once the copy is written and synced.
/// Errors: invalid_argument (a bad NAME, one that exists, no `by`),
/// unavailable (backups off, another one running), storage_error (no room,
/// or the copy failed: nothing is left of it), timeout.
[[nodiscard]] caf::expected<pb::BackupDone>
backup(const connection& c, const std::string& name, const std::string& by,
       bool compact = false,
       std::chrono::milliseconds timeout = std::chrono::hours{1});
/// The cluster as the node sees it: members, their links, its lease (a
/// single node answers with itself, `clustered` false).
[[nodiscard]] caf::expected<pb::ClusterStatus>
cluster_status(const connection& c);

/// edda cluster elect --unclean: lets the controller elect a copy of
/// `group` that is not in sync (acknowledged writes after it are lost),
/// recorded with `by`. Answered once elected (about a second). Errors:
/// invalid_argument (no such group, served by a live node, a clean election
/// possible, no --by), unavailable (etcd, replication off), timeout.
[[nodiscard]] caf::expected<wire::v1::ElectReply>
elect_unclean(const connection& c, const std::string& group,
              const std::string& by);
/// edda cluster move-group: moves replica group `group` to the in-sync
/// copy on node `to` (`to` == `group`: back to its own node, which follows
/// it as a standby), recorded with `by`. The group's server stops serving
/// it and that copy is elected; a group moved away from its node stays
/// where it was moved. Answered once `to` serves it (host). Errors:
/// not_found (no such group or live node), unavailable (no in-sync copy
/// there: add-replica first), invalid_argument, timeout (60 s).
[[nodiscard]] caf::expected<wire::v1::ElectReply>
move_group(const connection& c, const std::string& group,
           const std::string& to, const std::string& by);
/// edda cluster add-replica: node `node` keeps a copy of `group` beyond
/// the replication factor (a full copy first), recorded with `by`.
/// Answered once that copy is in sync (isr). Errors: as move_group;
/// timeout (120 s: the copy goes on).
[[nodiscard]] caf::expected<wire::v1::ElectReply>
add_replica(const connection& c, const std::string& group,
            const std::string& node, const std::string& by);
/// Where to send: the members with their endpoints and, for each of
/// `topics` that exists, its partitions, their homes and which homes are
/// live, and the etcd revision of the node's view (`clustered` false and
/// no homes on a single node). What producers route by.
[[nodiscard]] caf::expected<pb::ClusterMap>
cluster_map(const connection& c, const std::vector<std::string>& topics);
/// Transactions without an outcome, oldest check first.
[[nodiscard]] caf::expected<pb::TxnRecords> txn_list(const connection& c,
                                                     uint32_t limit = 0);
/// Starts a saga of a type registered on the node (idempotent: an existing
/// id returns that saga, `existed` set). An empty id gets a fresh one.
/// Errors: unknown_saga_type, invalid_argument. With `wait` > 0 the reply
/// comes once the saga has ended (completed, compensated or failed), or the
/// call fails with a timeout after `wait` (the saga goes on).
[[nodiscard]] caf::expected<pb::SagaStarted>
saga_start(const connection& c, const std::string& type, const std::string& id,
           const std::string& input,
           std::chrono::milliseconds wait = std::chrono::milliseconds{0});
/// One saga: steps, attempts, errors, timings, history. Errors: not_found.
[[nodiscard]] caf::expected<pb::SagaRecord> saga_show(const connection& c,
                                                      const std::string& id);
/// An operator command (pause, resume, retry, skip STEP, compensate),
/// recorded in the saga's history as done by `by`; returns the saga after
/// it. Errors: not_found, invalid_argument (e.g. a completed saga).
[[nodiscard]] caf::expected<pb::SagaRecord>
saga_command(const connection& c, const std::string& id,
             pb::SagaCommand::Op op, const std::string& step = {},
             const std::string& by = {});
/// Sagas matching `q` (state, type, age), oldest first.
[[nodiscard]] caf::expected<pb::SagaRecords> saga_list(const connection& c,
                                                       const pb::SagaList& q);
/// One transaction, pending or resolved. Errors: unknown_txn.
[[nodiscard]] caf::expected<pb::TxnRecord> txn_show(const connection& c,
                                                    const std::string& txn_id);
/// Operator override, recorded as resolved_by "operator:<who>".
/// Errors: unknown_txn, txn_conflict.
[[nodiscard]] caf::expected<pb::EndResult>
txn_resolve(const connection& c, const std::string& txn_id, bool commit,
            const std::string& who);

} // namespace edda::client::admin
