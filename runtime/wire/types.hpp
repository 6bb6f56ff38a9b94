// The one CAF type-id block of edda: every protobuf type that travels in a
// CAF message (between actors, between nodes) is registered here, under the
// same name on every node. Include only in actor translation units: it pulls
// in CAF and the generated protobuf headers.
#pragma once

#include "broker.pb.h"
#include "cluster.pb.h"
#include "records.pb.h"
#include "replication.pb.h"

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/sec.hpp>
#include <caf/type_id.hpp>

#include <google/protobuf/message.h>

#include <string>
#include <type_traits>

namespace caf {
class actor_system_config;
} // namespace caf

namespace edda::wire::v1 {

template <class T>
using if_pb =
  std::enable_if_t<std::is_base_of_v<google::protobuf::Message, T>>;

/// Serializer and to_string: a protobuf message travels as its bytes.
template <class Inspector, class T, class = if_pb<T>>
std::enable_if_t<Inspector::reads_state, typename Inspector::result_type>
inspect(Inspector& f, T& x) {
  if constexpr (std::is_same_v<typename Inspector::result_type, void>) {
    std::string txt = x.ShortDebugString();
    return f(caf::meta::type_name(T::descriptor()->full_name().c_str()), txt);
  } else {
    std::string buf = x.SerializeAsString();
    return f(caf::meta::type_name("pb"), buf);
  }
}

/// Deserializer: bytes that do not parse are a clear error, never a crash.
template <class Inspector, class T, class = if_pb<T>>
std::enable_if_t<Inspector::writes_state, typename Inspector::result_type>
inspect(Inspector& f, T& x) {
  std::string buf;
  auto parse = caf::meta::load_callback([&]() -> caf::error {
    if (!x.ParseFromString(buf))
      return caf::make_error(caf::sec::invalid_argument,
                             "protobuf parse failed");
    return caf::none;
  });
  return f(caf::meta::type_name("pb"), buf, parse);
}

} // namespace edda::wire::v1

namespace edda::wire {
namespace pb = edda::wire::v1;
/// The size broker.max_message_size limits: body + key + tags + property
/// names and values (what the producer checks too).
[[nodiscard]] size_t payload_size(const v1::Message& m);

/// Registers edda's type-id block and error category: call on every
/// actor_system_config before constructing the actor_system.
void register_types(caf::actor_system_config& cfg);
} // namespace edda::wire

// clang-format off
CAF_BEGIN_TYPE_ID_BLOCK(edda, caf::first_custom_type_id)
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::Message))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::TopicMeta))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::WriteBatch))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::WriteResult))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::CreateTopic))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::AlterTopic))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::DeleteTopic))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::DescribeTopic))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ListTopics))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::GetTopic))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::DedupCheck))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::DedupMark))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::DedupStatus))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::TopicInfo))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::TopicList))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::Done))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ProduceRequest))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ProduceResult))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::Subscribe))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::Subscribed))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::Unsubscribe))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::Deliver))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::AckRequest))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::AckResult))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::AssignCursor))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::GroupInfo))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ListGroups))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::GroupList))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::DlqList))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::DlqEntries))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::DlqRedrive))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::DlqRedriven))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::AppendInternal))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::DelayAdded))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::NodeStatusRequest))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::NodeStatus))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::TxnRecord))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::RegisterProducer))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ProducerRegistered))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::UnregisterProducer))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::HalfMessage))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::HalfAck))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::EndTxn))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::EndResult))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::CheckTxn))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::CheckAnswer))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::TxnList))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::TxnRecords))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::TxnShow))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::HalfBatch))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::EndBatch))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::BatchResult))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::DeliverFrame))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::SagaRecord))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::StepCommand))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::StepReply))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::SagaStart))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::SagaStarted))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::SagaGet))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::SagaList))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::SagaRecords))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::SagaCommand))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ParticipantRegister))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ParticipantRegistered))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::StepBatch))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::StepBatchReply))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::MembershipView))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ClusterStatusRequest))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ClusterStatus))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::PeerHello))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::PeerWelcome))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ClusterTopic))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::TopicUpdate))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::FindOwner))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::Owner))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::FindCoordinator))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ClusterMapRequest))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ClusterMap))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ListOwners))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::OwnerList))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ReplBatch))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ReplShip))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ReplAck))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ReplicaGroup))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ReplPositionQuery))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ElectRequest))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ElectReply))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ListReplicaGroups))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ReplicaGroupList))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::BackupRequest))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::BackupDone))
  CAF_ADD_ATOM(edda, edda::wire, flush_atom, "flush")
  CAF_ADD_ATOM(edda, edda::wire, tick_atom, "tick")
  CAF_ADD_ATOM(edda, edda::wire, drain_atom, "drain")
  CAF_ADD_ATOM(edda, edda::wire, stop_atom, "stop")
  CAF_ADD_ATOM(edda, edda::wire, route_atom, "route")
  CAF_ADD_ATOM(edda, edda::wire, retry_atom, "retry")
  CAF_ADD_ATOM(edda, edda::wire, deadline_atom, "deadline")
  CAF_ADD_ATOM(edda, edda::wire, serving_atom, "serving")
  CAF_ADD_ATOM(edda, edda::wire, link_atom, "link")
  CAF_ADD_ATOM(edda, edda::wire, watch_atom, "watch")
  CAF_ADD_ATOM(edda, edda::wire, lost_atom, "lost")
  CAF_ADD_ATOM(edda, edda::wire, txn_atom, "txn")
  CAF_ADD_ATOM(edda, edda::wire, current_atom, "current")
  CAF_ADD_ATOM(edda, edda::wire, restart_atom, "restart")
  CAF_ADD_ATOM(edda, edda::wire, replicated_atom, "replicated")
  CAF_ADD_ATOM(edda, edda::wire, copied_atom, "copied")
  CAF_ADD_ATOM(edda, edda::wire, release_atom, "release")
  // Added later, after all the above: ids never move (nodes of two
  // versions in one cluster agree on the older ones).
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::ResetOffsets))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::OffsetsReset))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::FindMessages))
  CAF_ADD_TYPE_ID(edda, (edda::wire::v1::FoundMessages))
  CAF_ADD_ATOM(edda, edda::wire, trim_atom, "trim")
CAF_END_TYPE_ID_BLOCK(edda)
// clang-format on
