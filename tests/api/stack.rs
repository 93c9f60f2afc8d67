//! Where the local stack `scripts/test` starts is, as the tests read it from the environment.
//! The tools' tests include this file by path, so that every function a test starts, in
//! either suite, is handed the same variables.

/// The variables a function reads to reach the stack's database and storage.
const STACK_VARS: [&str; 8] = [
    "POSTGREST_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "S3_ENDPOINT_URL",
    "S3_FORCE_PATH_STYLE",
    "S3_BUCKET",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

/// Reads a variable the test stack sets, failing with directions when it is absent.
pub fn stack_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through scripts/test, which starts the local stack"
        )
    })
}

/// The stack's database and storage variables with their values, for a function's
/// environment.
pub fn stack_vars() -> Vec<(String, String)> {
    STACK_VARS
        .iter()
        .map(|name| ((*name).to_owned(), stack_var(name)))
        .collect()
}
