# Two entry points (see README): `make demo` runs the main job offline, `make test` lints (ruff,
# configured in pyproject.toml) and runs the tests.
# Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision are installed first and pinned: an unpinned torch pulls a CUDA build of
# several GB, and timm needs a torchvision that imports beside the chosen torch. Override on a
# machine of your own, e.g. `make TORCH="torch==2.5.1 torchvision==0.20.1" demo`; with a torch
# already installed, `make install VENV_FLAGS=--system-site-packages TORCH=` uses it (README).
TORCH ?= torch==2.14.1 torchvision==0.29.1
VENV_FLAGS ?=
DEMO ?= demo
PAIRS ?= 8

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(strip $(TORCH)),$(BIN)/python -m pip install -q $(TORCH))
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/gitd shapes $(DEMO)/data --train 400 --test 100 --seed 0
	HF_HUB_OFFLINE=1 $(BIN)/gitd check $(DEMO)/data/train.json
	HF_HUB_OFFLINE=1 $(BIN)/gitd distill $(DEMO)/data/train.json --pairs $(PAIRS) --preset tiny --out $(DEMO)/distilled --seed 0
	HF_HUB_OFFLINE=1 $(BIN)/gitd check $(DEMO)/distilled/annotations.json
	HF_HUB_OFFLINE=1 $(BIN)/gitd evaluate --train $(DEMO)/distilled/annotations.json --test $(DEMO)/data/test.json --epochs 2 --seeds 2 --eval-every 2 --out $(DEMO)/distilled/results.json
	HF_HUB_OFFLINE=1 $(BIN)/gitd report $(DEMO)/distilled
	@echo "demo done: open $(DEMO)/distilled/report.html"
	@echo "gitd is installed in $(VENV): run 'source $(BIN)/activate' to use it (or call $(BIN)/gitd)"

test: install
	$(BIN)/python -m ruff check src tests benchmarks
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(DEMO) .pytest_cache
