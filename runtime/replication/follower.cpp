#include "replication/follower.hpp"

#include "base/errc.hpp"
#include "storage/environment.hpp"
#include "storage/writer_actor.hpp"

#include "records.pb.h"
#include "replication.pb.h"

#include <string>
#include <vector>

namespace edda::replication {

namespace pb = wire::v1;

position read_position(const storage::environment& env) {
  auto r = env.read();
  auto p = storage::read_repl_position(r);
  return position{p.epoch(), p.seq(), p.log_id()};
}

caf::error end_log(storage::environment& env) {
  auto at = read_position(env);
  pb::ReplPosition p;
  p.set_epoch(at.epoch);
  p.set_seq(at.seq);
  pb::WriteBatch b;
  storage::put_repl_position(b, p);
  std::vector<caf::error> failed;
  if (auto err = env.apply({&b}, failed))
    return err;
  return failed.front();
}

caf::expected<verdict> plan(position at, const pb::ReplBatch& b,
                            pb::WriteBatch& write, size_t max_bytes) {
  if (at.seq > 0 && b.log_id() != at.log_id)
    return make_error(errc::fenced,
                      "batch " + std::to_string(b.seq()) + " of log '"
                        + b.log_id() + "' refused: this replica holds log '"
                        + at.log_id + "' (up to seq " + std::to_string(at.seq)
                        + "), which is never mixed with another");
  if (b.leader_epoch() < at.epoch)
    return make_error(errc::fenced,
                      "batch " + std::to_string(b.seq()) + " of leader epoch "
                        + std::to_string(b.leader_epoch())
                        + " refused: this replica follows epoch "
                        + std::to_string(at.epoch));
  if (b.seq() <= at.seq && b.leader_epoch() > at.epoch)
    // A new leader's batch where this replica already has one of the old
    // epoch: the old leader's suffix may differ from the new leader's log
    // (it never merges): truncate to the new epoch's start first.
    return make_error(errc::fenced,
                      "batch " + std::to_string(b.seq()) + " of leader epoch "
                        + std::to_string(b.leader_epoch())
                        + " overlaps this replica's log of epoch "
                        + std::to_string(at.epoch) + " (up to seq "
                        + std::to_string(at.seq)
                        + "): it must be truncated to the new epoch's "
                          "start before it follows");
  if (b.seq() <= at.seq)
    return verdict::duplicate;
  if (b.seq() != at.seq + 1)
    return make_error(errc::invalid_argument,
                      "batch " + std::to_string(b.seq())
                        + " leaves a gap: this replica expects "
                        + std::to_string(at.seq + 1));
  if (b.ByteSizeLong() > max_bytes)
    return make_error(errc::message_too_large,
                      "batch " + std::to_string(b.seq()) + " is "
                        + std::to_string(b.ByteSizeLong())
                        + " bytes, over the limit of "
                        + std::to_string(max_bytes));
  write.Clear();
  for (auto& op : b.ops())
    *write.add_ops() = op;
  pb::ReplPosition next;
  next.set_epoch(b.leader_epoch());
  next.set_seq(b.seq());
  next.set_log_id(b.log_id());
  storage::put_repl_position(write, next);
  return verdict::apply;
}

caf::expected<verdict> apply(storage::environment& env, const pb::ReplBatch& b,
                             size_t max_bytes) {
  pb::WriteBatch write;
  auto v = plan(read_position(env), b, write, max_bytes);
  if (!v || *v == verdict::duplicate)
    return v;
  std::vector<caf::error> failed;
  if (auto err = env.apply({&write}, failed))
    return err;
  if (failed.front())
    return failed.front();
  return verdict::apply;
}

} // namespace edda::replication
