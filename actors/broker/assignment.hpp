// Partition assignment for clustering consumer groups, as a pure function
// so that it can be tested alone and computed identically everywhere.
// Standard library only.
#pragma once

#include <string>
#include <vector>

namespace edda::broker {

/// The owner of each partition of one topic among `members` (consumer
/// client ids, in any order; duplicates count once), sticky: every member
/// gets floor(n/m) or ceil(n/m) of the n partitions, and as many partitions
/// as possible stay with their previous owner. `previous[p]` is the member
/// that held partition p (empty: nobody, e.g. a new partition or a new
/// coordinator); the result has one entry per entry of `previous`.
///
/// What moves, and only that: the partitions of members that are gone, and
/// those of members holding more than their share (their highest partition
/// numbers go first). The ceil(n/m) shares go to the members that hold the
/// most, so no fewer partitions could move. Freed partitions, lowest first,
/// fill the members below their share in client id order; so the first
/// assignment (nobody held anything) is contiguous ranges over the sorted
/// members: 5 partitions, members {a, b} -> a {0,1,2}, b {3,4}. With more
/// members than partitions, the extra members get nothing. No members:
/// every entry is empty.
///
/// Deterministic: the same arguments give the same result.
[[nodiscard]] std::vector<std::string>
assign_sticky(const std::vector<std::string>& previous,
              std::vector<std::string> members);

} // namespace edda::broker
