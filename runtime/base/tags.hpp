// What a tag is (shared by the broker, which checks messages and parses
// subscriptions, and the client producers, which refuse a bad tag before
// it can fail a whole batch): 1-64 characters of [A-Za-z0-9_.:-].
#pragma once

#include <cctype>
#include <string>
#include <vector>

namespace edda {

[[nodiscard]] inline bool tag_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'
         || c == ':' || c == '-';
}

/// A tag a subscription expression can select. A message with any other
/// tag is refused at produce (nothing could ever deliver it by tag).
[[nodiscard]] inline bool selectable_tag(const std::string& tag) {
  if (tag.empty() || tag.size() > 64)
    return false;
  for (char c : tag)
    if (!tag_char(c))
      return false;
  return true;
}

/// Empty if every tag is selectable, else why not (for an error).
[[nodiscard]] inline std::string
unselectable_tag(const std::vector<std::string>& tags) {
  for (auto& t : tags)
    if (!selectable_tag(t))
      return "tag '" + t + "' could never be selected by a subscription (a "
             "tag is 1-64 of A-Z a-z 0-9 _ . : -)";
  return {};
}

} // namespace edda
