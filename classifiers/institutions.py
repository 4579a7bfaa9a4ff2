"""The institution directory and resolving what consumers call an institution.

People say 工行, 建行APP, ICBC, 平安的车险 or 人保: the directory lists every institution with
its canonical Chinese name, sector and the aliases people use; short forms that name more
than one institution (平安, 太平洋, 国寿) are listed separately and resolved from context
(car insurance → the property insurer, annuities → the life insurer).
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import yaml

DIRECTORY_FILE = Path(__file__).parent / "data" / "institutions.yaml"
SPEC_FILE = Path(__file__).parent / "complaints.toml"

# Words that tell which sector a mention belongs to when the name alone does not.
SECTOR_CONTEXT = {
    "property": re.compile(r"车险|交强险|商业险|定损|车损|出险|撞|剐蹭|追尾|车子|车辆|家财险|财产险|"
                           r"企财险|货运险|责任险|好车主|理赔员.{0,6}车|修车|4s店"),
    "life": re.compile(r"寿险|重疾|年金|分红|万能|养老保险|医疗险|意外险|健康险|终身|保单|犹豫期|"
                       r"退保|现金价值|业务员|代理人|满期|护理险|教育金|增额"),
    "bank": re.compile(r"银行|信用卡|储蓄卡|借记卡|存款|贷款|房贷|网点|柜台|柜员|手机银行|网银|"
                       r"转账|取款|atm|理财经理|客户经理|年费|征信"),
}
# Everyday words that are only institution names with financial context nearby.
NEEDS_CONTEXT = {"民生": "bank", "大地": "property", "太平": None, "人寿": None}


@dataclass(frozen=True)
class Institution:
    """One institution (or association queue) of the directory."""

    id: str
    name: str
    short: str
    sector: str
    kind: str
    aliases: tuple[str, ...]
    hotline: str | None = None
    branches: int | None = None  # outlets in the city, where the directory gives them

    @property
    def is_association(self) -> bool:
        """Associations take complaints naming no institution, and urgent copies."""
        return self.kind == "association"


@dataclass(frozen=True)
class Mention:
    """An institution named in a text, and where."""

    institution: Institution
    surface: str
    position: int


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def _branches(raw: dict[str, object], path: Path) -> int | None:
    """The optional `branches:` count of one entry: a positive whole number, or absent."""
    value = raw.get("branches")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{path}: {raw['id']} has branches {value!r}; expected a positive "
                         "whole number")
    return value


class Directory:
    """Institutions by id, with alias resolution; read once, then only queried."""

    def __init__(self, institutions: list[Institution], ambiguous: dict[str, list[str]]) -> None:
        self.institutions = {i.id: i for i in institutions}
        self.ambiguous = {_fold(k): list(v) for k, v in ambiguous.items()}
        surfaces: dict[str, str] = {}
        for institution in institutions:
            for surface in (institution.name, institution.short, *institution.aliases):
                surfaces.setdefault(_fold(surface), institution.id)
        self._surfaces = surfaces
        every = sorted({*surfaces, *self.ambiguous}, key=len, reverse=True)
        parts = []
        for surface in every:
            escaped = re.escape(surface)
            # ASCII names (ICBC, CCB, ABC) must stand alone, not inside other words or links.
            parts.append(rf"(?<![a-z0-9]){escaped}(?![a-z0-9])" if surface.isascii() else escaped)
        self._pattern = re.compile("|".join(parts))

    @classmethod
    def load(cls, path: Path = DIRECTORY_FILE) -> Directory:
        """Read the YAML directory and check its sectors against complaints.toml."""
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        sectors = {s["id"] for s in tomllib.loads(SPEC_FILE.read_text("utf-8"))["sector"]}
        institutions = []
        for raw in document["institutions"]:
            if raw["sector"] not in sectors:
                raise ValueError(f"{path}: {raw['id']} has unknown sector {raw['sector']}")
            institutions.append(Institution(
                id=raw["id"], name=raw["name"], short=raw.get("short", raw["name"]),
                sector=raw["sector"], kind=raw.get("kind", "institution"),
                aliases=tuple(str(a) for a in raw.get("aliases", ())),
                hotline=str(raw["hotline"]) if raw.get("hotline") else None,
                branches=_branches(raw, path),
            ))
        return cls(institutions, document.get("ambiguous", {}))

    def get(self, institution_id: str) -> Institution | None:
        """The institution with this id, if any."""
        return self.institutions.get(institution_id)

    def association_for(self, sector: str | None) -> Institution:
        """The association queue of a sector (insurance covers life and property)."""
        return self.institutions["assoc-bank" if sector in (None, "bank") else "assoc-insurance"]

    def members(self, sector: str | None = None) -> list[Institution]:
        """Institutions (not associations), optionally of one sector, in directory order."""
        return [i for i in self.institutions.values()
                if not i.is_association and (sector is None or i.sector == sector)]

    def context_sector(self, text: str) -> str | None:
        """The sector the words of a text point to, if they point anywhere."""
        folded = _fold(text)
        hits = {sector: len(p.findall(folded)) for sector, p in SECTOR_CONTEXT.items()}
        best = max(hits, key=hits.__getitem__)
        return best if hits[best] else None

    def mentions(self, text: str) -> list[Mention]:
        """Every institution named in the text, resolving ambiguous short forms by context."""
        folded = _fold(text)
        found: list[Mention] = []
        context = None
        for match in self._pattern.finditer(folded):
            surface = match.group(0)
            institution_id = self._surfaces.get(surface)
            if institution_id is None:
                if context is None:
                    context = self.context_sector(folded) or ""
                institution_id = self._resolve_ambiguous(surface, context)
                if institution_id is None:
                    continue
            found.append(Mention(self.institutions[institution_id], surface, match.start()))
        return found

    def _resolve_ambiguous(self, surface: str, context: str) -> str | None:
        """Pick among the candidates of a short form by the sector its context points to."""
        candidates = [self.institutions[c] for c in self.ambiguous[surface]
                      if c in self.institutions]
        if surface in NEEDS_CONTEXT:
            required = NEEDS_CONTEXT[surface]
            if not context or (required is not None and context != required):
                return None
        for candidate in candidates:
            if candidate.sector == context:
                return candidate.id
        return candidates[0].id if candidates else None

    def resolve(self, text: str) -> Institution | None:
        """The institution a complaint is about: the first member named (None if none).

        Associations are where complaints go, never what they are about.
        """
        members = [m for m in self.mentions(text) if not m.institution.is_association]
        return members[0].institution if members else None

    def search(self, query: str, limit: int = 5) -> list[Institution]:
        """Institutions whose names or aliases contain the query (for a typed choice)."""
        resolved = self.resolve(query)
        if resolved is not None:
            return [resolved]
        folded = _fold(query).strip()
        if not folded:
            return []
        hits = [i for i in self.institutions.values()
                if any(folded in _fold(s) for s in (i.name, i.short, *i.aliases))]
        return hits[:limit]
