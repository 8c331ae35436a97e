"""A small application written with the `eventsourcing` library and its
KurrentDB adapter (`eventsourcing-kurrentdb`), persisting to `annal serve`
unchanged: an aggregate is created, changed, saved, reloaded, and its events
are listed as notifications of the application's log, in order.

Run by scripts/grpc-clients.sh, which installs the pinned packages and sets
ANNAL_GRPC_URI.
"""

import os
import uuid
import unittest

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event

URI = os.environ.get("ANNAL_GRPC_URI", "kurrentdb://127.0.0.1:2113?tls=false")


class Order(Aggregate):
    # KurrentDB numbers a stream's events from 0 (the adapter's README asks for this).
    INITIAL_VERSION = 0

    @event("Placed")
    def __init__(self, customer: str):
        self.customer = customer
        self.items = []
        self.paid = False

    @event("ItemAdded")
    def add_item(self, item: str, quantity: int):
        self.items.append((item, quantity))

    @event("Paid")
    def pay(self):
        self.paid = True


class Orders(Application):
    def place(self, customer):
        order = Order(customer)
        self.save(order)
        return order.id

    def add_item(self, order_id, item, quantity):
        order = self.repository.get(order_id)
        order.add_item(item, quantity)
        self.save(order)

    def pay(self, order_id):
        order = self.repository.get(order_id)
        order.pay()
        self.save(order)

    def get(self, order_id):
        return self.repository.get(order_id)


class EventsourcingApplication(unittest.TestCase):
    def setUp(self):
        self.app = Orders(env={"PERSISTENCE_MODULE": "eventsourcing_kurrentdb", "KURRENTDB_URI": URI})
        self.addCleanup(self.app.close)

    def test_an_aggregate_is_saved_reloaded_and_listed_as_notifications(self):
        app = self.app
        before = app.recorder.max_notification_id()
        order_id = app.place("ada")
        app.add_item(order_id, "tea", 2)
        app.add_item(order_id, "cake", 1)
        app.pay(order_id)

        # Reloaded by a second application instance from the store alone.
        other = Orders(env={"PERSISTENCE_MODULE": "eventsourcing_kurrentdb", "KURRENTDB_URI": URI})
        self.addCleanup(other.close)
        order = other.get(order_id)
        self.assertEqual(order.customer, "ada")
        self.assertEqual(order.items, [("tea", 2), ("cake", 1)])
        self.assertTrue(order.paid)
        self.assertEqual(order.version, 3)
        # An older version, from its first events.
        self.assertEqual(other.repository.get(order_id, version=1).items, [("tea", 2)])
        with self.assertRaises(AggregateNotFoundError):
            other.get(uuid.uuid4())

        # The application's notification log lists the four events in order,
        # numbered by commit position.
        notifications = [
            n
            for n in app.recorder.select_notifications(start=before, limit=100, inclusive_of_start=False)
            if str(n.originator_id) == str(order_id)
        ]
        self.assertEqual([n.originator_version for n in notifications], [0, 1, 2, 3])
        self.assertEqual(
            [n.topic.rsplit(".", 1)[-1] for n in notifications], ["Placed", "ItemAdded", "ItemAdded", "Paid"]
        )
        ids = [n.id for n in notifications]
        self.assertEqual(ids, sorted(ids))
        self.assertTrue(all(i > (before or 0) for i in ids))
        self.assertEqual(app.recorder.max_notification_id(), ids[-1])


if __name__ == "__main__":
    unittest.main()
