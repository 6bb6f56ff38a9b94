#include "admin/prometheus.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace edda::admin {

std::string metric_name(const std::string& x) {
  std::string out;
  out.reserve(x.size() + 1);
  for (char c : x) {
    auto u = static_cast<unsigned char>(c);
    out += std::isalnum(u) != 0 || c == '_' || c == ':' ? c : '_';
  }
  if (out.empty() || std::isdigit(static_cast<unsigned char>(out[0])) != 0)
    out.insert(out.begin(), '_');
  return out;
}

std::string escape_label(const std::string& x) {
  std::string out;
  out.reserve(x.size());
  for (char c : x) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

void exposition::family(const std::string& name, const char* type,
                        const std::string& help) {
  name_ = metric_name(name);
  std::string h;
  for (char c : help) // HELP escapes \ and newline only
    h += c == '\n' ? std::string{"\\n"}
                   : c == '\\' ? std::string{"\\\\"} : std::string(1, c);
  out_ += "# HELP " + name_ + " " + h + "\n";
  out_ += "# TYPE " + name_ + " " + type + "\n";
}

void exposition::sample(const labels& l, double value) {
  write("", l, value);
}

void exposition::histogram(const labels& l, const std::vector<double>& bounds,
                           const std::vector<uint64_t>& cumulative,
                           uint64_t count, double sum) {
  auto with_le = l;
  with_le.emplace_back("le", "");
  for (size_t i = 0; i < bounds.size() && i < cumulative.size(); ++i) {
    char le[32];
    std::snprintf(le, sizeof(le), "%g", bounds[i]);
    with_le.back().second = le;
    write("_bucket", with_le, static_cast<double>(cumulative[i]));
  }
  with_le.back().second = "+Inf";
  write("_bucket", with_le, static_cast<double>(count));
  write("_sum", l, sum);
  write("_count", l, static_cast<double>(count));
}

void exposition::write(const char* suffix, const labels& l, double value) {
  out_ += name_;
  out_ += suffix;
  if (!l.empty()) {
    out_ += '{';
    bool first = true;
    for (auto& [k, v] : l) {
      if (!first)
        out_ += ',';
      first = false;
      out_ += metric_name(k) + "=\"" + escape_label(v) + "\"";
    }
    out_ += '}';
  }
  char buf[64];
  if (std::isnan(value))
    std::snprintf(buf, sizeof(buf), " NaN\n");
  else if (value == std::floor(value) && std::fabs(value) < 1e15)
    std::snprintf(buf, sizeof(buf), " %.0f\n", value);
  else {
    // The shortest form that reads back as the same double.
    std::snprintf(buf, sizeof(buf), " %.15g\n", value);
    if (std::strtod(buf, nullptr) != value)
      std::snprintf(buf, sizeof(buf), " %.17g\n", value);
  }
  out_ += buf;
}

} // namespace edda::admin
