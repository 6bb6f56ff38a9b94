// Names, ids and the stable hash every node and client shares; the node id
// as a strong type (a node id can never be passed where a resource name or
// a topic is meant).
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <functional>
#include <string>
#include <initializer_list>
#include <utility>
#include <vector>

namespace edda {

/// A character of a plain name (topics, consumer and producer groups, saga
/// participants): a letter, a digit, '_', '-' or '.'.
[[nodiscard]] inline bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'
         || c == '.';
}

/// Only name characters (see is_name_char).
[[nodiscard]] inline bool only_name_chars(const std::string& s) {
  return std::all_of(s.begin(), s.end(), is_name_char);
}

/// A value of type T tagged with Tag, so that two ids of the same
/// representation are still different types.
template <class Tag, class T>
class strong_id {
public:
  using value_type = T;
  strong_id() = default;
  explicit strong_id(T v) : value_(std::move(v)) {
  }
  [[nodiscard]] const T& value() const noexcept {
    return value_;
  }
  friend bool operator==(const strong_id& a, const strong_id& b) {
    return a.value_ == b.value_;
  }
  friend bool operator!=(const strong_id& a, const strong_id& b) {
    return a.value_ != b.value_;
  }
  friend bool operator<(const strong_id& a, const strong_id& b) {
    return a.value_ < b.value_;
  }

private:
  T value_{};
};

/// A node of a cluster: created once and kept in the node's LMDB
/// (cluster/identity.hpp), or its `node.name`. Placement takes and gives
/// node ids (cluster/placement.hpp).
using node_id = strong_id<struct node_id_tag, std::string>;

/// Node ids from their names (the member lists of etcd, of the wire).
[[nodiscard]] inline std::vector<node_id>
node_ids(const std::vector<std::string>& names) {
  std::vector<node_id> out;
  out.reserve(names.size());
  for (auto& n : names)
    out.emplace_back(n);
  return out;
}
[[nodiscard]] inline std::vector<node_id>
node_ids(std::initializer_list<const char*> names) {
  std::vector<node_id> out;
  for (auto* n : names)
    out.emplace_back(n);
  return out;
}

/// A fresh 128-bit id as 32 hex characters: 48 bits of wall-clock ms, then
/// 80 bits from a per-process random generator seeded with the clock, pid
/// and a counter. Ids made close in time sort close together.
[[nodiscard]] std::string new_unique_id();

/// FNV-1a, 64 bit: a stable hash (same on every build and node), used to
/// map message keys to partitions.
[[nodiscard]] constexpr uint64_t stable_hash(const char* p, size_t n) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<uint8_t>(p[i]);
    h *= 1099511628211ull;
  }
  return h;
}
[[nodiscard]] inline uint64_t stable_hash(const std::string& s) {
  return stable_hash(s.data(), s.size());
}

/// The shard (partition, saga shard, outbox, ...) of `key` among `n`:
/// stable_hash(key) % n, the one mapping every node and client uses. n > 0.
[[nodiscard]] inline uint32_t shard_of(const std::string& key, size_t n) {
  return static_cast<uint32_t>(stable_hash(key) % n);
}

/// A transaction id that names where the transaction lives in a cluster:
/// "<id>@t<topic id>p<partition>". The node that first takes a half
/// message chooses its partition and so its home; every node can route the
/// end, a check or a show of it by the id alone.
[[nodiscard]] std::string txn_id_at(const std::string& id, uint32_t topic_id,
                                    uint32_t partition);
/// The topic id and partition of such an id; false for a plain id.
[[nodiscard]] bool txn_home(const std::string& txn_id, uint32_t& topic_id,
                            uint32_t& partition);

/// True if `s` is well-formed UTF-8 (protobuf `string` fields require it).
[[nodiscard]] bool is_utf8(const std::string& s);

/// Milliseconds since the Unix epoch (wall clock, for persisted times).
[[nodiscard]] int64_t now_ms();

} // namespace edda

template <class Tag, class T>
struct std::hash<edda::strong_id<Tag, T>> {
  size_t operator()(const edda::strong_id<Tag, T>& x) const noexcept {
    return std::hash<T>{}(x.value());
  }
};
