// Internal: runs a step function for a StepCommand and wraps its result (an
// exception is a retryable failure). Shared by the function participants of
// a node and by participant_host. Includes the generated protobuf headers.
#pragma once

#include "sagas/saga.hpp"
#include "wire/types.hpp"

namespace edda::sagas {

[[nodiscard]] inline step_request to_request(const wire::v1::StepCommand& c) {
  step_request r;
  r.saga_id = c.saga_id();
  r.saga_type = c.saga_type();
  r.step = c.step();
  r.idempotency_key = c.idempotency_key();
  r.input = c.input();
  r.outputs.insert(c.outputs().begin(), c.outputs().end());
  r.attempt = c.attempt();
  r.compensate = c.compensate();
  r.confirm = c.confirm();
  return r;
}

[[nodiscard]] inline wire::v1::StepReply to_reply(step_result res) {
  wire::v1::StepReply rep;
  rep.set_ok(res.ok);
  rep.set_output(std::move(res.output));
  rep.set_error(std::move(res.error));
  rep.set_retryable(res.retryable);
  return rep;
}

[[nodiscard]] inline wire::v1::StepReply call_step(const step_function& fn,
                                                   const wire::v1::StepCommand& c) {
  auto r = to_request(c);
  step_result res;
  try {
    res = fn(r);
  } catch (const std::exception& e) {
    res = step_result::failure(std::string("participant threw: ") + e.what());
  } catch (...) {
    res = step_result::failure("participant threw");
  }
  return to_reply(std::move(res));
}

} // namespace edda::sagas
