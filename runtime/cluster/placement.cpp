#include "cluster/placement.hpp"

#include "base/ids.hpp"

#include <algorithm>

namespace edda::cluster {

namespace {

/// The rendezvous weight of `member` for `resource`. FNV-1a alone keeps
/// near-identical inputs ("n1", "n2"; "saga/pay-30", "saga/pay-31") near
/// each other, so every resource picked the same member: the 64-bit
/// finalizer of MurmurHash3 spreads them.
uint64_t weight(const std::string& member, const std::string& resource) {
  auto h = stable_hash(member + '\x1f' + resource);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

} // namespace

node_id owner_of(const std::string& resource,
                 const std::vector<node_id>& members) {
  node_id best;
  uint64_t best_w = 0;
  for (const auto& m : members) {
    auto w = weight(m.value(), resource);
    if (best.value().empty() || w > best_w || (w == best_w && m < best)) {
      best = m;
      best_w = w;
    }
  }
  return best;
}

std::vector<node_id> ranked(const std::string& resource,
                            std::vector<node_id> members) {
  std::vector<std::pair<uint64_t, node_id>> w;
  w.reserve(members.size());
  for (auto& m : members)
    w.emplace_back(weight(m.value(), resource), std::move(m));
  std::sort(w.begin(), w.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::vector<node_id> out;
  out.reserve(w.size());
  for (auto& [x, m] : w)
    out.push_back(std::move(m));
  return out;
}

std::vector<node_id>
place_partitions(const std::string& topic, uint32_t first, uint32_t count,
                 const std::vector<node_id>& members,
                 std::map<node_id, uint32_t> load) {
  std::vector<node_id> out;
  if (members.empty())
    return out;
  for (uint32_t p = first; p < first + count; ++p) {
    auto resource = topic + "/" + std::to_string(p);
    const node_id* best = nullptr;
    uint32_t best_load = 0;
    uint64_t best_w = 0;
    for (const auto& m : members) {
      auto l = load[m];
      auto w = weight(m.value(), resource);
      if (best == nullptr || l < best_load
          || (l == best_load && (w > best_w || (w == best_w && m < *best)))) {
        best = &m;
        best_load = l;
        best_w = w;
      }
    }
    ++load[*best];
    out.push_back(*best);
  }
  return out;
}

} // namespace edda::cluster
