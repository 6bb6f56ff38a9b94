#include "storage/keys.hpp"

namespace edda::storage::keys {

void put_u32(std::string& out, uint32_t x) {
  for (int i = 3; i >= 0; --i)
    out.push_back(static_cast<char>((x >> (i * 8)) & 0xff));
}

void put_u64(std::string& out, uint64_t x) {
  for (int i = 7; i >= 0; --i)
    out.push_back(static_cast<char>((x >> (i * 8)) & 0xff));
}

uint32_t get_u32(std::string_view in, size_t pos) {
  uint32_t x = 0;
  for (size_t i = 0; i < 4; ++i)
    x = (x << 8) | static_cast<uint8_t>(in[pos + i]);
  return x;
}

uint64_t get_u64(std::string_view in, size_t pos) {
  uint64_t x = 0;
  for (size_t i = 0; i < 8; ++i)
    x = (x << 8) | static_cast<uint8_t>(in[pos + i]);
  return x;
}

std::string topic_log_prefix(uint32_t topic) {
  std::string k;
  put_u32(k, topic);
  return k;
}

std::string log_prefix(uint32_t topic, uint32_t partition) {
  std::string k;
  k.reserve(16);
  put_u32(k, topic);
  put_u32(k, partition);
  return k;
}

std::string log_key(uint32_t topic, uint32_t partition, uint64_t offset) {
  auto k = log_prefix(topic, partition);
  put_u64(k, offset);
  return k;
}

uint64_t log_key_offset(std::string_view key) {
  return get_u64(key, 8);
}

std::string offset_key(std::string_view cursor, uint32_t topic,
                       uint32_t partition) {
  std::string k{cursor};
  k.push_back('\0');
  put_u32(k, topic);
  put_u32(k, partition);
  return k;
}

std::string delay_key(uint64_t due_ms, std::string_view cursor,
                      std::string_view message_id) {
  std::string k;
  put_u64(k, due_ms);
  k.append(cursor);
  k.push_back('\0');
  k.append(message_id);
  return k;
}

uint64_t delay_key_due(std::string_view key) {
  return get_u64(key, 0);
}

std::string dlq_prefix(std::string_view group) {
  std::string k{group};
  k.push_back('\0');
  return k;
}

std::string dlq_key(std::string_view group, uint64_t dead_ms,
                    std::string_view message_id) {
  auto k = dlq_prefix(group);
  put_u64(k, dead_ms);
  k.append(message_id);
  return k;
}

std::string txn_due_key(uint64_t due_ms, std::string_view txn) {
  std::string k;
  put_u64(k, due_ms);
  k.append(txn);
  return k;
}

std::string dedup_key(std::string_view scope, std::string_view key) {
  std::string k{scope};
  k.push_back('\0');
  k.append(key);
  return k;
}

} // namespace edda::storage::keys
