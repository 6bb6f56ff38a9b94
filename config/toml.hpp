// A small TOML subset, enough for edda's settings files.
//
// Supported: `#` comments, `[table]` and `[a."quoted.part"]` headers, dotted
// keys, `key = value` with basic strings ("..." with the TOML escapes),
// literal strings ('...'), decimal integers (sign, `_` separators), floats,
// booleans and one-line arrays of those. Not supported (reported as errors):
// multi-line strings and arrays, inline tables, `[[array.of.tables]]`,
// dates. Defining a key or a table twice is an error.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edda::config::toml {

enum class kind : uint8_t { string, integer, floating, boolean, array };

/// "a string", "an integer", ... for error messages.
[[nodiscard]] const char* to_string(kind);

struct value {
  kind type = kind::string;
  std::string str;
  int64_t integer = 0;
  double floating = 0.0;
  bool boolean = false;
  std::vector<value> array;

  [[nodiscard]] static value of_string(std::string s);
  [[nodiscard]] static value of_integer(int64_t i);
  [[nodiscard]] static value of_array(std::vector<value> items);
};

using key_path = std::vector<std::string>;

/// One `key = value`; `path` is the full path (table header + dotted key).
struct entry {
  key_path path;
  value val;
  int line = 0;
};

/// One explicit `[table]` header.
struct table_header {
  key_path path;
  int line = 0;
};

/// Entries and headers in document order.
struct document {
  std::vector<table_header> tables;
  std::vector<entry> entries;
};

/// Parses `text`. On failure returns false and sets `error` to
/// "<source_name>:<line>: <what>", e.g. "edda.toml:12: expected '=' after
/// key"; `out` is then unspecified.
[[nodiscard]] bool parse(const std::string& text,
                         const std::string& source_name, document& out,
                         std::string& error);

/// Parses exactly one value filling all of `text` (surrounding blanks are
/// allowed). On failure sets `error` (no location prefix).
[[nodiscard]] bool parse_value(const std::string& text, value& out,
                               std::string& error);

/// Splits "a.b = rest" into the key path and the trimmed text after '='.
/// Used for command line overrides whose values need not be TOML.
[[nodiscard]] bool parse_assignment(const std::string& text, key_path& key,
                                    std::string& rest, std::string& error);

/// Dotted form of `path`, quoting parts that are not bare keys:
/// {"groups", "a.b", "x"} -> `groups."a.b".x`.
[[nodiscard]] std::string format_key(const key_path& path);

/// `s` as a TOML basic string, with quotes and escapes.
[[nodiscard]] std::string quote(const std::string& s);

/// `v` as TOML value text.
[[nodiscard]] std::string format_value(const value& v);

} // namespace edda::config::toml
