#include "broker/assignment.hpp"

#include <algorithm>
#include <map>

namespace edda::broker {

std::vector<std::string> assign_sticky(const std::vector<std::string>& previous,
                                       std::vector<std::string> members) {
  std::sort(members.begin(), members.end());
  members.erase(std::unique(members.begin(), members.end()), members.end());
  auto n = previous.size();
  std::vector<std::string> owner(n);
  if (members.empty())
    return owner;
  // What each member still holds.
  std::map<std::string, size_t> held;
  for (auto& m : members)
    held[m] = 0;
  for (auto& p : previous)
    if (auto i = held.find(p); i != held.end())
      ++i->second;
  // Shares: the n % m larger ones to those holding the most (ties by id), so
  // that the fewest partitions are taken from anyone.
  auto base = n / members.size();
  auto extra = n % members.size();
  std::vector<std::string> by_load = members;
  std::stable_sort(by_load.begin(), by_load.end(),
                   [&](const std::string& a, const std::string& b) {
                     return held[a] > held[b];
                   });
  std::map<std::string, size_t> share;
  for (size_t i = 0; i < by_load.size(); ++i)
    share[by_load[i]] = base + (i < extra ? 1 : 0);
  // Each member keeps its lowest partitions up to its share.
  std::map<std::string, size_t> count;
  std::vector<size_t> freed;
  for (size_t p = 0; p < n; ++p) {
    auto s = share.find(previous[p]);
    if (s != share.end() && count[previous[p]] < s->second) {
      owner[p] = previous[p];
      ++count[previous[p]];
    } else {
      freed.push_back(p);
    }
  }
  // Freed partitions, lowest first, to the members below their share.
  auto next = freed.begin();
  for (auto& m : members)
    for (auto& c = count[m]; c < share[m] && next != freed.end(); ++c)
      owner[*next++] = m;
  return owner;
}

} // namespace edda::broker
