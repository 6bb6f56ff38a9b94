// partition_actor: owns one partition's append-only log and, for every
// consumer cursor (a clustering group, or group@client in broadcast mode),
// the delivery state of that partition: what was delivered to which member,
// what is unacknowledged, and the committed offset (the lowest offset not
// yet acknowledged), which is persisted with the acks.
//
// Invariants:
//  * a producer is answered only after the commit that stored its batch;
//  * only committed offsets (< durable_end) are ever delivered;
//  * a nacked or timed-out message is durably copied to the group's retry
//    topic (or its DLQ) in the same transaction that advances the offset
//    past it, so it is never lost and never blocks the window;
//  * retention (TopicMeta.retention_ms / retention_bytes) is the only
//    thing that deletes log records: the oldest first, never the newest
//    (offsets go on from it after a restart), never one out for delivery
//    to a live member (its nack still finds it); cursors below the new low
//    watermark move up to it;
//  * an operator's reset (ResetOffsets) moves the cursor before its write
//    (no ack can store the old offset after it), keeps the coordinator's
//    token, and is answered after the commit.
//
// Also answered: TopicMeta (the topic's retention changed), FindMessages
// (stored messages by id, key or time; a bounded scan), DescribeTopic.
#pragma once

#include "broker/context.hpp"

#include <caf/fwd.hpp>

#include <cstdint>

namespace edda::wire::v1 {
class TopicMeta;
} // namespace edda::wire::v1

namespace edda::broker {

[[nodiscard]] caf::actor spawn_partition(caf::actor_system& sys,
                                         context_ptr ctx,
                                         const wire::v1::TopicMeta& meta,
                                         uint32_t partition);

} // namespace edda::broker
