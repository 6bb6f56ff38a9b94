// The Prometheus text exposition format (version 0.0.4): families with
// their HELP and TYPE lines, samples with escaped label values. Pure: the
// admin port renders what it collected with this, and the unit tests parse
// it back.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace edda::admin {

using labels = std::vector<std::pair<std::string, std::string>>;

class exposition {
public:
  /// Starts a family: `name` (made a valid metric name), `type` "counter",
  /// "gauge" or "histogram", one line of help. Samples that follow belong
  /// to it.
  void family(const std::string& name, const char* type,
              const std::string& help);
  /// One sample of the current family.
  void sample(const labels& l, double value);
  void sample(double value) {
    sample(labels{}, value);
  }
  /// One series of the current histogram family: `<name>_bucket` for each
  /// upper bound (`cumulative[i]` observations <= `bounds[i]`) and `+Inf`
  /// (`count`), then `<name>_sum` and `<name>_count`.
  void histogram(const labels& l, const std::vector<double>& bounds,
                 const std::vector<uint64_t>& cumulative, uint64_t count,
                 double sum);

  [[nodiscard]] const std::string& text() const {
    return out_;
  }

private:
  void write(const char* suffix, const labels& l, double value);
  std::string out_;
  std::string name_;
};

/// `x` as a metric name: [a-zA-Z0-9_:], any other character '_', a leading
/// digit prefixed with '_'.
[[nodiscard]] std::string metric_name(const std::string& x);

/// `x` as a label value inside double quotes (\\, \" and \n escaped).
[[nodiscard]] std::string escape_label(const std::string& x);

} // namespace edda::admin
