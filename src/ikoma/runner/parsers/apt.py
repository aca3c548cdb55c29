"""Parsers for apt output: simulated upgrades, holds, important messages, reboot flag.

Everything here is a pure function of text, except :func:`reboot_required`, which reads
two well-known files under an explicit root so tests can point it at a fixture tree.

The machine-readable part of ``apt-get -s`` (``Inst``/``Conf``/``Remv`` lines) is never
translated, so upgrades are always taken from those lines.  The section headers (kept back,
phased, ...) *are* translated; we recognise the English, French and German wording (taken
verbatim from apt's own catalogues) and report any other header in ``unrecognizedSections``
rather than guessing.  Runners should still run apt with ``LC_ALL=C`` when they can.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, TypedDict


class AptOrigin(TypedDict):
    origin: str
    version: str
    suite: str


class AptUpgrade(TypedDict):
    package: str
    fromVersion: str | None
    toVersion: str
    arch: str | None
    origin: str | None
    suite: str | None
    origins: list[AptOrigin]
    security: bool


class AptRemoval(TypedDict):
    package: str
    version: str | None
    purge: bool


class AptCounts(TypedDict):
    upgradable: int
    security: int
    newInstalls: int
    removals: int
    keptBack: int
    phased: int
    notUpgraded: int | None


class AptSimulation(TypedDict):
    upgrades: list[AptUpgrade]
    newInstalls: list[AptUpgrade]
    removals: list[AptRemoval]
    keptBack: list[str]
    phased: list[str]
    heldChanged: list[str]
    counts: AptCounts
    unrecognizedSections: list[str]


Category = Literal["error", "warning", "future_major_change"]
Severity = Literal["error", "warning", "info"]


class ImportantLine(TypedDict):
    category: Category
    severity: Severity
    message: str
    packageName: str | None
    occurrences: int
    firstLine: int


class RebootStatus(TypedDict):
    required: bool
    packages: list[str]


# ``Inst pkg [old] (new Origin:Ver/suite, Origin2:Ver/suite [arch]) [broken-by]``.
# The old-version bracket is absent for new installs; the trailing bracket lists packages
# whose ordering forced this step and carries no meaning for a report.
_INST_RE = re.compile(
    r"^Inst (?P<pkg>\S+)"
    r"(?: \[(?P<from>[^\]]*)\])?"
    r" \((?P<to>\S+)(?: (?P<origins>.*?))? \[(?P<arch>[^\]]+)\]\)"
    r"(?: \[.*\])?\s*$"
)
# Very old apt or local .deb files can lack origin/arch; accept ``Inst pkg [old] (new)``.
_INST_BARE_RE = re.compile(r"^Inst (?P<pkg>\S+)(?: \[(?P<from>[^\]]*)\])? \((?P<to>[^\s)]+)[^)]*\)")
_REMV_RE = re.compile(r"^(?P<verb>Remv|Purg) (?P<pkg>\S+)(?: \[(?P<ver>[^\]]*)\])?")
_ORIGIN_RE = re.compile(r"^(?P<origin>[^:]+):(?P<version>[^/]*)/(?P<suite>.+)$")

# Section headers as printed by apt 2.x, in C, fr and de (copied from apt.mo so they match
# byte for byte once non-breaking spaces are normalised).  Keys are our section names.
_SECTION_HEADERS: dict[str, tuple[str, ...]] = {
    "keptBack": (
        "The following packages have been kept back:",
        "Les paquets suivants ont été conservés :",
        "Die folgenden Pakete sind zurückgehalten worden:",
    ),
    "phased": (
        # apt has not translated this string in fr/de yet; listed once is enough.
        "The following upgrades have been deferred due to phasing:",
    ),
    "heldChanged": (
        "The following held packages will be changed:",
        "Les paquets retenus suivants seront changés :",
        "Die folgenden zurückgehaltenen Pakete werden verändert:",
    ),
    # Known-but-ignored sections: the Inst/Remv lines already carry this information.
    "ignored": (
        "The following packages will be upgraded:",
        "Les paquets suivants seront mis à jour :",
        "Die folgenden Pakete werden aktualisiert (Upgrade):",
        "The following NEW packages will be installed:",
        "Les NOUVEAUX paquets suivants seront installés :",
        "Die folgenden NEUEN Pakete werden installiert:",
        "The following packages will be REMOVED:",
        "Les paquets suivants seront ENLEVÉS :",
        "Die folgenden Pakete werden ENTFERNT:",
        "The following packages will be DOWNGRADED:",
        "Les paquets suivants seront mis à une VERSION INFÉRIEURE :",
        "Die folgenden Pakete werden durch eine ÄLTERE VERSION ERSETZT (Downgrade):",
        "The following additional packages will be installed:",
        "Les paquets supplémentaires suivants seront installés :",
        "Die folgenden zusätzlichen Pakete werden installiert:",
        "The following packages were automatically installed and are no longer required:",
    ),
}
_HEADER_TO_SECTION = {
    " ".join(header.split()): section for section, headers in _SECTION_HEADERS.items() for header in headers
}

# "N upgraded, N newly installed, N to remove and N not upgraded." in C, fr and de; only the
# fourth number is not derivable from the Inst/Remv lines.
_SUMMARY_RES = (
    re.compile(r"^(\d+) upgraded, (\d+) newly installed, (\d+) to remove and (\d+) not upgraded\."),
    re.compile(r"^(\d+) mis à jour, (\d+) nouvellement installés, (\d+) à enlever et (\d+) non mis à jour\."),
    re.compile(
        r"^(\d+) aktualisiert, (\d+) neu installiert, (\d+) zu entfernen und (\d+) nicht aktualisiert\."
    ),
)


def _normalise(line: str) -> str:
    # French typography puts a no-break space before ':'; collapse all whitespace runs.
    return " ".join(line.replace("\u00a0", " ").split())


def _parse_origins(raw: str | None) -> list[AptOrigin]:
    origins: list[AptOrigin] = []
    if not raw:
        return origins
    for part in raw.split(", "):
        part = part.strip()
        match = _ORIGIN_RE.match(part)
        if match:
            origins.append(AptOrigin(origin=match["origin"], version=match["version"], suite=match["suite"]))
        elif part:
            # e.g. a local repository without Release metadata: keep the text as the origin.
            origins.append(AptOrigin(origin=part, version="", suite=""))
    return origins


def _is_security(origins: list[AptOrigin]) -> bool:
    # Debian: "Debian-Security:12/stable-security"; Ubuntu: "Ubuntu:22.04/jammy-security".
    return any("-security" in o["origin"].lower() or "-security" in o["suite"].lower() for o in origins)


def _parse_inst(line: str) -> AptUpgrade | None:
    match = _INST_RE.match(line)
    if match:
        origins = _parse_origins(match["origins"])
        security = _is_security(origins)
        # When the same version is published by several origins, report the security one:
        # that is the fact an operator triages on.
        primary = next((o for o in origins if _is_security([o])), None) if security else None
        if primary is None and origins:
            primary = origins[0]
        return AptUpgrade(
            package=match["pkg"],
            fromVersion=match["from"] or None,
            toVersion=match["to"],
            arch=match["arch"],
            origin=primary["origin"] if primary else None,
            suite=(primary["suite"] or None) if primary else None,
            origins=origins,
            security=security,
        )
    bare = _INST_BARE_RE.match(line)
    if bare:
        return AptUpgrade(
            package=bare["pkg"],
            fromVersion=bare["from"] or None,
            toVersion=bare["to"],
            arch=None,
            origin=None,
            suite=None,
            origins=[],
            security=False,
        )
    return None


def parse_simulated_upgrade(text: str) -> AptSimulation:
    """Parse ``apt-get -s [dist-]upgrade`` output into pending upgrades, kept back and phased packages."""
    upgrades: list[AptUpgrade] = []
    new_installs: list[AptUpgrade] = []
    removals: list[AptRemoval] = []
    sections: dict[str, list[str]] = {"keptBack": [], "phased": [], "heldChanged": []}
    unrecognized: list[str] = []
    not_upgraded: int | None = None
    current: str | None = None

    for raw_line in text.splitlines():
        line = raw_line.rstrip()
        if not line:
            current = None
            continue
        # Package lists under a header are the only indented lines apt prints here.
        if line[0] in " \t":
            if current in sections:
                sections[current].extend(line.split())
            continue
        current = None
        if line.startswith("Inst "):
            parsed = _parse_inst(line)
            if parsed is not None:
                (upgrades if parsed["fromVersion"] is not None else new_installs).append(parsed)
            continue
        if line.startswith(("Remv ", "Purg ")):
            rem = _REMV_RE.match(line)
            if rem:
                removals.append(
                    AptRemoval(package=rem["pkg"], version=rem["ver"] or None, purge=rem["verb"] == "Purg")
                )
            continue
        if line.startswith("Conf "):
            continue
        normalised = _normalise(line)
        section = _HEADER_TO_SECTION.get(normalised)
        if section is not None:
            current = section
            continue
        for summary_re in _SUMMARY_RES:
            summary = summary_re.match(normalised)
            if summary:
                not_upgraded = int(summary.group(4))
                break
        else:
            # A header we do not know (another locale, a newer apt): surface it so a human
            # can notice a kept-back list we may have missed, but never fail on prose.
            if normalised.endswith(":") and not normalised.startswith(("E:", "W:", "N:")):
                unrecognized.append(normalised)

    return AptSimulation(
        upgrades=upgrades,
        newInstalls=new_installs,
        removals=removals,
        keptBack=_dedupe(sections["keptBack"]),
        phased=_dedupe(sections["phased"]),
        heldChanged=_dedupe(sections["heldChanged"]),
        counts=AptCounts(
            upgradable=len(upgrades),
            # Upgrades only, like ``upgradable``; new installs carry their own flag.
            security=sum(1 for u in upgrades if u["security"]),
            newInstalls=len(new_installs),
            removals=len(removals),
            keptBack=len(_dedupe(sections["keptBack"])),
            phased=len(_dedupe(sections["phased"])),
            notUpgraded=not_upgraded,
        ),
        unrecognizedSections=unrecognized,
    )


def parse_held(text: str) -> list[str]:
    """Parse ``apt-mark showhold`` output (one package per line) into a sorted, unique list."""
    held: set[str] = set()
    for line in text.splitlines():
        token = line.strip()
        # apt-mark can prepend W:/E:/N: diagnostics; a package name never contains spaces or ':'
        # followed by a space.
        if not token or " " in token or token[:2] in ("W:", "E:", "N:"):
            continue
        held.add(token)
    return sorted(held)


_FUTURE_CHANGE_RE = re.compile(
    r"will be removed|deprecat|end[ -]of[ -]life|\beol\b|no longer (?:be )?supported|"
    r"obsolete|changed its '(?:Suite|Codename|Version|Origin|Label)' value|"
    r"sera supprimé|obsolète|fin de vie|veraltet|wird entfernt",
    re.IGNORECASE,
)
# Word edges exclude '-', '+' and '.' on the left so package names such as "liberror-perl" or
# "python3-error" in package lists never read as an error.
_ERROR_RE = re.compile(r"(?<![\w.+-])(?:errors?|erreurs?|fehler|failed|échec)(?![\w+-])", re.IGNORECASE)
_WARNING_RE = re.compile(r"(?<![\w.+-])(?:warnings?|avertissements?|warnung(?:en)?)(?![\w+-])", re.IGNORECASE)
# Only phrasings where the next word is certainly a package name (dpkg and apt wording);
# "package post-installation script" must not yield a package called "post-installation".
_PACKAGE_RE = re.compile(
    r"(?:processing package|locate package|package) '?(?P<pkg>[a-z0-9][a-z0-9+.:-]+?)'?(?=[\s:,]|$)"
    r"(?<!post-installation)(?<!pre-installation)(?<!pre-removal)(?<!post-removal)"
)
_MACHINE_LINE_PREFIXES = ("Inst ", "Conf ", "Remv ", "Purg ")


def important_lines(text: str) -> list[ImportantLine]:
    """Extract error, warning and "future major change" lines from apt/dpkg output, deduplicated."""
    found: dict[str, ImportantLine] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        if raw_line.startswith(_MACHINE_LINE_PREFIXES):
            continue
        message = _normalise(raw_line)
        if not message:
            continue
        severity: Severity | None
        if message.startswith(("E:", "Err:")) or _ERROR_RE.search(message):
            severity = "error"
        elif message.startswith("W:") or _WARNING_RE.search(message):
            severity = "warning"
        else:
            severity = None
        future = bool(_FUTURE_CHANGE_RE.search(message))
        if severity is None and not future:
            continue
        category: Category
        if future:
            # A deprecation announced through a W:/N: line is more useful filed as an upcoming
            # change; the severity still tells how loud apt was about it.
            category = "future_major_change"
        elif severity == "error":
            category = "error"
        else:
            category = "warning"
        if existing := found.get(message):
            existing["occurrences"] += 1
            continue
        package = _PACKAGE_RE.search(message)
        found[message] = ImportantLine(
            category=category,
            severity=severity or "info",
            message=message,
            packageName=package["pkg"] if package else None,
            occurrences=1,
            firstLine=number,
        )
    return list(found.values())


def reboot_required(root: str | Path = "/") -> RebootStatus:
    """Read ``var/run/reboot-required`` (and its ``.pkgs`` list) under ``root``."""
    base = Path(root)
    # /var/run is a symlink to /run on every current distribution; fixture trees may have either.
    for directory in (base / "var" / "run", base / "run"):
        flag = directory / "reboot-required"
        if flag.exists():
            pkgs_file = directory / "reboot-required.pkgs"
            packages: list[str] = []
            if pkgs_file.is_file():
                packages = _dedupe(
                    line.strip()
                    for line in pkgs_file.read_text(encoding="utf-8", errors="replace").splitlines()
                )
            return RebootStatus(required=True, packages=[p for p in packages if p])
    return RebootStatus(required=False, packages=[])


def _dedupe(items: Iterable[str]) -> list[str]:
    # Keep first-seen order: apt lists are alphabetical already and tests compare lists.
    return list(dict.fromkeys(items))
