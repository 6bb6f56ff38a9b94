#!/usr/bin/env bash
# The Python examples (examples/python) against a real node over the client
# door: the producer's records all acknowledged, the consumer handles them
# all, and the group's committed offsets then cover every one; the
# participant serves the declared saga type `transfer`, which
# `edda saga start --wait` sees complete (and compensated when the debit is
# refused).
# Usage: python_examples.sh EDDA_BINARY STUBS_DIR EXAMPLES_DIR
set -euo pipefail
edda=$1 stubs=$2 examples=$3
python=/usr/bin/python3 # Debian's, with python3-grpcio (scripts/setup)
"$python" -c "import grpc" 2>/dev/null \
  || { echo "FAIL: $python cannot import grpc: install python3-grpcio (scripts/setup)"; exit 1; }
dir=$(mktemp -d /tmp/edda-py-XXXXXX)
node_pid="" participant_pid=""
cleanup() {
  [ -n "$participant_pid" ] && kill "$participant_pid" 2>/dev/null
  [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
"$edda" node --data-dir "$dir/data" --listen 127.0.0.1:0 \
  --set api.listen=127.0.0.1:0 --set storage.durability=nosync \
  --set 'saga.types=["transfer = debit, credit, notify~"]' \
  >"$dir/node.out" 2>"$dir/node.err" &
node_pid=$!
for _ in $(seq 100); do
  grep -q "client api (gRPC) on" "$dir/node.out" && break
  sleep 0.1
done
api=$(sed -n 's/.*client api (gRPC) on \([0-9.:]*\).*/\1/p' "$dir/node.out")
[ -n "$api" ] || { echo "FAIL: the node did not open its client door"; cat "$dir/node.err"; exit 1; }
export EDDA_STUBS=$stubs EDDA_API=$api
timeout 60 "$python" "$examples/producer.py" 25 | tee "$dir/producer.out" | tail -3
grep -q "^producer: 25 stored, 0 failed$" "$dir/producer.out" \
  || { echo "FAIL: producer"; exit 1; }
timeout 60 "$python" "$examples/consumer.py" 25 | tee "$dir/consumer.out"
# amounts 10*i for i in 0..24
grep -q "^consumer: 25 payments, 3000 in all$" "$dir/consumer.out" \
  || { echo "FAIL: consumer"; exit 1; }
# Every acknowledgement reached the node: nothing left to consume.
for _ in $(seq 50); do
  lag=$("$edda" topic describe payments --node "$api" | grep -c "group reconciliation .* lag 0," || true)
  [ "$lag" = 4 ] && break
  sleep 0.1
done
"$edda" topic describe payments --node "$api"
[ "$lag" = 4 ] || { echo "FAIL: group reconciliation still has lag"; exit 1; }
# Transactional messages: every 4th order rolled back, never appended.
timeout 60 "$python" "$examples/transactional.py" 12 | tee "$dir/txn.out"
grep -q "^transactional: 12 ended, 9 committed, 3 rolled back$" "$dir/txn.out" \
  || { echo "FAIL: transactional"; exit 1; }
appended=$("$edda" topic describe orders-paid --node "$api" \
  | sed -n 's/.*end offset \([0-9]*\),.*/\1/p' | awk '{s += $1} END {print s}')
[ "$appended" = 9 ] || { echo "FAIL: $appended appended to orders-paid, not 9"; exit 1; }
# The participant serves transfer's steps while sagas run.
timeout 60 "$python" "$examples/participant.py" 50 >"$dir/participant.out" 2>&1 &
participant_pid=$!
for _ in $(seq 100); do
  grep -q "^serving 5 names" "$dir/participant.out" && break
  sleep 0.1
done
grep -q "^serving 5 names" "$dir/participant.out" \
  || { echo "FAIL: the participant did not register"; cat "$dir/participant.out"; exit 1; }
"$edda" saga start transfer --input '{"amount": 100}' --wait 10 --node "$api" \
  | tee "$dir/saga1.out"
grep -q "(transfer): completed" "$dir/saga1.out" || { echo "FAIL: saga not completed"; exit 1; }
set +e
"$edda" saga start transfer --input '{"amount": 5000}' --wait 10 --node "$api" \
  >"$dir/saga2.out"
set -e
grep -q "(transfer): compensated" "$dir/saga2.out" \
  || { echo "FAIL: refused debit not compensated"; cat "$dir/saga2.out"; exit 1; }
grep -q "transfer.credit 100 -> {'alice': 900, 'bob': 100}" "$dir/participant.out" \
  || { echo "FAIL: the participant's books"; cat "$dir/participant.out"; exit 1; }
echo "PASS: python examples over the client door"
