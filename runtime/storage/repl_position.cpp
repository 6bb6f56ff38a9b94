#include "storage/repl_position.hpp"

#include "storage/environment.hpp"

#include "records.pb.h"
#include "replication.pb.h"

namespace edda::storage {

wire::v1::ReplPosition read_repl_position(read_txn& r) {
  wire::v1::ReplPosition p;
  if (auto v = r.get(db::meta, repl_position_key))
    if (!p.ParseFromArray(v->data(), static_cast<int>(v->size())))
      p.Clear();
  return p;
}

void put_repl_position(wire::v1::WriteBatch& b,
                       const wire::v1::ReplPosition& p) {
  auto* op = b.add_ops();
  op->set_db(static_cast<uint32_t>(db::meta));
  op->set_key(repl_position_key);
  op->set_value(p.SerializeAsString());
}

} // namespace edda::storage
