"""The example plug-in (examples/autellix-example-policy), found through the real entry-point
machinery: a distribution's metadata on sys.path, discovered by importlib.metadata.

Rather than pip-installing into the shared venv (slow, and it would outlive the test), the
test writes the dist-info directory that an install would write, from the example's own
pyproject.toml, into a temporary directory on sys.path. importlib.metadata then finds it exactly
as it finds an installed distribution.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.policies.registry import ENTRY_POINT_GROUP, PolicyRegistry
from proxy.records import Call, Program

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "autellix-example-policy"


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    entry_points = project["entry-points"][ENTRY_POINT_GROUP]
    dist = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in entry_points.items())]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the metadata
    monkeypatch.syspath_prepend(str(EXAMPLE))  # the package, as if installed
    yield entry_points
    sys.modules.pop("autellix_example_policy", None)


def test_the_example_is_discovered_and_loaded_by_name(installed: dict[str, str]) -> None:
    assert installed == {"shortest-prompt": "autellix_example_policy:ShortestPromptFirst"}
    assert "autellix-example-policy" in {d.metadata["Name"] for d in metadata.distributions()}
    registry = PolicyRegistry()
    assert registry.available()["shortest-prompt"] == (
        "entry point autellix_example_policy:ShortestPromptFirst"
    )
    policy = registry.create("shortest-prompt", {"bucket_tokens": 100}, live=True)
    assert policy.name == "shortest-prompt"
    program = Program("p", created=0.0)
    short = Call("s", "p", arrival=2.0, prompt_tokens=50)
    long = Call("l", "p", arrival=1.0, prompt_tokens=350)
    ranks = [policy.on_arrival(call=c, program=program, now=2.0) for c in (long, short)]
    assert ranks[1] < ranks[0]
    assert (long.level, short.level) == (3, 0)


def test_the_examples_config_is_checked(installed: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"policy 'shortest-prompt': unknown setting 'bucket'"):
        PolicyRegistry().create("shortest-prompt", {"bucket": 1})
    with pytest.raises(ConfigError, match=r"'shortest-prompt': bucket_tokens and levels"):
        PolicyRegistry().create("shortest-prompt", {"levels": 0})


def test_without_the_distribution_the_name_is_unknown() -> None:
    with pytest.raises(ConfigError, match="unknown policy 'shortest-prompt'"):
        PolicyRegistry().create("shortest-prompt")
