//! Test tools shared by strata_core's own tests and the end-to-end tests (`pg_test`, through the
//! `testkit` feature): nothing here is part of pg_strata.

pub mod fault_proxy;
pub mod moto;
