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
  m.set_cluster_id(rec.cluster_id);
  return m.SerializeAsString();
}

caf::expected<std::string>
check_cluster_data_dir(storage::environment& env, coord::client& store,
                       const std::string& cluster_name) {
  auto rec = load_cluster_record(env, cluster_name);
  if (!rec)
    return rec.error();
  bool first = false;
  {
    auto txn = env.read();
    first = !txn.get(db::meta, cluster_record_key());
    bool has_topics = false;
    txn.scan(db::topics, "", "", [&](std::string_view, std::string_view) {
      has_topics = true;
      return false;
    });
    if (first && has_topics)
      return make_error(errc::bad_config,
                        "data dir " + env.opts().dir
                          + " holds a single node's topics, which are not "
                            "in the cluster's etcd; a cluster node starts on "
                            "an empty data dir (or run it without "
                            "cluster.etcd)");
  }
  // The cluster's id in etcd, made by the first node of the cluster.
  auto key = "/edda/" + cluster_name + "/cluster_id";
  std::string id;
  for (int attempt = 0; attempt < 3 && id.empty(); ++attempt) {
    auto cur = store.get(key);
    if (!cur)
      return cur.error();
    if (cur->first) {
      id = cur->first->value;
      break;
    }
    auto put = store.cas_put(key, new_unique_id(), 0);
    if (!put)
      return put.error();
    if (put->current)
      id = put->current->value;
  }
  if (id.empty())
    return make_error(errc::unavailable, "cannot read the cluster id in etcd");
  if (!rec->cluster_id.empty() && rec->cluster_id != id)
    return make_error(
      errc::bad_config,
      "data dir " + env.opts().dir + " belongs to cluster '" + cluster_name
        + "' with id " + rec->cluster_id + ", but etcd's cluster '"
        + cluster_name + "' has id " + id
        + ": etcd lost or reset the cluster's keys; refusing to start (its "
          "topics would be taken for deleted)");
  if (rec->cluster_id == id && !first)
    return id;
  rec->cluster_id = id;
  if (auto err = put(env, cluster_record_key(), encode(*rec)))
    return err;
  return id;
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
  out.cluster_id = m.cluster_id();
  return out;
}

} // namespace edda::cluster
