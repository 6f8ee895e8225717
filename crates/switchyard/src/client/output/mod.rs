//! Turning replies into text: pure functions, no I/O.
//!
//! - [`json`]: exactly grpcurl's default output for a reply message;
//! - [`fanout`]: the per-machine entries of a Switchyard fan-out reply;
//! - [`envelope`]: the same entries from a fan-out answered in the envelope;
//! - [`table`] and [`jsonl`]: entries for people and for scripts;
//! - [`gojson`]: the Go-compatible JSON writer underneath.

pub mod envelope;
pub mod fanout;
pub mod gojson;
pub mod json;
pub mod jsonl;
pub mod table;

pub use envelope::Envelope;
pub use fanout::{Entry, EntryError, Machine, Shape, code_name, exit_code, shape, split};
pub use json::{JsonOptions, format_json, to_json};
pub use jsonl::{format_jsonl, to_jsonl};
pub use table::{TableStream, format_table};
