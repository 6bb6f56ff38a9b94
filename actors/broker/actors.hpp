// Spawn functions of the broker's actors. Protocols (all payloads are
// edda.wire.v1 protobuf messages, see runtime/wire/broker.proto):
//
// topic_manager:   CreateTopic|AlterTopic -> TopicInfo, DeleteTopic -> Done,
//                  DescribeTopic -> TopicInfo, ListTopics -> TopicList,
//                  ProduceRequest -> ProduceResult (delegated to a partition),
//                  AppendInternal -> ProduceResult,
//                  (route_atom, topic, create_retry) -> (TopicMeta, partitions)
// partition:       ProduceRequest|AppendInternal -> ProduceResult,
//                  (AssignCursor, member) -> (), AckRequest -> AckResult,
//                  DescribeTopic -> TopicInfo (this partition only)
// group_manager:   Subscribe -> Subscribed, Unsubscribe -> Done,
//                  ListGroups -> GroupList, DlqList -> DlqEntries,
//                  DlqRedrive -> DlqRedriven
// scheduler:       DelayAdded -> (), moves due delayed/retry messages to
//                  their topics through the topic manager
// The node's published actor (runtime/node/gateway.hpp) routes every
// request above, and the transactional ones to the txn coordinator
// (actors/txn), which it knows only as a handle.
#pragma once

#include <vector>

#include "broker/context.hpp"

#include <caf/fwd.hpp>

namespace edda::wire::v1 {
class TopicMeta;
} // namespace edda::wire::v1

namespace edda::broker {

[[nodiscard]] caf::actor spawn_scheduler(caf::actor_system& sys,
                                         context_ptr ctx);
/// Loads topics from storage and spawns their partitions.
[[nodiscard]] caf::actor spawn_topic_manager(caf::actor_system& sys,
                                             context_ptr ctx);
[[nodiscard]] caf::actor spawn_group_manager(caf::actor_system& sys,
                                             context_ptr ctx,
                                             caf::actor topics);
/// The idempotency store: DedupCheck|DedupMark -> DedupStatus.
[[nodiscard]] caf::actor spawn_dedup(caf::actor_system& sys, context_ptr ctx);
/// Tells the scheduler and topic manager about each other (startup wiring).
void wire_up(caf::actor scheduler, caf::actor topics, caf::actor groups);

} // namespace edda::broker
