//! Core of the Replicate webhook functions.
//!
//! - [`signature`]: Standard Webhooks verification.
//! - [`replicate`]: Replicate's objects and statuses; [`job`]: our jobs, as the database
//!   knows them.
//! - [`store`]: job state in Supabase through PostgREST (the state rules live in the SQL
//!   function it calls, `supabase/migrations/`).
//! - [`outputs`] and [`storage`]: output files, the allow-list, the S3 copier and bucket.
//! - [`apply`]: what every delivery does (copy files, then one transaction).
//! - [`routes`]: the core handlers; [`platform`]: Lambda and Vercel adapters around them.
//! - [`activity`]: refused requests counted for health; [`alert`]: reconcile's messages.

pub mod activity;
pub mod alert;
pub mod apply;
pub mod config;
pub mod deadline;
pub mod email;
pub mod error;
pub mod job;
pub mod logging;
pub mod outputs;
pub mod platform;
pub mod replicate;
pub mod replicate_api;
pub mod respond;
pub mod routes;
pub mod signature;
pub mod storage;
pub mod store;
pub mod upstream;
