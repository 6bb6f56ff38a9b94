// dedup: the idempotency store (db `dedup`). A handler asks whether a
// business key of a scope was already processed, and marks it once done;
// the mark is acknowledged only after it is durable. Records older than
// idempotency.retention are purged every minute.
#include "base/errc.hpp"
#include "base/log.hpp"
#include "base/open_promises.hpp"
#include "broker/actors.hpp"
#include "storage/environment.hpp"
#include "storage/keys.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <chrono>

namespace edda::broker {

namespace {

namespace pb = wire::pb;
using storage::db;
namespace keys = storage::keys;

struct dedup_state {
  context_ptr ctx;
  /// Marks waiting for their commit: failed at once if this actor ends.
  std::shared_ptr<open_promises> open;
  static inline const char* name = "edda.dedup";
};

caf::error check(const std::string& scope, const std::string& key) {
  if (scope.empty() || key.empty() || scope.size() + key.size() > 400
      || scope.find('\0') != std::string::npos)
    return make_error(errc::invalid_argument,
                      "idempotency scope and key must be non-empty and "
                      "together at most 400 bytes");
  return caf::none;
}

caf::behavior dedup(caf::stateful_actor<dedup_state>* self, context_ptr ctx) {
  self->state.ctx = ctx;
  self->state.open = open_promises::attach(self, "the idempotency service");
  self->delayed_send(self, std::chrono::minutes(1), wire::tick_atom::value);
  return {
    [=](const pb::DedupCheck& req) -> caf::result<pb::DedupStatus> {
      if (auto err = check(req.scope(), req.key()))
        return err;
      pb::DedupStatus st;
      auto txn = ctx->env->read();
      if (auto v = txn.get(db::dedup, keys::dedup_key(req.scope(), req.key()))) {
        pb::DedupRecord rec;
        if (rec.ParseFromArray(v->data(), static_cast<int>(v->size()))) {
          st.set_done(true);
          st.set_processed_ms(rec.processed_ms());
          st.set_result(rec.result());
        }
      }
      return st;
    },
    [=](const pb::DedupMark& req) -> caf::result<pb::DedupStatus> {
      if (auto err = check(req.scope(), req.key()))
        return err;
      pb::DedupRecord rec;
      rec.set_processed_ms(ctx->clock());
      rec.set_result(req.result());
      pb::WriteBatch b;
      auto* op = b.add_ops();
      op->set_db(static_cast<uint32_t>(db::dedup));
      op->set_key(keys::dedup_key(req.scope(), req.key()));
      op->set_value(rec.SerializeAsString());
      auto rp = self->make_response_promise<pb::DedupStatus>();
      auto kept = self->state.open->keep(rp);
      self
        ->request(ctx->writer, std::chrono::milliseconds(ctx->write_timeout_ms),
                  std::move(b))
        .then(
          [=](const pb::WriteResult&) mutable {
            pb::DedupStatus st;
            st.set_done(true);
            st.set_processed_ms(rec.processed_ms());
            st.set_result(rec.result());
            kept.deliver(st);
          },
          [=](caf::error& err) mutable { kept.deliver(err); });
      return rp;
    },
    [=](wire::tick_atom) {
      auto cutoff = ctx->clock()
                    - static_cast<int64_t>(ctx->settings.dedup_retention_ms);
      pb::WriteBatch b;
      auto txn = ctx->env->read();
      txn.scan(db::dedup, "", "", [&](std::string_view k, std::string_view v) {
        pb::DedupRecord rec;
        if (rec.ParseFromArray(v.data(), static_cast<int>(v.size()))
            && rec.processed_ms() < cutoff) {
          auto* op = b.add_ops();
          op->set_db(static_cast<uint32_t>(db::dedup));
          op->set_key(std::string{k});
          op->set_kind(pb::WriteOp::DEL);
        }
        return b.ops_size() < 10000;
      });
      if (b.ops_size() > 0) {
        auto n = b.ops_size();
        self->request(ctx->writer, std::chrono::seconds(60), std::move(b))
          .then([=](const pb::WriteResult&) {
            EDDA_INFO("dedup", "purged " << n << " expired idempotency keys");
          },
          [=](caf::error& err) {
            EDDA_WARN("dedup", "purge failed: " << render(err));
          });
      }
      self->delayed_send(self, std::chrono::minutes(1), wire::tick_atom::value);
    },
  };
}

} // namespace

caf::actor spawn_dedup(caf::actor_system& sys, context_ptr ctx) {
  return sys.spawn(dedup, std::move(ctx));
}

} // namespace edda::broker
