#include "base/alerts.hpp"

#include "base/ids.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"

#include <mutex>
#include <vector>

namespace edda {

struct alert_sink::impl {
  std::mutex mtx;
  std::vector<hook> hooks;
};

alert_sink::alert_sink() : impl_(std::make_unique<impl>()) {
}

alert_sink::~alert_sink() = default;

void alert_sink::add_hook(hook h) {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  impl_->hooks.push_back(std::move(h));
}

void alert_sink::raise(alert a) {
  if (a.at_ms == 0)
    a.at_ms = now_ms();
  EDDA_WARN_F("alert", a.kind << " " << a.subject << ": " << a.detail
                              << (a.message_id.empty() ? "" : " (message ")
                              << a.message_id
                              << (a.message_id.empty() ? "" : ")"),
              {"alert", a.kind}, {"subject", a.subject},
              {"message_id", a.message_id});
  metrics::counter("alerts." + a.kind)++;
  std::vector<hook> hooks;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    hooks = impl_->hooks;
  }
  for (auto& h : hooks)
    h(a);
}

} // namespace edda
