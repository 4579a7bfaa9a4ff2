"""The complaint codes of complaints.toml (sector, business line, cause) with their names.

Reports, charts and exports show the stable ids next to the Chinese names, so the
regulator's own statistics can join on the ids while people read the names.  The file is
read once by whoever needs it and passed on; nothing is cached at import time.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from classifiers.institutions import SPEC_FILE

SECTOR_ORDER = ("bank", "life", "property")
SHORT_SECTOR_NAMES = {"bank": "银行", "life": "人身险", "property": "财产险"}


@dataclass(frozen=True)
class ComplaintCodes:
    """Ids and Chinese names of sectors, business lines and causes, in file order."""

    sectors: dict[str, str]
    business: dict[str, str]
    causes: dict[str, str]

    @classmethod
    def load(cls, path: Path = SPEC_FILE) -> ComplaintCodes:
        """Read complaints.toml (the classification the whole project shares)."""
        document = tomllib.loads(path.read_text(encoding="utf-8"))

        def table(name: str) -> dict[str, str]:
            return {str(item["id"]): str(item["zh"]) for item in document[name]}

        return cls(sectors=table("sector"), business=table("business"), causes=table("cause"))

    def sector_name(self, sector: str | None) -> str:
        """The short Chinese name of a sector (银行, 人身险, 财产险), or the id if unknown."""
        if sector is None:
            return "未分类"
        return SHORT_SECTOR_NAMES.get(sector) or self.sectors.get(sector, sector)

    def business_name(self, business: str) -> str:
        """The Chinese name of a business line id (the id itself if unknown)."""
        return self.business.get(business, business)

    def cause_name(self, cause: str) -> str:
        """The Chinese name of a cause id (the id itself if unknown)."""
        return self.causes.get(cause, cause)
