"""The load benchmark: each target's verdict, the ceiling the machine puts on scaling, and
whose CPU a phase counts."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.load import (
    proc_figures,
    report,
    scaling_ceiling,
    scaling_ceiling_without_database,
    single_core_speed,
    verdicts,
)


def phase(per_second: float, busy: float | None = None,
          postgres: float | None = None) -> dict:
    figures = {"per_second": per_second, "p99_ms": 40.0}
    result = {"all": figures, "chat": figures}
    if busy is not None:
        result["cpu"] = {"machine_cores": 2, "machine_busy_cores": busy}
        if postgres is not None:
            result["cpu"]["postgres_cores"] = postgres
    return result


def test_the_scaling_ceiling_is_the_cores_over_what_one_worker_kept_busy():
    assert scaling_ceiling(phase(600.0, busy=1.25)) == 1.6
    assert scaling_ceiling(phase(600.0, busy=1.32)) == 1.52
    assert scaling_ceiling(phase(600.0)) is None


def test_the_ceiling_without_the_database_takes_only_its_cores_off():
    """The figures of a fast host's run: 1.36 cores busy with one worker, 0.26 of them
    PostgreSQL's; the generator and the kernel stay on the machine."""
    assert scaling_ceiling_without_database(phase(1289.0, busy=1.36, postgres=0.26)) == 1.82
    assert scaling_ceiling_without_database(phase(600.0, busy=1.0, postgres=0.0)) == 2.0
    assert scaling_ceiling_without_database(phase(600.0, busy=1.25)) is None
    assert scaling_ceiling_without_database(phase(600.0, busy=0.3, postgres=0.3)) is None
    assert scaling_ceiling_without_database(phase(600.0)) is None


def test_the_two_worker_verdict_names_both_ceilings():
    rows = verdicts({"postgres_1_mixed": phase(1289.0, busy=1.36, postgres=0.26),
                     "postgres_2_mixed": phase(1646.4, busy=1.99, postgres=0.44)})
    (_, measured, met), = [row for row in rows if "one worker on PostgreSQL" in row[0]]
    assert "at most 1.47x here" in measured
    assert "1.82x with PostgreSQL's 0.26 cores on a machine of its own" in measured
    assert not met


def test_the_two_worker_verdict_names_its_ceiling_and_the_yardstick():
    rows = verdicts({"postgres_1_mixed": phase(600.0, busy=1.32),
                     "postgres_2_mixed": phase(816.0, busy=2.0)}, {"mean": 1.9})
    (_, measured, met), = [row for row in rows if "one worker on PostgreSQL" in row[0]]
    assert measured.startswith("1.36x (at most 1.52x here")
    assert "1.32 of 2 cores busy" in measured and "1.90x one" in measured
    assert not met


def test_targets_met_and_missed_are_told_apart():
    rows = dict((target, met) for target, _, met in verdicts(
        {"sqlite_1_mixed": phase(850.0), "sqlite_1_wechat": phase(900.0),
         "werobot_echo": phase(880.0)}))
    assert rows["1 worker: >= 800 chat messages/s"]
    assert rows["WeChat path >= WeRoBot echo throughput"]
    assert not dict((t, m) for t, _, m in verdicts(
        {"sqlite_1_mixed": phase(799.0)}))["1 worker: >= 800 chat messages/s"]


def test_the_report_names_the_host_and_its_single_core_speed():
    text = report({"phases": {}, "notes": [], "verdicts": [],
                   "machine": {"cpus": 2, "cpu_model": "AMD EPYC",
                               "single_core_mloops_per_second": 12.5}})
    assert "2 cores, AMD EPYC; one counting loop alone: 12.5 M iterations/s" in text


def test_the_single_core_speed_is_counted_in_a_process_of_its_own():
    speed = single_core_speed(seconds=0.2)
    assert 0.1 < speed < 1000  # millions of loop iterations a second, on any machine


def test_the_cpu_of_exited_children_counts_when_asked_for():
    """How a PostgreSQL backend that exited mid-phase is still counted: the postmaster
    collects its CPU.  Here this test process is the parent of a child that burns CPU."""
    before = proc_figures(os.getpid(), reaped=True)["cpu_seconds"]
    own_before = proc_figures(os.getpid())["cpu_seconds"]
    subprocess.run([sys.executable, "-c",
                    "import time\nend = time.process_time() + 0.3\n"
                    "while time.process_time() < end: pass"], check=True)
    assert proc_figures(os.getpid(), reaped=True)["cpu_seconds"] - before >= 0.25
    assert proc_figures(os.getpid())["cpu_seconds"] - own_before < 0.25
