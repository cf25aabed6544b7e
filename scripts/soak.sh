#!/usr/bin/env bash
# kill -9 soak at any size (issue 8). Starts `railyard serve` (release build) with SEPA Instant in
# a separate sandbox process, submits payouts, SIGKILLs the server at random intervals, restarts it,
# and at the end checks: every acknowledged payout is terminal or in doubt with a reason, the rail's
# execution ledger joined to ours has 0 duplicate and 0 unaccounted executions, `railyard verify`
# passes. The client's log of key -> acknowledged payout is the ground truth.
#
#   scripts/soak.sh                                   # both databases, 20 kills, 2-10 s apart
#   scripts/soak.sh --db postgres --kills 50
#   scripts/soak.sh --db sqlite --kills 1000 --payouts 100000    # the release-size run
#
# PostgreSQL: RAILYARD_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test); each
# run uses a fresh schema. The CI-sized run of the same test is part of `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")/.."

db=""
kills=20
payouts=""
interval="2000-10000"
while (($#)); do
  case "$1" in
    --db) db="$2"; shift 2 ;;
    --kills) kills="$2"; shift 2 ;;
    --payouts) payouts="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$db" in ""|sqlite|postgres) ;; *) echo "soak.sh: --db is sqlite or postgres" >&2; exit 2 ;; esac
[[ "$kills" =~ ^[0-9]+$ ]] || { echo "soak.sh: --kills is a number" >&2; exit 2; }
[[ -z "$payouts" || "$payouts" =~ ^[0-9]+$ ]] || { echo "soak.sh: --payouts is a number" >&2; exit 2; }
[[ "$interval" =~ ^[0-9]+-[0-9]+$ ]] || { echo "soak.sh: --interval is low-high in ms" >&2; exit 2; }

export RAILYARD_SOAK_KILLS="$kills"
export RAILYARD_SOAK_INTERVAL_MS="$interval"
[ -n "$payouts" ] && export RAILYARD_SOAK_PAYOUTS="$payouts"
[ -n "$db" ] && export RAILYARD_SOAK_DB="$db"
# A database asked for must be there: fail rather than skip.
[ "$db" = "postgres" ] && export RAILYARD_REQUIRE_POSTGRES=1

echo "soak: db=${db:-sqlite+postgres} kills=$kills interval=${interval}ms payouts=${payouts:-no cap} (release build)"
started=$(date +%s)
cargo test --release -p railyard --test soak -- --nocapture --test-threads=1 2>&1 | grep -E -A6 '^soak on|^test |panicked|SKIPPED|test result'
echo "soak: $(( $(date +%s) - started )) s"
