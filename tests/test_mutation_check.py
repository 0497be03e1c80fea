"""scripts/mutation-check stays in step with the source: every fault it applies is still there."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import sys

import pytest

from tests.conftest import REPO


def _load_script():
    loader = importlib.machinery.SourceFileLoader(
        "mutation_check", str(REPO / "scripts" / "mutation-check")
    )
    spec = importlib.util.spec_from_loader("mutation_check", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation_check"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


SCRIPT = _load_script()
MUTATIONS = SCRIPT.MUTATIONS
# What the mutation check must cover (issue 17): each feature has at least one mutation.
REQUIRED = [
    "article penalty: clip", "article penalty: l1", "article penalty: orthogonal",
    "class weights: balanced", "data_loss", "power iteration", "diagnostics: model-wide",
    "explain", "divergence attribution",
]  # fmt: skip


def test_the_required_features_are_covered():
    features = {m.feature for m in MUTATIONS}
    assert set(REQUIRED) <= features
    assert any(f.startswith("catalogue penalty: ") for f in features)
    assert len({m.name for m in MUTATIONS}) == len(MUTATIONS)
    power = {m.name for m in MUTATIONS if m.feature == "power iteration"}
    assert {"power_iteration_no_warm_start", "power_iteration_state_not_stored",
            "power_iteration_half_the_start_iterations"} <= power  # fmt: skip


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_each_mutation_applies_to_the_source_exactly_once(mutation):
    text = (REPO / mutation.path).read_text()
    assert text.count(mutation.old) == 1, f"{mutation.path} no longer has (once): {mutation.old}"
    assert mutation.new != mutation.old
    compile(text.replace(mutation.old, mutation.new), mutation.path, "exec")  # still Python


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_each_selection_names_test_files_and_words_in_them(mutation):
    # pytest's -k matches parts of test ids (names and parameters); a selection that matches
    # nothing makes the script report an error (pytest's exit code 5) rather than a catch.
    files = [a for a in mutation.selection if a.startswith("tests/")]
    assert files and all((REPO / f).is_file() for f in files)
    text = "".join((REPO / f).read_text() for f in files)
    keyword = mutation.selection[mutation.selection.index("-k") + 1]
    for part in keyword.split(" or "):  # the selections use `or` only
        assert re.fullmatch(r"\w+", part) and part in text, keyword
