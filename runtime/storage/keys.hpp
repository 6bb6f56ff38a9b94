// Big-endian composite keys, so that LMDB's byte order is numeric order.
// On-disk formats (db -> key -> value):
//   meta     "node"                                -> NodeMeta
//   topics   topic name                            -> TopicMeta
//   log      topic id u32 | partition u32 | offset u64 -> Message
//   offsets  cursor | 0x00 | topic id u32 | partition u32 -> CommittedOffset
//   delay    due ms u64 | cursor | 0x00 | message id -> Delayed
//   dlq      group | 0x00 | dead ms u64 | message id -> DeadLetter
//   dedup    scope | 0x00 | business key           -> DedupRecord
//   half     txn id                                -> TxnRecord
//   txn_due  next check ms u64 | txn id            -> (empty)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace edda::storage::keys {

void put_u32(std::string& out, uint32_t x);
void put_u64(std::string& out, uint64_t x);
[[nodiscard]] uint32_t get_u32(std::string_view in, size_t pos);
[[nodiscard]] uint64_t get_u64(std::string_view in, size_t pos);

[[nodiscard]] std::string log_prefix(uint32_t topic, uint32_t partition);
[[nodiscard]] std::string log_key(uint32_t topic, uint32_t partition,
                                  uint64_t offset);
[[nodiscard]] std::string topic_log_prefix(uint32_t topic);
[[nodiscard]] uint64_t log_key_offset(std::string_view key);

[[nodiscard]] std::string offset_key(std::string_view cursor, uint32_t topic,
                                     uint32_t partition);
[[nodiscard]] std::string delay_key(uint64_t due_ms, std::string_view cursor,
                                    std::string_view message_id);
[[nodiscard]] uint64_t delay_key_due(std::string_view key);
[[nodiscard]] std::string dlq_prefix(std::string_view group);
[[nodiscard]] std::string dlq_key(std::string_view group, uint64_t dead_ms,
                                  std::string_view message_id);
[[nodiscard]] std::string txn_due_key(uint64_t due_ms, std::string_view txn);
[[nodiscard]] std::string dedup_key(std::string_view scope,
                                    std::string_view key);

} // namespace edda::storage::keys
