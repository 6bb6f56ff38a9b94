// A small argument parser for the `edda` command: positional words and
// `--name value` / `--name=value` / `--flag` options, with clear errors for
// unknown options. `-h` is `--help`; any other word starting with one '-'
// is refused as an unknown option (never taken as a name); after `--`
// every word is positional.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

namespace edda::cli {

class args {
public:
  /// `flags` are options without a value; `valued` take one (repeatable).
  /// With `node` among `valued` (a command that talks to a node), `--token`
  /// and `--node-port` are accepted too. Returns false and sets `error` on
  /// an unknown or incomplete option.
  bool parse(const std::vector<std::string>& argv,
             const std::set<std::string>& flags,
             const std::set<std::string>& valued, std::string& error);
  [[nodiscard]] bool has(const std::string& name) const;
  [[nodiscard]] std::string get(const std::string& name,
                                const std::string& fallback = {}) const;
  [[nodiscard]] std::vector<std::string> all(const std::string& name) const;
  /// Parses an unsigned integer option; false with `error` if malformed.
  bool get_uint(const std::string& name, uint64_t fallback, uint64_t& out,
                std::string& error) const;
  std::vector<std::string> positional;

private:
  std::map<std::string, std::vector<std::string>> values_;
};

} // namespace edda::cli
