"""The official KurrentDB Python client against `annal serve` with TLS and a
token: the client negotiates HTTP/2 by ALPN and sends its user name and
password (Basic), which annal checks against the token named by the user name.

scripts/grpc-clients.sh starts that server (a self-signed certificate, one
token "app" with the secret "s3cret") and sets ANNAL_GRPC_TLS_URI to
`kurrentdb://localhost:PORT?tlsCaFile=...` (without credentials).
"""

import os
import unittest
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import UnauthenticatedError

URI = os.environ.get("ANNAL_GRPC_TLS_URI")


def with_credentials(user, password):
    scheme, rest = URI.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest}"


@unittest.skipUnless(URI, "ANNAL_GRPC_TLS_URI is not set (scripts/grpc-clients.sh sets it)")
class TlsAndCredentials(unittest.TestCase):
    def test_the_tokens_name_and_secret_are_accepted_and_nothing_else(self):
        client = KurrentDBClient(uri=with_credentials("app", "s3cret"))
        try:
            s = f"tls-{uuid.uuid4().hex}"
            position = client.append_to_stream(s, events=NewEvent(type="A", data=b"{}"), current_version=StreamState.NO_STREAM)
            self.assertGreater(position, 0)
            self.assertEqual([e.type for e in client.get_stream(s)], ["A"])
        finally:
            client.close()
        # (Without credentials the client refuses TLS by itself.)
        for uri in (with_credentials("app", "wrong"), with_credentials("other", "s3cret")):
            with self.subTest(uri=uri):
                client = KurrentDBClient(uri=uri)
                try:
                    with self.assertRaises(UnauthenticatedError):
                        client.append_to_stream(f"tls-{uuid.uuid4().hex}", events=NewEvent(type="A", data=b"{}"), current_version=StreamState.ANY)
                finally:
                    client.close()


if __name__ == "__main__":
    unittest.main()
