// Partition assignment for clustering consumer groups, as a pure function
// so that it can be tested alone and computed identically everywhere.
#pragma once

#include <cstddef>
#include <vector>

namespace edda::broker {

/// Owner (index into the sorted member list) of each of `partitions`
/// partitions, in contiguous, balanced ranges: with 5 partitions and 2
/// members, member 0 gets {0,1,2} and member 1 gets {3,4}. With more members
/// than partitions, the extra members get nothing. Requires members > 0.
[[nodiscard]] std::vector<size_t> assign_average(size_t partitions,
                                                 size_t members);

} // namespace edda::broker
