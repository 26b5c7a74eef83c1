"""Every ``--help`` example parses with its script's own parser, and those on a miniworld
name what that world has: its model name, checkpoint steps, step windows, and sample
intervals that draw on one branch of CPython's ``random.sample``.

The examples are read from each script's ``EXAMPLES`` the way a shell would: continuation
lines joined, ``{a,b}`` braces expanded, ``for v in ...; do ...; done`` loops unrolled with
``$((v+N))`` arithmetic, and a ``torchrun ...`` launcher set aside.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from anatomy.mia.sampling import max_consistent_sample_end
from anatomy.world.presets import PRESETS

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.stem for p in ROOT.glob("*.py") if "EXAMPLES" in p.read_text())
# the world a path names: the Makefile's default (data/world) is the small preset
WORLDS = {"data/world": "small", "data/world-tiny": "tiny", "data/world-small": "small"}


def _braces(word: str) -> list[str]:
    m = re.search(r"\{([^{}]*,[^{}]*)\}", word)
    if m is None:
        return [word]
    return [x for alt in m.group(1).split(",")
            for x in _braces(word[:m.start()] + alt + word[m.end():])]


def _arith(word: str, var: str, value: str) -> str:
    word = word.replace(f"${var}", value)

    def calc(m: re.Match) -> str:
        expr = m.group(1).replace(var, value)
        assert re.fullmatch(r"[\d+\-* ]+", expr), expr
        return str(eval(expr))  # noqa: S307 - digits and + - * only, checked above

    return re.sub(r"\$\(\((.*?)\)\)", calc, word)


def commands(examples: str) -> list[list[str]]:
    """The example command lines of an EXAMPLES block, as argv lists (``python`` dropped)."""
    text = re.sub(r"\\\n\s*", " ", examples)
    out = []
    for line in text.splitlines()[1:]:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        loop = re.fullmatch(r"for (\w+) in ([^;]+); do (.+); done", line)
        runs = [(None, None, line)] if loop is None else \
            [(loop.group(1), v, loop.group(3)) for v in loop.group(2).split()]
        for var, value, cmd in runs:
            words = shlex.split(cmd)
            if var is not None:
                words = [_arith(w, var, value) for w in words]
            words = [x for w in words for x in _braces(w)]
            env = [w for w in words if re.fullmatch(r"[A-Z_]+=.*", w)]
            words = words[len(env):]
            if words[0] == "torchrun":  # torchrun [--flag value ...] SCRIPT args
                i = next(k for k, w in enumerate(words) if w.endswith(".py"))
                words = words[i:]
            elif words[0] in ("python", "python3"):
                words = words[1:]
            out.append(words)
    return out


def _values(argv: list[str], flag: str) -> list[str]:
    if flag not in argv:
        return []
    i = argv.index(flag) + 1
    vals = []
    while i < len(argv) and not argv[i].startswith("--"):
        vals.append(argv[i])
        i += 1
    return vals


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_examples_run_as_written_on_the_world_they_name(script):
    mod = importlib.import_module(script)
    cmds = commands(mod.EXAMPLES)
    assert cmds, f"{script}: no example commands"
    for argv in cmds:
        assert argv[0] == f"{script}.py", argv
        args = mod.build_parser().parse_args(argv[1:])  # SystemExit on a bad flag or value
        real = any(getattr(args, k, None) for k in ("config", "target_model",
                                                    "slimpajama_root", "local_samples_dir",
                                                    "results_dir", "compare"))
        names = " ".join(argv)
        if real or "OLMo-7B" in names:
            continue  # a real run's example: its paths and names are the user's
        world = getattr(args, "world", None) or "data/world"
        if script == "build_world":
            world = args.out
        preset = PRESETS[WORLDS.get(world.rstrip("/"), "small")]
        if script == "build_world":
            assert WORLDS.get(world) in (args.preset, None), argv
            continue
        P = preset
        for name in re.findall(r"miniworld-(\w+?)_", names + "_"):
            assert name == P.name, f"{argv}: names miniworld-{name}, the world is {P.name}"
        for flag in ("--step", "--ref_step"):
            for v in _values(argv, flag):
                assert int(v) in P.checkpoints, f"{argv}: no checkpoint at step {v} " \
                                                f"({P.name}: {P.checkpoints})"
        for lo, hi in (("--step_start", "--step_end"),
                       ("--member_step_start", "--member_step_end"),
                       ("--nonmember_step_start", "--nonmember_step_end")):
            if getattr(args, lo[2:], None) is not None:
                a, b = getattr(args, lo[2:]), getattr(args, hi[2:])
                assert 0 <= a < b <= P.steps, f"{argv}: steps [{a}, {b}) outside {P.steps}"
        if script == "sample":
            n = (args.step_end - args.step_start) * P.batch_size
            limit = max_consistent_sample_end(n)
            assert args.sample_end <= n and not (
                0 < args.sample_start <= limit < args.sample_end), argv
