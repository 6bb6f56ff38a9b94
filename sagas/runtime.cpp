#include "sagas/runtime.hpp"

#include "sagas/function_participant.hpp"
#include "sagas/participant_directory.hpp"
#include "sagas/saga_checker.hpp"
#include "sagas/runtime_shared.hpp"
#include "sagas/saga_outbox.hpp"
#include "sagas/shard_keeper.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>

namespace edda::sagas {

struct saga_runtime::impl {
  caf::actor_system* sys = nullptr;
  broker::context_ptr ctx;
  runtime_options opts;
  registry reg;
  std::vector<caf::actor> functions; // wrapped function participants
  std::vector<caf::actor> shards;
  caf::actor directory;
  caf::actor checker; // in a cluster
  std::vector<caf::actor> outboxes;
};

saga_runtime::saga_runtime(caf::actor_system& sys, broker::context_ptr ctx,
                           runtime_options opts)
  : impl_(std::make_unique<impl>()) {
  impl_->sys = &sys;
  impl_->ctx = std::move(ctx);
  impl_->opts = opts;
  if (impl_->opts.shards == 0)
    impl_->opts.shards = 1;
}

saga_runtime::~saga_runtime() {
  stop();
}

caf::error saga_runtime::add(saga_definition def) {
  if (auto err = def.validate())
    return err;
  if (!impl_->shards.empty())
    return make_error(errc::invalid_saga, "saga '" + def.name()
                                            + "': register types before start");
  if (impl_->reg.count(def.name()) != 0)
    return make_error(errc::invalid_saga,
                      "saga '" + def.name() + "' is registered already");
  type_entry e;
  auto wrap = [&](const participant& p) -> caf::actor {
    if (p.empty())
      return {};
    if (p.actor())
      return p.actor();
    auto a = spawn_function_participant(*impl_->sys, p.function(),
                                        impl_->opts.detached_participants);
    impl_->functions.push_back(a);
    return a;
  };
  for (auto& s : def.steps())
    e.steps.push_back(
      step_actors{wrap(s.action), wrap(s.compensation), wrap(s.confirm)});
  auto name = def.name();
  e.def = std::make_shared<const saga_definition>(std::move(def));
  impl_->reg.emplace(name, std::move(e));
  return caf::none;
}

void saga_runtime::start() {
  if (!impl_->shards.empty())
    return;
  auto rt = std::make_shared<runtime_shared>();
  rt->reg = impl_->reg;
  rt->topics = impl_->opts.topics;
  rt->boot = new_unique_id();
  for (uint32_t i = 0; i < impl_->opts.shards; ++i)
    rt->outboxes.push_back(spawn_saga_outbox(*impl_->sys, i));
  impl_->outboxes = rt->outboxes;
  for (uint32_t i = 0; i < impl_->opts.shards; ++i)
    impl_->shards.push_back(spawn_shard_keeper(
      *impl_->sys, impl_->ctx, shared_env{rt}, i, impl_->opts.shards));
  // The directory starts empty and tells the outboxes (who serves a name)
  // and the keepers (whether a name is served) about every change; they
  // start from the same empty view, so nothing is missed.
  auto subscribers = impl_->outboxes;
  subscribers.insert(subscribers.end(), impl_->shards.begin(),
                     impl_->shards.end());
  impl_->directory = spawn_participant_directory(*impl_->sys,
                                                 std::move(subscribers));
  if (impl_->ctx->clustered() && impl_->opts.txn)
    impl_->checker = spawn_saga_checker(*impl_->sys, impl_->ctx,
                                        impl_->opts.txn, rt->boot);
}

void saga_runtime::stop() {
  for (auto& s : impl_->shards)
    caf::anon_send(s, wire::stop_atom::value);
  impl_->shards.clear();
  if (impl_->directory)
    caf::anon_send(impl_->directory, wire::stop_atom::value);
  for (auto& o : impl_->outboxes)
    caf::anon_send(o, wire::stop_atom::value);
  impl_->outboxes.clear();
  impl_->directory = nullptr;
  if (impl_->checker)
    caf::anon_send(impl_->checker, wire::stop_atom::value);
  impl_->checker = nullptr;
  for (auto& f : impl_->functions)
    caf::anon_send_exit(f, caf::exit_reason::user_shutdown);
  impl_->functions.clear();
}

caf::actor saga_runtime::shard_for(const std::string& saga_id) const {
  if (impl_->shards.empty())
    return {};
  return impl_->shards[shard_of(saga_id, impl_->shards.size())];
}

const caf::actor& saga_runtime::directory() const {
  return impl_->directory;
}

const std::vector<caf::actor>& saga_runtime::shards() const {
  return impl_->shards;
}

} // namespace edda::sagas
