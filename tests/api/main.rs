//! Black-box tests of the functions against the real local stack (see `helpers`).

// A test that cannot set up should fail loudly; panicking helpers are the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod activity;
mod deploy_config;
mod gateway;
mod hardening;
mod health;
mod helpers;
mod lambda;
mod lambda_emulator;
mod migrations;
mod outputs;
mod realtime;
mod reconcile;
mod schedule;
mod stack;
mod standin;
mod state;
mod time;
mod vercel;
