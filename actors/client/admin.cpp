#include "client/admin.hpp"

#include "client/connection_impl.hpp"
#include "wire/types.hpp"

#include <functional>

namespace edda::client::admin {

namespace {
template <class Reply, class Request>
caf::expected<Reply> call(const connection& c, const Request& req) {
  return c.impl()->call<Reply>(req, c.impl()->opts.request_timeout);
}
} // namespace

caf::expected<pb::TopicInfo>
create_topic(const connection& c, const std::string& name, uint32_t partitions) {
  pb::CreateTopic req;
  req.set_name(name);
  req.set_partitions(partitions);
  return call<pb::TopicInfo>(c, req);
}

caf::expected<pb::TopicInfo>
alter_topic(const connection& c, const std::string& name, uint32_t partitions) {
  pb::AlterTopic req;
  req.set_name(name);
  req.set_partitions(partitions);
  return call<pb::TopicInfo>(c, req);
}

caf::expected<pb::TopicInfo> alter_topic(const connection& c,
                                         const pb::AlterTopic& req) {
  return call<pb::TopicInfo>(c, req);
}

caf::expected<pb::Done> delete_topic(const connection& c,
                                     const std::string& name) {
  pb::DeleteTopic req;
  req.set_name(name);
  return call<pb::Done>(c, req);
}

caf::expected<pb::TopicInfo> describe_topic(const connection& c,
                                            const std::string& name) {
  pb::DescribeTopic req;
  req.set_name(name);
  return call<pb::TopicInfo>(c, req);
}

caf::expected<pb::TopicList> list_topics(const connection& c,
                                         bool include_internal) {
  pb::ListTopics req;
  req.set_include_internal(include_internal);
  return call<pb::TopicList>(c, req);
}

caf::expected<pb::GroupList> list_groups(const connection& c) {
  return call<pb::GroupList>(c, pb::ListGroups{});
}

caf::expected<pb::DlqEntries> dlq_list(const connection& c,
                                       const std::string& group,
                                       uint32_t limit,
                                       uint32_t max_body) {
  pb::DlqList req;
  req.set_max_body(max_body);
  req.set_group(group);
  req.set_limit(limit);
  return call<pb::DlqEntries>(c, req);
}

caf::expected<pb::DlqRedriven> dlq_redrive(const connection& c,
                                           const std::string& group,
                                           const std::vector<std::string>& ids) {
  pb::DlqRedrive req;
  req.set_group(group);
  for (auto& id : ids)
    req.add_ids(id);
  return call<pb::DlqRedriven>(c, req);
}

const char* txn_state_name(pb::TxnRecord::State s) {
  switch (s) {
    case pb::TxnRecord::COMMITTED: return "committed";
    case pb::TxnRecord::ROLLED_BACK: return "rolled back";
    default: return "in doubt";
  }
}

caf::expected<pb::OffsetsReset> reset_offsets(const connection& c,
                                              const pb::ResetOffsets& req) {
  return call<pb::OffsetsReset>(c, req);
}

caf::expected<pb::FoundMessages> find_messages(const connection& c,
                                               const pb::FindMessages& req) {
  return call<pb::FoundMessages>(c, req);
}

caf::expected<pb::NodeStatus> node_status(const connection& c) {
  return call<pb::NodeStatus>(c, pb::NodeStatusRequest{});
}

caf::expected<pb::BackupDone> backup(const connection& c, const std::string& name,
                                     const std::string& by, bool compact,
                                     std::chrono::milliseconds timeout) {
  pb::BackupRequest req;
  req.set_name(name);
  req.set_by(by);
  req.set_compact(compact);
  return c.impl()->call<pb::BackupDone>(req, timeout);
}

caf::expected<pb::ClusterStatus> cluster_status(const connection& c) {
  return call<pb::ClusterStatus>(c, pb::ClusterStatusRequest{});
}

namespace {

/// An ElectRequest for `group` by `by`, set up by `fill`: the controller
/// answers once it is done, so the call waits at least `at_least` (the
/// controller's own deadline, and a margin).
caf::expected<pb::ElectReply>
ask_controller(const connection& c, const std::string& group,
               const std::string& by, std::chrono::milliseconds at_least,
               const std::function<void(pb::ElectRequest&)>& fill) {
  pb::ElectRequest req;
  req.set_group(group);
  req.set_by(by);
  fill(req);
  return c.impl()->call<pb::ElectReply>(
    req, std::max(c.impl()->opts.request_timeout, at_least));
}

} // namespace

caf::expected<pb::ElectReply> elect_unclean(const connection& c,
                                            const std::string& group,
                                            const std::string& by) {
  // Elected within about 10 s, or withdrawn at 12 s.
  return ask_controller(c, group, by, std::chrono::milliseconds(15000),
                        [](pb::ElectRequest& r) { r.set_unclean(true); });
}

caf::expected<pb::ElectReply> move_group(const connection& c,
                                         const std::string& group,
                                         const std::string& to,
                                         const std::string& by) {
  // Moved, or a timeout at 60 s.
  return ask_controller(c, group, by, std::chrono::milliseconds(65000),
                        [&](pb::ElectRequest& r) { r.set_move_to(to); });
}

caf::expected<pb::ElectReply> add_replica(const connection& c,
                                          const std::string& group,
                                          const std::string& node,
                                          const std::string& by) {
  // In sync, or a timeout at 120 s.
  return ask_controller(c, group, by, std::chrono::milliseconds(125000),
                        [&](pb::ElectRequest& r) { r.set_add_replica(node); });
}

caf::expected<pb::ClusterMap>
cluster_map(const connection& c, const std::vector<std::string>& topics) {
  pb::ClusterMapRequest req;
  for (auto& t : topics)
    req.add_topics(t);
  return call<pb::ClusterMap>(c, req);
}

caf::expected<pb::TxnRecords> txn_list(const connection& c, uint32_t limit) {
  pb::TxnList req;
  req.set_limit(limit);
  return call<pb::TxnRecords>(c, req);
}

caf::expected<pb::SagaStarted> saga_start(const connection& c,
                                          const std::string& type,
                                          const std::string& id,
                                          const std::string& input,
                                          std::chrono::milliseconds wait) {
  pb::SagaStart req;
  req.set_type(type);
  req.set_id(id);
  req.set_input(input);
  if (wait.count() <= 0)
    return call<pb::SagaStarted>(c, req);
  req.set_wait(true);
  return c.impl()->call<pb::SagaStarted>(req, wait);
}

caf::expected<pb::SagaRecord> saga_show(const connection& c,
                                        const std::string& id) {
  pb::SagaGet req;
  req.set_id(id);
  return call<pb::SagaRecord>(c, req);
}

caf::expected<pb::SagaRecord> saga_command(const connection& c,
                                           const std::string& id,
                                           pb::SagaCommand::Op op,
                                           const std::string& step,
                                           const std::string& by) {
  pb::SagaCommand req;
  req.set_id(id);
  req.set_op(op);
  req.set_step(step);
  req.set_by(by);
  return call<pb::SagaRecord>(c, req);
}

caf::expected<pb::SagaRecords> saga_list(const connection& c,
                                         const pb::SagaList& q) {
  return call<pb::SagaRecords>(c, q);
}

caf::expected<pb::TxnRecord> txn_show(const connection& c,
                                      const std::string& txn_id) {
  pb::TxnShow req;
  req.set_txn_id(txn_id);
  return call<pb::TxnRecord>(c, req);
}

caf::expected<pb::EndResult> txn_resolve(const connection& c,
                                         const std::string& txn_id, bool commit,
                                         const std::string& who) {
  pb::EndTxn req;
  req.set_txn_id(txn_id);
  req.set_outcome(commit ? pb::TXN_COMMIT : pb::TXN_ROLLBACK);
  req.set_resolved_by("operator:" + (who.empty() ? std::string{"cli"} : who));
  return call<pb::EndResult>(c, req);
}

} // namespace edda::client::admin
