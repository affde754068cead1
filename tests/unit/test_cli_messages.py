"""No C++ or binding text reaches a user (issue 22): the command line is driven on bad inputs and
everything it prints is checked, and the sources are scanned for such text in exception messages.

* `visitcal.cli.main` on malformed files (empty, garbage and truncated FITS and Parquet, exposures with
  0 x 0, NaN and 1e308 pixels and extreme PSFs), bad options and repositories with broken pieces:
  the exit code is an error code and stdout + stderr (and the log) hold none of `FORBIDDEN`;
* the Python sources: no string constant in a ``raise`` holds `FORBIDDEN` text;
* the C++ sources: no ``throw`` with a message literal holding `FORBIDDEN` text (``std::...`` names
  in what() text reach Python verbatim through pybind11).

`test_scanners_find_injected_text` shows that both scanners fire on an injected message.
"""

from __future__ import annotations

import ast
import logging
import re
import traceback
from pathlib import Path

import numpy as np

from visitcal import cli

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "python" / "visitcal"
CPP = REPO / "cpp"

FORBIDDEN = ("std::", "pybind11", "incompatible function arguments", "vector::")


def _run(argv, capsys, caplog) -> tuple[int | None, str]:
    """``(exit code, everything the user would see)``; the code is None when an exception escaped
    main (the user would see its traceback: its text is part of what is checked)."""
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    escaped = ""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse: usage errors (2), --help / --version (0)
        code = e.code if isinstance(e.code, int) else 1
    except Exception:  # noqa: BLE001 - a traceback on the terminal
        code = None
        escaped = traceback.format_exc()
    out = capsys.readouterr()
    text = out.out + out.err + "\n".join(r.getMessage() for r in caplog.records) + escaped
    return code, text


def _assert_clean(text, argv):
    bad = [t for t in FORBIDDEN if t in text]
    assert not bad, f"visitcal {' '.join(map(str, argv))}: {bad} reached the user:\n{text[-3000:]}"


def _bad_files(d: Path) -> dict[str, Path]:
    from visitcal.core.image import Exposure
    from visitcal.io import write_exposure
    from visitcal.psf.models import FixedImagePsf, GaussianPsf

    files = {}
    for name, data in {"empty.fits": b"", "garbage.fits": b"\x00\xff" * 1000, "empty.parquet": b"",
                       "garbage.parquet": b"PAR1" + b"\x13" * 500, "text.json": b"{not json",
                       "header_only.fits": b"SIMPLE  =                    T" + b" " * 2850}.items():
        (d / name).write_bytes(data)
        files[name] = d / name
    good = d / "ok.fits"
    write_exposure(Exposure.from_arrays(np.ones((20, 20), np.float32), variance=np.ones((20, 20), np.float32),
                                        psf=GaussianPsf(1.5)), good)
    files["ok.fits"] = good
    (d / "truncated.fits").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["truncated.fits"] = d / "truncated.fits"
    odd = {"zero.fits": (np.zeros((0, 0), np.float32), GaussianPsf(1.5)),
           "nan.fits": (np.full((9, 9), np.nan, np.float32), GaussianPsf(1e-200)),
           "huge.fits": (np.full((9, 9), 3e38, np.float32), GaussianPsf(1e6, size=3)),
           "zero_psf.fits": (np.ones((9, 9), np.float32), FixedImagePsf(np.eye(3)))}
    for name, (img, psf) in odd.items():
        try:
            write_exposure(Exposure.from_arrays(img, variance=np.ones(img.shape, np.float32), psf=psf), d / name)
        except (ValueError, TypeError):
            continue  # refused on the way in: fine, and nothing to read back
        files[name] = d / name
    return files


def _broken_repositories(d: Path) -> list[Path]:
    repos = []
    for k, pieces in enumerate([
        {},  # an empty directory
        {"repo.json": b"{not json"},
        {"repo.json": b"[]"},
        {"repo.json": b"{}", "camera.json": b"null"},
        {"repo.json": b'{"visits": [1000], "detectors": [0]}', "camera.json": b"{}",
         "refcat.parquet": b"PAR1", "post_isr_image/001000/post_isr_image_001000_000_0.fits": b"\x00" * 2880,
         "provenance/calibrate/001000_000.json": b"{",
         "skymap.json": b"{\"tract\": 1e308}"},
    ]):
        r = d / f"repo{k}"
        r.mkdir()
        for rel, data in pieces.items():
            (r / rel).parent.mkdir(parents=True, exist_ok=True)
            (r / rel).write_bytes(data)
        repos.append(r)
    return repos


def test_cli_bad_files(tmp_path, capsys, caplog):
    files = _bad_files(tmp_path)
    missing = tmp_path / "missing.fits"
    cases = [["info", f] for f in files.values()] + [["info", missing], ["info", tmp_path]]
    cases += [["convert-decam", files["garbage.fits"], files["truncated.fits"], files["empty.fits"], tmp_path / "o.fits"],
              ["convert-decam", files["ok.fits"], files["ok.fits"], files["ok.fits"], tmp_path / "o2.fits"]]
    for argv in cases:
        code, text = _run(argv, capsys, caplog)
        _assert_clean(text, argv)
        assert code is not None, f"visitcal {argv}: an exception escaped:\n{text[-3000:]}"
        if argv[1] in (missing,) or argv[1].name in ("empty.fits", "garbage.fits", "garbage.parquet",
                                                      "empty.parquet", "truncated.fits"):
            assert code != 0, (argv, text)


def test_cli_bad_options(tmp_path, capsys, caplog):
    repo = _broken_repositories(tmp_path)[0]
    cases = [["calibrate", repo, "-j", "-1"], ["calibrate", repo, "-j", "2147483648"],
             ["calibrate", repo, "--preset", "nonsense"], ["calibrate", repo, "--visits", "x"],
             ["calibrate", repo, "--visits", "99999999999999999999"], ["calibrate", repo, "--config", repo / "none.yaml"],
             ["run", repo, "--dask-workers", "-3"], ["sim", tmp_path / "s", "--visits", "-1"],
             ["sim", tmp_path / "s2", "--detectors", "2147483648"], ["status"], ["nonsense-command"]]
    for argv in cases:
        code, text = _run(argv, capsys, caplog)
        _assert_clean(text, argv)
        assert code is not None and code != 0, (argv, text)


STEPS = (["info"], ["status"], ["calibrate"], ["associate"], ["finalize"], ["reprocess"], ["run"])


def test_cli_broken_repositories(tmp_path, capsys, caplog):
    """What the user sees (messages, or a traceback when one escapes) holds no C++ / binding text."""
    for repo in _broken_repositories(tmp_path):
        for step in STEPS:
            argv = step + [repo]
            _code, text = _run(argv, capsys, caplog)
            _assert_clean(text, argv)


def test_cli_broken_repositories_exit_with_an_error_code(tmp_path, capsys, caplog):
    """No traceback: each step on a broken repository ends with an exit code (non-zero for the steps)."""
    escaped = []
    for repo in _broken_repositories(tmp_path):
        for step in STEPS:
            argv = step + [repo]
            code, text = _run(argv, capsys, caplog)
            if code is None:
                escaped.append(f"visitcal {step[0]} {repo.name} ({(repo / 'repo.json').read_bytes()[:40] if (repo / 'repo.json').exists() else 'no repo.json'}): "
                               f"{text.strip().splitlines()[-1]}")
            elif step[0] not in ("info", "status"):
                assert code != 0, (argv, text)
    assert not escaped, "exceptions escaped the command line:\n" + "\n".join(escaped)


# ------------------------------------------------------------------------------------------------
# static scans


def python_raise_messages(paths) -> list[tuple[str, int, str]]:
    """(file, line, text) of every string constant inside a ``raise`` that holds FORBIDDEN text."""
    found = []
    for path in paths:
        tree = ast.parse(Path(path).read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.exc is not None:
                for sub in ast.walk(node.exc):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        if any(t in sub.value for t in FORBIDDEN):
                            found.append((str(path), node.lineno, sub.value))
    return found


_THROW = re.compile(r"throw\s+[\w:<>]+\s*[({]\s*((?:\"(?:[^\"\\]|\\.)*\"\s*(?:\+[^;]*?)?)+)", re.S)


def cpp_throw_messages(paths) -> list[tuple[str, int, str]]:
    """(file, line, message) of every ``throw X("...")`` whose message literals hold FORBIDDEN text."""
    found = []
    for path in paths:
        src = Path(path).read_text()
        for m in _THROW.finditer(src):
            literals = "".join(re.findall(r"\"((?:[^\"\\]|\\.)*)\"", m.group(1)))
            if any(t in literals for t in FORBIDDEN):
                found.append((str(path), src.count("\n", 0, m.start()) + 1, literals))
    return found


def test_python_raise_messages_hold_no_cpp_text():
    found = python_raise_messages(sorted(PACKAGE.rglob("*.py")))
    assert not found, "\n".join(f"{f}:{n}: {t!r}" for f, n, t in found)


def test_cpp_throw_messages_hold_no_cpp_text():
    paths = sorted(p for ext in ("*.cpp", "*.hpp", "*.h") for p in CPP.rglob(ext))
    assert len(paths) > 20, "the C++ sources were not found"
    n_throws = sum(len(_THROW.findall(p.read_text())) for p in paths)
    assert n_throws > 50, f"the scanner matched only {n_throws} throw statements: it is broken"
    found = cpp_throw_messages(paths)
    assert not found, "\n".join(f"{f}:{n}: {t!r}" for f, n, t in found)


def test_scanners_find_injected_text(tmp_path):
    py = tmp_path / "bad.py"
    py.write_text('def f(x):\n    if x:\n        raise ValueError(f"bad {x}: std::vector overflow")\n'
                  '    raise TypeError("fine message")\n')
    assert [(n, t) for _, n, t in python_raise_messages([py])] == [(3, "bad ")] or \
        [n for _, n, _ in python_raise_messages([py])] == [3]
    cpp = tmp_path / "bad.cpp"
    cpp.write_text('void f(int n) {\n  if (n < 0) throw std::invalid_argument("n must be >= 0");\n'
                   '  if (n > 9) throw std::runtime_error("std::vector too long: " + std::to_string(n));\n'
                   '  if (n == 5) throw std::length_error(\n      "vector::reserve");\n}\n')
    assert [n for _, n, _ in cpp_throw_messages([cpp])] == [3, 4]
