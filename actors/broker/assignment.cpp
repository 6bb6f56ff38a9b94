#include "broker/assignment.hpp"

namespace edda::broker {

std::vector<size_t> assign_average(size_t partitions, size_t members) {
  std::vector<size_t> owner(partitions, 0);
  if (members == 0)
    return owner;
  size_t base = partitions / members;
  size_t extra = partitions % members;
  size_t p = 0;
  for (size_t m = 0; m < members && p < partitions; ++m) {
    size_t n = base + (m < extra ? 1 : 0);
    for (size_t i = 0; i < n; ++i)
      owner[p++] = m;
  }
  return owner;
}

} // namespace edda::broker
