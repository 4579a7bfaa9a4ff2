"""The scam checker: verdicts that explain themselves, honest limits, hostile input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from classifiers.scam import (
    DATA_FILE,
    MAX_CHECK_CHARS,
    REASSURANCES,
    SCAM_TYPES,
    ScamChecker,
    extract_links,
    extract_phones,
    looks_like_pasted_message,
    read_messages,
)

REPO = Path(__file__).resolve().parents[1]
CHECK_FIELDS = {"text", "verdict", "type", "score", "reasons", "advice", "links", "phones"}


@pytest.fixture(scope="module")
def checker() -> ScamChecker:
    return ScamChecker(advice_by_type={"fake-loan": "不要先交任何费用"}).fit(
        read_messages(DATA_FILE)
    )


@pytest.mark.parametrize(
    ("text", "scam_type"),
    [
        ("我是市公安局民警，你的身份证涉嫌洗钱案，需要把资金转入安全账户核查，此事保密",
         "impersonate-authority"),
        ("无抵押秒批，黑户也能贷，放款前先交3000元保证金刷流水", "fake-loan"),
        ("专业征信修复，删除逾期记录，三天洗白，先付定金", "credit-repair"),
        ("保单全额退保，专业团队代理维权，只收退保金额30%手续费", "agent-surrender"),
        ("高价收购银行卡、电话卡，一套800元，日结", "card-renting"),
    ],
)
def test_typical_scams_are_caught_with_their_type_and_quoted_reasons(checker, text, scam_type):
    verdict = checker.check(text)
    assert verdict.verdict in {"scam", "suspicious"}
    assert verdict.scam_type == scam_type
    assert any("“" in reason for reason in verdict.reasons)


@pytest.mark.parametrize(
    "text",
    [
        "【工商银行】您尾号1234卡11月20日15:30支出人民币258.00元，余额3,210.55元。",
        "【中国银行】验证码482913，用于登录手机银行，工作人员不会向您索要，请勿泄露。",
        "【蚌埠公安】提醒：公检法机关不存在所谓安全账户，凡是让您转账到安全账户的都是诈骗。",
    ],
)
def test_legitimate_notices_with_scary_words_are_not_flagged(checker, text):
    assert checker.check(text).verdict == "safe"


def test_the_answer_always_says_it_is_not_the_police_or_the_bank(checker):
    for text in ("你好", "无抵押秒批先交保证金", "【建设银行】您的信用卡本期账单已出"):
        assert "不能代替警察和银行" in checker.check(text).advice


def test_advice_comes_from_the_scam_types_entry(checker):
    verdict = checker.check("无抵押秒批，放款前先交3000元保证金")
    assert "不要先交任何费用" in verdict.advice


@pytest.mark.parametrize("text", ["", "   ", "😀😀😀", "\x00\x01\x02", "！！！？？"])
def test_nothing_to_check_gets_a_clear_answer(checker, text):
    verdict = checker.check(text)
    assert verdict.verdict == "safe" and verdict.scam_type is None
    assert "没有可以检查的文字" in verdict.reasons[0]


def test_huge_messages_are_cut_with_a_note(checker):
    verdict = checker.check("安全账户" * 5000)
    assert verdict.truncated
    assert any(str(MAX_CHECK_CHARS) in reason for reason in verdict.reasons)


def test_links_and_phone_numbers_are_extracted_not_fetched():
    text = "点击 http://icbc-vip.cc/login 或 www.ccb-kf.top 联系 170 0000 1234，官方电话95588"
    assert extract_links(text) == ["http://icbc-vip.cc/login", "www.ccb-kf.top"]
    assert extract_phones(text) == ["17000001234", "95588"]


def test_pasted_messages_are_recognised():
    assert looks_like_pasted_message("【中国银行】您的账户异常")
    assert looks_like_pasted_message("点开 dwz.ink/aB3x 领取")
    assert not looks_like_pasted_message("银行卡被盗刷了怎么办")


def test_training_data_covers_every_type():
    messages = read_messages(DATA_FILE)
    types = {m.scam_type for m in messages if m.label == "scam"}
    assert types == set(SCAM_TYPES)
    assert sum(m.label == "safe" for m in messages) >= 120


def test_check_message_cli_follows_the_contract():
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "check-message", "--jsonl"],
        input="你涉嫌洗钱，把钱转到安全账户\n【工商银行】您尾号1234卡支出100元\n".encode(),
        capture_output=True, cwd=REPO, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [set(r) for r in results] == [CHECK_FIELDS, CHECK_FIELDS]
    assert results[0]["verdict"] == "scam" and results[0]["type"] in SCAM_TYPES
    assert results[1]["verdict"] == "safe" and results[1]["type"] is None


def test_check_message_eval_prints_recall_and_false_positives(tmp_path):
    sample = tmp_path / "sample.jsonl"
    sample.write_text(
        json.dumps({"text": "你涉嫌洗钱，把钱转到安全账户", "label": "scam",
                    "type": "impersonate-authority"}, ensure_ascii=False) + "\n"
        + json.dumps({"text": "【工商银行】您尾号1234卡支出100元", "label": "safe",
                      "type": None}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "check-message", "--eval", str(sample), "--json"],
        capture_output=True, cwd=REPO, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["recall"] == 1.0 and report["false_positive_rate"] == 0.0


def test_a_demand_for_secrecy_is_not_mistaken_for_a_reassurance():
    reassurances = dict(REASSURANCES)
    assert reassurances["never-share"].search("验证码123456，请勿告诉任何人")
    assert not reassurances["never-share"].search("这是机密，不要告诉家人，也别告诉银行")
    assert reassurances["official-contact"].search("请到银行柜台办理")
    assert not reassurances["official-contact"].search("千万别去银行柜台办，柜员会拦你")
