//! The schema goes in as on a hosted project: `scripts/stack up` applies the migrations with
//! `supabase db push`, which records each in `supabase_migrations.schema_migrations`; and
//! the schema passes Supabase's database advisors.

use crate::helpers::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `version name` of each migration file, as the Supabase CLI records it.
fn history_of(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| {
            let stem = f.file_stem().expect("file name").to_string_lossy();
            let (version, name) = stem.split_once('_').expect("<version>_<name>.sql");
            format!("{version} {name}")
        })
        .collect()
}

/// The history the CLI keeps in the database at `url`, oldest first.
fn recorded_history(url: &str) -> Vec<String> {
    psql_at(
        url,
        "select version || ' ' || name from supabase_migrations.schema_migrations order by version",
    )
    .expect("supabase_migrations.schema_migrations")
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn the_stack_records_every_migration_in_supabases_history() {
    assert_eq!(
        recorded_history(&stack_var("DATABASE_URL")),
        history_of(&migration_files())
    );
}

#[test]
fn the_schema_passes_supabases_security_and_performance_advisors() {
    let url = cli_database_url("postgres");
    let args = ["db", "advisors", "--db-url", &url, "--type", "all"];
    let found = supabase_cli(&[&args[..], &["--level", "warn", "--fail-on", "warn"]].concat());
    assert!(
        found.is_ok(),
        "advisors found warnings or errors: {found:?}"
    );
    // The advisors do read this schema: at level info they name our tables.
    let info = supabase_cli(&[&args[..], &["--level", "info"]].concat()).expect("advisors");
    assert!(info.contains("public.predictions"), "{info}");
}

/// A stack of the test's own, over a migrations folder of its own; stopped and deleted when
/// dropped.
struct OwnStack {
    dir: TempDir,
    migrations: PathBuf,
}

impl OwnStack {
    /// A stack whose first migration makes `public.probe` with one row, 1, and is applied;
    /// the stack and its database's URL. Each later file adds a row: a file applied twice
    /// would add its row twice (or fail).
    fn with_probe() -> (OwnStack, String) {
        let dir = TempDir::new("stack");
        let migrations = dir.path().join("migrations");
        std::fs::create_dir_all(&migrations).expect("migrations folder");
        let stack = OwnStack { dir, migrations };
        stack.add_migration(
            "29990101000000_probe.sql",
            "create table public.probe (n int); insert into public.probe values (1);",
        );
        let up = stack.run("up");
        assert!(up.contains("migration: 29990101000000_probe.sql"), "{up}");
        let url = stack.database_url();
        (stack, url)
    }

    /// The rows of `public.probe`, in order.
    fn probe(url: &str) -> String {
        psql_at(
            url,
            "select string_agg(n::text, ',' order by n) from public.probe",
        )
        .expect("public.probe")
    }

    fn stack_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn add_migration(&self, file: &str, sql: &str) {
        std::fs::write(self.migrations.join(file), sql).expect("migration file");
    }

    /// Runs `scripts/stack <command>`; what it wrote to stderr.
    fn run(&self, command: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/stack");
        let out = Command::new(script)
            .arg(command)
            .env("STACK_DIR", self.stack_dir())
            .env("STACK_FREE_PORTS", "1")
            .env("STACK_MIGRATIONS_DIR", &self.migrations)
            .stdin(Stdio::null())
            .output()
            .expect("scripts/stack runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "scripts/stack {command}: {stderr}");
        stderr
    }

    fn database_url(&self) -> String {
        let env = std::fs::read_to_string(self.stack_dir().join("env")).expect("env file");
        env.lines()
            .find_map(|l| l.strip_prefix("DATABASE_URL="))
            .expect("DATABASE_URL in the env file")
            .to_owned()
    }
}

impl Drop for OwnStack {
    fn drop(&mut self) {
        let _ = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/stack"))
            .args(["down", "--purge"])
            .env("STACK_DIR", self.stack_dir())
            .stdin(Stdio::null())
            .output();
    }
}

#[test]
fn a_second_up_pushes_only_the_new_migrations() {
    let (stack, url) = OwnStack::with_probe();
    stack.add_migration(
        "29990102000000_second.sql",
        "insert into public.probe values (2);",
    );
    let second = stack.run("up");
    assert!(
        second.contains("migration: 29990102000000_second.sql"),
        "{second}"
    );
    assert!(!second.contains("29990101000000_probe.sql"), "{second}");
    assert_eq!(OwnStack::probe(&url), "1,2");
    assert_eq!(
        recorded_history(&url),
        ["29990101000000 probe", "29990102000000 second"]
    );

    let again = stack.run("up");
    assert!(again.contains("migrations: none pending"), "{again}");
    assert_eq!(OwnStack::probe(&url), "1,2");
}

#[test]
fn a_stack_made_before_the_cli_keeps_its_applied_migrations() {
    let (stack, url) = OwnStack::with_probe();
    // What `scripts/stack up` left before it used the CLI: its own list, no CLI history.
    psql_at(
        &url,
        "drop schema supabase_migrations cascade; \
         create schema stack_meta; \
         create table stack_meta.applied (name text primary key, \
                                          applied_at timestamptz not null default now()); \
         insert into stack_meta.applied (name) values ('29990101000000_probe.sql')",
    )
    .expect("an old stack's list");

    stack.add_migration(
        "29990102000000_second.sql",
        "insert into public.probe values (3);",
    );
    let up = stack.run("up");
    assert!(up.contains("recording 1 applied before"), "{up}");
    assert_eq!(OwnStack::probe(&url), "1,3");
    assert_eq!(
        recorded_history(&url),
        ["29990101000000 probe", "29990102000000 second"]
    );
    assert_eq!(
        psql_at(&url, "select to_regnamespace('stack_meta') is null").unwrap(),
        "t"
    );
}
