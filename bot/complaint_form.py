"""The complaint form, as data: an ordered list of fields with prompts, choices, validators.

The dialogue asks for the first missing field, so adding, removing or reordering a
question is an edit here, not in the dialogue logic.  Consent comes before any personal
data is asked for (PIPL): without it nothing personal is collected.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot import validators
from bot.complaint_records import RELATIONSHIPS
from bot.privacy import mask_id_number, mask_phone
from bot.validators import Invalid
from classifiers.institutions import Directory

SKIP = "__skip__"
OTHER_INSTITUTION = "__other__"
WISHES = ("退款", "赔付", "道歉", "解释说明", "其他")
WHEN = ("今天", "最近一周内", "最近一个月内", "一个月以前")


@dataclass(frozen=True)
class Choice:
    """A button of a field: what it says and the value it stores."""

    label: str
    value: str


@dataclass(frozen=True)
class FormContext:
    """What validators may consult besides the typed text."""

    directory: Directory
    values: dict[str, Any]


@dataclass(frozen=True)
class FormField:
    """One question of the complaint form."""

    name: str
    title: str
    prompt: Callable[[FormContext], str]
    clean: Callable[[str, FormContext], Any]
    choices: Callable[[FormContext], tuple[Choice, ...]] = lambda _ctx: ()
    optional: bool = False
    personal: bool = False
    show: Callable[[Any, FormContext], str] = field(default=lambda value, _ctx: str(value))


# -- the story ------------------------------------------------------------------------
def _story_prompt(_ctx: FormContext) -> str:
    return ("好的，我来帮您投诉。请先用自己的话说说发生了什么：是哪家银行或保险公司、"
            "什么时候、遇到了什么问题、损失了多少。写多写少都可以，一条消息发过来就行。")


def _clean_story(text: str, _ctx: FormContext) -> str:
    return validators.free_text(text, minimum=6, maximum=5000)


# -- the institution --------------------------------------------------------------------
def _institution_prompt(ctx: FormContext) -> str:
    suggested = ctx.values.get("suggested_institution")
    institution = ctx.directory.get(suggested) if suggested else None
    if institution is not None:
        return f"您要投诉的是“{institution.name}”，对吗？"
    return ("请告诉我您要投诉哪家银行或保险公司（比如：工商银行、平安车险、中国人寿）。"
            "如果不清楚是哪一家，请点下面的按钮。")


def _institution_choices(ctx: FormContext) -> tuple[Choice, ...]:
    suggested = ctx.values.get("suggested_institution")
    options = ctx.values.get("institution_options") or []
    if options:
        named = [ctx.directory.get(i) for i in options]
        return tuple(Choice(i.short, i.id) for i in named if i)
    if suggested and ctx.directory.get(suggested):
        return (Choice("对，是这家", suggested), Choice("不是，换一家", OTHER_INSTITUTION))
    return (Choice("不清楚是哪家银行", "assoc-bank"),
            Choice("不清楚是哪家保险公司", "assoc-insurance"))


def _clean_institution(text: str, ctx: FormContext) -> str:
    value = text.strip()
    if value == OTHER_INSTITUTION:
        raise NeedsInput("好的，那请告诉我是哪家银行或保险公司：", {
            "suggested_institution": None, "institution_options": []})
    if ctx.directory.get(value):
        return value
    suggested = ctx.values.get("suggested_institution")
    if value in {"对", "是", "是的", "对的", "没错", "嗯"} and suggested:
        return str(suggested)
    folded = value.lower()
    if folded in ctx.directory.ambiguous:
        context = ctx.directory.context_sector(f"{ctx.values.get('story', '')} {value}")
        candidates = [ctx.directory.get(c) for c in ctx.directory.ambiguous[folded]]
        matching = [c for c in candidates if c and c.sector == context]
        if len(matching) == 1:
            return matching[0].id
        raise NeedsInput("请问是下面哪一家？", {
            "institution_options": [c.id for c in candidates if c]})
    hits = ctx.directory.search(value)
    if len(hits) == 1:
        return hits[0].id
    if hits:
        raise NeedsInput("找到几家名字相近的，请问是哪一家？", {
            "institution_options": [h.id for h in hits]})
    raise Invalid("没有找到这家机构。请写出银行或保险公司的名称，比如“建设银行”“人保财险”；"
                  "不清楚的话点下面的按钮。")


def _show_institution(value: Any, ctx: FormContext) -> str:
    institution = ctx.directory.get(str(value))
    if institution is None:
        return str(value)
    if institution.is_association:
        return f"不清楚具体机构（转{institution.name}）"
    return institution.name


class NeedsInput(Invalid):
    """Not a value yet, but a narrower question (with state to remember for it)."""

    def __init__(self, message: str, remember: dict[str, Any]) -> None:
        super().__init__(message)
        self.remember = remember


# -- the rest -------------------------------------------------------------------------
def _clean_choice_or_text(options: tuple[str, ...], maximum: int) -> Callable[
        [str, FormContext], str]:
    def clean(text: str, _ctx: FormContext) -> str:
        value = text.strip()
        return value if value in options else validators.free_text(value, 1, maximum)
    return clean


def _clean_consent(text: str, _ctx: FormContext) -> str:
    value = re.sub(r"[\s。！!，,]", "", text)
    if value in {"yes", "同意", "我同意", "同意的", "好", "好的", "可以", "行", "中", "是"}:
        return "yes"
    if value in {"no", "不同意", "我不同意", "不", "不要", "不行", "不可以", "拒绝"}:
        return "no"
    raise Invalid("请点“同意”或“不同意”：")


def _consent_prompt(_ctx: FormContext) -> str:
    return ("在留下联系方式之前，请您了解：\n"
            "为了处理这次投诉，我们需要您的姓名和手机号（身份证号可以不填）。这些信息只会交给"
            "被投诉的机构及其所在的行业协会、监管部门用于处理这件投诉，不会用于营销，也不会给"
            "其他人。投诉办结后按规定保存，您可以随时撤回投诉。\n"
            "您同意吗？")


def _clean_relationship(text: str, _ctx: FormContext) -> str:
    value = text.strip()
    if value in {"self", "proxy", "heir"}:
        return value
    if re.search(r"本人|自己|我自己", value):
        return "self"
    if re.search(r"继承|去世|过世|走了|遗属", value):
        return "heir"
    if re.search(r"代|替|帮|家人|父|母|爸|妈|朋友|亲戚", value):
        return "proxy"
    raise Invalid("请点选下面的一项：")


def _skip_or(clean: Callable[[str], str]) -> Callable[[str, FormContext], str | None]:
    def wrapped(text: str, _ctx: FormContext) -> str | None:
        value = text.strip()
        if value in {SKIP, "跳过", "不填", "没有", "不想填"}:
            return None
        return clean(value)
    return wrapped


def _fixed(text: str) -> Callable[[FormContext], str]:
    return lambda _ctx: text


FIELDS: tuple[FormField, ...] = (
    FormField("story", "事情经过", _story_prompt, _clean_story,
              show=lambda v, _c: str(v) if len(str(v)) <= 80 else str(v)[:80] + "…"),
    FormField("institution", "被投诉机构", _institution_prompt, _clean_institution,
              choices=_institution_choices, show=_show_institution),
    FormField("occurred", "发生时间",
              _fixed("这件事大概是什么时候发生的？可以点按钮，也可以直接写日期。"),
              _clean_choice_or_text(WHEN, 200),
              choices=lambda _c: tuple(Choice(w, w) for w in WHEN)),
    FormField("wish", "您的诉求", _fixed("您希望机构怎么解决？可以点按钮，也可以直接写。"),
              _clean_choice_or_text(WISHES, 500),
              choices=lambda _c: tuple(Choice(w, w) for w in WISHES)),
    FormField("consent", "个人信息授权", _consent_prompt, _clean_consent,
              choices=lambda _c: (Choice("同意", "yes"), Choice("不同意", "no")),
              show=lambda v, _c: "已同意" if v == "yes" else "不同意"),
    FormField("name", "姓名", _fixed("请问您怎么称呼？请输入您的姓名："),
              lambda text, _c: validators.person_name(text), personal=True),
    FormField("phone", "手机号", _fixed("请输入您的手机号码（11位），机构会用它联系您："),
              lambda text, _c: validators.mobile_number(text), personal=True,
              show=lambda v, _c: mask_phone(str(v))),
    FormField("id_number", "身份证号", _fixed(
        "如果方便，可以留下身份证号，便于机构核实身份；不想填请点“跳过”。"),
              _skip_or(validators.id_number), optional=True, personal=True,
              choices=lambda _c: (Choice("跳过", SKIP),),
              show=lambda v, _c: mask_id_number(str(v)) if v else "未填写"),
    FormField("relationship", "投诉人身份", _fixed(
        "您是为自己投诉，还是替别人投诉？（可以替家人、朋友投诉，也可以作为继承人投诉）"),
              _clean_relationship,
              choices=lambda _c: (Choice("为我自己", "self"), Choice("替家人或朋友", "proxy"),
                                  Choice("当事人已去世，我是继承人", "heir")),
              show=lambda v, _c: RELATIONSHIPS.get(str(v), str(v))),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}
PERSONAL_FIELDS = tuple(f.name for f in FIELDS if f.personal)


def next_field(values: dict[str, Any]) -> FormField | None:
    """The first field without a value (None when the form is complete)."""
    return next((f for f in FIELDS if f.name not in values), None)


def field_named(text: str) -> FormField | None:
    """The field a consumer means by "修改 手机号" and the like."""
    wanted = text.strip()
    for form_field in FIELDS:
        if form_field.name == wanted or form_field.title in wanted or wanted in form_field.title:
            return form_field
    aliases = {"电话": "phone", "手机": "phone", "名字": "name", "时间": "occurred",
               "机构": "institution", "银行": "institution", "诉求": "wish", "经过": "story",
               "身份证": "id_number", "身份": "relationship"}
    return next((FIELD_BY_NAME[n] for k, n in aliases.items() if k in wanted), None)
