//! The local backend: applies the control core's desired state on this
//! machine, as supervised `inferd serve` child processes behind the router.

pub mod gpu;
pub mod store;
pub mod supervisor;
