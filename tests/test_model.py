"""The model check of the lock protocol (model/locking.pml, design/locking.md goal 4): spin
verifies the protocol exhaustively (no deadlock, no assertion fails), and each seeded bug makes
it fail in the expected way, so the check can fail at all.  Runs spin and a C compiler in a
temporary directory; skipped only when spin is not installed (`make test` installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MODEL = Path(__file__).resolve().parent.parent / "model" / "locking.pml"
SPIN = shutil.which("spin")
CC = shutil.which("gcc") or shutil.which("cc")

# Exhaustive search: DFS with state compression.  The full model needs a depth of about 630 000
# steps and about 230 MB; -m leaves room and pan reports "max search depth too small" otherwise.
PAN_ARGS = ("-m1000000", "-w20")
CC_FLAGS = ("-DSAFETY", "-DCOLLAPSE", "-DMEMLIM=1024", "-w")

needs_spin = pytest.mark.skipif(
    SPIN is None, reason="spin is not installed (Debian package 'spin'; `make test` installs it)"
)


@dataclass
class PanReport:
    """What one pan run found, parsed from its text output."""

    text: str
    errors: int
    states_stored: int
    assertion: str | None = None        # the violated assertion's expression, if any
    invalid_end_state: bool = False     # a deadlock
    depth_too_small: bool = False       # the search was cut short by -m
    incomplete: bool = False
    unreached: list[str] = field(default_factory=list)  # unreached statements of proctype P


def parse_pan(text: str) -> PanReport:
    """Parse pan's report; raise if its summary line is missing (pan crashed or was killed)."""
    summary = re.search(r"State-vector \d+ byte, depth reached \d+, errors: (\d+)", text)
    stored = re.search(r"^\s*([0-9.e+]+) states, stored", text, re.MULTILINE)
    if summary is None or stored is None:
        raise AssertionError(f"pan printed no summary:\n{text[-3000:]}")
    report = PanReport(text=text, errors=int(summary.group(1)),
                       states_stored=int(float(stored.group(1))))
    violated = re.search(r"^pan:\d+: assertion violated (.*) \(at depth \d+\)$", text, re.MULTILINE)
    if violated is not None:
        report.assertion = violated.group(1)
    deadlock = re.search(r"^pan:\d+: invalid end state", text, re.MULTILINE)
    report.invalid_end_state = deadlock is not None
    report.depth_too_small = "max search depth too small" in text
    report.incomplete = "Search not completed" in text
    unreached = re.search(r"^unreached in proctype P\n(.*?)^\s*\(\d+ of \d+ states\)", text,
                          re.MULTILINE | re.DOTALL)
    if unreached is not None:
        lines = unreached.group(1).splitlines()
        report.unreached = [line.strip() for line in lines if line.strip()]
    return report


def property_of(assertion: str) -> str:
    """Which property an assertion of the model states, told by the observers it names
    (the model keeps one property per assert: see its header)."""
    names = set(re.findall(r"[A-Za-z_]\w*(?=\[)", assertion))
    if names and names <= {"inside", "restr"}:
        return "a"
    if names and names <= {"guse", "gmv", "gex"}:
        return "b"
    if names == {"gwr"}:
        return "c"
    probe = re.fullmatch(r"\(op!=(\d+)\)", assertion.replace(" ", ""))
    if probe is not None:
        return f"probe {probe.group(1)}"
    raise AssertionError(f"assertion of no known property: {assertion}")


def run_model(workdir: Path, *defines: str, optimize: str = "-O2") -> PanReport:
    """Generate, compile and run the verifier for the model with the given -D flags."""
    assert SPIN is not None
    if CC is None:
        pytest.fail("no C compiler (gcc or cc) to build spin's verifier")
    shutil.copy(MODEL, workdir / MODEL.name)
    flags = [f"-D{define}" for define in defines]
    for command in ([SPIN, *flags, "-a", MODEL.name],
                    [CC, optimize, *CC_FLAGS, "-o", "pan", "pan.c"]):
        done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    done = subprocess.run([str(workdir / "pan"), *PAN_ARGS], cwd=workdir, capture_output=True,
                          text=True, timeout=300)
    return parse_pan(done.stdout + done.stderr)


@needs_spin
def test_protocol_verifies_exhaustively(tmp_path: Path) -> None:
    report = run_model(tmp_path)
    assert report.errors == 0, report.text
    assert report.assertion is None and not report.invalid_end_state, report.text
    assert not report.depth_too_small and not report.incomplete, report.text
    # All four processes really interleave (the full search stores about 950 000 states),
    # and every statement of the processes is reachable: no operation is dead code.
    assert report.states_stored > 500_000, report.text
    assert all(line.endswith('"-end-"') for line in report.unreached), report.unreached


@pytest.mark.parametrize(
    ("bug", "expected"),
    [
        ("BUG_GROUP_WITHOUT_NS", "a"),    # rule 1: a worker inside a namespace being moved
        ("BUG_LIST_BEFORE_LOCK", "a"),    # rule 2: a child created after listing goes unlocked
        ("BUG_BACKUP_WITHOUT_GW", "c"),   # two writers of one group
        ("BUG_WRONG_ORDER", "deadlock"),  # rule 3: opposite group moves wait for each other
    ],
)
@needs_spin
def test_seeded_bug_is_found(tmp_path: Path, bug: str, expected: str) -> None:
    report = run_model(tmp_path, bug, optimize="-O0")
    assert report.errors >= 1, report.text
    if expected == "deadlock":
        assert report.invalid_end_state and report.assertion is None, report.text
    else:
        assert report.assertion is not None and not report.invalid_end_state, report.text
        assert property_of(report.assertion) == expected, report.assertion


@pytest.mark.parametrize("op", [1, 2, 3, 4, 5, 6],
                         ids=["backup", "restore", "create", "delete", "ns-move", "group-move"])
@needs_spin
def test_every_operation_reaches_its_critical_section(tmp_path: Path, op: int) -> None:
    """The model is not vacuous: each operation gets all its locks in some run."""
    report = run_model(tmp_path, f"PROBE_CS={op}", optimize="-O0")
    assert report.assertion is not None, report.text
    assert property_of(report.assertion) == f"probe {op}", report.assertion


def test_report_parser_reads_a_violation() -> None:
    text = (
        "pan:1: assertion violated (gwr[((n*2)+g)]==0) (at depth 47)\n"
        "pan: wrote locking.pml.trail\n"
        "State-vector 244 byte, depth reached 47, errors: 1\n"
        "       19 states, stored\n"
    )
    report = parse_pan(text)
    assert (report.errors, report.states_stored) == (1, 19)
    assert report.assertion is not None and property_of(report.assertion) == "c"
    assert not report.invalid_end_state
    with pytest.raises(AssertionError):
        parse_pan("Segmentation fault\n")
