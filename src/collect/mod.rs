//! Collectors: live sources cleaned into readings and produced into Kafka. The cleaning
//! every collector shares lives in [`clean`]; each source kind has a file of its own.

pub mod clean;
