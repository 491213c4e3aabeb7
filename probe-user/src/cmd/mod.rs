//! The subcommands, on top of everything else: each wires the data path
//! (kernel → decode → aggregate → export) for its purpose.
pub mod check;
pub mod run;
pub mod signals;
pub mod trace;
