"""The knowledge base as data reviewed like code: schema, links, duplicates, file:line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from knowledge.base import (
    DEFAULT_DATA_DIR,
    KnowledgeError,
    coverage,
    load_knowledge,
    load_topics,
)

REPO = Path(__file__).resolve().parents[1]
SPEC_TOPICS = REPO.parent / "shared" / "spec" / "topics.toml"


@pytest.fixture(scope="module")
def base():
    return load_knowledge()


def test_the_shipped_base_passes_every_check_and_covers_every_topic(base):
    counts = coverage(base)
    assert len(base.entries) >= 150
    assert all(count >= 3 for count in counts.values()), counts
    for entry in base.entries:
        assert len(entry.questions) >= 5 and entry.sources and entry.next_steps


def test_topic_ids_match_the_spec():
    ours = {t.id for t in load_topics()}
    if not SPEC_TOPICS.exists():
        pytest.skip("shared/spec is not beside this checkout")
    spec = {t["id"] for t in tomllib.loads(SPEC_TOPICS.read_text("utf-8"))["topic"]}
    assert spec <= ours


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA_DIR, target)
    return target


def _problems(data_dir: Path) -> list[str]:
    with pytest.raises(KnowledgeError) as raised:
        load_knowledge(data_dir)
    return raised.value.problems


def test_malformed_yaml_is_reported_with_file_and_line(tmp_path):
    data = _copy(tmp_path)
    broken = data / "card-fraud.yaml"
    broken.write_text(broken.read_text("utf-8") + "\n- id: [unclosed\n", encoding="utf-8")
    first, *rest = _problems(data)
    assert first.startswith(f"{broken}:") and "not valid YAML" in first
    assert all("relates to unknown" in problem for problem in rest)  # its entries are gone


def test_schema_links_and_duplicates_are_reported_with_file_and_line(tmp_path):
    data = _copy(tmp_path)
    extra = data / "zz-extra.yaml"
    extra.write_text(
        "- id: card-fraud-stolen-card-steps\n"
        "  topic: no-such-topic\n"
        "  title: 重复的编号\n"
        "  questions: [a1, b1, c1, d1, e1]\n"
        "  answer: 太短\n"
        "  next_steps: [x]\n"
        "  sources: [y]\n"
        "  reviewed: 2026-11-28\n"
        "- id: zz-duplicate-question\n"
        "  topic: card-fraud\n"
        "  title: 重复\n"
        "  questions: [银行卡盗刷, b, c, d, e]\n"
        "  answer: 太短\n"
        "  next_steps: [x]\n"
        "  sources: [y]\n"
        "  related: [nowhere]\n"
        "  reviewed: 2026-11-28\n"
        "- id: missing-keys\n"
        "  topic: card-fraud\n",
        encoding="utf-8",
    )
    problems = "\n".join(_problems(data))
    for expected in ("duplicate id", "unknown topic", "relates to unknown", "characters, expected",
                     "also belongs to", "missing key 'title'"):
        assert expected in problems
    assert f"{extra}:1:" in problems and f"{extra}:18:" in problems


def test_kb_check_command_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "bot.cli", "kb", "check"], cwd=REPO,
                        capture_output=True, timeout=120)
    assert ok.returncode == 0 and b"knowledge base OK" in ok.stdout
    data = _copy(tmp_path)
    (data / "card-fraud.yaml").write_text("- id: [\n", encoding="utf-8")
    bad = subprocess.run([sys.executable, "-m", "bot.cli", "kb", "check"], cwd=REPO,
                         capture_output=True, timeout=120,
                         env={"XIAOBAO_KNOWLEDGE_DATA_DIR": str(data), "PATH": "/usr/bin"})
    assert bad.returncode == 2
    assert f"{data / 'card-fraud.yaml'}:" in bad.stderr.decode()
