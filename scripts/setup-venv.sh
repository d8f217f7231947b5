#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (idempotent).
# Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
  echo "setup: Python 3.11 or newer is needed (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PY" --version)" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing chat4all-forensics and its dependencies into .venv (pip cache: ~/.cache/pip)" >&2
  .venv/bin/python -m pip install --disable-pip-version-check -q --upgrade pip
  .venv/bin/python -m pip install --disable-pip-version-check -q -e ".[test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# The native readers (Rust, pyo3 abi3, built with maturin): native/kafka_reader reads DLQ and
# event topics ~5x faster than confluent-kafka alone; native/trace_reader reads v1 trace files
# (UI downloads) from bytes into Arrow columns. Optional: without cargo, or if a build fails,
# the Python readers run (FORENSICS_KAFKA_READER / FORENSICS_TRACE_READER say which is used).
# Each is built once per source version into the cache outside the checkout, so fresh clones
# reuse it; the stamp covers every source file of the crate.
build_native() {  # crate directory, what it is, what runs without it
  local native=$1 what=$2 fallback=$3 native_hash native_stamp cache wheels
  native_hash=$(cat "$native"/Cargo.toml "$native"/Cargo.lock "$native"/pyproject.toml "$native"/src/*.rs \
    | sha256sum | cut -c1-16)
  native_stamp=.venv/.native-$(basename "$native")-$native_hash
  [ -f "$native_stamp" ] && return 0
  cache=${CHAT4ALL_FORENSICS_CACHE:-$HOME/.cache/chat4all-forensics}/native
  wheels=$cache/wheels-$native_hash
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    if command -v cargo >/dev/null 2>&1; then
      echo "setup: building the native $what with cargo (once; cached in $cache)" >&2
      rm -rf "$wheels.tmp"
      if CARGO_TARGET_DIR=$cache/target .venv/bin/maturin build --release --locked -q -i .venv/bin/python \
           --manifest-path "$native"/Cargo.toml -o "$wheels.tmp" >&2; then
        mv "$wheels.tmp" "$wheels"
      else
        echo "setup: WARNING: the native $what did not build; $fallback" >&2
      fi
    else
      echo "setup: WARNING: cargo not found; the native $what is not built ($fallback)" >&2
    fi
  fi
  if ls "$wheels"/*.whl >/dev/null 2>&1; then
    .venv/bin/python -m pip install --disable-pip-version-check -q --force-reinstall --no-deps "$wheels"/*.whl
    rm -f .venv/.native-"$(basename "$native")"-*
    touch "$native_stamp"
  fi
}
build_native native/kafka_reader "Kafka reader" "Kafka reads use confluent-kafka"
build_native native/trace_reader "trace reader" "trace files are read by the Python reader"
