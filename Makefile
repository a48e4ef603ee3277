# Two commands do everything on a fresh machine:
#   make run   -> create .venv, install the pinned stack, run the whole workflow on config/config.yaml
#   make test  -> same set-up, then lint + format checks + the whole test suite
# Both are idempotent: the venv is rebuilt only when requirements.lock (or pyproject.toml) changes.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
STAMP := $(VENV)/.installed-$(shell sha256sum $(LOCK) | cut -c1-16)
CORES ?= all
# Pretrained models never hang on a hub download here (no internet): fail fast instead.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: run test venv lint unit workflow chromium slurm lock benchmark bench-speed bench-accuracy bench-intervals bench-scaling decision-backtest clean

run: venv
	$(BIN)/snakemake --cores $(CORES)

test: venv chromium slurm lint
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder

venv: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	# torch first, from the CPU wheel: anything that pulls an unpinned torch would take a CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -r $(LOCK)
	# The capforecast package itself (scripts/capforecast), editable: rules, notebooks and tests
	# import it without sys.path edits.
	$(BIN)/pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

# Headless Chromium for the report screenshot test (Debian package; needs root, as in CI).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Single-node SLURM for the real-scheduler workflow test (tests/slurm_local.py starts and stops
# the daemons itself; Debian packages, needs root, as in CI; the test is skipped without them).
slurm:
	@command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && \
		command -v sbatch >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; } || \
		echo "make slurm: could not install the SLURM packages; the SLURM workflow test will skip"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

# ETL: rows/s and peak memory for 1 M and 10 M raw rows against a bare pyarrow read, and the
# no-op rerun of a 1,000-series workflow; regenerates the README tables.
benchmark: venv
	$(BIN)/python tests/benchmarks/bench_etl.py --write-readme

# The whole workflow on 100 / 1,000 / 10,000 synthetic series, fast and default model sets
# (about 40 min on 2 cores); regenerates the README table.
bench-scaling: venv
	$(BIN)/python tests/benchmarks/bench_scaling.py --write-readme

# Forecasting speed: 1,000 synthetic series x 90 days, every model's backtest and final fit;
# regenerates the README table.
bench-speed: venv
	$(BIN)/python tests/benchmarks/bench_forecast_speed.py --write-readme

# Forecast accuracy on real datasets (NAB, Bitbrains; tuning and held-out halves) next to the
# untouched peers; regenerates the README table. Predictions are cached in tests/benchmarks/out.
bench-accuracy: venv
	$(BIN)/python tests/benchmarks/bench_generalisation.py --write-readme

# The quantile methods compared on the same windows (empirical, ConformalIntervals, scaling).
# MSTL is left out: on four weeks of history it takes ~6 min per method and Bitbrains half.
bench-intervals: venv
	$(BIN)/python tests/benchmarks/bench_generalisation.py --intervals --interval-models theta autoets --write-readme

# Decision backtest: the workflow on 4 cuts of the Bitbrains development set, scored against the
# week after each cut; regenerates the README table (CPU heavy: one whole workflow run per cut).
decision-backtest: venv
	$(BIN)/python tests/benchmarks/bench_decision.py --write-readme

# Regenerate the lock from requirements.in in a scratch venv.
lock:
	rm -rf /tmp/capforecast-lock && $(PYTHON) -m venv /tmp/capforecast-lock
	/tmp/capforecast-lock/bin/pip install --quiet "torch==2.13.0"
	/tmp/capforecast-lock/bin/pip install --quiet -r requirements.in
	{ head -3 $(LOCK); /tmp/capforecast-lock/bin/pip freeze | sed 's/^torch==2.13.0+cpu/torch==2.13.0/'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

clean:
	rm -rf results .snakemake
