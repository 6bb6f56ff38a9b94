// edda::coord: the coordination engine edda builds its cluster on. One
// interface, two implementations: etcd 3.4 over gRPC (coord/etcd.hpp) for
// real clusters, and an in-memory fake (coord/fake.hpp) with the same
// semantics for unit tests. edda writes no consensus of its own: membership,
// ownership and metadata are keys in this store.
//
// Semantics (those of etcd v3):
//  * every change bumps one store-wide `revision`; a key remembers the
//    revision that created it (`create_revision`, unique and increasing: the
//    fencing token of an ownership key) and the one that last changed it
//    (`mod_revision`, what compare-and-swap compares);
//  * a lease has a TTL; keys put under it are deleted when it expires or is
//    revoked (all of them in one revision); keepalive renews it. etcd raises
//    a TTL below its minimum (ceil(1.5 election timeouts): 2 s with etcd's
//    defaults) and expires a lease up to about 1 s late (it checks every
//    0.5 s): keepalive well within the TTL;
//  * a watch delivers, in revision order, every change under a prefix made
//    after `from_revision` (inclusive), with no gaps; if those revisions were
//    compacted away (`from_revision` below the compaction revision) it ends
//    with on_error(errc::compacted), and the caller lists again.
//
// Thread-safety: every member function may be called from any thread. Calls
// block the caller (at most `options::call_timeout`); never call them from a
// CAF actor's handler (use a detached actor or a thread). Watch callbacks run
// on the watch's own thread, one at a time, in revision order; they may call
// the client, and may cancel their own watch.
//
// Errors (caf::error, category "edda"):
//  * unavailable: the store cannot be reached (refused, reset, or no answer
//    within the call timeout) or has no leader; the caller retries with
//    backoff and says so;
//  * not_found: keepalive / revoke of a lease that expired or never existed,
//    or a put bound to such a lease;
//  * invalid_argument: an empty key or prefix, a TTL out of range, a key +
//    value over 1 MiB (etcd refuses requests over 1.5 MiB);
// A compare-and-swap that failed with unavailable may still have been
// applied: read the key before assuming it was not.
#pragma once

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace edda::coord {

using lease_id = int64_t;

/// One stored key, as the store returned it.
struct key_value {
  std::string key;
  std::string value;
  int64_t create_revision = 0; ///< revision of the put that created it
  int64_t mod_revision = 0;    ///< revision of its last change
  int64_t version = 0;         ///< number of puts since it was created
  lease_id lease = 0;          ///< 0: not bound to a lease
};

/// The keys under a prefix and the store revision they were read at.
struct range_result {
  std::vector<key_value> kvs; ///< sorted by key
  int64_t revision = 0;       ///< a watch from revision + 1 misses nothing
};

/// The outcome of a compare-and-swap. A failed compare is not an error.
struct cas_result {
  bool succeeded = false;
  int64_t revision = 0; ///< the store revision after the call
  /// The key as it is now: after success, what was written (for a put);
  /// after failure, the current holder (nullopt: the key is absent).
  std::optional<key_value> current;
};

struct watch_event {
  enum class kind : uint8_t { put = 0, del = 1 };
  kind type = kind::put;
  key_value kv; ///< for del: key and mod_revision (the deleting revision)
};

/// A running watch. Destroying it (or cancel()) stops the callbacks; after
/// cancel() returns, no callback runs any more.
class watch {
public:
  virtual ~watch() = default;
  virtual void cancel() = 0;
};

struct watch_handlers {
  /// A batch of events of one or more revisions, in order.
  std::function<void(const std::vector<watch_event>&)> on_events;
  /// The watch ended on its own (store unreachable, compacted, ...). Not
  /// called after cancel(). The caller lists again and watches anew.
  std::function<void(const caf::error&)> on_error;
};

class client {
public:
  virtual ~client() = default;

  // -- leases ---------------------------------------------------------------

  /// Grants a lease of `ttl` (1 s to 1 h).
  [[nodiscard]] virtual caf::expected<lease_id>
  grant(std::chrono::seconds ttl) = 0;
  /// Renews `id`; returns the TTL it has now. not_found: it expired.
  [[nodiscard]] virtual caf::expected<std::chrono::seconds>
  keepalive(lease_id id) = 0;
  /// Revokes `id` and deletes its keys. not_found: it had already expired.
  [[nodiscard]] virtual caf::error revoke(lease_id id) = 0;

  // -- keys -------------------------------------------------------------------

  /// One key (nullopt: absent) and the store revision.
  [[nodiscard]] virtual caf::expected<std::pair<std::optional<key_value>,
                                                int64_t>>
  get(const std::string& key) = 0;
  /// Every key starting with `prefix`, sorted by key.
  [[nodiscard]] virtual caf::expected<range_result>
  get_prefix(const std::string& prefix) = 0;
  /// Puts `value` if the key's mod_revision equals `expect_mod_revision`
  /// (0: only if the key is absent), bound to `lease` (0: no lease).
  [[nodiscard]] virtual caf::expected<cas_result>
  cas_put(const std::string& key, const std::string& value,
          int64_t expect_mod_revision, lease_id lease = 0) = 0;
  /// cas_put, and only while `guard_key` exists with create_revision
  /// `guard_create_revision` (an owner's fencing token: the write of a duty
  /// that has lost its ownership key fails, even after a pause), and, if
  /// `absent_key` is not empty, only while that key does not exist. No
  /// lease. A failed guard is a failed compare (`current` is `key` as it
  /// is).
  [[nodiscard]] virtual caf::expected<cas_result>
  cas_put_guarded(const std::string& key, const std::string& value,
                  int64_t expect_mod_revision, const std::string& guard_key,
                  int64_t guard_create_revision,
                  const std::string& absent_key = {}) = 0;
  /// Deletes the key if its mod_revision equals `expect_mod_revision`.
  /// Deleting an absent key with expect 0 succeeds.
  [[nodiscard]] virtual caf::expected<cas_result>
  cas_delete(const std::string& key, int64_t expect_mod_revision) = 0;

  // -- watches ----------------------------------------------------------------

  /// Watches every key under `prefix` from `from_revision` (inclusive;
  /// 0: from the next change on). An error here means no watch was created;
  /// once created, it ends only through on_error or cancel().
  [[nodiscard]] virtual caf::expected<std::unique_ptr<watch>>
  watch_prefix(const std::string& prefix, int64_t from_revision,
               watch_handlers handlers) = 0;

  /// "etcd http://127.0.0.1:2379" or "fake": for logs and errors.
  [[nodiscard]] virtual std::string describe() const = 0;
};

using client_ptr = std::shared_ptr<client>;

} // namespace edda::coord
