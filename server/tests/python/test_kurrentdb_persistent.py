"""Persistent subscriptions through the official KurrentDB Python client
against `annal serve`: create, read with ack and nack (retry, park, skip),
replay of parked events, info, list, update, delete, `$all` with a filter,
and the maximum number of subscribers.

Run by scripts/grpc-clients.sh (see test_kurrentdb_client.py). Each test
uses streams and groups of its own, so the tests share one server.
"""

import os
import unittest
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import (
    AlreadyExistsError,
    MaximumSubscriptionsReachedError,
    NotFoundError,
)

URI = os.environ.get("ANNAL_GRPC_URI", "kurrentdb://127.0.0.1:2113?tls=false")

# A call that never answers fails the test instead of hanging it.
DEADLINE = 30


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex}"


class Persistent(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = KurrentDBClient(uri=URI)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def append(self, stream, *kinds):
        self.client.append_to_stream(
            stream,
            events=[NewEvent(type=k, data=b"{}") for k in kinds],
            current_version=StreamState.ANY,
        )
        return self.client.get_stream(stream)

    def read(self, group, stream=None, **kw):
        if stream is None:
            sub = self.client.read_subscription_to_all(group, timeout=DEADLINE, **kw)
        else:
            sub = self.client.read_subscription_to_stream(group, stream, timeout=DEADLINE, **kw)
        self.addCleanup(sub.stop)
        return sub, iter(sub)

    def test_events_come_with_their_commit_positions_and_acknowledged_ones_are_not_sent_again(self):
        c = self.client
        s = name("order")
        stored = self.append(s, "A", "B", "C")
        g = name("workers")
        c.create_subscription_to_stream(g, s)
        sub, events = self.read(g, s)
        got = [next(events) for _ in range(3)]
        self.assertEqual([e.id for e in got], [e.id for e in stored])
        self.assertEqual([e.commit_position for e in got], [e.commit_position for e in stored])
        self.assertTrue(all(e.commit_position > 0 for e in got))
        self.assertEqual([e.retry_count for e in got], [0, 0, 0])
        self.assertEqual([e.stream_name for e in got], [s] * 3)
        for e in got:
            sub.ack(e)
        sub.stop()
        # A new consumer after the acks sees only what comes next.
        later = self.append(s, "D")[-1]
        sub2, events2 = self.read(g, s)
        e = next(events2)
        self.assertEqual((e.id, e.type), (later.id, "D"))
        sub2.ack(e)

    def test_a_nacked_event_is_retried_then_parked_and_replayed(self):
        c = self.client
        s = name("order")
        stored = self.append(s, "Poison", "Fine")
        g = name("workers")
        c.create_subscription_to_stream(g, s, max_retry_count=3, message_timeout=60)
        sub, events = self.read(g, s)
        first = next(events)
        self.assertEqual((first.id, first.retry_count), (stored[0].id, 0))
        sub.nack(first, "retry")
        seen = {}
        while first.id not in seen or stored[1].id not in seen:
            e = next(events)
            seen[e.id] = e
            if e.id == stored[1].id:
                sub.ack(e)
        self.assertEqual(seen[first.id].retry_count, 1)
        sub.nack(seen[first.id], "park")
        info = self._info_until(g, s, lambda i: i.parked_message_count == 1)
        self.assertEqual(info.parked_message_count, 1)
        c.replay_parked_events(g, s)
        again = next(events)
        self.assertEqual(again.id, first.id)
        sub.nack(again, "skip")

    def _info_until(self, g, s, ok):
        import time

        deadline = time.time() + 10
        while True:
            info = self.client.get_subscription_info(g, s)
            if ok(info) or time.time() > deadline:
                return info
            time.sleep(0.05)

    def test_groups_are_not_found_or_already_exist_as_the_client_expects(self):
        c = self.client
        s = name("order")
        g = name("workers")
        with self.assertRaises(NotFoundError):
            c.get_subscription_info(g, s)
        with self.assertRaises(NotFoundError):
            c.delete_subscription(g, s)
        with self.assertRaises(NotFoundError):
            c.read_subscription_to_stream(g, s, timeout=DEADLINE)
        c.create_subscription_to_stream(g, s)
        with self.assertRaises(AlreadyExistsError):
            c.create_subscription_to_stream(g, s)
        # The same group name on another stream is another group.
        c.create_subscription_to_stream(g, s + "-other")
        with self.assertRaises(NotFoundError):
            c.get_subscription_info(g)

    def test_info_update_list_and_delete(self):
        c = self.client
        s = name("order")
        self.append(s, "A")
        g = name("workers")
        c.create_subscription_to_stream(
            g, s, stream_position=0, consumer_strategy="RoundRobin", max_retry_count=4, message_timeout=12.5
        )
        info = c.get_subscription_info(g, s)
        self.assertEqual((info.group_name, info.event_source), (g, s))
        self.assertEqual(info.consumer_strategy, "RoundRobin")
        self.assertEqual(info.max_retry_count, 4)
        self.assertEqual(info.message_timeout, 12.5)
        self.assertEqual(info.start_from, "0")
        c.update_subscription_to_stream(g, s, max_retry_count=7, consumer_strategy="Pinned")
        info = c.get_subscription_info(g, s)
        self.assertEqual((info.max_retry_count, info.consumer_strategy), (7, "Pinned"))
        self.assertIn(g, [i.group_name for i in c.list_subscriptions_to_stream(s)])
        self.assertIn((s, g), [(i.event_source, i.group_name) for i in c.list_subscriptions()])
        c.delete_subscription(g, s)
        self.assertEqual(c.list_subscriptions_to_stream(s), [])
        with self.assertRaises(NotFoundError):
            c.get_subscription_info(g, s)
        # A deleted group may be created again.
        c.create_subscription_to_stream(g, s)
        c.delete_subscription(g, s)

    def test_a_group_on_all_with_a_filter_sees_only_its_streams(self):
        c = self.client
        prefix = name("tenant")
        g = name("all")
        c.create_subscription_to_all(g, filter_include=[prefix + ".*"], filter_by_stream_name=True)
        self.append(f"{prefix}-a", "A1")
        self.append(name("elsewhere"), "X")
        self.append(f"{prefix}-b", "B1", "B2")
        mine = c.get_stream(f"{prefix}-a") + c.get_stream(f"{prefix}-b")
        sub, events = self.read(g)
        self.assertEqual(sub.subscription_id, f"$all::{g}")
        got = [next(events) for _ in range(3)]
        self.assertEqual([e.type for e in got], ["A1", "B1", "B2"])
        self.assertEqual([e.commit_position for e in got], [e.commit_position for e in mine])
        for e in got:
            sub.ack(e)
        info = c.get_subscription_info(g)
        self.assertEqual((info.event_source, info.group_name), ("$all", g))
        self.assertIn(("$all", g), [(i.event_source, i.group_name) for i in c.list_subscriptions()])
        c.delete_subscription(g)

    def test_a_group_on_all_with_the_default_filter_skips_what_it_excludes(self):
        # The client's default exclusion filter is a negative lookahead on event types.
        c = self.client
        g = name("all-default")
        c.create_subscription_to_all(g, from_end=True)
        s = name("order")
        self.append(s, "Placed", "Result", "PersistentConfig1", "Paid")
        sub, events = self.read(g)
        got = []
        while len(got) < 2:
            e = next(events)
            sub.ack(e)
            if e.stream_name == s:
                got.append(e.type)
        self.assertEqual(got, ["Placed", "Paid"])
        info = c.get_subscription_info(g)
        self.assertEqual((info.event_source, info.group_name), ("$all", g))
        c.delete_subscription(g)

    def test_a_full_group_refuses_one_more_subscriber(self):
        c = self.client
        s = name("order")
        g = name("workers")
        c.create_subscription_to_stream(g, s, max_subscriber_count=1)
        self.read(g, s)
        with self.assertRaises(MaximumSubscriptionsReachedError):
            c.read_subscription_to_stream(g, s, timeout=DEADLINE)
        info = c.get_subscription_info(g, s)
        self.assertEqual((info.max_subscriber_count, len(info.connections)), (1, 1))


if __name__ == "__main__":
    unittest.main()
