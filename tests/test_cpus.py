"""Worker counts capped at the CPUs available."""

from __future__ import annotations


def test_workers_are_capped_at_the_cpus_available(caplog):
    from mlreassess.cpus import available_cpus, capped_workers

    assert capped_workers(1) == 1
    assert capped_workers(10**9) == available_cpus()
    assert f"--workers 1000000000: only {available_cpus()} CPUs available here" in caplog.text
