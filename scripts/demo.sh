#!/usr/bin/env bash
# README command 1: set up .venv and run the built-in demo incident (no servers needed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
exec .venv/bin/forensics demo "$@"
