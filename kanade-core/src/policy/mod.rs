//! Pure safety decisions: no I/O, no clock reads (`now` is always a
//! parameter), so each one is unit- and property-tested in isolation.
//!
//! - [`clock`]: how far is an agent's clock off, and what time is it fleet-wide?
//! - [`gates`]: may this command run now, or which reserved code stops it?
//! - [`retry`]: is a retry policy valid, and should another attempt run?
//! - [`config`]: layer `global` → `groups.<g>` → `pcs.<pc>` into one config.
//! - [`script`]: is a fetched script body the one the operator approved?
//! - [`overflow`]: which output goes to the object store, and where.
//! - [`signature`]: is a command signed by a key this host trusts?
//! - [`publisher`]: did the pc a result names publish it?
//! - [`verified`]: which signatures already verified (a memo for [`signature`]).

pub mod clock;
pub mod config;
pub mod exit_codes;
pub mod firing;
pub mod gates;
pub mod overflow;
pub mod publisher;
pub mod release;
pub mod retry;
pub mod script;
pub mod signature;
pub mod signed;
pub mod verified;
pub mod when;

pub use gates::{
    evaluate_gates, Delivery, GateDecision, GateInputs, GateStop, HostSupport, StopReason,
};
