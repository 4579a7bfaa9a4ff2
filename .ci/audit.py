"""Dependency audit: `pip-audit` over the installed environment, read and judged plainly.

Run by `make audit` (part of `make test`) with the virtualenv's Python.  pip-audit asks a
vulnerability service about every installed distribution (the editable xiaobao itself is
skipped).  Its own summary says "No known vulnerabilities found" even when the service
could look up nothing at all, so this script reads its JSON report and says which case it
is:

- vulnerabilities found: each is listed with its fix versions, exit 1 (the build fails);
- every dependency audited, none vulnerable: exit 0;
- the service could not be reached or knew none of the packages (so no audit took place),
  or only some packages were audited: a loud WARNING and exit 0, because on machines whose
  network reaches only package indexes this is always the case and says nothing about the
  code.  `XIAOBAO_AUDIT_STRICT=1` turns that warning into a failure for machines that can
  reach the service.  See docs/limits.md.

The PyPI JSON service is tried first, then OSV.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SERVICES = ("pypi", "osv")
TIMEOUT_SECONDS = 300
STRICT_ENV = "XIAOBAO_AUDIT_STRICT"


def run_pip_audit(service: str) -> tuple[dict[str, Any] | None, str]:
    """pip-audit's JSON report with one service, or None and the reason it gave none."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "audit.json"
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pip_audit", "--skip-editable", "--progress-spinner",
                 "off", "--vulnerability-service", service, "--format", "json",
                 "--output", str(report)],
                capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            return None, f"no answer within {TIMEOUT_SECONDS} s"
        if report.exists() and report.stat().st_size:
            return json.loads(report.read_text(encoding="utf-8")), ""
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return None, lines[-1] if lines else f"pip-audit exited {done.returncode}"


def judge(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                           list[dict[str, Any]]]:
    """Split the report's dependencies into (audited, vulnerable, skipped)."""
    dependencies = report.get("dependencies", [])
    audited = [dep for dep in dependencies if "vulns" in dep]
    vulnerable = [dep for dep in audited if dep["vulns"]]
    skipped = [dep for dep in dependencies
               if "skip_reason" in dep and "editable" not in dep["skip_reason"]]
    return audited, vulnerable, skipped


def main() -> int:
    """Audit, print one clear verdict, and return the exit status."""
    strict = os.environ.get(STRICT_ENV) == "1"
    reasons = []
    best: tuple[str, dict[str, Any]] | None = None
    for service in SERVICES:
        report, reason = run_pip_audit(service)
        if report is None:
            reasons.append(f"{service}: {reason}")
            continue
        audited, _, skipped = judge(report)
        if audited:
            best = (service, report)
            if not skipped:
                break
        elif skipped:
            reasons.append(f"{service}: {skipped[0]['skip_reason']} "
                           f"(and {len(skipped) - 1} more like it)")
    if best is None:
        print("audit: WARNING: no dependency could be audited; the vulnerability services "
              "are out of reach from this machine:")
        for reason in reasons:
            print(f"audit:   {reason}")
        print("audit: this is NOT a clean audit. Run `make audit` where the services can "
              f"be reached ({STRICT_ENV}=1 makes this a failure).")
        return 1 if strict else 0
    service, report = best
    audited, vulnerable, skipped = judge(report)
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed version yet"
            print(f"audit: VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} "
                  f"(fixed in {fixes})")
    print(f"audit: {len(audited)} dependencies audited with {service}, "
          f"{len(vulnerable)} vulnerable, {len(skipped)} not audited")
    if skipped:
        names = ", ".join(dep["name"] for dep in skipped[:10])
        print(f"audit: WARNING: not audited: {names}{' ...' if len(skipped) > 10 else ''}")
    if vulnerable:
        return 1
    return 1 if strict and skipped else 0


if __name__ == "__main__":
    sys.exit(main())
