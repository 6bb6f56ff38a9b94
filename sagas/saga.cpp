#include "sagas/saga.hpp"

#include "base/errc.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

namespace edda::sagas {

const char* to_string(saga_state x) {
  switch (x) {
    case saga_state::running: return "running";
    case saga_state::compensating: return "compensating";
    case saga_state::completed: return "completed";
    case saga_state::compensated: return "compensated";
    case saga_state::failed: return "failed";
  }
  return "unknown";
}

bool is_terminal(saga_state x) {
  return x == saga_state::completed || x == saga_state::compensated
         || x == saga_state::failed;
}

std::chrono::milliseconds retry_policy::backoff(uint32_t attempt) const {
  auto n = std::max<uint32_t>(attempt, 1) - 1;
  auto x = static_cast<double>(initial_backoff.count())
           * std::pow(multiplier, static_cast<double>(std::min<uint32_t>(n, 60)));
  auto cap = static_cast<double>(max_backoff.count());
  return std::chrono::milliseconds(static_cast<int64_t>(std::min(x, cap)));
}

step_result step_result::success(std::string output) {
  step_result r;
  r.ok = true;
  r.output = std::move(output);
  return r;
}

step_result step_result::failure(std::string error, bool retryable) {
  step_result r;
  r.error = std::move(error);
  r.retryable = retryable;
  return r;
}

participant::participant(step_function f) : fn_(std::move(f)) {
}

participant participant::of(caf::actor a) {
  participant p;
  p.actor_ = std::move(a);
  return p;
}

participant participant::named(std::string name) {
  participant p;
  p.name_ = std::move(name);
  return p;
}

bool valid_participant_name(const std::string& name) {
  if (name.empty() || name.size() > 120)
    return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'
           || c == '-';
  });
}

saga_definition::saga_definition(std::string name) : name_(std::move(name)) {
}

saga_definition& saga_definition::add(step_definition s) {
  if (!steps_.empty())
    s.group = steps_.back().group + (s.options.parallel ? 0 : 1);
  steps_.push_back(std::move(s));
  return *this;
}

saga_definition& saga_definition::step(std::string name, participant action,
                                       participant compensation,
                                       step_options options) {
  return add(step_definition{std::move(name), std::move(action),
                             std::move(compensation), participant{}, options,
                             nullptr});
}

saga_definition& saga_definition::tcc_step(std::string name, participant try_,
                                           participant confirm,
                                           participant cancel,
                                           step_options options) {
  options.compensable = true;
  return add(step_definition{std::move(name), std::move(try_),
                             std::move(cancel), std::move(confirm), options,
                             nullptr});
}

saga_definition& saga_definition::message_step(std::string name,
                                               message_builder build,
                                               participant compensation,
                                               step_options options) {
  options.compensable = !compensation.empty();
  return add(step_definition{std::move(name), participant{},
                             std::move(compensation), participant{}, options,
                             std::move(build)});
}

bool tcc_fence::begin_try(const std::string& key) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto& p = phases_[key];
  if (p != phase::none)
    return false;
  p = phase::tried;
  return true;
}

bool tcc_fence::begin_confirm(const std::string& key) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto& p = phases_[key];
  if (p != phase::tried)
    return false;
  p = phase::confirmed;
  return true;
}

bool tcc_fence::begin_cancel(const std::string& key) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto& p = phases_[key];
  bool reserved = p == phase::tried;
  p = phase::cancelled; // a try arriving later is refused
  return reserved;
}

tcc_fence::phase tcc_fence::of(const std::string& key) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = phases_.find(key);
  return i == phases_.end() ? phase::none : i->second;
}

saga_definition& saga_definition::deadline(std::chrono::milliseconds d) {
  deadline_ = d;
  return *this;
}

caf::error saga_definition::validate() const {
  auto bad = [&](const std::string& what) {
    return make_error(errc::invalid_saga,
                      "saga '" + name_ + "': " + what);
  };
  if (name_.empty() || name_.size() > 120)
    return make_error(errc::invalid_saga,
                      "a saga type needs a name of 1-120 characters");
  if (steps_.empty())
    return bad("has no steps");
  if (deadline_.count() < 0)
    return bad("deadline must not be negative");
  std::set<std::string> names;
  const step_definition* pivot = nullptr; // a step that cannot be undone
  for (size_t i = 0; i < steps_.size(); ++i) {
    auto& s = steps_[i];
    auto where = "step " + std::to_string(i + 1)
                 + (s.name.empty() ? std::string{} : " '" + s.name + "'");
    if (s.name.empty() || s.name.size() > 120 || s.name.find('/') != std::string::npos)
      return bad(where + ": a step needs a name of 1-120 characters without '/'");
    if (!names.insert(s.name).second)
      return bad(where + ": duplicate step name");
    if (s.action.empty() && !s.is_message())
      return bad(where + ": no action");
    for (auto* p : {&s.action, &s.compensation, &s.confirm})
      if (!p->name().empty() && !valid_participant_name(p->name()))
        return bad(where + ": participant name '" + p->name()
                   + "' must be 1-120 of [A-Za-z0-9_.-]");
    if (s.options.parallel && i == 0)
      return bad(where + ": the first step cannot be parallel (it runs "
                         "alongside the step before it)");
    if (s.is_message()
        && (s.options.parallel
            || (i + 1 < steps_.size() && steps_[i + 1].options.parallel)))
      return bad(where + ": a message step runs alone (not in a parallel "
                         "group)");
    if (pivot && !s.options.best_effort)
      return bad(where + ": follows step '" + pivot->name
                 + "', which cannot be compensated; only best-effort steps "
                   "may follow it (a later failure would leave it applied)");
    if (s.is_tcc() && s.compensation.empty())
      return bad(where + ": a TCC step needs a cancel");
    auto& r = s.options.retry;
    if (r.max_attempts < 1 || r.max_attempts > 1000)
      return bad(where + ": retry.max_attempts must be 1-1000");
    if (r.multiplier < 1.0)
      return bad(where + ": retry.multiplier must be at least 1");
    if (r.initial_backoff.count() < 0 || r.max_backoff < r.initial_backoff)
      return bad(where + ": retry backoff must be 0 <= initial <= max");
    if (s.options.timeout.count() <= 0)
      return bad(where + ": timeout must be positive");
    if (s.options.best_effort && (!s.compensation.empty() || s.is_tcc()))
      return bad(where + ": a best-effort step has no compensation");
    if (s.options.best_effort)
      continue;
    if (s.options.compensable && s.compensation.empty())
      return bad(where + ": no compensation (give one, or mark the step "
                         "compensable = false if only best-effort steps "
                         "follow it)");
    if (!s.options.compensable && !s.compensation.empty())
      return bad(where + ": marked not compensable but has a compensation");
    if (!s.options.compensable) {
      if (s.options.parallel
          || (i + 1 < steps_.size() && steps_[i + 1].options.parallel))
        return bad(where + ": a step without compensation runs alone (a "
                           "failing step beside it would leave it applied)");
      pivot = &s;
    }
  }
  return caf::none;
}

} // namespace edda::sagas
