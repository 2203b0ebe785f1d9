//! Support code for multiproto's fuzz targets.

pub mod endpoint_harness;
pub mod nick_checks;
pub mod parser_checks;
pub mod transfer_checks;
