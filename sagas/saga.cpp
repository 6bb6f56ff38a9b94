#include "sagas/saga.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "records.pb.h"

#include <algorithm>
#include <cctype>
#include <cstring>
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

const char* state_name(uint32_t state) {
  return state >= 1 && state <= 5 ? to_string(static_cast<saga_state>(state))
                                  : "unknown";
}

uint32_t state_number(const std::string& name) {
  for (uint32_t i = 1; i <= 5; ++i)
    if (name == state_name(i))
      return i;
  return 0;
}

const char* step_status_name(uint32_t status) {
  using s = wire::v1::SagaStep;
  switch (status) {
    case s::PENDING: return "pending";
    case s::RUNNING: return "running";
    case s::DONE: return "done";
    case s::FAILED: return "failed";
    case s::GAVE_UP: return "gave up";
    case s::COMPENSATING: return "compensating";
    case s::COMPENSATED: return "compensated";
    case s::COMPENSATION_FAILED: return "compensation failed";
    case s::CONFIRMING: return "confirming";
    case s::CONFIRMED: return "confirmed";
    default: return "unknown";
  }
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
  return !name.empty() && name.size() <= 120 && only_name_chars(name);
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

namespace {

std::string trim(const std::string& x) {
  auto b = x.find_first_not_of(" \t");
  if (b == std::string::npos)
    return {};
  auto e = x.find_last_not_of(" \t");
  return x.substr(b, e - b + 1);
}

} // namespace

namespace {

/// A recursive-descent JSON syntax check; sets `err` at the first problem.
class json_checker {
public:
  explicit json_checker(const std::string& s) : s_(s) {}

  std::string run() {
    ws();
    if (!value(0))
      return err_;
    ws();
    if (i_ != s_.size()) {
      fail("unexpected '" + std::string(1, s_[i_]) + "' after the value");
      return err_;
    }
    return {};
  }

private:
  bool fail(const std::string& what) {
    err_ = what + " at byte " + std::to_string(i_);
    return false;
  }
  void ws() {
    while (i_ < s_.size() && std::strchr(" \t\r\n", s_[i_]) && s_[i_] != '\0')
      ++i_;
  }
  bool lit(const char* w) {
    auto n = std::strlen(w);
    if (s_.compare(i_, n, w) != 0)
      return fail("invalid literal");
    i_ += n;
    return true;
  }
  bool string() {
    ++i_; // the opening quote
    while (i_ < s_.size()) {
      auto c = static_cast<unsigned char>(s_[i_++]);
      if (c == '"')
        return true;
      if (c < 0x20)
        return fail("control character in a string");
      if (c == '\\') {
        if (i_ >= s_.size())
          break;
        auto e = s_[i_++];
        if (e == 'u') {
          for (int k = 0; k < 4; ++k, ++i_)
            if (i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_])))
              return fail("bad \\u escape");
        } else if (!std::strchr("\"\\/bfnrt", e) || e == '\0') {
          return fail("bad escape");
        }
      }
    }
    return fail("unterminated string");
  }
  bool number() {
    auto digits = [&] {
      auto b = i_;
      while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_])))
        ++i_;
      return i_ > b;
    };
    if (s_[i_] == '-')
      ++i_;
    if (i_ < s_.size() && s_[i_] == '0')
      ++i_;
    else if (!digits())
      return fail("bad number");
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (!digits())
        return fail("bad number");
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-'))
        ++i_;
      if (!digits())
        return fail("bad number");
    }
    return true;
  }
  bool value(int depth) {
    if (depth > 64)
      return fail("nested too deep");
    if (i_ >= s_.size())
      return fail("a value is missing");
    switch (s_[i_]) {
      case '{':
      case '[': {
        char close = s_[i_] == '{' ? '}' : ']';
        bool object = close == '}';
        ++i_;
        ws();
        if (i_ < s_.size() && s_[i_] == close) {
          ++i_;
          return true;
        }
        for (;;) {
          ws();
          if (object) {
            if (i_ >= s_.size() || s_[i_] != '"')
              return fail("expected a member name");
            if (!string())
              return false;
            ws();
            if (i_ >= s_.size() || s_[i_] != ':')
              return fail("expected ':'");
            ++i_;
            ws();
          }
          if (!value(depth + 1))
            return false;
          ws();
          if (i_ < s_.size() && s_[i_] == ',') {
            ++i_;
            continue;
          }
          if (i_ < s_.size() && s_[i_] == close) {
            ++i_;
            return true;
          }
          return fail(std::string("expected ',' or '") + close + "'");
        }
      }
      case '"': return string();
      case 't': return lit("true");
      case 'f': return lit("false");
      case 'n': return lit("null");
      default:
        if (s_[i_] == '-' || std::isdigit(static_cast<unsigned char>(s_[i_])))
          return number();
        return fail("unexpected '" + std::string(1, s_[i_]) + "'");
    }
  }

  const std::string& s_;
  size_t i_ = 0;
  std::string err_;
};

} // namespace

std::string check_json(const std::string& input) {
  return json_checker{input}.run();
}

saga_definition& saga_definition::input(input_check check) {
  input_ = std::move(check);
  return *this;
}

caf::expected<saga_definition> declared_saga(const std::string& spec,
                                             const step_options& defaults) {
  auto eq = spec.find('=');
  if (eq == std::string::npos)
    return make_error(errc::invalid_saga,
                      "saga type '" + spec + "': expected NAME = STEP, ...");
  auto name = trim(spec.substr(0, eq));
  if (!valid_participant_name(name))
    return make_error(errc::invalid_saga,
                      "saga type '" + name
                        + "': a declared type needs a name of 1-120 of "
                          "[A-Za-z0-9_.-]");
  saga_definition d(name);
  auto rest = spec.substr(eq + 1);
  size_t pos = 0;
  while (pos <= rest.size()) {
    auto comma = rest.find(',', pos);
    if (comma == std::string::npos)
      comma = rest.size();
    auto step = trim(rest.substr(pos, comma - pos));
    pos = comma + 1;
    if (step.empty())
      return make_error(errc::invalid_saga,
                        "saga type '" + name + "': an empty step in '"
                          + trim(rest) + "'");
    auto opts = defaults;
    if (step.front() == '+') {
      opts.parallel = true;
      step = trim(step.substr(1));
    }
    char mark = step.empty() ? '\0' : step.back();
    if (mark == '~' || mark == '!')
      step = trim(step.substr(0, step.size() - 1));
    if (auto gt = step.find('>'); gt != std::string::npos) {
      // STEP>TOPIC: a reliable-message step; its message (the saga's
      // input, keyed by the saga id) is on TOPIC once the step is done.
      auto topic = trim(step.substr(gt + 1));
      step = trim(step.substr(0, gt));
      if (topic.empty())
        return make_error(errc::invalid_saga,
                          "saga type '" + name + "': step '" + step
                            + "' names no topic after '>'");
      if (mark == '~')
        return make_error(errc::invalid_saga,
                          "saga type '" + name + "': message step '" + step
                            + "' cannot be best effort ('~'): its message is "
                              "sent with the step or not at all");
      auto build = [topic](const step_request& r) {
        outgoing_message m;
        m.topic = topic;
        m.body = r.input;
        return m;
      };
      d.message_step(step, build,
                     mark == '!' ? participant{}
                                 : participant::named(name + "." + step
                                                      + ".undo"),
                     opts);
      continue;
    }
    auto action = participant::named(name + "." + step);
    if (mark == '~') {
      opts.best_effort = true;
      d.step(step, action, nullptr, opts);
    } else if (mark == '!') {
      opts.compensable = false;
      d.step(step, action, nullptr, opts);
    } else {
      d.step(step, action, participant::named(name + "." + step + ".undo"),
             opts);
    }
  }
  d.input([](const std::string& in) {
    return in.empty() ? std::string{} : check_json(in);
  });
  if (auto err = d.validate())
    return err;
  return d;
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
