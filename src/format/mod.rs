//! The on-disk format: every byte annal writes, encoded and decoded here.
//!
//! Frames ([`record`]), segment headers and file names ([`segment`]), index
//! files ([`index`]), compressed segments and the dictionary ([`compressed`])
//! with the cache of their decompressed blocks ([`block_cache`]),
//! checkpoints ([`checkpoint`]), the drop record ([`dropped`]), sealed
//! personal fields and the subject key store ([`subjects`]) and the JSON
//! records of the system streams
//! (`system`); `format.md` is their contract. These modules turn bytes into
//! values and back; they must never open a file or know that a store exists.

pub mod block_cache;
pub mod checkpoint;
pub mod codec;
pub mod compressed;
pub mod dropped;
pub mod index;
pub mod record;
pub mod segment;
pub mod subjects;
pub(crate) mod system;
