#include "config/toml.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <string_view>
#include <utility>

namespace edda::config::toml {

const char* to_string(kind k) {
  switch (k) {
    case kind::string:
      return "a string";
    case kind::integer:
      return "an integer";
    case kind::floating:
      return "a float";
    case kind::boolean:
      return "a boolean";
    case kind::array:
      return "an array";
    case kind::table:
      return "a table";
    case kind::datetime:
      return "a date-time";
  }
  return "a value";
}

value value::of_string(std::string s) {
  value v;
  v.type = kind::string;
  v.str = std::move(s);
  return v;
}

value value::of_integer(int64_t i) {
  value v;
  v.type = kind::integer;
  v.integer = i;
  return v;
}

value value::of_array(std::vector<value> items) {
  value v;
  v.type = kind::array;
  v.array = std::move(items);
  return v;
}

namespace {

bool is_bare_key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
         || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

std::string str(std::string_view v) {
  return std::string(v.data(), v.size());
}

/// toml++'s node as edda's value (dates and tables only named).
value convert(const ::toml::node& n) {
  value v;
  switch (n.type()) {
    case ::toml::node_type::string:
      v.type = kind::string;
      v.str = n.as_string()->get();
      break;
    case ::toml::node_type::integer:
      v.type = kind::integer;
      v.integer = n.as_integer()->get();
      break;
    case ::toml::node_type::floating_point:
      v.type = kind::floating;
      v.floating = n.as_floating_point()->get();
      break;
    case ::toml::node_type::boolean:
      v.type = kind::boolean;
      v.boolean = n.as_boolean()->get();
      break;
    case ::toml::node_type::array:
      v.type = kind::array;
      for (const auto& item : *n.as_array())
        v.array.push_back(convert(item));
      break;
    case ::toml::node_type::table:
      v.type = kind::table;
      break;
    default: // date, time, date_time
      v.type = kind::datetime;
      break;
  }
  return v;
}

/// Every table under `t` and every value that is not a table, depth first.
void flatten(const ::toml::table& t, key_path& path, document& out) {
  for (const auto& [k, node] : t) {
    path.push_back(str(k.str()));
    int line = static_cast<int>(k.source().begin.line);
    int column = static_cast<int>(k.source().begin.column);
    if (const auto* sub = node.as_table()) {
      out.tables.push_back({path, line, column});
      flatten(*sub, path, out);
    } else {
      out.entries.push_back({path, convert(node), line, column});
    }
    path.pop_back();
  }
}

template <class T>
void sort_by_position(std::vector<T>& xs) {
  std::stable_sort(xs.begin(), xs.end(), [](const T& a, const T& b) {
    return a.line != b.line ? a.line < b.line : a.column < b.column;
  });
}

} // namespace

bool parse(const std::string& text, const std::string& source_name,
           document& out, std::string& error) {
  out = document{};
  try {
    auto root = ::toml::parse(std::string_view{text},
                              std::string_view{source_name});
    key_path path;
    flatten(root, path, out);
  } catch (const ::toml::parse_error& e) {
    const auto& at = e.source().begin;
    error = source_name + ":" + std::to_string(at.line) + ":"
            + std::to_string(at.column) + ": " + str(e.description());
    // The mistake toml++ names least clearly: a bare word as a value.
    if (e.description().find("could not determine value type")
        != std::string_view::npos)
      error += " (strings must be quoted)";
    return false;
  }
  sort_by_position(out.tables);
  sort_by_position(out.entries);
  return true;
}

bool parse_value(const std::string& text, value& out, std::string& error) {
  if (text.find_first_of("\r\n") != std::string::npos) {
    error = "a value here must be on one line";
    return false;
  }
  try {
    auto root = ::toml::parse("v = " + text);
    out = convert(*root.get("v"));
  } catch (const ::toml::parse_error& e) {
    // The column counts the "v = " put in front.
    error = str(e.description());
    return false;
  }
  return true;
}

bool parse_assignment(const std::string& text, key_path& key, std::string& rest,
                      std::string& error) {
  // The first '=' outside a quoted key part.
  char quote = 0;
  size_t eq = std::string::npos;
  for (size_t i = 0; i < text.size() && eq == std::string::npos; ++i) {
    char c = text[i];
    if (quote != 0) {
      if (c == '\\' && quote == '"')
        ++i;
      else if (c == quote)
        quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '=') {
      eq = i;
    }
  }
  if (eq == std::string::npos) {
    error = "expected '=' after key";
    return false;
  }
  std::string key_text = text.substr(0, eq);
  if (key_text.find_first_of("\r\n#") != std::string::npos) {
    error = "invalid key '" + key_text + "'";
    return false;
  }
  key.clear();
  try {
    auto root = ::toml::parse(key_text + " = 0");
    const ::toml::table* t = &root;
    while (t != nullptr && t->size() == 1) {
      auto it = t->cbegin();
      key.push_back(str(it->first.str()));
      t = it->second.as_table();
    }
  } catch (const ::toml::parse_error& e) {
    error = "invalid key '" + key_text + "': " + str(e.description());
    return false;
  }
  size_t from = text.find_first_not_of(" \t", eq + 1);
  rest = from == std::string::npos ? std::string{} : text.substr(from);
  while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t'))
    rest.pop_back();
  return true;
}

std::string format_key(const key_path& path) {
  std::string out;
  for (const auto& part : path) {
    if (!out.empty())
      out += '.';
    bool bare = !part.empty();
    for (char c : part)
      bare = bare && is_bare_key_char(c);
    out += bare ? part : quote(part);
  }
  return out;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04X",
                        static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

std::string format_value(const value& v) {
  switch (v.type) {
    case kind::string:
      return quote(v.str);
    case kind::integer:
      return std::to_string(v.integer);
    case kind::floating: {
      char buf[64];
      auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), v.floating);
      std::string s(buf, ec == std::errc{} ? p : buf);
      // Keep it a float when read back.
      if (s.find_first_of(".eEn") == std::string::npos)
        s += ".0";
      return s;
    }
    case kind::boolean:
      return v.boolean ? "true" : "false";
    case kind::array: {
      std::string out = "[";
      for (size_t i = 0; i < v.array.size(); ++i) {
        if (i > 0)
          out += ", ";
        out += format_value(v.array[i]);
      }
      return out + "]";
    }
    case kind::table:
      return "{...}";
    case kind::datetime:
      return "(a date-time)";
  }
  return {};
}

} // namespace edda::config::toml
