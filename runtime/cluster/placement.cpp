#include "cluster/placement.hpp"

#include "base/ids.hpp"

namespace edda::cluster {

std::string owner_of(const std::string& resource,
                     const std::vector<std::string>& members) {
  std::string best;
  uint64_t best_w = 0;
  for (const auto& m : members) {
    auto key = m + '\x1f' + resource;
    auto w = stable_hash(key);
    if (best.empty() || w > best_w || (w == best_w && m < best)) {
      best = m;
      best_w = w;
    }
  }
  return best;
}

} // namespace edda::cluster
