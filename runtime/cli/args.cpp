#include "cli/args.hpp"

namespace edda::cli {

bool args::parse(const std::vector<std::string>& argv,
                 const std::set<std::string>& flags_in,
                 const std::set<std::string>& valued_in, std::string& error) {
  auto flags = flags_in;
  auto valued = valued_in;
  if (valued.count("node") != 0) {
    // Every command that talks to a node: how it reaches it.
    valued.insert("token");
    flags.insert("node-port");
  }
  bool options = true; // until "--": what follows it is positional
  for (size_t i = 0; i < argv.size(); ++i) {
    const auto& a = argv[i];
    if (!options || a == "-") {
      positional.push_back(a);
      continue;
    }
    if (a == "--") {
      options = false;
      continue;
    }
    if (a.size() >= 2 && a[0] == '-' && a[1] != '-') {
      // -h is --help; any other single-dash word is a mistyped option,
      // never a name (a saga type or topic called "-x").
      if (a == "-h" && flags.count("help") != 0) {
        values_["help"].push_back("true");
        continue;
      }
      error = "unknown option " + a
              + " (options are --name; a positional word starting with '-' "
                "goes after --)";
      return false;
    }
    if (a.size() < 3 || a.compare(0, 2, "--") != 0) {
      positional.push_back(a);
      continue;
    }
    auto eq = a.find('=');
    auto name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    if (flags.count(name) != 0) {
      if (eq != std::string::npos) {
        error = "option --" + name + " takes no value";
        return false;
      }
      values_[name].push_back("true");
      continue;
    }
    if (valued.count(name) == 0) {
      error = "unknown option --" + name;
      return false;
    }
    if (eq != std::string::npos) {
      values_[name].push_back(a.substr(eq + 1));
    } else if (i + 1 < argv.size()) {
      values_[name].push_back(argv[++i]);
    } else {
      error = "option --" + name + " needs a value";
      return false;
    }
  }
  return true;
}

bool args::has(const std::string& name) const {
  return values_.count(name) != 0;
}

std::string args::get(const std::string& name,
                      const std::string& fallback) const {
  auto i = values_.find(name);
  return i == values_.end() ? fallback : i->second.back();
}

std::vector<std::string> args::all(const std::string& name) const {
  auto i = values_.find(name);
  return i == values_.end() ? std::vector<std::string>{} : i->second;
}

bool args::get_uint(const std::string& name, uint64_t fallback, uint64_t& out,
                    std::string& error) const {
  if (!has(name)) {
    out = fallback;
    return true;
  }
  auto v = get(name);
  if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos
      || v.size() > 19) {
    error = "--" + name + " expects a non-negative integer, got '" + v + "'";
    return false;
  }
  out = std::stoull(v);
  return true;
}

} // namespace edda::cli
