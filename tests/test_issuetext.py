"""Reading an issue's text: the repro among its code blocks, the versions it names, PEP 723
metadata, and the stranger's-code mark.  The fixtures are Markdown written here in the shape
real TensorFlow issues have (the 2022+ template, the older one, a free-form report)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfbisect.core import issuetext
from tfbisect.core.errors import ScenarioError
from tfbisect.core.issuetext import ScriptMetadata, VersionHint

ISSUES = Path(__file__).parent / "data" / "issues"
NEXT_COMMENT = "<!-- tfbisect-test: next comment -->\n"


def posts(name: str) -> list[str]:
    """The issue's body and comments, oldest first (the fixture separates them by a marker line)."""
    return (ISSUES / f"{name}.md").read_text().split(NEXT_COMMENT)


def test_template_issue_repro_in_a_shell_fence() -> None:
    """The template renders its repro field as ```shell: the Python under "Standalone code to
    reproduce the issue" is taken, the log (also ```shell) and the maintainer's shorter variant not."""
    blocks = issuetext.code_blocks(posts("keras_dtype"))
    assert [(b.post, b.language, b.under_repro_heading) for b in blocks] == [
        (0, "shell", True),
        (1, "python", False),
    ]
    picked = issuetext.pick(blocks)
    assert picked is not None and picked.post == 0
    assert picked.code.startswith("import numpy as np\nimport tensorflow as tf\n")
    assert picked.code.endswith("assert y.dtype == tf.float64, y.dtype\n")
    assert "Traceback" not in picked.code
    hint = issuetext.versions(posts("keras_dtype"))
    assert (hint.good, hint.bad) == ("2.8", "2.9")
    assert hint.evidence == (
        "good 2.8: In TF 2.8 this works",
        "bad 2.9: in 2.9 the output is float32 and my downstream code fails",
    )


def test_old_template_indented_code_and_traceback() -> None:
    """An indented repro is taken; the indented traceback beside it does not parse and is not."""
    blocks = issuetext.code_blocks(posts("predict_uprank"))
    assert [(b.post, b.language) for b in blocks] == [(0, "indented"), (1, "python")]
    picked = issuetext.pick(blocks)
    assert picked is not None
    assert picked.code.splitlines()[0] == "import numpy as np"
    assert "assert out.shape == (5, 1), out.shape" in picked.code
    compile(picked.code, "repro.py", "exec")
    # "Python 2.7" and "Keras 2.8.0" are not TensorFlow versions.
    hint = issuetext.versions(posts("predict_uprank"))
    assert (hint.good, hint.bad) == ("2.6.0", "2.7")
    assert hint.arguments() == "--good 2.6.0 --bad 2.7"


def test_interactive_session_and_logs() -> None:
    """`>>>` prompts are stripped and the session's output dropped; a log and a bash block are not code."""
    blocks = issuetext.code_blocks(posts("numpy_attribute"))
    assert len(blocks) == 1
    (block,) = blocks
    assert block.code == (
        "import tensorflow as tf\nimport tensorflow.experimental.numpy as tnp\nx = tnp.ones([2, 2])\nx.T\n"
    )
    assert issuetext.pick(blocks) == block
    hint = issuetext.versions(posts("numpy_attribute"))
    assert (hint.good, hint.bad) == ("2.4", "2.10.0")  # "TF version: 2.10.0" and "ran without error in 2.4"


def test_template_version_heading_nightly_and_pep723() -> None:
    blocks = issuetext.code_blocks(posts("generator_retrace"))
    picked = issuetext.pick(blocks)
    assert picked is not None and picked.code.startswith("# /// script\n")
    assert issuetext.script_metadata(picked.code) == ScriptMetadata(("numpy<2",), None)
    hint = issuetext.versions(posts("generator_retrace"))
    assert hint == VersionHint(None, "2.15.0", ("bad 2.15.0: ### TensorFlow version: tf 2.15.0",))
    assert hint.arguments() == "--good GOOD --bad 2.15.0"


@pytest.mark.parametrize(
    ("text", "good", "bad"),
    [
        ("works in 2.8, fails in 2.9", "2.8", "2.9"),
        ("It doesn't work in TF 2.12. Worked with tensorflow==2.11.1", "2.11.1", "2.12"),
        ("Tensorflow Version: 2.13.0\nNo error in 2.12.", "2.12", "2.13.0"),
        ("Broken on tf-nightly; fine in 2.16", "2.16", "nightly"),
        ("This works in 2.9.", "2.9", None),
        ("Python 2.7, keras 2.8.0 and numpy 1.2.9 here; nothing else", None, None),
    ],
)
def test_version_phrases(text: str, good: str | None, bad: str | None) -> None:
    hint = issuetext.versions([text])
    assert (hint.good, hint.bad) == (good, bad)


def test_good_is_older_than_bad() -> None:
    hint = issuetext.versions(["fails in 2.9. It works in 2.8. It works in 2.10 again"])
    assert (hint.good, hint.bad) == ("2.8", "2.9")


def test_no_tensorflow_code_is_no_pick() -> None:
    blocks = issuetext.code_blocks(
        ["```python\nimport numpy as np\nprint(np.ones(2))\n```\n", "```python\nthis is not python(\n```\n"]
    )
    assert [b.parses for b in blocks] == [True, False]
    assert issuetext.pick(blocks) is None


def test_keras_alone_is_taken_when_nothing_imports_tensorflow() -> None:
    blocks = issuetext.code_blocks(["```\nimport keras\nkeras.layers.Dense(1)\n```\n"])
    picked = issuetext.pick(blocks)
    assert picked is not None and picked.language == "" and picked.imports_keras


def test_unclosed_fence_runs_to_the_end() -> None:
    (block,) = issuetext.code_blocks(["text\n~~~~py\nimport tensorflow as tf\n```\ntf.ones(1)\n"])
    assert block.code == "import tensorflow as tf\n```\ntf.ones(1)\n" and not block.parses


def test_the_mark() -> None:
    code = "import tensorflow as tf\n"
    marked = issuetext.mark(code, "https://github.com/o/r/issues/1\x1b[2J")
    first = marked.splitlines()[0]
    assert first.startswith(
        "# tfbisect: code taken from https://github.com/o/r/issues/1\\x1b[2J; a stranger's code"
    )
    assert "--trust-script" in first
    assert issuetext.is_marked(marked) and not issuetext.is_marked(code)
    assert issuetext.mark(marked, "elsewhere") == marked  # once
    assert not issuetext.is_marked(
        "x = 1  # tfbisect: code taken from nowhere\n"
    )  # a line that starts with it


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ('# /// script\n# dependencies = ["pandas"\n# ///\n', "not valid TOML"),
        ('# /// script\n# dependencies = "pandas"\n# ///\n', "not a list of strings"),
        ('# /// script\n# dependencies = ["pandas >>> 2"]\n# ///\n', "is not a requirement"),
        ("# /// script\n# dependencies = []\n# ///\nimport os\n" * 2, "more than one"),
    ],
)
def test_malformed_metadata(block: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message) as info:
        issuetext.script_metadata(block + "import tensorflow\n")
    assert info.value.todo


def test_metadata() -> None:
    code = '# /// script\n# requires-python = ">=3.8"\n# dependencies = [\n#   "pandas<2",\n#   "scipy",\n# ]\n# ///\n'
    assert issuetext.script_metadata(code) == ScriptMetadata(("pandas<2", "scipy"), ">=3.8")
    assert issuetext.script_metadata("import tensorflow\n") is None
