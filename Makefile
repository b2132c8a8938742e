# facenas: `make demo` runs the main job on embedded defaults, `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.facenas-installed

.PHONY: setup test lint typecheck unit fast demo bench clean protos

setup: $(STAMP)

# torch is pinned to the CPU wheel 2.13.0; archai 1.0.0 goes in without its heavy dependency tree
# (ray, tensorboard): pyproject.toml lists the few packages its config search space needs.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps archai==1.0.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# Generated code is committed; tests/unit/test_protos.py fails when it drifts from protos/.
protos: setup
	$(BIN)/python -m facenas.protogen

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# Every tier (pyproject's default selection runs only the fast tests). The `idle` tests (a call held for
# minutes at real keepalive values) leave the CPU free, so they run beside the others; their report
# follows the main one.
IDLE_LOG := .pytest-idle.log
unit: setup
	@$(BIN)/pytest -q -p no:cacheprovider -m idle > $(IDLE_LOG) 2>&1 & idle=$$!; \
	$(BIN)/pytest -q -m 'not idle and not images'; main=$$?; \
	wait $$idle; idle_rc=$$?; echo "--- idle tests:"; cat $(IDLE_LOG); \
	test $$main -eq 0 -a $$idle_rc -eq 0

# The fast tests only (unit and contract logic, a few minutes).
fast: setup
	$(BIN)/pytest -q

test: lint typecheck unit

# TARGET=snp runs the snp-target demo (emulated int8 latency and the int8 model's val mIOU)
TARGET ?= cpu
demo: setup
	$(BIN)/facenas demo --target $(TARGET)

bench: setup
	$(BIN)/python bench/latency_stability.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache $(IDLE_LOG)

# Container images and Kubernetes (docker/, deploy/k8s/). `make images` builds the five CPU images,
# facenas/<name>:$(VERSION), from docker/Dockerfile (docker/build-images.sh: the public base image and
# torch index where they answer, local stand-ins from docker/prepare-local.sh where they do not;
# PYTHON_IMAGE=, BUILDER_IMAGE=, TORCH_INDEX_URL= override); `make images-smoke` starts each one and
# waits for its gRPC health; `make images-test` (tests/images) starts them as deploy/k8s does, the whole
# system and every component's configuration, and runs a search through them; `make up` / `make down`
# run the whole system on this host (docker/compose.sh: STORE=postgres, TRAINERS=, SEARCHER_PORT=...;
# `make down VOLUMES=1` also drops its volumes); `make images-cuda` builds the CUDA trainer; `make
# docker-engine` makes sure a docker engine answers (installs and starts it as root where it can);
# `make deploy OVERLAY=production` applies an overlay.
VERSION ?= 0.1.0
OVERLAY ?= local
IMAGE_SERVICES := store searcher trainer latency_cpu latency_snp

.PHONY: images images-smoke images-test images-cuda docker-engine up down deploy manifests

# the monitoring component's copies of deploy/grafana and deploy/prometheus (tests/deploy checks them)
manifests: setup
	$(BIN)/python deploy/sync_monitoring.py

images:
	docker/build-images.sh $(VERSION) $(IMAGE_SERVICES)

images-smoke:
	docker/smoke.sh $(VERSION)

# Never a skip: no engine, no image, no kubectl or no prometheus fails it, saying which.
images-test: setup images
	@started=$$(date +%s); $(BIN)/pytest -q -p no:cacheprovider -m images tests/images; rc=$$?; \
	echo "images-test: $$(($$(date +%s) - started)) s"; exit $$rc

up:
	VERSION=$(VERSION) docker/compose.sh up

down:
	VERSION=$(VERSION) docker/compose.sh down $(if $(filter 1,$(VOLUMES)),--volumes)

images-cuda:
	@docker info >/dev/null 2>&1 || { echo "images-cuda: the docker engine does not answer (make docker-engine starts it)" >&2; exit 1; }
	DOCKER_BUILDKIT=$${DOCKER_BUILDKIT:-0} docker build -f docker/trainer/Dockerfile.cuda -t facenas/trainer-cuda:$(VERSION) .

docker-engine:
	docker/engine.sh

deploy:
	kubectl apply -k deploy/k8s/overlays/$(OVERLAY)
