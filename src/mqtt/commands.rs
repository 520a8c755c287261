//! Commands arriving on `<base>/cmd/<verb>` and the JSON published on `<base>/reply`.
//!
//! The command types, their strict parse and the reply live in [`crate::wire`] (the one
//! definition of the MQTT contract, shared with `adaptd watch`), the label rule in
//! [`crate::label`]; they are re-exported here for the MQTT layer's callers.

pub use crate::label::{Label, LabelError};
pub use crate::wire::command::{
    Command, Rejected, Request, RequestId, RollbackTarget, Settings, VERBS,
};
pub use crate::wire::{CommandError, Reply};
