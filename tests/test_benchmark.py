"""The timing helpers (ssdlib.timing) behind the solver benchmark and the Table 6 sweep (ssdlib.experiments.solver)."""
import math

import pytest
import torch

from ssdlib.experiments.solver import random_rows, table6_sweep
from ssdlib.timing import memory_floor, time_call
from ssdlib.solver import waterfill


def test_time_call_repeats_until_min_time():
    calls = []
    time_call(lambda: calls.append(1), repeat=2, warmup=1, min_time=0.05, max_repeat=5)
    assert len(calls) == 1 + 5  # a no-op never reaches 0.05 s, so max_repeat bounds the runs
    calls.clear()
    time_call(lambda: calls.append(1), repeat=3, warmup=0)
    assert len(calls) == 3


def test_time_call_statistics(monkeypatch):
    import ssdlib.timing as bm

    durations = [3.0, 1.0, 2.0]  # seconds per timed run, fed through a fake clock

    def fake_clock():
        ticks = []
        for d in durations * 2:
            ticks += [0.0, d]
        it = iter(ticks)
        return lambda: next(it)

    monkeypatch.setattr(bm.time, "perf_counter", fake_clock())
    assert time_call(lambda: None, repeat=3, warmup=0, stat="min") == 1.0
    monkeypatch.setattr(bm.time, "perf_counter", fake_clock())
    assert time_call(lambda: None, repeat=3, warmup=0, stat="median") == 2.0


@pytest.mark.parametrize("kwargs", [dict(repeat=0), dict(warmup=-1), dict(stat="mean"),
                                    dict(repeat=5, max_repeat=2)])
def test_time_call_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        time_call(lambda: None, **kwargs)


def test_random_rows_are_probabilities():
    f, q = random_rows(8, 50, generator=torch.Generator().manual_seed(0))
    for x in (f, q):
        assert x.shape == (8, 50) and x.dtype == torch.float32
        assert torch.all(x >= 0)
        torch.testing.assert_close(x.double().sum(-1), torch.ones(8, dtype=torch.float64), atol=1e-5, rtol=0)
    waterfill(f, q, 0.5)  # valid solver input


def test_memory_floor_times_one_elementwise_pass_into_the_output(monkeypatch):
    """The floor is the time of one pass reading f and q and writing p = f + q (fake clock: 2 s per run)."""
    import ssdlib.timing as bm
    f, q = random_rows(4, 1000)
    out = torch.zeros_like(f)
    ticks = iter([0.0, 2.0] * 10)
    monkeypatch.setattr(bm.time, "perf_counter", lambda: next(ticks))
    assert memory_floor(f, q, repeat=3, stat="min", warmup=0, out=out) == 2.0
    torch.testing.assert_close(out, f + q)  # the timed pass really read both inputs and wrote the output


def test_table6_sweep_columns_and_caps():
    df = table6_sweep([10, 100], B=4, methods=("waterfill", "waterfill_sort"), repeat=1, min_time=0.0,
                      caps={"waterfill_sort": 100})
    assert list(df["C"]) == [10, 100]
    for col in ("waterfill_ms", "waterfill_sort_ms", "floor_ms", "passes_max", "sort_over_waterfill",
                "waterfill_over_floor"):
        assert col in df
    assert math.isnan(df.loc[1, "waterfill_sort_ms"])  # 4 * 100 elements exceed the cap of 100
    assert df.loc[0, "waterfill_ms"] > 0 and df.loc[0, "passes_max"] >= 1
    with pytest.raises(ValueError, match="unknown methods"):
        table6_sweep([10], methods=("nope",))
