// Placement: which node owns a resource ("topic/partition", "group/<name>",
// "txn-shard/N", "saga-shard/N"). Rendezvous (highest random weight)
// hashing over the member list: every node computes the same owner, and
// removing a member moves only the resources it owned.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace edda::cluster {

/// The owner of `resource` among `members` (node ids); empty if none.
[[nodiscard]] std::string owner_of(const std::string& resource,
                                   const std::vector<std::string>& members);

/// Homes of partitions first .. first + count - 1 of `topic`, among the live
/// `members` (node ids): each goes to the member that holds the fewest
/// partitions so far (`load`: partitions per node, all topics; those placed
/// here count too), ties broken by rendezvous weight of "<topic>/<p>", so
/// every node computes the same homes. Empty if there are no members.
[[nodiscard]] std::vector<std::string>
place_partitions(const std::string& topic, uint32_t first, uint32_t count,
                 const std::vector<std::string>& members,
                 std::map<std::string, uint32_t> load);

} // namespace edda::cluster
