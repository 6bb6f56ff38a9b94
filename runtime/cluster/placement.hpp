// Placement: which node owns a resource ("topic/partition", "group/<name>",
// "txn-shard/N", "saga-shard/N"). Rendezvous (highest random weight)
// hashing over the member list: every node computes the same owner, and
// removing a member moves only the resources it owned.
#pragma once

#include <string>
#include <vector>

namespace edda::cluster {

/// The owner of `resource` among `members` (node ids); empty if none.
[[nodiscard]] std::string owner_of(const std::string& resource,
                                   const std::vector<std::string>& members);

} // namespace edda::cluster
