#!/usr/bin/env bash
# The package test (ctest `package.out_of_tree`, label `package`): installs
# this build tree into a prefix inside it, builds examples/out_of_tree
# against that prefix with find_package(edda) (its own build dir), starts
# the installed `edda node` on 127.0.0.1 with the saga type `greet`, and
# runs the example's participant service against it: it serves the step
# and checks the saga it started completed with the step's output.
#
#   out_of_tree_test.sh BUILD_DIR EXAMPLE_SOURCE_DIR [COMPILER_LAUNCHER]
set -euo pipefail
build=$(cd "$1" && pwd)
example=$(cd "$2" && pwd)
launcher=${3:-}
work="$build/package-test"
prefix="$work/prefix"
rm -rf "$work"
mkdir -p "$work"

node_pid=""
stop_node() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$node_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$node_pid" 2>/dev/null || true
  fi
  node_pid=""
}
fail() {
  echo "FAIL: $*"
  if [ -f "$work/node.log" ]; then
    echo "--- node stderr (last 30 lines)"
    tail -n 30 "$work/node.log"
  fi
  stop_node
  exit 1
}
trap stop_node EXIT

echo "== cmake --install into $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "cmake --install failed"; }
for f in bin/edda lib/cmake/edda/edda-config.cmake \
         lib/cmake/edda/edda-config-version.cmake \
         lib/cmake/edda/edda-targets.cmake lib/cmake/edda/FindCAF.cmake \
         lib/libedda_client.a lib/libedda_sagas.a \
         include/edda/client/connection.hpp include/edda/sagas/remote.hpp \
         include/edda/records.pb.h include/edda/api.grpc.pb.h \
         share/edda/default.toml share/edda/edda.toml \
         share/edda/proto/api.proto lib/systemd/system/edda.service; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
# The unit runs the installed binary of this prefix.
grep -qx "ExecStart=$prefix/bin/edda node --config /etc/edda/edda.toml" \
  "$prefix/lib/systemd/system/edda.service" ||
  fail "edda.service: ExecStart is not $prefix/bin/edda"
# Nothing in the package points back into the source or build tree.
if grep -rl -e "$build" -e "$(dirname "$(dirname "$example")")/" \
     "$prefix/lib/cmake/edda" | grep .; then
  fail "the CMake package names the build or source tree"
fi
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$prefix/lib/systemd/system/edda.service" \
    >"$work/verify.log" 2>&1 ||
    { cat "$work/verify.log"; fail "systemd-analyze verify edda.service"; }
fi
"$prefix/bin/edda" node --config "$prefix/share/edda/edda.toml" \
  --print-config >/dev/null || fail "the installed edda.toml does not load"

echo "== configure and build examples/out_of_tree against it"
args=(-DCMAKE_PREFIX_PATH="$prefix")
[ -n "$launcher" ] && args+=(-DCMAKE_CXX_COMPILER_LAUNCHER="$launcher")
cmake -S "$example" -B "$work/build" "${args[@]}" >"$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; fail "configuring the example failed"; }
grep -q "edda_DIR:PATH=$prefix/lib/cmake/edda" "$work/build/CMakeCache.txt" ||
  fail "find_package(edda) did not take the installed package"
cmake --build "$work/build" -j2 >"$work/build.log" 2>&1 ||
  { tail -n 40 "$work/build.log"; fail "building the example failed"; }

echo "== run it against the installed edda node"
# Made here, not by the node's redirection: the loop below reads it at once.
: >"$work/node.out"
"$prefix/bin/edda" node --listen 127.0.0.1:0 --data-dir "$work/data" \
  --durability nosync --set 'saga.types=["greet = hello!"]' \
  >"$work/node.out" 2>"$work/node.log" &
node_pid=$!
door=""
for _ in $(seq 1 300); do # 30 s
  door=$(sed -n 's/.*client api (gRPC) on \([0-9.]*:[0-9]*\).*/\1/p' \
           "$work/node.out")
  [ -n "$door" ] && break
  kill -0 "$node_pid" 2>/dev/null || fail "edda node exited"
  sleep 0.1
done
[ -n "$door" ] || fail "edda node did not listen within 30 s"
echo "node $node_pid, client door on $door"
timeout 60 "$work/build/greeter" "$door" package >"$work/greeter.out" 2>&1 ||
  { cat "$work/greeter.out"; fail "greeter failed"; }
cat "$work/greeter.out"
grep -qx 'greeter: saga .* completed, step output "hello, package", served [1-9][0-9]*' \
  "$work/greeter.out" || fail "greeter did not report the completed saga"
stop_node
rm -rf "$prefix" "$work/build" "$work/data" # 600+ MiB; the logs stay
echo "PASS: installed, built out of tree with find_package(edda), saga served"
