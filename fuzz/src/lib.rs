//! Support code for multiproto's fuzz targets.

pub mod endpoint_harness;
pub mod parser_checks;
