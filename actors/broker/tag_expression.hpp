// Subscription tag expressions, filtered at the broker:
//   "*"  or ""         every message, tagged or not
//   "TagA"             messages tagged TagA
//   "TagA || TagC"     messages tagged TagA or TagC
// Tags are 1-64 characters of [A-Za-z0-9_.:-]. Anything else is rejected
// with errc::invalid_tag_expression and the position of the problem.
#pragma once

#include "base/tags.hpp"

#include <caf/expected.hpp>

#include <string>
#include <vector>

namespace edda::broker {

/// A tag an expression can select (base/tags.hpp). A message's tags are
/// checked with it at produce.
using edda::selectable_tag;

class tag_expression {
public:
  tag_expression() = default; // matches everything
  [[nodiscard]] static caf::expected<tag_expression>
  parse(const std::string& text);
  /// True if any of `tags` is selected (or the expression is "*").
  [[nodiscard]] bool matches(const std::vector<std::string>& tags) const;
  template <class Range>
  [[nodiscard]] bool matches_range(const Range& tags) const {
    if (all_)
      return true;
    for (const auto& t : tags)
      for (const auto& want : tags_)
        if (t == want)
          return true;
    return false;
  }
  [[nodiscard]] bool matches_all() const noexcept {
    return all_;
  }
  [[nodiscard]] std::string to_string() const;

private:
  bool all_ = true;
  std::vector<std::string> tags_;
};

} // namespace edda::broker
