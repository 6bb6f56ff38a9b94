// edda's settings files are TOML 1.0, read by toml++ (libtomlplusplus-dev):
// this module flattens a parsed document into the keys and tables it
// defines, each with its position, so the settings layer can validate keys
// one by one and name the line and column of the first mistake. toml++ stays
// out of this header.
//
// Every TOML 1.0 form is read (multi-line strings and arrays, inline tables,
// dotted keys, literal strings, hex / octal / binary integers); values edda
// has no use for (dates, tables in an array) keep their kind so the error
// can name it. Defining a key or a table twice is a syntax error.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edda::config::toml {

enum class kind : uint8_t {
  string,
  integer,
  floating,
  boolean,
  array,
  table,    ///< an inline table or a table in an array (only named)
  datetime, ///< a date, time or date-time (only named)
};

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

/// One `key = value`; `path` is the full path (table header + dotted key);
/// `line` and `column` (from 1) are where its key starts.
struct entry {
  key_path path;
  value val;
  int line = 0;
  int column = 0;
};

/// One table: a `[table]` header, an inline table, or a table a dotted key
/// or a header made on the way (`[a.b]` makes `a`), at its first mention.
struct table_header {
  key_path path;
  int line = 0;
  int column = 0;
};

/// Tables and entries, each in document order.
struct document {
  std::vector<table_header> tables;
  std::vector<entry> entries;
};

/// Parses `text`. On failure returns false and sets `error` to
/// "<source_name>:<line>:<column>: <what>", e.g. "edda.toml:12:10: Error
/// while parsing key-value pair: expected value, saw '\n'" (toml++'s words);
/// `out` is then unspecified.
[[nodiscard]] bool parse(const std::string& text,
                         const std::string& source_name, document& out,
                         std::string& error);

/// Parses exactly one value filling all of `text` (surrounding blanks are
/// allowed). On failure sets `error` (no location prefix).
[[nodiscard]] bool parse_value(const std::string& text, value& out,
                               std::string& error);

/// Splits "a.b = rest" into the key path (TOML key syntax: dotted, quoted
/// parts) and the trimmed text after '='. Used for command line overrides
/// whose values need not be TOML.
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
