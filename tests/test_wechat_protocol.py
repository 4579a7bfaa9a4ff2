"""WeChat's wire format as pure functions, checked against fixed vectors.

The vectors were computed outside this code: signatures with hand-written `hashlib` calls
below, the ciphertext with the `openssl enc -aes-256-cbc -nopad` command line on a
hand-padded plaintext (16 fixed "random" bytes, 4-byte length, message, app id).
"""

from __future__ import annotations

import base64
import hashlib
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import Config
from bot.messages import Button, Reply
from handlers.wechat_protocol import (
    MORE_HINT,
    PASSIVE_TEXT_LIMIT_BYTES,
    XML_INVALID,
    BadXml,
    CryptoError,
    MenuError,
    aes_key_bytes,
    cdata,
    check_msg_signature,
    check_signature,
    decrypt,
    delivery_key,
    encrypt,
    encrypted_reply,
    is_fresh,
    menu_definition,
    paginate,
    parse_xml,
    render,
    signature,
    text_reply,
)

TOKEN = "xiaobao-test-token"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APP_ID = "wx1234567890abcdef"
TIMESTAMP = "1700000000"
NONCE = "42"
PREFIX = b"0123456789abcdef"
MESSAGE = (
    "<xml><ToUserName><![CDATA[gh_xiaobao]]></ToUserName>"
    "<FromUserName><![CDATA[oUser123]]></FromUserName><CreateTime>1700000000</CreateTime>"
    "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content>"
    "<MsgId>1234567890123456</MsgId></xml>"
).encode()
# openssl enc -aes-256-cbc -nopad -K <key hex> -iv <first 16 key bytes hex>, base64.
CIPHERTEXT = (
    "Q3stYC6hdFzMh9T8HCvyDPQbxUbZWjAQYDYTLX3oI3L5xaTup0CiLuKNhTE5b7mnofomdGi46aRSpOlH/KNp+7Zl"
    "7S0GvpGu+zobFZS7oJ9XCKpxFA6+fZX7miz4wrLHn4KDKwBx6xwOfABZXzIZJrVUSyAfjR9iJpEVFxJJ4LuFqv5M"
    "X6GppWoo3zRqcRyvZa4BhKUPs41EiXK0nEq7ratlt6SXS6+BbCxgbtPDcpNi2TKT/f1MxzuN0Q5vNcX9oDeED7yc"
    "yM5PBxjyLeg1jKn5pKbCLXAMSE6WGwFZX4OQTdLfzvsL5E7aJOEND8/O2o9ZTilSvXbGjZnf0iMhpp6BF6oDLtIO"
    "CIJnTyo61f6dVPlqoCzqW/QrfyBVD1++"
)
SIGNATURE = "7c3b4bd6c802d317b1fc6623c3f04e0d4b7ba42d"
MSG_SIGNATURE = "afec2962bbe4ca8f8b0689f137d50d380a4dea64"

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY leak SYSTEM "file:///etc/passwd">]>
<xml><ToUserName>gh</ToUserName><Content>&leak;</Content></xml>"""
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE xml [
 <!ENTITY a "lollollollollollollollollollol">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
 <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
]>
<xml><Content>&g;</Content></xml>"""


def sha1_of_sorted(*values: str) -> str:
    return hashlib.sha1("".join(sorted(values)).encode("utf-8")).hexdigest()


# -- signatures ----------------------------------------------------------------------------
def test_signature_is_sha1_of_the_sorted_values():
    assert signature(TOKEN, TIMESTAMP, NONCE) == SIGNATURE == sha1_of_sorted(
        TOKEN, TIMESTAMP, NONCE)
    assert check_signature(TOKEN, TIMESTAMP, NONCE, SIGNATURE)


@pytest.mark.parametrize("given", ["", "0" * 40, SIGNATURE.upper(), SIGNATURE[:-1], "签名"])
def test_wrong_signatures_are_refused(given):
    assert not check_signature(TOKEN, TIMESTAMP, NONCE, given)


def test_signature_depends_on_every_value():
    assert not check_signature("other-token", TIMESTAMP, NONCE, SIGNATURE)
    assert not check_signature(TOKEN, "1700000001", NONCE, SIGNATURE)
    assert not check_signature(TOKEN, TIMESTAMP, "43", SIGNATURE)


def test_msg_signature_covers_the_encrypted_payload():
    assert sha1_of_sorted(TOKEN, TIMESTAMP, NONCE, CIPHERTEXT) == MSG_SIGNATURE
    assert check_msg_signature(TOKEN, TIMESTAMP, NONCE, CIPHERTEXT, MSG_SIGNATURE)
    assert not check_msg_signature(TOKEN, TIMESTAMP, NONCE, CIPHERTEXT[:-4] + "AAAA",
                                   MSG_SIGNATURE)


@pytest.mark.parametrize(
    ("timestamp", "fresh"),
    [("1700000000", True), ("1700000300", True), ("1699999700", True), ("1700000301", False),
     ("1699999699", False), ("", False), ("abc", False), ("-5", False), ("١٧٠٠٠٠٠٠٠٠", False),
     ("9" * 40, False)],
)
def test_timestamps_more_than_five_minutes_away_are_stale(timestamp, fresh):
    assert is_fresh(timestamp, now=1700000000.0) is fresh


# -- AES -----------------------------------------------------------------------------------
def test_aes_key_is_the_base64_encoding_aes_key():
    assert aes_key_bytes(AES_KEY) == base64.b64decode(AES_KEY + "=")
    assert len(aes_key_bytes(AES_KEY)) == 32
    with pytest.raises(CryptoError):
        aes_key_bytes(AES_KEY[:-3])


def test_encryption_matches_the_openssl_vector():
    assert encrypt(MESSAGE, AES_KEY, APP_ID, prefix=PREFIX) == CIPHERTEXT


def test_decryption_of_the_openssl_vector():
    assert decrypt(CIPHERTEXT, AES_KEY, APP_ID) == MESSAGE


def test_round_trip_with_random_prefix_and_padding_to_32_bytes():
    for size in range(0, 70):
        message = ("消" * size).encode("utf-8")
        first, second = encrypt(message, AES_KEY, APP_ID), encrypt(message, AES_KEY, APP_ID)
        assert first != second  # a fresh random prefix every time
        assert len(base64.b64decode(first)) % 32 == 0
        assert decrypt(first, AES_KEY, APP_ID) == message


def test_payload_for_another_app_is_refused():
    sealed = encrypt(MESSAGE, AES_KEY, "wx0000000000000000", prefix=PREFIX)
    with pytest.raises(CryptoError, match="app id"):
        decrypt(sealed, AES_KEY, APP_ID)


@pytest.mark.parametrize(
    "payload",
    ["not base64!!", "", base64.b64encode(b"x" * 15).decode(),
     base64.b64encode(b"\x00" * 32).decode(), CIPHERTEXT[:-24] + "A" * 22 + "=="],
)
def test_garbled_payloads_raise_crypto_error(payload):
    with pytest.raises(CryptoError):
        decrypt(payload, AES_KEY, APP_ID)


# -- XML -----------------------------------------------------------------------------------
def test_parse_reads_the_message_fields():
    fields = parse_xml(MESSAGE)
    assert fields == {"ToUserName": "gh_xiaobao", "FromUserName": "oUser123",
                      "CreateTime": "1700000000", "MsgType": "text", "Content": "你好",
                      "MsgId": "1234567890123456"}


@pytest.mark.parametrize(
    "body",
    [XXE, BILLION_LAUGHS, b"<xml><Content>unclosed</xml>", b"", b"   ", b"not xml at all",
     b"<other><Content>x</Content></other>", b"\xff\xfe<xml/>",
     b'<!DOCTYPE xml SYSTEM "http://127.0.0.1:9/evil.dtd"><xml/>'],
)
def test_unacceptable_xml_raises_bad_xml_without_expanding_anything(body):
    with pytest.raises(BadXml):
        parse_xml(body)


def test_cdata_splits_the_terminator_and_drops_forbidden_characters():
    tricky = "a]]>b<c>&d\x00\x07e"
    assert cdata(tricky) == "<![CDATA[a]]]]><![CDATA[>b<c>&de]]>"
    assert ET.fromstring(f"<x>{cdata(tricky)}</x>").text == "a]]>b<c>&de"


def test_text_reply_is_the_passive_reply_format():
    xml = text_reply("oUser123", "gh_xiaobao", 1700000000, "答]]>案 <b>")
    root = ET.fromstring(xml)
    assert root.tag == "xml"
    assert {child.tag: child.text for child in root} == {
        "ToUserName": "oUser123", "FromUserName": "gh_xiaobao", "CreateTime": "1700000000",
        "MsgType": "text", "Content": "答]]>案 <b>"}


def test_encrypted_reply_is_signed_and_decrypts_to_the_reply():
    inner = text_reply("oUser123", "gh_xiaobao", 1700000000, "您好")
    sealed = encrypt(inner.encode("utf-8"), AES_KEY, APP_ID)
    envelope = {child.tag: child.text for child in ET.fromstring(
        encrypted_reply(TOKEN, sealed, TIMESTAMP, NONCE))}
    assert envelope["Encrypt"] == sealed
    assert envelope["MsgSignature"] == sha1_of_sorted(TOKEN, TIMESTAMP, NONCE, sealed)
    assert envelope["TimeStamp"] == TIMESTAMP and envelope["Nonce"] == NONCE
    assert decrypt(envelope["Encrypt"], AES_KEY, APP_ID).decode("utf-8") == inner


def test_delivery_key_is_msg_id_else_sender_time_and_event():
    assert delivery_key({"MsgId": "123", "FromUserName": "u"}) == "msg:123"
    event = {"FromUserName": "oUser", "CreateTime": "1700000000", "Event": "CLICK",
             "EventKey": "help"}
    assert delivery_key(event) == "event:oUser:1700000000:CLICK:help"
    assert delivery_key({**event, "EventKey": "topics"}) != delivery_key(event)
    long_key = delivery_key({**event, "FromUserName": "u" * 200})
    assert len(long_key) <= 128 and long_key.startswith("sha256:")


# -- rendering -----------------------------------------------------------------------------
def test_buttons_become_numbered_lines_in_the_engines_order():
    text = render([
        Reply("第一条", (Button("甲", "a"),)),
        Reply("第二条", (Button("乙", "b"), Button("丙", "c"))),
    ])
    assert text == "第一条\n\n第二条\n\n回复 1 甲\n回复 2 乙\n回复 3 丙"


def test_short_answers_are_one_page():
    assert paginate("一句话。") == ["一句话。"]
    exactly = "好" * (PASSIVE_TEXT_LIMIT_BYTES // 3)
    assert paginate(exactly) == [exactly]


def test_long_answers_are_cut_at_sentences_within_the_byte_limit():
    sentences = [f"第{i}句话讲的是防范电信诈骗的一个要点，请您记牢。" for i in range(200)]
    text = "".join(sentences)
    pages = paginate(text)
    assert len(pages) > 1
    for page in pages:
        assert len(page.encode("utf-8")) <= PASSIVE_TEXT_LIMIT_BYTES
    for page in pages[:-1]:
        body, hint = page.rsplit("\n\n", 1)
        assert hint == MORE_HINT
        assert body.endswith("。")
    assert "".join(page.removesuffix("\n\n" + MORE_HINT) for page in pages) == text


def test_text_without_punctuation_is_still_cut_within_the_limit():
    pages = paginate("字" * 3000, limit=600)
    assert all(len(page.encode("utf-8")) <= 600 for page in pages)
    assert sum(page.count("字") for page in pages) == 3000


def test_cut_keeps_a_closing_quote_with_its_sentence():
    text = "他说：“不要转账。”" * 200
    for page in paginate(text, limit=500)[:-1]:
        assert page.removesuffix("\n\n" + MORE_HINT).endswith("。”")


WHITESPACE = re.compile(r"\s")
answers = st.one_of(
    st.text(max_size=3000),
    st.lists(st.sampled_from(["请您记牢", "。", "！", "，", "“", "”", "\n", " ", "🙂", "a",
                              "防范电信诈骗", "]]>"]), max_size=800).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(text=answers, limit=st.integers(min_value=120, max_value=PASSIVE_TEXT_LIMIT_BYTES))
def test_any_answer_is_paged_within_the_limit_and_nothing_is_lost(text, limit):
    pages = paginate(text, limit=limit)
    assert all(len(page.encode("utf-8")) <= limit for page in pages)
    assert all(page.endswith("\n\n" + MORE_HINT) for page in pages[:-1])
    kept = "".join(page.removesuffix("\n\n" + MORE_HINT) for page in pages)
    assert WHITESPACE.sub("", kept) == WHITESPACE.sub("", text)


@settings(max_examples=300, deadline=None)
@given(content=st.text(max_size=300), sender=st.text(min_size=1, max_size=60))
def test_any_reply_text_survives_the_passive_reply_xml(content, sender):
    """What XML cannot carry is dropped and line ends are normalised, as any XML parser
    (WeChat's too) would; everything else arrives as written."""
    root = ET.fromstring(text_reply(sender, "gh_xiaobao", 1700000000, content))

    def as_parsed(text: str) -> str:
        return XML_INVALID.sub("", text).replace("\r\n", "\n").replace("\r", "\n")

    assert root.findtext("Content") == as_parsed(content)
    assert root.findtext("ToUserName") == as_parsed(sender)


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                      st.text(max_size=100).map(lambda t: f"<xml>{t}</xml>".encode())))
def test_parse_xml_returns_fields_or_refuses_with_bad_xml(body):
    try:
        fields = parse_xml(body)
    except BadXml as refusal:
        assert str(refusal)
    else:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())


# -- custom menu ---------------------------------------------------------------------------
def test_default_menu_definition():
    assert menu_definition(Config().wechat.menu) == {"button": [
        {"type": "click", "name": "问一问", "key": "topics"},
        {"type": "click", "name": "防诈骗", "key": "check"},
        {"name": "投诉与帮助", "sub_button": [
            {"type": "click", "name": "我要投诉", "key": "complaint"},
            {"type": "click", "name": "查进度", "key": "status"},
            {"type": "click", "name": "使用帮助", "key": "help"},
        ]},
    ]}


def test_menu_addresses_become_view_buttons():
    assert menu_definition(["官网=https://example.org/a?b=c"]) == {"button": [
        {"type": "view", "name": "官网", "url": "https://example.org/a?b=c"}]}


@pytest.mark.parametrize(
    "items",
    [[], ["a=1", "b=2", "c=3", "d=4"], [f"组/项{i}=x" for i in range(6)],
     ["这个菜单名字实在是太长了=x"], ["没有动作"], ["空动作="], ["=menu"]],
)
def test_menus_wechat_would_refuse_are_menu_errors(items):
    with pytest.raises(MenuError):
        menu_definition(items)
