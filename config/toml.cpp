#include "config/toml.hpp"

#include <charconv>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
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

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// Cursor over one line; every method reports failures through `error_`.
class line_parser {
public:
  explicit line_parser(const std::string& line) : s_(line) {}

  [[nodiscard]] const std::string& error() const {
    return error_;
  }

  [[nodiscard]] bool at_end() const {
    return pos_ >= s_.size();
  }

  [[nodiscard]] char peek(size_t ahead = 0) const {
    return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : '\0';
  }

  [[nodiscard]] size_t pos() const {
    return pos_;
  }

  void advance() {
    ++pos_;
  }

  void skip_ws() {
    while (!at_end() && (s_[pos_] == ' ' || s_[pos_] == '\t'))
      ++pos_;
  }

  /// True if only blanks and an optional comment remain.
  [[nodiscard]] bool at_line_end() {
    skip_ws();
    return at_end() || peek() == '#';
  }

  [[nodiscard]] bool parse_key(key_path& out) {
    out.clear();
    for (;;) {
      skip_ws();
      std::string part;
      char c = peek();
      if (c == '"') {
        if (!parse_basic_string(part))
          return false;
      } else if (c == '\'') {
        if (!parse_literal_string(part))
          return false;
      } else if (is_bare_key_char(c)) {
        while (!at_end() && is_bare_key_char(peek()))
          part += s_[pos_++];
      } else {
        return fail(at_end()
                      ? "expected a key"
                      : "invalid character '" + std::string(1, c) + "' in key");
      }
      out.push_back(std::move(part));
      skip_ws();
      if (peek() != '.')
        return true;
      advance();
    }
  }

  [[nodiscard]] bool parse_value(value& out) {
    skip_ws();
    char c = peek();
    if (c == '"') {
      out = value{};
      out.type = kind::string;
      return parse_basic_string(out.str);
    }
    if (c == '\'') {
      out = value{};
      out.type = kind::string;
      return parse_literal_string(out.str);
    }
    if (c == '[')
      return parse_array(out);
    if (c == '{')
      return fail("inline tables are not supported");
    if (at_end() || c == '#')
      return fail("expected a value");
    // Scalars end at a blank, ',', ']' or a comment.
    size_t start = pos_;
    while (!at_end() && peek() != ' ' && peek() != '\t' && peek() != ','
           && peek() != ']' && peek() != '#')
      ++pos_;
    std::string token = s_.substr(start, pos_ - start);
    if (token == "true" || token == "false") {
      out = value{};
      out.type = kind::boolean;
      out.boolean = token == "true";
      return true;
    }
    if (is_digit(c) || c == '+' || c == '-')
      return parse_number(token, out);
    return fail("invalid value '" + token + "' (strings must be quoted)");
  }

private:
  bool fail(std::string what) {
    if (error_.empty())
      error_ = std::move(what);
    return false;
  }

  bool parse_basic_string(std::string& out) {
    advance(); // opening quote
    if (peek() == '"' && peek(1) == '"')
      return fail("multi-line strings are not supported");
    while (!at_end()) {
      char c = s_[pos_++];
      if (c == '"')
        return true;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_end())
        break;
      char e = s_[pos_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'u':
        case 'U': {
          size_t n = e == 'u' ? 4 : 8;
          if (pos_ + n > s_.size())
            return fail("truncated \\" + std::string(1, e) + " escape");
          uint32_t cp = 0;
          auto first = s_.data() + pos_;
          auto [p, ec] = std::from_chars(first, first + n, cp, 16);
          if (ec != std::errc{} || p != first + n || cp > 0x10FFFF
              || (cp >= 0xD800 && cp <= 0xDFFF))
            return fail("invalid \\" + std::string(1, e) + " escape");
          pos_ += n;
          append_utf8(out, cp);
          break;
        }
        default:
          return fail("invalid escape '\\" + std::string(1, e) + "' in string");
      }
    }
    return fail("unterminated string");
  }

  bool parse_literal_string(std::string& out) {
    advance(); // opening quote
    if (peek() == '\'' && peek(1) == '\'')
      return fail("multi-line strings are not supported");
    size_t end = s_.find('\'', pos_);
    if (end == std::string::npos)
      return fail("unterminated string");
    out = s_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return true;
  }

  bool parse_array(value& out) {
    advance(); // '['
    out = value{};
    out.type = kind::array;
    for (;;) {
      skip_ws();
      if (at_end() || peek() == '#')
        return fail("unterminated array (arrays must be on one line)");
      if (peek() == ']') {
        advance();
        return true;
      }
      value item;
      if (!parse_value(item))
        return false;
      out.array.push_back(std::move(item));
      skip_ws();
      if (peek() == ',') {
        advance();
      } else if (peek() == ']') {
        advance();
        return true;
      } else if (at_end() || peek() == '#') {
        return fail("unterminated array (arrays must be on one line)");
      } else {
        return fail("expected ',' or ']' in array");
      }
    }
  }

  bool parse_number(const std::string& token, value& out) {
    auto bad = [&] {
      return fail("invalid number '" + token + "'");
    };
    // Digits with '_' only between digits, as TOML requires.
    std::string digits;
    bool is_float = false;
    char prev = '\0';
    for (size_t i = 0; i < token.size(); ++i) {
      char c = token[i];
      if (c == '_') {
        if (!is_digit(prev) || i + 1 >= token.size() || !is_digit(token[i + 1]))
          return bad();
      } else if (c == '.' || c == 'e' || c == 'E') {
        is_float = true;
        digits += c;
      } else if ((c == '+' || c == '-')
                 && (i == 0 || prev == 'e' || prev == 'E')) {
        digits += c;
      } else if (is_digit(c)) {
        digits += c;
      } else {
        return bad();
      }
      prev = c;
    }
    size_t sign = (digits[0] == '+' || digits[0] == '-') ? 1 : 0;
    if (sign == digits.size() || !is_digit(digits[sign]))
      return bad();
    // TOML forbids leading zeros ("007" is probably a typo, not octal).
    if (digits[sign] == '0' && sign + 1 < digits.size()
        && is_digit(digits[sign + 1]))
      return bad();
    const char* first = digits.data() + sign;
    const char* last = digits.data() + digits.size();
    out = value{};
    if (is_float) {
      size_t dot = digits.find('.');
      if (dot != std::string::npos
          && (dot + 1 >= digits.size() || !is_digit(digits[dot + 1])))
        return bad();
      double d = 0;
      auto [p, ec] = std::from_chars(first, last, d);
      if (ec != std::errc{} || p != last)
        return bad();
      out.type = kind::floating;
      out.floating = digits[0] == '-' ? -d : d;
      return true;
    }
    uint64_t magnitude = 0;
    auto [p, ec] = std::from_chars(first, last, magnitude);
    if (ec != std::errc{} || p != last)
      return ec == std::errc::result_out_of_range
               ? fail("integer '" + token + "' is out of range")
               : bad();
    constexpr uint64_t max_pos = std::numeric_limits<int64_t>::max();
    bool neg = digits[0] == '-';
    if (magnitude > max_pos + (neg ? 1 : 0))
      return fail("integer '" + token + "' is out of range");
    out.type = kind::integer;
    out.integer = neg ? static_cast<int64_t>(0 - magnitude)
                      : static_cast<int64_t>(magnitude);
    return true;
  }

  const std::string& s_;
  size_t pos_ = 0;
  std::string error_;
};

/// Tracks what each path is, to reject redefinitions.
class definitions {
public:
  /// Empty on success, else the error text.
  [[nodiscard]] std::string define_table(const key_path& path, int line) {
    if (auto err = check_prefixes(path); !err.empty())
      return err;
    auto it = kinds_.find(path);
    if (it != kinds_.end()) {
      if (it->second.r == role::value)
        return "key '" + format_key(path) + "' is already a value (line "
               + std::to_string(it->second.line) + ")";
      if (it->second.r == role::explicit_table)
        return "table '" + format_key(path) + "' is defined twice (first on"
               + " line " + std::to_string(it->second.line) + ")";
    }
    kinds_[path] = {role::explicit_table, line};
    return {};
  }

  [[nodiscard]] std::string define_value(const key_path& path, int line) {
    if (auto err = check_prefixes(path); !err.empty())
      return err;
    auto it = kinds_.find(path);
    if (it != kinds_.end()) {
      if (it->second.r == role::value)
        return "duplicate key '" + format_key(path) + "' (first set on line "
               + std::to_string(it->second.line) + ")";
      return "key '" + format_key(path) + "' is already a table (line "
             + std::to_string(it->second.line) + ")";
    }
    kinds_[path] = {role::value, line};
    return {};
  }

private:
  enum class role { implicit_table, explicit_table, value };
  struct def {
    role r;
    int line;
  };

  // Every proper prefix becomes an implicit table; none may be a value.
  std::string check_prefixes(const key_path& path) {
    key_path prefix;
    for (size_t i = 0; i + 1 < path.size(); ++i) {
      prefix.push_back(path[i]);
      auto it = kinds_.find(prefix);
      if (it == kinds_.end()) {
        kinds_[prefix] = {role::implicit_table, 0};
      } else if (it->second.r == role::value) {
        return "key '" + format_key(prefix) + "' (line "
               + std::to_string(it->second.line) + ") is not a table";
      }
    }
    return {};
  }

  std::map<key_path, def> kinds_;
};

} // namespace

bool parse(const std::string& text, const std::string& source_name,
           document& out, std::string& error) {
  out = document{};
  definitions defs;
  key_path current;
  int line_no = 0;
  // Editors on some platforms prepend a UTF-8 byte order mark.
  size_t begin = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  while (begin <= text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos)
      end = text.size();
    std::string line = text.substr(begin, end - begin);
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    ++line_no;
    begin = end + 1;
    auto fail = [&](const std::string& what) {
      error = source_name + ":" + std::to_string(line_no) + ": " + what;
      return false;
    };
    line_parser p{line};
    if (p.at_line_end())
      continue;
    if (p.peek() == '[') {
      if (p.peek(1) == '[')
        return fail("arrays of tables ([[...]]) are not supported");
      p.advance();
      key_path path;
      if (!p.parse_key(path))
        return fail(p.error());
      if (p.peek() != ']')
        return fail("expected ']' after table name");
      p.advance();
      if (!p.at_line_end())
        return fail("unexpected text after table header");
      if (auto err = defs.define_table(path, line_no); !err.empty())
        return fail(err);
      out.tables.push_back({path, line_no});
      current = std::move(path);
      continue;
    }
    key_path key;
    if (!p.parse_key(key))
      return fail(p.error());
    if (p.peek() != '=')
      return fail("expected '=' after key");
    p.advance();
    value v;
    if (!p.parse_value(v))
      return fail(p.error());
    if (!p.at_line_end())
      return fail("unexpected text after value");
    key_path full = current;
    full.insert(full.end(), key.begin(), key.end());
    if (auto err = defs.define_value(full, line_no); !err.empty())
      return fail(err);
    out.entries.push_back({std::move(full), std::move(v), line_no});
  }
  return true;
}

bool parse_value(const std::string& text, value& out, std::string& error) {
  line_parser p{text};
  if (!p.parse_value(out)) {
    error = p.error();
    return false;
  }
  p.skip_ws();
  if (!p.at_end()) {
    error = "unexpected text after value";
    return false;
  }
  return true;
}

bool parse_assignment(const std::string& text, key_path& key, std::string& rest,
                      std::string& error) {
  line_parser p{text};
  if (!p.parse_key(key)) {
    error = p.error();
    return false;
  }
  if (p.peek() != '=') {
    error = "expected '=' after key";
    return false;
  }
  p.advance();
  p.skip_ws();
  rest = text.substr(p.pos());
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
  }
  return {};
}

} // namespace edda::config::toml
