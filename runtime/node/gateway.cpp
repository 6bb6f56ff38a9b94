// gateway: the actor a node publishes. Clients (in-process or remote)
// send every request here; it delegates to the owning actor, so replies go
// straight back to the client.
#include "node/gateway.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/metrics.hpp"
#include "broker/actors.hpp"
#include "storage/environment.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

namespace edda::node {

namespace {

namespace pb = wire::pb;

struct gateway_state {
  static inline const char* name = "edda.gateway";
};

caf::behavior gateway(caf::stateful_actor<gateway_state>* self,
                      broker::context_ptr ctx, caf::actor topics, caf::actor groups,
                       caf::actor dedup, caf::actor txn,
                       std::vector<caf::actor> shards, caf::actor directory,
                       caf::actor cluster) {
  auto txns = ctx->clustered() ? topics : txn;
  // A saga lives on shard shard_of(id, shards) (sagas/runtime.hpp).
  auto shard_for = [shards](const std::string& id) {
    return shards[shard_of(id, shards.size())];
  };
  auto no_sagas = [] {
    return make_error(errc::unknown_saga_type,
                      "no saga types are registered on this node (sagas "
                      "are registered by the program that embeds the node)");
  };
  return {
    [=](pb::ParticipantRegister& x)
      -> caf::result<pb::ParticipantRegistered> {
      if (!directory)
        return no_sagas();
      self->delegate(directory, std::move(x));
      return caf::delegated<pb::ParticipantRegistered>{};
    },
    [=](pb::SagaStart& x) -> caf::result<pb::SagaStarted> {
      if (shards.empty())
        return no_sagas();
      if (x.id().empty())
        x.set_id(new_unique_id());
      auto shard = shard_for(x.id());
      self->delegate(shard, std::move(x));
      return caf::delegated<pb::SagaStarted>{};
    },
    [=](pb::SagaGet& x) -> caf::result<pb::SagaRecord> {
      if (shards.empty())
        return make_error(errc::not_found, "no saga '" + x.id() + "'");
      auto shard = shard_for(x.id());
      self->delegate(shard, std::move(x));
      return caf::delegated<pb::SagaRecord>{};
    },
    [=](pb::SagaCommand& x) -> caf::result<pb::SagaRecord> {
      if (shards.empty())
        return make_error(errc::not_found, "no saga '" + x.id() + "'");
      auto shard = shard_for(x.id());
      self->delegate(shard, std::move(x));
      return caf::delegated<pb::SagaRecord>{};
    },
    [=](pb::SagaList& x) -> caf::result<pb::SagaRecords> {
      if (shards.empty()) {
        pb::SagaRecords none;
        none.set_now_ms(ctx->clock());
        return none;
      }
      self->delegate(shards.front(), std::move(x));
      return caf::delegated<pb::SagaRecords>{};
    },
    [=](pb::ProduceRequest& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::CreateTopic& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::AlterTopic& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::DeleteTopic& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::DescribeTopic& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::AssignCursor& a, caf::actor& member) {
      // A group coordinator on another node assigns a partition homed here.
      self->send(topics, std::move(a), std::move(member));
    },
    [=](pb::ListTopics& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::GetTopic& x) { return self->delegate(topics, std::move(x)); },
    [=](pb::Subscribe& x) { return self->delegate(groups, std::move(x)); },
    [=](pb::FindCoordinator& x) {
      return self->delegate(groups, std::move(x));
    },
    [=](pb::Unsubscribe& x) { return self->delegate(groups, std::move(x)); },
    [=](pb::ListGroups& x) { return self->delegate(groups, std::move(x)); },
    [=](pb::DlqList& x) { return self->delegate(groups, std::move(x)); },
    [=](pb::DlqRedrive& x) { return self->delegate(groups, std::move(x)); },
    [=](pb::DedupCheck& x) { return self->delegate(dedup, std::move(x)); },
    [=](pb::DedupMark& x) { return self->delegate(dedup, std::move(x)); },
    [=](pb::RegisterProducer& x) { return self->delegate(txn, std::move(x)); },
    [=](pb::UnregisterProducer& x) {
      return self->delegate(txn, std::move(x));
    },
    // In a cluster a transaction lives on the home of its partition: the
    // topic manager routes it there (and gathers txn lists from every node).
    [=](pb::HalfMessage& x) { return self->delegate(txns, std::move(x)); },
    [=](pb::EndTxn& x) { return self->delegate(txns, std::move(x)); },
    [=](pb::HalfBatch& x) { return self->delegate(txns, std::move(x)); },
    [=](pb::EndBatch& x) { return self->delegate(txns, std::move(x)); },
    [=](pb::TxnList& x) { return self->delegate(txns, std::move(x)); },
    [=](pb::TxnShow& x) { return self->delegate(txns, std::move(x)); },
    [=](pb::ClusterStatusRequest& x) -> caf::result<pb::ClusterStatus> {
      if (!cluster)
        return make_error(errc::unavailable, "this node has no cluster view");
      self->delegate(cluster, std::move(x));
      return caf::delegated<pb::ClusterStatus>{};
    },
    [=](pb::PeerHello& x) -> caf::result<pb::PeerWelcome> {
      if (!cluster)
        return make_error(errc::unavailable, "this node has no cluster view");
      self->delegate(cluster, std::move(x));
      return caf::delegated<pb::PeerWelcome>{};
    },
    [=](const pb::NodeStatusRequest&) {
      pb::NodeStatus s;
      s.set_node_id(ctx->node_id);
      s.set_data_dir(ctx->settings.data_dir);
      s.set_listen(ctx->settings.listen_host + ":"
                   + std::to_string(ctx->settings.listen_port));
      s.set_durability(config::to_string(ctx->settings.mode));
      s.set_map_size(ctx->settings.map_size);
      s.set_map_used(ctx->env->map_used());
      for (auto& [k, v] : metrics::snapshot())
        (*s.mutable_counters())[k] = v;
      return s;
    },
  };
}

} // namespace

caf::actor spawn_gateway(caf::actor_system& sys, broker::context_ptr ctx,
                         caf::actor topics, caf::actor groups,
                         caf::actor dedup, caf::actor txn,
                         std::vector<caf::actor> saga_shards,
                         caf::actor saga_directory, caf::actor cluster) {
  return sys.spawn(gateway, std::move(ctx), std::move(topics),
                   std::move(groups), std::move(dedup), std::move(txn),
                   std::move(saga_shards), std::move(saga_directory),
                   std::move(cluster));
}

} // namespace edda::node
