//! Diffusion-style progress lines, as a `processing` event's `logs` grows. Shared by the
//! verify + parse benchmark and `bench_load` (which includes this file by path), so that
//! both measure bodies of the same shape.

/// The line the logs start with.
pub const SEED_LINE: &str = "Using seed: 1234\n";

/// The progress line of step `step` of 28 (0 to 28).
pub fn line(step: usize) -> String {
    format!(
        "{:3}%|{:<10}| {step}/28 [00:{:02}<00:{:02}, 3.42it/s]\n",
        step * 100 / 28,
        "#".repeat(step * 10 / 28),
        step / 3,
        (28 - step) / 3,
    )
}
