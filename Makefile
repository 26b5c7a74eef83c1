# Data Anatomy: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
WORLD ?= data/world
PRESET ?= small
PARTS ?= ABCDET
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo demo-seeds test bench lint world clean-world

# constraints.txt locks every distribution (transitive ones included); the miniworld corpus's
# sources (pinned archives, anatomy/world/sources.py) are downloaded by hash, never installed
$(STAMP): requirements.txt constraints.txt anatomy/world/sources.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)" -c constraints.txt
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	command -v chromium >/dev/null || (command -v apt-get >/dev/null && export DEBIAN_FRONTEND=noninteractive && (apt-get install -y -qq chromium || (apt-get update -qq && apt-get install -y -qq chromium))) || echo "chromium not installed: the page test will be skipped"
	$(PY) -m anatomy.world.sources fetch --dir $(VENV)/corpus-sources
	touch $(STAMP)

install: $(STAMP)

world: $(STAMP)
	test -f $(WORLD)/truth.json || $(PY) build_world.py --preset $(PRESET) --out $(WORLD)

demo: world
	WORLD=$(WORLD) PY=$(PY) bash demo.sh $(PARTS)

# the headline figures of parts A and B over world seeds 0-3 (about 4 builds and 4 demos: an
# hour on 2 cores)
SEEDS ?= 1 2 3
demo-seeds: demo
	for s in $(SEEDS); do \
	  test -f $(WORLD)-seed$$s/truth.json || $(PY) build_world.py --preset $(PRESET) --seed $$s \
	      --out $(WORLD)-seed$$s --quiet || exit 1; \
	  WORLD=$(WORLD)-seed$$s OUT=data/demo-seed$$s PY=$(PY) bash demo.sh AB || exit 1; \
	done
	$(PY) benchmarks/world_seeds.py --runs $(foreach s,$(SEEDS),data/demo-seed$(s)) \
	    --select $(foreach s,$(SEEDS),data/demo-seed$(s)) --held_out data/demo \
	    --out data/demo/seeds.md

test: $(STAMP)
	TQDM_DISABLE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q tests

bench: world
	for b in benchmarks/bench_*.py; do $(PY) $$b --world $(WORLD) || exit 1; done

lint: $(STAMP)
	$(PY) -m ruff check .

clean-world:
	rm -rf $(WORLD)
