# The two commands of the README: `make run` and `make test`. Each installs what it needs into
# the current Python environment first, so each works alone on a fresh clone.
PYTHON ?= python3
PYTEST = $(PYTHON) -m pytest
# strict nbval: every stored output must match a fresh run (after the committed sanitize patterns)
NBVAL = $(PYTEST) --nbval --nbval-current-env notebooks --nbval-sanitize-with notebooks/nbval_sanitize.cfg -q

.PHONY: setup run test test-unit test-notebooks lint notebooks bench bench-curves results clean

# Install the package and its dev extra only when something it needs is missing or too old.
setup:
	@$(PYTHON) tools/check_install.py || $(PYTHON) -m pip install -e ".[dev]"

# The main job: generate the shapes data, train the captioner and its blind baseline, score both.
run: setup
	$(PYTHON) -m velm_course.cli train

# the tests, and the examples in the package's docstrings (doctests)
test: setup
	$(PYTEST) tests velm_course --doctest-modules -q
	$(NBVAL)

test-unit: setup
	$(PYTEST) tests velm_course --doctest-modules -q

test-notebooks: setup
	$(NBVAL)

# Re-execute every notebook top to bottom in the ci profile and store the outputs.
notebooks: setup
	$(PYTHON) tools/execute_notebooks.py notebooks/*.ipynb

# Every benchmark that runs on this machine (on a GPU machine the scripts measure the GPU; rows
# recorded on another device are kept), the main job, every notebook under strict nbval; then
# benchmarks/RESULTS.md and the README's results section are rewritten from what they recorded.
BENCHES = bench_ngram bench_metrics bench_engine bench_captioner bench_transformer bench_decoding bench_conv main_job
bench: setup
	@for b in $(BENCHES); do echo "== benchmarks/$$b.py"; $(PYTHON) benchmarks/$$b.py || exit 1; done
	$(PYTHON) tools/notebook_times.py
	$(PYTHON) tools/write_results.py

# The language track's recorded training runs: the scoreboard's curves (about 70 minutes on one
# CPU core) and the GPT on BPE tokens (about 15 minutes).
bench-curves: setup
	$(PYTHON) benchmarks/lm_curves.py --preset cpu --threads 1
	$(PYTHON) benchmarks/bpe_lm.py
	$(PYTHON) tools/write_results.py

# Rewrite RESULTS.md and the README's results section from the committed measured files.
results: setup
	$(PYTHON) tools/write_results.py

lint: setup
	$(PYTHON) -m ruff check velm_course tests benchmarks tools notebooks data

clean:
	rm -rf runs .pytest_cache
