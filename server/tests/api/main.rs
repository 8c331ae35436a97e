//! End-to-end tests of the HTTP API: a real server on an ephemeral loopback
//! port, a temporary store, and a real HTTP client.

mod common;
mod console;
mod groups;
mod isolation;
mod misc;
mod security;
mod streams;
mod subscribe;
mod trust;
