//! The client side of the roster protocol: discovery, registration, and a copy of the roster kept in step.

pub mod roster;
