#!/usr/bin/env bash
# Runs every embedded-engine benchmark in one go (same machine, same
# minute) and prints one JSON line each; BENCHMARKS.md records the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p sagaflow >&2
b=target/release/sagaflow
$b bench --activities noop --in-flight 200 --sagas 20000 --json
$b bench --activities noop --in-flight 1 --sagas 2000 --json
$b bench --activities checkout --in-flight 200 --sagas 10000 --json
$b bench --activities noop --in-flight 200 --sagas 3000 --no-group-commit --json
$b bench --activities checkout --in-flight 200 --sagas 3000 --no-group-commit --json
