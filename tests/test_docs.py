"""Code in the docs runs: README and docs/*.md python blocks are executed."""

import re

import pytest
from conftest import ROOT

from streamgale.config import SETTINGS

BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def blocks(path):
    return BLOCK.findall((ROOT / path).read_text())


@pytest.mark.parametrize("path", ["docs/testing.md", "docs/windowing.md", "docs/state.md", "docs/ml.md",
                                  "docs/multilang.md"])
def test_doc_examples_run(path):
    for code in blocks(path):
        exec(compile(code, path, "exec"), {"__name__": "doc_example"})


def test_readme_topology_and_test_snippet_run():
    topology_code, test_code = blocks("README.md")
    namespace = {"__name__": "readme_example"}
    exec(compile(topology_code, "README.md", "exec"), namespace)
    exec(compile(test_code, "README.md", "exec"), namespace)  # mocks the endless spout


def test_every_config_key_is_documented():
    doc = (ROOT / "docs/configuration.md").read_text()
    for key, setting in SETTINGS.items():
        assert f"| `{key}` |" in doc, key
        assert setting.doc in doc, key
