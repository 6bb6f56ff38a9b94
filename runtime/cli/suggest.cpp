#include "cli/suggest.hpp"

#include <algorithm>

namespace edda::cli {

std::size_t edit_distance(const std::string& a, const std::string& b) {
  // d[i][j]: the distance between a's first i and b's first j characters.
  std::vector<std::vector<std::size_t>> d(
    a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i)
    d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j)
    d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i)
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j]
        = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

namespace {

std::string undashed(const std::string& s) {
  auto first = s.find_first_not_of('-');
  return first == std::string::npos ? std::string{} : s.substr(first);
}

} // namespace

std::string closest(const std::string& typed,
                    const std::vector<std::string>& known) {
  auto word = undashed(typed);
  std::string best;
  std::size_t best_distance = 0;
  for (const auto& name : known) {
    auto candidate = undashed(name);
    auto distance = edit_distance(word, candidate);
    auto limit = std::max<std::size_t>(2, word.size() / 3);
    auto shorter = std::min(word.size(), candidate.size());
    if (distance > limit || distance >= shorter)
      continue;
    if (best.empty() || distance < best_distance) {
      best = name;
      best_distance = distance;
    }
  }
  return best;
}

} // namespace edda::cli
