"""Consumes N payments as a member of group `reconciliation` and
acknowledges each one after handling it. A payment it cannot handle would
be settled with `retry` instead (delivered again later, then to the DLQ).

    EDDA_STUBS=build/python python3 examples/python/consumer.py 20
"""
import json
import queue
import sys

from edda_client import api_pb2, connect

count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
stub, md = connect()
settlements = queue.Queue()


def requests():  # subscribe, then settlements as they are made
    yield api_pb2.ConsumeRequest(subscribe=api_pb2.Subscription(
        group="reconciliation", topic="payments", expression="EUR",
        window=32))
    while (item := settlements.get()) is not None:
        yield item


total = handled = 0
for response in stub.Consume(requests(), metadata=md):
    for e in response.errors:
        print(f"settlement refused: {e.code}: {e.message}")
    acks = []
    for d in response.deliveries[:max(0, count - handled)]:
        payment = json.loads(d.record.body)
        total += payment["amount"]
        handled += 1
        acks.append(d.delivery)
    if acks:
        settlements.put(api_pb2.ConsumeRequest(settle=api_pb2.Settle(ack=acks)))
    if acks and handled >= count:
        # Ends the requests after the last acks: the node leaves the group
        # (deliveries not taken go back to it) and ends the stream.
        settlements.put(None)
print(f"consumer: {handled} payments, {total} in all")
sys.exit(0 if handled >= count else 1)
