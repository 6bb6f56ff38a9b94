"""The fund purchase as a transactional message: for each order a half
message to `orders-paid` (stored, invisible), then the local transaction
(here: a dict standing for the wallet's database), then commit or roll
back. An order the wallet cannot pay is rolled back and never delivered.
A transaction left without an end is checked back: the answer comes from
the same local state.

    EDDA_STUBS=build/python python3 examples/python/transactional.py 10
"""
import queue
import sys

import grpc
from edda_client import api_pb2, broker_pb2, connect

count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
stub, md = connect()
try:
    stub.CreateTopic(broker_pb2.CreateTopic(name="orders-paid"), metadata=md)
except grpc.RpcError as e:
    if e.code() != grpc.StatusCode.ALREADY_EXISTS:
        raise
requests = queue.Queue()
paid = {}  # the local transaction's outcome per order (the wallet's table)


def outcome_of(order):
    return api_pb2.COMMIT if paid.get(order) else api_pb2.ROLLBACK


def stream():
    yield api_pb2.TransactRequest(register=api_pb2.TransactRegistration(
        group="wallet"))
    while (item := requests.get()) is not None:
        yield item


for i in range(count):
    requests.put(api_pb2.TransactRequest(half=api_pb2.HalfRequest(
        ref=i, record=api_pb2.Record(topic="orders-paid", key=b"order-%d" % i,
                                     body=b'{"order": %d}' % i))))
ended = committed = 0
for response in stub.Transact(stream(), metadata=md):
    for h in response.halves:  # stored: run the local transaction, then end
        paid[h.txn_id] = h.ref % 4 != 3  # every 4th order: not enough money
        requests.put(api_pb2.TransactRequest(end=api_pb2.EndRequest(
            txn_id=h.txn_id, outcome=outcome_of(h.txn_id))))
    for c in response.checks:  # a check-back: answer from the local state
        requests.put(api_pb2.TransactRequest(answer=api_pb2.CheckAnswer(
            check=c.check, outcome=outcome_of(c.txn_id))))
    for e in response.ends:
        ended += 1
        committed += e.outcome == api_pb2.COMMIT and not e.HasField("error")
    if ended == count and response.ends:
        requests.put(None)  # leaves the producer group
print(f"transactional: {ended} ended, {committed} committed, "
      f"{ended - committed} rolled back")
sys.exit(0 if ended == count else 1)
