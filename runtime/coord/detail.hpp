// Argument checks and key arithmetic shared by the two coord::client
// implementations (fake.cpp, etcd.cpp), so that both refuse the same input
// with the same error. Not part of the interface.
//
// Thread-safety: pure functions.
#pragma once

#include "base/errc.hpp"

#include <caf/error.hpp>
#include <chrono>
#include <cstddef>
#include <string>

namespace edda::coord::detail {

/// The largest key + value a put may carry. etcd refuses requests over
/// 1.5 MiB (--max-request-bytes); 1 MiB leaves room for the rest of a txn.
constexpr size_t max_put_bytes = size_t{1} << 20;

constexpr std::chrono::seconds min_ttl{1};
constexpr std::chrono::seconds max_ttl{3600};

/// invalid_argument for an empty key.
[[nodiscard]] inline caf::error check_key(const std::string& key) {
  if (key.empty())
    return make_error(errc::invalid_argument, "coord: empty key");
  return {};
}

/// invalid_argument for an empty key or a key + value over max_put_bytes.
[[nodiscard]] inline caf::error check_put(const std::string& key,
                                          const std::string& value) {
  if (auto err = check_key(key))
    return err;
  if (key.size() + value.size() > max_put_bytes)
    return make_error(
      errc::invalid_argument,
      "coord: key + value of " + std::to_string(key.size() + value.size())
        + " bytes over the limit of " + std::to_string(max_put_bytes));
  return {};
}

/// invalid_argument for a TTL outside [min_ttl, max_ttl].
[[nodiscard]] inline caf::error check_ttl(std::chrono::seconds ttl) {
  if (ttl < min_ttl || ttl > max_ttl)
    return make_error(errc::invalid_argument, "coord: lease TTL "
                                                + std::to_string(ttl.count())
                                                + " s outside 1 s .. 1 h");
  return {};
}

/// The smallest key greater than every key that starts with `prefix` (etcd's
/// range_end of a prefix): its last byte below 0xff incremented, the 0xff
/// bytes after it dropped. "\0" (etcd: no upper bound) when there is none.
[[nodiscard]] inline std::string prefix_end(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

} // namespace edda::coord::detail
