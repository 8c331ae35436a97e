//! Nothing but tests: `tests/` runs the official KurrentDB clients against
//! `annal serve` (the Rust crate `kurrentdb` here; the Python client is in
//! `server/tests/python`, run by `scripts/grpc-clients.sh`).
//!
//! It is a crate of its own so that the clients and their dependencies are
//! built only by `cargo test`, never by the server, its benches or examples.
//! It must never hold code that another crate uses.
