// Placement: which node owns a resource ("topic/partition", "group/<name>",
// "txn-shard/N", "saga-shard/N"). Rendezvous (highest random weight)
// hashing over the member list: every node computes the same owner, and
// removing a member moves only the resources it owned.
#pragma once

#include "base/ids.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace edda::cluster {

/// The owner of `resource` among `members`; an empty id if none.
[[nodiscard]] node_id owner_of(const std::string& resource,
                               const std::vector<node_id>& members);

/// `members` ordered by their rendezvous weight for `resource`, highest
/// first (owner_of() is the first): the next ones are its followers.
[[nodiscard]] std::vector<node_id> ranked(const std::string& resource,
                                         std::vector<node_id> members);

/// Homes of partitions first .. first + count - 1 of `topic`, among the live
/// `members`: each goes to the member that holds the fewest
/// partitions so far (`load`: partitions per node, all topics; those placed
/// here count too), ties broken by rendezvous weight of "<topic>/<p>", so
/// every node computes the same homes. Empty if there are no members.
[[nodiscard]] std::vector<node_id>
place_partitions(const std::string& topic, uint32_t first, uint32_t count,
                 const std::vector<node_id>& members,
                 std::map<node_id, uint32_t> load);

} // namespace edda::cluster
