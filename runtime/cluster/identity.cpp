#include "cluster/identity.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "storage/environment.hpp"
#include "wire/types.hpp"

namespace edda::cluster {

namespace pb = wire::pb;
using storage::db;

namespace {

caf::error put(storage::environment& env, const std::string& key,
               const std::string& value) {
  pb::WriteBatch b;
  auto* op = b.add_ops();
  op->set_db(static_cast<uint32_t>(db::meta));
  op->set_key(key);
  op->set_value(value);
  std::vector<caf::error> failed;
  if (auto err = env.apply({&b}, failed))
    return err;
  if (!failed.empty() && failed[0])
    return failed[0];
  return caf::none;
}

} // namespace

caf::expected<std::string> load_node_id(storage::environment& env,
                                        const std::string& name,
                                        int64_t now_ms) {
  pb::NodeMeta node;
  {
    auto txn = env.read();
    if (auto v = txn.get(db::meta, "node"))
      if (!node.ParseFromArray(v->data(), static_cast<int>(v->size())))
        return make_error(errc::storage_error,
                          "the node record of " + env.opts().dir
                            + " does not parse");
  }
  if (!node.node_id().empty()) {
    if (!name.empty() && name != node.node_id())
      return make_error(errc::bad_config,
                        "data dir " + env.opts().dir + " belongs to node '"
                          + node.node_id() + "', but node.name is '" + name
                          + "' (a node keeps its id for ever: use that name, "
                            "or another data dir)");
    return node.node_id();
  }
  node.set_node_id(name.empty() ? new_unique_id() : name);
  if (node.format_version() == 0)
    node.set_format_version(1);
  if (node.created_ms() == 0)
    node.set_created_ms(now_ms);
  if (auto err = put(env, "node", node.SerializeAsString()))
    return err;
  return node.node_id();
}

std::string cluster_record_key() {
  return "cluster";
}

std::string encode(const cluster_record& rec) {
  pb::ClusterMeta m;
  m.set_cluster_name(rec.cluster_name);
  m.set_last_lease_id(rec.last_lease_id);
  m.set_incarnation(rec.incarnation);
  return m.SerializeAsString();
}

caf::expected<cluster_record>
load_cluster_record(storage::environment& env,
                    const std::string& cluster_name) {
  cluster_record out;
  out.cluster_name = cluster_name;
  auto txn = env.read();
  auto v = txn.get(db::meta, cluster_record_key());
  if (!v)
    return out;
  pb::ClusterMeta m;
  if (!m.ParseFromArray(v->data(), static_cast<int>(v->size())))
    return make_error(errc::storage_error, "the cluster record of "
                                             + env.opts().dir
                                             + " does not parse");
  if (m.cluster_name() != cluster_name)
    return make_error(errc::bad_config,
                      "data dir " + env.opts().dir + " belongs to cluster '"
                        + m.cluster_name() + "', but cluster.name is '"
                        + cluster_name + "'");
  out.last_lease_id = m.last_lease_id();
  out.incarnation = m.incarnation();
  return out;
}

} // namespace edda::cluster
