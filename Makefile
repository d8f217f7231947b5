# The README's two commands are `make demo` and `make test`.
.PHONY: demo test setup stack-up stack-down bench

demo:            ## set up .venv and build the RCA report of the built-in demo incident
	scripts/demo.sh

test:            ## set up .venv, start the backing services, run ruff and the whole test suite
	scripts/test.sh

setup:
	scripts/setup-venv.sh

stack-up:
	scripts/setup-venv.sh && .venv/bin/python scripts/services up

stack-down:
	.venv/bin/python scripts/services down

bench:
	scripts/setup-venv.sh && for b in benchmarks/bench_*.py; do .venv/bin/python $$b || exit 1; done
