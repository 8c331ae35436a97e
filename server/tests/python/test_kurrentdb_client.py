"""End-to-end tests of `annal serve` with the official KurrentDB Python client.

Run by scripts/grpc-clients.sh, which installs the pinned client in a
virtual environment, starts `annal serve --no-auth` on a temporary store and
sets ANNAL_GRPC_URI. Each test uses streams of its own (a fresh uuid), so the
tests share one server and one store.
"""

import json
import os
import threading
import time
import unittest
import uuid
from datetime import datetime, timedelta, timezone

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.events import CaughtUp, Checkpoint
from kurrentdbclient.gossip import NODE_STATE_LEADER
from kurrentdbclient.exceptions import (
    NotFoundError,
    StreamIsDeletedError,
    WrongCurrentVersionError,
)

URI = os.environ.get("ANNAL_GRPC_URI", "kurrentdb://127.0.0.1:2113?tls=false")


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex}"


def event(kind, data=b"{}", **kw):
    return NewEvent(type=kind, data=data, **kw)


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = KurrentDBClient(uri=URI)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def later(self, seconds, f):
        """Runs f in a thread after a pause (to append while a subscription waits)."""
        t = threading.Thread(target=lambda: (time.sleep(seconds), f()))
        t.start()
        self.addCleanup(t.join)


class Appends(Base):
    def test_single_and_batch_appends_answer_the_last_events_commit_position(self):
        c = self.client
        s = name("order")
        first = event("OrderPlaced", b'{"total": 10}')
        p1 = c.append_to_stream(s, events=first, current_version=StreamState.NO_STREAM)
        self.assertGreater(p1, 0)
        batch = [event("OrderPaid"), event("OrderShipped", b"\x00\x01", content_type="application/octet-stream")]
        p2 = c.append_to_stream(s, events=batch, current_version=0)
        self.assertEqual(p2, p1 + 2)
        # An exact retry (same ids, same expected version) answers the original position.
        self.assertEqual(c.append_to_stream(s, events=batch, current_version=0), p2)
        self.assertEqual(c.append_to_stream(s, events=first, current_version=StreamState.NO_STREAM), p1)

        events = c.get_stream(s)
        self.assertEqual([e.type for e in events], ["OrderPlaced", "OrderPaid", "OrderShipped"])
        self.assertEqual([e.stream_position for e in events], [0, 1, 2])
        self.assertEqual([e.id for e in events], [first.id, batch[0].id, batch[1].id])
        self.assertEqual([e.commit_position for e in events], [p1, p1 + 1, p2])
        self.assertEqual(
            [e.content_type for e in events], ["application/json", "application/json", "application/octet-stream"]
        )
        self.assertEqual(events[0].data, b'{"total": 10}')
        self.assertEqual(events[2].data, b"\x00\x01")
        now = datetime.now(timezone.utc)
        self.assertLess(abs(events[0].recorded_at - now), timedelta(minutes=1))
        self.assertEqual(c.get_current_version(s), 2)
        self.assertEqual(c.get_current_version(name("none")), StreamState.NO_STREAM)

    def test_custom_metadata_comes_back_unchanged(self):
        c = self.client
        s = name("meta")
        c.append_to_stream(s, events=event("T", b"x", metadata=b"\xffopaque"), current_version=StreamState.ANY)
        self.assertEqual(c.get_stream(s)[0].metadata, b"\xffopaque")

    def test_wrong_current_version_is_refused(self):
        c = self.client
        s = name("order")
        c.append_to_stream(s, events=event("A"), current_version=StreamState.NO_STREAM)
        for version in (StreamState.NO_STREAM, 5):
            with self.assertRaises(WrongCurrentVersionError):
                c.append_to_stream(s, events=event("B"), current_version=version)
            with self.assertRaises(WrongCurrentVersionError):
                c.append_to_stream(s, events=[event("B"), event("C")], current_version=version)
        with self.assertRaises(WrongCurrentVersionError):
            c.append_to_stream(name("none"), events=event("B"), current_version=StreamState.EXISTS)
        c.append_to_stream(s, events=event("B"), current_version=StreamState.EXISTS)
        self.assertEqual(c.get_current_version(s), 1)


class Reads(Base):
    def test_stream_reads_forwards_backwards_from_a_revision_with_a_limit(self):
        c = self.client
        s = name("read")
        c.append_to_stream(s, events=[event(f"E{i}") for i in range(10)], current_version=StreamState.NO_STREAM)
        self.assertEqual([e.stream_position for e in c.get_stream(s, stream_position=7)], [7, 8, 9])
        self.assertEqual([e.stream_position for e in c.get_stream(s, backwards=True, limit=3)], [9, 8, 7])
        self.assertEqual([e.stream_position for e in c.get_stream(s, stream_position=2, backwards=True)], [2, 1, 0])
        self.assertEqual(len(c.get_stream(s, limit=4)), 4)
        with self.assertRaises(NotFoundError):
            c.get_stream(name("none"))

    def test_all_forwards_includes_the_position_backwards_excludes_it(self):
        c = self.client
        s = name("all")
        c.append_to_stream(s, events=[event("A"), event("B"), event("C")], current_version=StreamState.NO_STREAM)
        mine = [e for e in c.read_all() if e.stream_name == s]
        self.assertEqual([e.type for e in mine], ["A", "B", "C"])
        positions = [e.commit_position for e in mine]
        self.assertEqual(positions, sorted(set(positions)))
        forwards = list(c.read_all(commit_position=positions[1], limit=2))
        self.assertEqual([e.commit_position for e in forwards], positions[1:3])
        backwards = list(c.read_all(commit_position=positions[1], backwards=True, limit=1))
        self.assertEqual([e.commit_position for e in backwards], positions[:1])
        self.assertEqual(list(c.read_all(backwards=True, limit=1))[0].commit_position, c.get_commit_position())

    def test_all_filters_by_stream_name_and_event_type_regex_and_prefix(self):
        c = self.client
        tag = uuid.uuid4().hex[:12]
        a, b = f"fa{tag}-1", f"fb{tag}-1"
        c.append_to_stream(a, events=[event(f"Alpha{tag}"), event(f"Beta{tag}")], current_version=StreamState.ANY)
        c.append_to_stream(b, events=[event(f"Alpha{tag}")], current_version=StreamState.ANY)
        by_stream = list(c.read_all(filter_include=[f"fa{tag}.*"], filter_by_stream_name=True))
        self.assertEqual({e.stream_name for e in by_stream}, {a})
        by_prefix = list(c.read_all(filter_include=[f"fb{tag}"], filter_by_stream_name=True, filter_by_prefix=True))
        self.assertEqual([e.stream_name for e in by_prefix], [b])
        by_type = list(c.read_all(filter_include=[f"Alpha{tag}"]))
        self.assertEqual(sorted(e.stream_name for e in by_type), [a, b])
        backwards = list(c.read_all(filter_include=[f"Alpha{tag}"], backwards=True, limit=1))
        self.assertEqual([e.stream_name for e in backwards], [b])
        # The default filter hides system events ($-types), of which every store has one.
        self.assertFalse([e for e in c.read_all() if e.type.startswith("$")])
        system = [e for e in c.read_all(filter_exclude=[]) if e.stream_name == "$annal"]
        self.assertEqual([e.type for e in system], ["$annal-store-created"])
        excluded = [e for e in c.read_all(filter_exclude=[f"Alpha{tag}"]) if e.stream_name in (a, b)]
        self.assertEqual([e.type for e in excluded], [f"Beta{tag}"])


class Deletes(Base):
    def test_soft_delete_hides_the_stream_and_appends_continue_its_revisions(self):
        c = self.client
        s = name("soft")
        c.append_to_stream(s, events=[event("A"), event("B")], current_version=StreamState.NO_STREAM)
        with self.assertRaises(WrongCurrentVersionError):
            c.delete_stream(s, current_version=0)
        c.delete_stream(s, current_version=1)
        with self.assertRaises(NotFoundError):
            c.get_stream(s)
        self.assertEqual(c.get_current_version(s), StreamState.NO_STREAM)
        c.append_to_stream(s, events=event("C"), current_version=StreamState.NO_STREAM)
        again = c.get_stream(s)
        self.assertEqual([(e.type, e.stream_position) for e in again], [("C", 2)])

    def test_tombstone_makes_every_later_operation_fail_as_deleted(self):
        c = self.client
        s = name("hard")
        c.append_to_stream(s, events=event("A"), current_version=StreamState.NO_STREAM)
        c.tombstone_stream(s, current_version=StreamState.ANY)
        with self.assertRaises(StreamIsDeletedError):
            c.get_stream(s)
        with self.assertRaises(StreamIsDeletedError):
            c.append_to_stream(s, events=[event("B"), event("C")], current_version=StreamState.ANY)
        with self.assertRaises(StreamIsDeletedError):
            c.delete_stream(s, current_version=StreamState.ANY)

    def test_deleting_a_stream_that_never_existed_is_not_found(self):
        with self.assertRaises(NotFoundError):
            self.client.delete_stream(name("none"), current_version=StreamState.ANY)
        with self.assertRaises(NotFoundError):
            self.client.tombstone_stream(name("none"), current_version=StreamState.ANY)


class Metadata(Base):
    def test_stream_metadata_round_trips_with_its_version(self):
        c = self.client
        s = name("md")
        self.assertEqual(c.get_stream_metadata(s), ({}, StreamState.NO_STREAM))
        c.append_to_stream(s, events=[event(f"E{i}") for i in range(5)], current_version=StreamState.NO_STREAM)
        c.set_stream_metadata(s, metadata={"$maxCount": 2, "custom": {"k": [1, 2]}})
        metadata, version = c.get_stream_metadata(s)
        self.assertEqual(metadata, {"$maxCount": 2, "custom": {"k": [1, 2]}})
        self.assertEqual([e.type for e in c.get_stream(s)], ["E3", "E4"])
        with self.assertRaises(WrongCurrentVersionError):
            c.set_stream_metadata(s, metadata={}, current_version=version + 1)
        c.set_stream_metadata(s, metadata={"$maxAge": 3600}, current_version=version)
        self.assertEqual(c.get_stream_metadata(s), ({"$maxAge": 3600}, version + 1))
        self.assertEqual(len(c.get_stream(s)), 5)
        # Every metadata record is an event of $$<stream>, in the stream and in $all.
        records = c.get_stream(f"$${s}")
        self.assertEqual([e.type for e in records], ["$metadata", "$metadata"])
        self.assertEqual(json.loads(records[0].data), {"$maxCount": 2, "custom": {"k": [1, 2]}})
        in_all = [e for e in c.read_all(filter_exclude=[]) if e.stream_name == f"$${s}"]
        self.assertEqual([e.id for e in in_all], [e.id for e in records])


class Subscriptions(Base):
    def test_stream_subscription_delivers_history_caught_up_then_live(self):
        c = self.client
        s = name("sub")
        c.append_to_stream(s, events=[event("A"), event("B")], current_version=StreamState.NO_STREAM)
        self.later(0.3, lambda: c.append_to_stream(s, events=event("Live"), current_version=1))
        seen = []
        with c.subscribe_to_stream(s, include_caught_up=True, timeout=30) as sub:
            for item in sub:
                seen.append("caught-up" if isinstance(item, CaughtUp) else item.type)
                if seen[-1] == "Live":
                    break
        self.assertEqual(seen, ["A", "B", "caught-up", "Live"])
        # From a revision: after it.
        with c.subscribe_to_stream(s, stream_position=0, timeout=30) as sub:
            self.assertEqual(next(iter(sub)).type, "B")

    def test_all_subscription_starts_after_the_position_and_filters(self):
        c = self.client
        tag = uuid.uuid4().hex[:12]
        s = f"sa{tag}"
        p1 = c.append_to_stream(s, events=event("One"), current_version=StreamState.NO_STREAM)
        c.append_to_stream(s, events=event("Two"), current_version=0)
        self.later(0.3, lambda: c.append_to_stream(s, events=event("Three"), current_version=1))
        seen = []
        with c.subscribe_to_all(
            commit_position=p1,
            filter_include=[f"sa{tag}"],
            filter_by_stream_name=True,
            include_checkpoints=True,
            timeout=30,
        ) as sub:
            for item in sub:
                if isinstance(item, Checkpoint):
                    self.assertGreater(item.commit_position, p1)
                    seen.append("checkpoint")
                    continue
                seen.append(item.type)
                if item.type == "Three":
                    break
        self.assertEqual([x for x in seen if x != "checkpoint"], ["Two", "Three"])
        self.assertIn("checkpoint", seen)

    def test_all_subscription_from_the_end_sees_only_new_events(self):
        c = self.client
        s = name("end")
        c.append_to_stream(s, events=event("Old"), current_version=StreamState.NO_STREAM)
        with c.subscribe_to_all(from_end=True, timeout=30) as sub:
            # The live point was taken before the confirmation: this append is seen.
            c.append_to_stream(s, events=event("New"), current_version=0)
            for item in sub:
                if item.stream_name == s:
                    self.assertEqual(item.type, "New")
                    break


class Cluster(Base):
    def test_gossip_answers_one_alive_leader(self):
        members = self.client.read_gossip()
        self.assertEqual(len(members), 1)
        self.assertEqual(members[0].state, NODE_STATE_LEADER)
        # It advertises the address the client used.
        host, port = URI.split("://", 1)[1].split("?")[0].rsplit(":", 1)
        self.assertEqual((members[0].address, members[0].port), (host, int(port)))

    def test_discovery_connection_strings_work(self):
        host = URI.split("://", 1)[1]
        for scheme in ("esdb", "kurrentdb+discover"):
            with self.subTest(scheme=scheme):
                other = KurrentDBClient(uri=f"{scheme}://{host}")
                try:
                    s = name("scheme")
                    self.assertGreater(other.append_to_stream(s, events=event("A"), current_version=StreamState.ANY), 0)
                finally:
                    other.close()


if __name__ == "__main__":
    unittest.main()
