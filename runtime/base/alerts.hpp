// Alerts: operator-visible events (a message moved to a dead-letter queue,
// a transaction rolled back by policy, ...). Each alert is logged at WARN,
// counted in metrics as "alerts.<kind>", and passed to every registered
// hook. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace edda {

struct alert {
  std::string kind;    ///< "dlq", ...
  std::string subject; ///< group, topic, txn id
  std::string detail;  ///< one line for humans
  std::string message_id;
  int64_t at_ms = 0;
};

class alert_sink {
public:
  using hook = std::function<void(const alert&)>;
  alert_sink();
  ~alert_sink();
  /// Hooks run on the raising actor's thread: keep them short.
  void add_hook(hook h);
  void raise(alert a);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace edda
