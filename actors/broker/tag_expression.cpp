#include "broker/tag_expression.hpp"

#include "base/errc.hpp"

#include <cctype>

namespace edda::broker {

namespace {
caf::error bad(const std::string& text, size_t pos, const std::string& why) {
  return make_error(errc::invalid_tag_expression,
                    "'" + text + "' at position " + std::to_string(pos) + ": "
                      + why
                      + " (use '*', a tag, or tags joined by '||')");
}
} // namespace

caf::expected<tag_expression> tag_expression::parse(const std::string& text) {
  tag_expression out;
  size_t i = 0;
  auto skip_ws = [&] {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i])))
      ++i;
  };
  skip_ws();
  if (i == text.size())
    return out; // empty = everything
  if (text[i] == '*') {
    ++i;
    skip_ws();
    if (i != text.size())
      return bad(text, i, "nothing may follow '*'");
    return out;
  }
  out.all_ = false;
  for (;;) {
    skip_ws();
    size_t start = i;
    while (i < text.size() && tag_char(text[i]))
      ++i;
    if (i == start)
      return bad(text, i,
                 i == text.size() ? "expected a tag at the end"
                                  : std::string("unexpected '") + text[i]
                                      + "', expected a tag");
    if (i - start > 64)
      return bad(text, start, "tag longer than 64 characters");
    out.tags_.emplace_back(text.substr(start, i - start));
    skip_ws();
    if (i == text.size())
      break;
    if (text.compare(i, 2, "||") != 0)
      return bad(text, i, std::string("unexpected '") + text[i] + "'");
    i += 2;
  }
  return out;
}

bool tag_expression::matches(const std::vector<std::string>& tags) const {
  return matches_range(tags);
}

std::string tag_expression::to_string() const {
  if (all_)
    return "*";
  std::string out;
  for (const auto& t : tags_) {
    if (!out.empty())
      out += " || ";
    out += t;
  }
  return out;
}

} // namespace edda::broker
