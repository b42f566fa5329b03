//! Replicas as supervised child processes.
