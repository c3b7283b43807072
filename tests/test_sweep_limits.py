"""A space file or a sweep option that would exhaust memory or processes
before any check: a dotted key of thousands of parts (tomllib is quadratic
in them), a grid over a huge int range (listed before it was counted), and
--workers far above the trials or the cores."""

from __future__ import annotations

import pytest

from charrnn_ext.sweeps.space import MAX_GRID, SpaceError, check_toml_shape, load_space, parse_space
from cli_helpers import bounded, measured, one_error_line
from helpers import HAVE_SWEEP

GOOD = "[fixed]\nsteps = 3\n\n[search]\nhidden = { choice = [4, 8] }\n"


@pytest.mark.parametrize("parts", [17, 1000, 50_000])
def test_a_dotted_key_of_many_parts_is_refused_before_tomllib(tmp_path, parts):
    """Before: a 347 KB space with one 50,000-part dotted key took 9 GB in
    tomllib (quadratic in the parts); the 1 MB cap did not bound it."""
    space = tmp_path / "space.toml"
    space.write_text(GOOD + ".".join(["a"] * parts) + " = 1\n")
    with pytest.raises(SpaceError) as info:
        load_space(space)
    assert str(info.value) == f"{space}: line 6: a dotted key of more than 16 parts; a space's keys are option names"


@pytest.mark.parametrize(
    "text",
    [
        '[search]\n"hidden" . "x" = 1\n',  # quoted parts count as parts; dots inside strings do not
        'x = "' + "a." * 100 + '"\n',
        "x = '''\n" + "a." * 100 + "\n'''\n",
        'x = """\n' + "a." * 100 + '\\"""\n"""\n',
        "# " + "a." * 100 + "\n",
        "x = [" + ", ".join(["1.5"] * 100) + "]\n",  # floats in a list: one dot each
        "[a.b.c]\nd.e = 1.25\n",
    ],
)
def test_dots_in_strings_comments_and_numbers_are_not_key_parts(text):
    check_toml_shape(text, "space.toml")


def test_deep_nesting_is_refused_before_tomllib(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text(GOOD + "x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(SpaceError, match="line 6: nested more than 16 deep"):
        load_space(space)


@pytest.mark.slow
def test_the_dotted_key_bomb_on_the_command_line_is_one_line_in_bounded_memory(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text(GOOD + ".".join(["a"] * 50_000) + " = 1\n")  # 100 KB
    r = measured(["sweep", space, "--out", tmp_path / "out"])
    print(f"dotted-key space: {r['seconds']:.2f} s, peak {r['peak_mb']:.0f} MB")
    assert r["code"] == 2 and "a dotted key of more than 16 parts" in one_error_line(r["err"])
    bounded(r, 300)


@pytest.mark.parametrize("high", [MAX_GRID + 1, 10**8, 4 * 10**9, 2**62])
def test_a_grid_over_a_huge_int_range_is_counted_before_it_is_listed(high):
    """Before: the range was listed before the 100,000-point check (3.9 GB
    for 10**8, a bare MemoryError for 4*10**9)."""
    space = parse_space({"search": {"seed": {"int": [1, high]}}}, "space.toml")
    with pytest.raises(SpaceError) as info:
        space.grid()
    assert str(info.value) == (
        f"space.toml: the grid has more than {MAX_GRID:,} points ([search] seed alone has {high:,}); use fewer "
        f"values or another sampler"
    )


def test_grid_products_are_counted_too():
    space = parse_space({"search": {"seed": {"int": [1, 400]}, "hidden": {"int": [1, 400]}}}, "s")
    with pytest.raises(SpaceError, match="more than 100,000 points"):
        space.grid()
    small = parse_space({"search": {"seed": {"int": [1, 3]}, "hidden": {"choice": [4, 8]}}}, "s")
    assert small.grid() == {"seed": [1, 2, 3], "hidden": [4, 8]}


@pytest.mark.slow
def test_the_grid_bomb_on_the_command_line_is_one_line_in_bounded_memory(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text("[fixed]\nsteps = 3\n[search]\nseed = { int = [1, 4000000000] }\n")
    r = measured(["sweep", space, "--out", tmp_path / "out", "--sampler", "grid"])
    print(f"grid of 4e9 points: {r['seconds']:.2f} s, peak {r['peak_mb']:.0f} MB")
    assert r["code"] == 2 and "the grid has more than 100,000 points" in one_error_line(r["err"])
    bounded(r, 300)


@pytest.mark.skipif(not HAVE_SWEEP, reason="needs the [sweep] extra")
def test_local_workers_are_capped_by_the_trials_and_the_cores(monkeypatch):
    """Before: --workers 12 for 2 trials started 12 worker processes (1 GB)."""
    from charrnn_ext.sweeps import cluster

    monkeypatch.setattr(cluster, "usable_cores", lambda: 2)
    assert cluster.local_workers(12, 2, 1) == (2, "--workers 12 lowered to 2: the sweep has 2 trial(s) to run")
    assert cluster.local_workers(1024, 1, 1) == (1, "--workers 1024 lowered to 1: the sweep has 1 trial(s) to run")
    assert cluster.local_workers(12, 50, 1) == (
        2,
        "--workers 12 lowered to 2: 2 usable core(s) run at most 2 trials of 1 thread(s) at a useful speed",
    )
    assert cluster.local_workers(2, 50, 1) == (2, "")
    assert cluster.local_workers(None, 50, 1) == (2, "")  # the default: a worker per core
    assert cluster.local_workers(None, 1, 1) == (1, "")
    assert cluster.local_workers(3, 0, 1)[0] == 1  # a resumed sweep with nothing left to run
    monkeypatch.setattr(cluster, "usable_cores", lambda: 16)
    assert cluster.local_workers(8, 100, 2) == (8, "")
    assert cluster.local_workers(12, 100, 2)[0] == 8


@pytest.mark.parametrize("key", ["hid\0den", "hidden\u202e", "x\x1b[31m"])
def test_control_characters_in_keys_are_escaped_in_errors(key):
    for data in ({"fixed": {key: 1}, "search": {"hidden": {"choice": [4]}}}, {key: {}}):
        with pytest.raises(SpaceError) as info:
            parse_space(data, "space.toml")
        message = str(info.value)
        assert message.isprintable(), repr(message)
        assert key.encode("unicode_escape").decode("ascii") in message
