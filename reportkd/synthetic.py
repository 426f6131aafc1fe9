"""Synthetic OCR'd pathology-report corpus with the TCGA report schema and noisy, LLM-like labels.

The embedded default corpus of ``reportkd demo``, also used by tests and benchmarks. Each record mimics a row of
the TCGA reports file: a templated surgical pathology report (OCR'd header, history, specimens, gross, microscopic,
final diagnosis, often a CAP synoptic checklist) with seeded OCR noise, and labels in the same vocabularies.
Difficulty is instance dependent: a field can be stated clearly, weakly (a vaguer term, or only in one section),
hedged, in conflict with an earlier mention, or omitted (label ``unknown``); a few reports never name the primary
site. ``organ`` and ``cancer_type`` are clean, as in the real file; the extracted fields (:data:`NOISY_FIELDS`) are
flipped to plausible wrong values at rate ``label_noise``, more often on ambiguous reports. Clean labels and the
per-field difficulty come from :func:`generate_reports_with_truth`.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import random
import uuid
from collections.abc import Sequence
from pathlib import Path

from . import synthetic_vocab as V
from .synthetic_vocab import ORGAN_BY_NAME, ORGANS, Histology, Organ
from .utils import atomic_path

SYNTHETIC_TASKS: tuple[str, ...] = ("organ", "cancer_type", "histology", "grade", "t_stage", "laterality", "behavior")
NOISY_FIELDS: tuple[str, ...] = ("histology", "grade", "t_stage", "laterality", "behavior")
SYNOPTIC_FIELDS: tuple[str, ...] = ("organ", "histology", "grade", "t_stage", "laterality", "behavior")
SCHEMA_KEYS: tuple[str, ...] = ("id", "source_file", "patient", "organ", "cancer_type", "text", "laterality",
                                "behavior", "grade", "t_stage", "histology", "llm_output", "raw_labels",
                                "synoptic")  # fmt: skip
ORGAN_NAMES: tuple[str, ...] = tuple(o.name for o in ORGANS)
ORGAN_HISTOLOGIES: dict[str, tuple[str, ...]] = {  # histology labels of an organ's reports, before label noise
    o.name: tuple(dict.fromkeys([h.label for h in o.histologies] + [h.generic for h in o.histologies])) for o in ORGANS
}
LABEL_SPACES: dict[str, tuple[str, ...]] = {
    "organ": ORGAN_NAMES,
    "cancer_type": tuple(sorted({h.cancer_type for o in ORGANS for h in o.histologies} | {"READ"})),
    "histology": tuple(sorted({h for hs in ORGAN_HISTOLOGIES.values() for h in hs})) + ("unknown",),
    "grade": V.GRADES,
    "t_stage": V.T_STAGES,
    "laterality": V.LATERALITIES,
    "behavior": V.BEHAVIORS,
}
MODES: tuple[str, ...] = ("clear", "weak", "hedged", "conflict", "omitted")
_MODE_P = {"clear": (0.86, 0.08, 0.04, 0.02), "moderate": (0.55, 0.2, 0.15, 0.1), "hard": (0.25, 0.3, 0.25, 0.2)}
_FLIP_WEIGHT = {"clear": 0.45, "weak": 2.0, "hedged": 3.0, "conflict": 3.0, "omitted": 1.0}
_HIST = {o.name: {h.label: h for h in o.histologies} for o in ORGANS}
_SIDE = {"left": ("left", "left", "Left", "LT"), "right": ("right", "right", "Right", "RT")}
_OCR_SUBS = (("l", "1"), ("1", "l"), ("I", "l"), ("l", "I"), ("O", "0"), ("0", "O"), ("o", "0"), ("rn", "m"),
             ("m", "rn"), ("cl", "d"), ("d", "cl"), ("e", "c"), ("c", "e"), ("S", "5"), ("B", "8"), ("n", "ri"),
             ("h", "b"), ("t", "f"), (",", "."), (".", ","), ("i", "í"), ("cm", "em"), ("a", "e"))  # fmt: skip
_WEAK_SIDE = {"left": "The specimen is oriented as left-sided by the surgeon.", "right": "The specimen is oriented as "
              "right-sided by the surgeon.", "bilateral": "Tumor is present on both sides.",
              "midline": "The lesion is centered in the midline."}  # fmt: skip
_STRAY = ("·", "^", "~", "'", ",", "`", "•", "!", "|", ";")


def synoptic_line(fields: dict) -> str:
    """The synoptic string of the TCGA corpus: ``organ: … | histology: … | grade: … | t_stage: … | laterality: …
    | behavior: …``.

    Args:
        fields: A record (or any mapping) with the six :data:`SYNOPTIC_FIELDS`.
    """
    return " | ".join(f"{k}: {fields[k]}" for k in SYNOPTIC_FIELDS)


def parse_synoptic(line: str) -> dict[str, str]:
    """Inverse of :func:`synoptic_line`.

    Args:
        line: A synoptic string; no value may contain ``" | "``.
    """
    out = {}
    for part in line.split(" | "):
        key, sep, value = part.partition(": ")
        if not sep:
            raise ValueError(f"Malformed synoptic part {part!r} in {line!r}")
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------ labels and difficulty
def _wchoice(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _mode(rng: random.Random, clarity: str) -> str:
    return rng.choices(MODES[:4], weights=_MODE_P[clarity])[0]


def _make_case(rng: random.Random, organs: Sequence[Organ]) -> dict:
    """Draws the clean labels of one report and how clearly the report states each field."""
    organ = rng.choices(organs, weights=[o.weight for o in organs])[0]
    hist = rng.choices(organ.histologies, weights=[h.weight for h in organ.histologies])[0]
    ctype, alt_site = hist.cancer_type, None
    if organ.alt_type and rng.random() < organ.alt_type[1]:  # e.g. rectal primaries: READ instead of COAD
        ctype, alt_site = organ.alt_type[0], rng.choice(organ.alt_type[2])
    clarity = rng.choices(("clear", "moderate", "hard"), weights=(0.62, 0.26, 0.12))[0]
    info = rng.choices(("full", "sparse", "none"), weights=(0.875, 0.06, 0.065))[0]  # is the primary site named?
    hard, modes = clarity == "hard", {}
    # histology and behavior; a weakly stated type is labelled with the vaguer term the report uses
    p_omit = 0.045 + 0.05 * hard + (0.55 if info == "none" else 0.0)
    modes["histology"] = "omitted" if rng.random() < p_omit else "weak" if info == "none" else _mode(rng, clarity)
    h_omit = modes["histology"] == "omitted"
    histology = "unknown" if h_omit else hist.generic if modes["histology"] == "weak" else hist.label
    if h_omit:
        behavior = "malignant" if rng.random() < 0.25 else "unknown"
    elif hist.behavior == "malignant" and modes["histology"] == "hedged" and rng.random() < 0.1:
        behavior = "uncertain"  # "suspicious for ..."
    else:
        behavior = hist.behavior
    modes["behavior"] = "omitted" if behavior == "unknown" else modes["histology"]
    # grade
    graded = hist.grading != "none" and not (h_omit and rng.random() < 0.8)
    if not graded or rng.random() < organ.grade_omit + 0.12 * hard:
        grade, modes["grade"] = "unknown", "omitted"
    else:
        grade, modes["grade"] = rng.choices(V.GRADES[:4], weights=hist.grade_weights)[0], _mode(rng, clarity)
        if modes["grade"] == "hedged" and (grade not in V.HEDGED_GRADE or hist.grading in ("gleason", "who")):
            modes["grade"] = "clear"
    # T stage (none for the brain; Tis for in situ lesions)
    t_omit = organ.t_omit + 0.12 * hard + (0.5 if h_omit else 0.0)
    if hist.t_fixed and not h_omit and rng.random() > 0.3 * t_omit:
        t_stage, modes["t_stage"] = hist.t_fixed, rng.choice(("clear", "clear", "weak"))
    elif not organ.t_weights or hist.t_fixed or hist.behavior == "benign" or rng.random() < t_omit:
        t_stage, modes["t_stage"] = "unknown", "omitted"
    else:
        t_stage = _wchoice(rng, organ.t_weights)
        modes["t_stage"] = "clear" if t_stage == "TX" else _mode(rng, clarity)
    sub = organ.t_sub.get(t_stage, ("is",) if t_stage == "Tis" else ("X",) if t_stage == "TX" else ("",))
    t_code = "T" + rng.choice(sub) if t_stage != "unknown" else ""
    # laterality: the side stated for the primary specimen
    lat = "unknown" if alt_site or info == "none" else _wchoice(rng, organ.lat_weights)
    pools = {"left": organ.sided, "right": organ.sided, "bilateral": organ.bilateral, "midline": organ.midline}
    lat = lat if lat == "unknown" or pools[lat] else "unknown"
    if lat in _SIDE:
        site = rng.choice(organ.sided).format(side=rng.choice(_SIDE[lat][:3]))
    else:
        site = alt_site or rng.choice(pools.get(lat) or organ.plain)
    modes["laterality"] = "omitted" if lat == "unknown" else rng.choices(("clear", "weak", "conflict"), (8, 1, 1))[0]
    modes["organ"] = modes["cancer_type"] = {"full": "clear", "sparse": "weak", "none": "omitted"}[info]
    labels = {"organ": organ.name, "cancer_type": ctype, "histology": histology, "grade": grade,
              "t_stage": t_stage, "laterality": lat, "behavior": behavior}  # fmt: skip
    return {"organ": organ, "hist": hist, "labels": labels, "modes": modes, "info": info, "site": site,
            "t_code": t_code, "clarity": clarity}  # fmt: skip


# ------------------------------------------------------------------------------------------------------ rendering
def _cap(rng: random.Random, s: str, p_upper: float = 0.35) -> str:
    return s.upper() if rng.random() < p_upper else s[:1].upper() + s[1:]


def _other(organ: Organ, hist: Histology, rng: random.Random) -> Histology:
    return _HIST[organ.name][rng.choice(hist.confusable)]


def _hist_phrase(rng: random.Random, c: dict) -> tuple[str, str, str]:
    """(diagnosis phrase, frozen-section phrase or "", comment or "") for the histology."""
    hist, mode = c["hist"], c["modes"]["histology"]
    surf, alt = rng.choice(hist.surface), rng.choice(_other(c["organ"], hist, rng).surface)
    if mode == "omitted":
        if c["labels"]["behavior"] == "malignant":
            return rng.choice(("malignant neoplasm, see note", "malignant cells present; see comment",
                               "positive for malignancy")), "", ""  # fmt: skip
        return rng.choice(("see comment", "diagnosis deferred to permanent sections", "see addendum",
                           "tissue submitted for consultation; see separate report")), "", ""  # fmt: skip
    if mode == "weak":
        return hist.generic, "", ""
    if mode == "conflict":
        return surf, alt, f"Frozen section interpretation ({alt}) revised on permanent sections and stains."
    if c["labels"]["behavior"] == "uncertain":
        return f"atypical proliferation, suspicious for {surf}", "", "Additional sampling is recommended."
    return rng.choice((
        (f"{hist.generic}, favor {surf}", "", f"The differential diagnosis includes {alt}."),
        (f"{surf} versus {alt}; favor the former", "", "Immunohistochemistry is supportive but not definitive."),
        (f"consistent with {surf}", "", f"Features of {alt} are focally present (<10%)."),
        (f"{surf} (see comment)", "", f"A component resembling {alt} cannot be excluded."),
    )) if mode == "hedged" else (surf, "", "")  # fmt: skip


def _grade_phrase(rng: random.Random, c: dict) -> tuple[str, str]:
    """(grade phrase or "", earlier contradicting mention or "")."""
    grade, mode, words = c["labels"]["grade"], c["modes"]["grade"], V.GRADE_WORDS.get(c["hist"].grading, {})
    if mode == "omitted":
        return "", ""
    if mode == "hedged":
        return rng.choice(V.HEDGED_GRADE[grade]), ""
    phrase = rng.choice(words[grade])
    if mode == "conflict":
        k = int(grade[1])
        other = f"G{k - 1}" if k == 4 or (k > 1 and rng.random() < 0.5) else f"G{k + 1}"
        return phrase, f"Prior biopsy reported {rng.choice(words.get(other) or ('a different grade',))} tumor."
    return (words[grade][0] if mode == "weak" and len(phrase) == 2 else phrase), ""


def _t_phrase(rng: random.Random, c: dict) -> tuple[str, str]:
    """(stage statement or "", clinical-stage mention or "")."""
    t, mode, code = c["labels"]["t_stage"], c["modes"]["t_stage"], c["t_code"]
    if mode == "omitted":
        return "", ""
    if t == "TX":
        return f"p{code}: primary tumor cannot be assessed", ""
    desc = c["organ"].t_desc.get(t, "carcinoma in situ, no invasion")
    n_code = rng.choice(("pN0", "pN0", "pN1", "pNX", "N0", "pN2"))
    if mode == "weak":
        return f"Extent of invasion: {desc}", ""
    if mode == "hedged":
        return rng.choice((f"at least p{code} ({desc})", f"p{code} (provisional, see comment)",
                           f"p{code}/{n_code}, pending review of the deep margin")), ""  # fmt: skip
    if mode == "conflict":
        k = int(t[1]) if t[1:2].isdigit() else 1
        return f"p{code} {n_code}", f"Clinical stage cT{k + 1 if k < 4 else 3} by imaging."
    return rng.choice((f"p{code} {n_code} pMX", f"p{code}", f"{code} {n_code[1:]} M0", f"pT stage: p{code}",
                       f"AJCC pathologic stage: p{code} {n_code} (AJCC 7th edition)")), ""  # fmt: skip


def _site_text(rng: random.Random, c: dict, *, primary: bool) -> str:
    if c["info"] == "none" or (c["info"] == "sparse" and primary):
        return rng.choice(("tissue", "mass", "specimen", "tumor"))
    if primary and c["modes"]["laterality"] == "weak":
        return rng.choice(c["organ"].plain)
    return c["site"]


def _header(rng: random.Random, uid: str, patient: str, sex: str, age: int) -> list[str]:
    lines = [f"UUID:{uid}"] if rng.random() < 0.7 else []
    lines += [f"{patient} -01A-PR Redacted"] if rng.random() < 0.8 else []
    for _ in range(rng.randint(1, 3)):  # OCR'd barcode
        lines.append(" ".join("".join(rng.choices("IIIIIl1", k=rng.randint(2, 30))) for _ in range(rng.randint(1, 6))))
    lines += [rng.choice(V.TITLES)] + ([rng.choice(V.HOSPITALS)] if rng.random() < 0.6 else [])
    fields = [("Patient Name:", "[REDACTED]"), ("MRN:", "[redacted]"), ("DOB:", "**/**/****"), ("Age:", str(age)),
              ("Sex:", sex), ("Accession #:", f"S{rng.randint(5, 14):02d}-{rng.randint(1000, 99999)}"),
              ("Date of Procedure:", "[REDACTED]"), ("Attending Pathologist:", "[REDACTED], MD")]  # fmt: skip
    picked = rng.sample(fields, rng.randint(2, len(fields)))
    return lines + ["   ".join(f"{k} {v}" for k, v in picked[i : i + 2]) for i in range(0, len(picked), 2)]


def _render(rng: random.Random, c: dict, uid: str, patient: str) -> str:
    """The report text (before OCR noise): sections in one of several orders, padded to a drawn length."""
    organ, hist, labels, modes, info = c["organ"], c["hist"], c["labels"], c["modes"], c["info"]
    sex, age = organ.sex or rng.choice("MF"), rng.randint(34, 86)
    hist_dx, hist_fs, hist_comment = _hist_phrase(rng, c)
    grade_dx, grade_prior = _grade_phrase(rng, c)
    t_dx, t_prior = _t_phrase(rng, c)
    site = _site_text(rng, c, primary=True)
    proc = "resection" if info == "none" else rng.choice(organ.procedures)
    size, has_syn = f"{rng.uniform(0.8, 11.0):.1f}", info == "full" and rng.random() < 0.55
    sec: dict[str, list[str]] = {}
    # clinical history, with distractors (other cancers, the other side)
    side = ""
    if labels["laterality"] in _SIDE and modes["laterality"] == "clear" and info == "full":
        side = rng.choice(_SIDE[labels["laterality"]][:2]) + " "
    complaint = "mass" if info == "none" else rng.choice(organ.history)
    hist_lines = [rng.choice(V.HISTORY_HEADINGS), f"{age}-year-old {'male' if sex == 'M' else 'female'} with "
                  f"{side}{complaint}."]  # fmt: skip
    if rng.random() < 0.45 or info == "none":
        hist_lines.append(f"Patient has a {rng.choice(V.DISTRACTOR_HISTORY)}.")
    if rng.random() < (0.5 if info == "none" else 0.08):
        other = rng.choice([o for o in ORGANS if o is not organ])
        hist_lines.append(f"Prior history of {other.words[0]} carcinoma, treated {rng.randint(2, 15)} years ago.")
    if modes["laterality"] == "conflict":
        hist_lines.append(f"The {'right' if labels['laterality'] == 'left' else 'left'} side was unremarkable on CT.")
    sec["history"] = hist_lines + [s for s in (grade_prior, t_prior) if s]
    # specimens
    nodes = [] if info == "none" else rng.sample(organ.nodes, min(len(organ.nodes), rng.randint(0, 4)))
    extras = [] if info == "none" else rng.sample(organ.extras, min(len(organ.extras), rng.randint(0, 2)))
    extras = [e.format(side=rng.choice(("right", "left"))) for e in extras]
    names = [f"{_cap(rng, site)}, {proc}"] + [f"Lymph nodes, {n}, excision" for n in nodes]
    names += [e.split(":")[0] for e in extras]
    sec["specimens"] = [rng.choice(V.SPECIMEN_HEADINGS)] + [f"{'ABCDEFGH'[i]}. {s}" for i, s in enumerate(names)]
    # final diagnosis (a weakly stated grade only appears in the microscopic description)
    dx_grade = grade_dx if modes["grade"] != "weak" else ""
    main = hist_dx + (f", {dx_grade}" if dx_grade and rng.random() < 0.7 else "")
    dx = [rng.choice(V.DX_HEADINGS), f"A. {names[0]}:", f"- {_cap(rng, main, 0)}."]
    dx += [f"- Histologic grade: {dx_grade}."] if dx_grade and dx_grade not in main else []
    if labels["histology"] != "unknown" or labels["behavior"] != "unknown":
        dx += [f"- Tumor size: {size} cm in greatest dimension.", f"- {rng.choice(V.MARGINS)}."]
    if t_dx and (not has_syn or modes["t_stage"] == "weak" or rng.random() < 0.6):
        dx.append(f"- {t_dx}.")
    for i, n in enumerate(nodes, 1):
        k = rng.randint(1, 14)
        res = f"metastatic carcinoma in {rng.randint(1, k)} of {k} lymph nodes" if rng.random() < 0.2 else (
            f"{k} lymph nodes, negative for malignancy (0/{k})")  # fmt: skip
        dx.append(f"{'ABCDEFGH'[i]}. Lymph nodes, {n}: {res}.")
    dx += [f"{'ABCDEFGH'[j]}. {e}." for j, e in enumerate(extras, len(nodes) + 1)]
    sec["dx"] = [s.upper() for s in dx] if rng.random() < 0.45 else dx
    if hist_fs or rng.random() < 0.2:  # intraoperative consultation
        fs = hist_fs or (hist_dx if modes["histology"] != "omitted" else "atypical cells, defer to permanents")
        sec["frozen"] = ["INTRAOPERATIVE CONSULTATION:", f"FSA ({_site_text(rng, c, primary=False)}): {fs}."]
    # gross description
    where = "" if info == "none" else f" in the {rng.choice(organ.subsites)} of the {organ.words[0]}"
    sec["gross"] = [
        rng.choice(V.GROSS_HEADINGS),
        f"A. Received {rng.choice(('fresh', 'in formalin'))} labeled with the patient's name and "
        f"\"{_site_text(rng, c, primary=False)}\" is a {rng.randint(40, 900)} g {proc} specimen measuring "
        f"{rng.randint(4, 25)}.0 x {rng.randint(3, 15)}.{rng.randint(0, 9)} x {rng.randint(2, 9)}.0 cm. Sectioning "
        f"reveals a {size} cm {rng.choice(V.COLORS)} mass{where}, {rng.choice(V.CONSISTENCY)}.",
    ] + ([_WEAK_SIDE[labels["laterality"]]] if modes["laterality"] == "weak" else []) + [
        f"Representative sections are submitted in cassettes A1-A{rng.randint(4, 16)}."]  # fmt: skip
    # microscopic description (the weak cues live here)
    micro = [rng.choice(V.MICRO_HEADINGS)]
    if rng.random() < {"omitted": 0.3, "weak": 0.5}.get(modes["histology"], 1.0) * (0.2 if info == "none" else 1):
        micro.append(f"Sections show {rng.choice(hist.micro)}.")
    micro += [f"The tumor is {grade_dx}."] if modes["grade"] == "weak" else []
    if modes["t_stage"] == "weak" or rng.random() < 0.3:
        micro.append(f"{t_dx or 'Depth of invasion cannot be determined on these sections'}.")
    sec["micro"] = micro + ([f"{rng.choice(V.LVI)}."] if organ.t_weights else [])
    if has_syn:  # CAP synoptic checklist
        syn = [f"Procedure: {proc}", f"Tumor site: {site}"]
        syn += [f"Specimen laterality: {labels['laterality']}"] if modes["laterality"] == "clear" else []
        syn += [f"Histologic type: {hist_dx}"] if modes["histology"] in ("clear", "hedged", "conflict") else []
        syn += [f"Histologic grade: {dx_grade or 'not applicable'}"] if dx_grade or rng.random() < 0.3 else []
        syn += [f"Tumor size: {size} cm", rng.choice(V.MARGINS), rng.choice(V.LVI)]
        if t_dx and modes["t_stage"] != "weak":
            syn.append(f"Primary tumor (pT): {t_dx if modes['t_stage'] == 'hedged' else 'p' + c['t_code']}")
        numbered = rng.random() < 0.5
        sec["synoptic"] = [rng.choice(V.SYNOPTIC_HEADINGS)] + [f"{i}. {s}" if numbered else s
                                                                for i, s in enumerate(syn, 1)]  # fmt: skip
    if hist_comment:
        sec["comment"] = ["COMMENT:", hist_comment]
    _pad(rng, sec, c)
    order = rng.choice((
        ("dx", "synoptic", "comment", "history", "specimens", "frozen", "gross", "micro", "footer"),
        ("history", "specimens", "frozen", "gross", "micro", "dx", "synoptic", "comment", "footer"),
        ("specimens", "history", "dx", "comment", "micro", "gross", "synoptic", "frozen", "footer"),
        ("history", "dx", "frozen", "gross", "synoptic", "micro", "comment", "footer"),
    ))  # fmt: skip
    skip = {s for s, p in (("history", 0.1), ("micro", 0.2)) if rng.random() < p}
    skip -= {"micro"} if "weak" in (modes["grade"], modes["t_stage"]) else set()
    lines = _header(rng, uid, patient, sex, age)
    for name in order:
        lines += sec.get(name, []) if name not in skip else []
    return "\n".join(lines)


def _pad(rng: random.Random, sec: dict[str, list[str]], c: dict) -> None:
    """Adds label-neutral filler (boilerplate, processing notes, QC form, cassette keys, node grosses) up to a target
    length drawn from a log-normal around 380 words, clipped to [150, 900]."""
    target = min(900, max(150, int(rng.lognormvariate(math.log(380), 0.45))))
    words = sum(len(s.split()) for lines in sec.values() for s in lines) + 30
    footer, boiler, keys = sec.setdefault("footer", []), rng.sample(V.BOILERPLATE + V.FILLER, 6), 0
    qc = [q for q in V.QC_FORM if rng.random() < 0.8] if rng.random() < 0.5 else []
    nodes = c["organ"].nodes if c["info"] != "none" else ()
    while words < target:
        kind = rng.random()
        if kind < 0.5 and boiler:
            add = [boiler.pop().format(k=rng.randint(2, 9), hh=rng.randint(7, 18), mm=rng.randint(10, 59))]
            footer += add
        elif kind < 0.6 and qc:
            add, qc = qc, []
            footer += add
        elif kind < 0.75 and keys < 2:
            keys, letter = keys + 1, "AB"[keys]
            add = ["Cassette key:"] + [f"{letter}{i}: {rng.choice(V.CASSETTES)}" for i in range(1, rng.randint(4, 12))]
            sec["gross"] += add
        else:
            k, label = rng.randint(2, 6), (rng.choice(nodes) + " lymph nodes" if nodes else "additional tissue")
            add = [rng.choice((
                f"Received in formalin labeled \"{label}\" are {k} fragments of yellow fibroadipose tissue measuring "
                f"{rng.randint(1, 6)}.{rng.randint(0, 9)} cm in aggregate. {k} possible lymph nodes are identified, "
                f"the largest {rng.randint(2, 19) / 10} cm. Entirely submitted in {k} cassettes.",
                f"The specimen labeled \"{label}\" consists of a {rng.randint(1, 5)}.{rng.randint(0, 9)} cm portion "
                f"of {rng.choice(V.COLORS)} soft tissue. Palpation reveals {k} nodules. Submitted in toto.",
            ))]  # fmt: skip
            sec["gross"] += add
        words += sum(len(s.split()) for s in add)


def _ocr(rng: random.Random, text: str, p: float, patient: str) -> str:
    """Seeded OCR damage: page-break and junk lines, then an error in about a fraction ``p`` of the words
    (character confusions, split and merged words, dropped characters, stray symbols)."""
    if p <= 0:
        return text
    lines = text.split("\n")
    pages = 1 + (rng.random() < min(1.0, 12 * p)) * rng.randint(1, 3)
    for k in range(pages - 1, 0, -1):
        brk = [f"Page {k} of {pages}"] + ([patient] if rng.random() < 0.5 else [])
        brk += ["".join(rng.choices("IIl1|!. ", k=rng.randint(5, 40)))] if rng.random() < 0.5 else []
        pos = max(1, len(lines) * k // pages + rng.randint(-1, 1))
        lines[pos:pos] = brk
    tokens = "\n".join(lines).split(" ")
    out, i, n, log_q = [], 0, len(tokens), math.log(1.0 - min(p, 0.9))
    while True:  # geometric skips between corrupted words
        j = i + int(math.log(1.0 - rng.random()) / log_q)
        if j >= n:
            return " ".join(out + tokens[i:])
        out += tokens[i:j]
        tok, r = tokens[j], rng.random()
        if r < 0.45 and (cands := [(a, b) for a, b in _OCR_SUBS if a in tok]):
            a, b = rng.choice(cands)
            pos = rng.choice([m for m in range(len(tok)) if tok.startswith(a, m)])
            tok = tok[:pos] + b + tok[pos + len(a) :]
        elif r < 0.6 and len(tok) > 3:
            cut = rng.randint(1, len(tok) - 1)
            tok = tok[:cut] + " " + tok[cut:]
        elif r < 0.75 and j + 1 < n:
            tok, j = tok + tokens[j + 1], j + 1
        elif r < 0.88 and len(tok) > 2:
            cut = rng.randrange(len(tok))
            tok = tok[:cut] + tok[cut + 1 :]
        else:
            cut = rng.randint(0, len(tok))
            tok = tok[:cut] + rng.choice(_STRAY) + tok[cut:]
        out.append(tok)
        i = j + 1


# ---------------------------------------------------------------------------------------------------- label noise
_LAT_FLIPS = {"left": ("right", "right", "bilateral", "unknown"), "right": ("left", "left", "bilateral", "unknown"),
              "bilateral": ("left", "right", "unknown"), "midline": ("unknown", "bilateral"),
              "unknown": ("left", "right", "bilateral")}  # fmt: skip
_BEHAVIOR_FLIPS = {"malignant": ("unknown",) * 6 + ("uncertain", "in_situ"), "benign": ("malignant", "uncertain"),
                   "in_situ": ("malignant", "malignant", "uncertain"), "uncertain": ("malignant", "benign"),
                   "unknown": ("malignant",)}  # fmt: skip


def _flip(rng: random.Random, field: str, value: str, organ: Organ) -> str:
    """A plausible wrong value: a confusable histology of the organ, an adjacent grade or stage, a swapped side."""
    if field == "histology":
        hists = _HIST[organ.name]
        if value not in hists:  # unknown or a vague term -> the organ's usual type, or another of its types
            if rng.random() < 0.6:
                return max(hists.values(), key=lambda h: h.weight).label
            return rng.choices(list(hists), weights=[h.weight for h in hists.values()])[0]
        return "unknown" if rng.random() < 0.12 else rng.choice(hists[value].confusable)
    if field in ("grade", "t_stage"):
        if value in ("unknown", "TX"):
            return rng.choice(("G2", "G3") if field == "grade" else ("T2", "T3"))
        if value == "Tis":
            return rng.choice(("T1", "unknown"))
        if rng.random() < 0.18:
            return "unknown"
        k = int(value[1])
        return f"{value[0]}{k - 1 if k == 4 or (k > 1 and rng.random() < 0.5) else k + 1}"
    return rng.choice((_LAT_FLIPS if field == "laterality" else _BEHAVIOR_FLIPS)[value])


def _apply_label_noise(cases: list[dict], records: list[dict], seed: int, label_noise: float) -> None:
    """Flips each noisy field with probability proportional to how ambiguously the report states it, normalised so
    that each field's mean flip rate over the corpus is ``label_noise``."""
    weights = [{f: _FLIP_WEIGHT[c["modes"][f]] * (1.5 if c["info"] == "none" else 1.0) for f in NOISY_FIELDS}
               for c in cases]  # fmt: skip
    mean = {f: sum(w[f] for w in weights) / max(1, len(weights)) for f in NOISY_FIELDS}
    for i, (c, rec, w) in enumerate(zip(cases, records, weights)):
        rng = random.Random(f"{seed}:{i}:labels")
        draws = [rng.random() for _ in NOISY_FIELDS]  # drawn first: a higher label_noise flips a superset of fields
        flipped = [f for f, u in zip(NOISY_FIELDS, draws) if u < min(0.95, label_noise * w[f] / mean[f])]
        for f in flipped:
            rec[f] = _flip(rng, f, rec[f], c["organ"])
        c["flipped"] = tuple(flipped)
        rec["synoptic"] = synoptic_line(rec)


# --------------------------------------------------------------------------------------------------------- public
def generate_reports_with_truth(
    n: int = 3000,
    *,
    seed: int = 0,
    ocr_noise: float = 0.03,
    label_noise: float = 0.08,
    organs: Sequence[str] | None = None,
    empty_fraction: float = 0.0,
) -> tuple[list[dict], list[dict]]:
    """:func:`generate_reports` plus one truth dict per record: the clean value of each of :data:`SYNTHETIC_TASKS`,
    ``modes`` (field -> clear / weak / hedged / conflict / omitted), ``info`` (full / sparse / none: how clearly the
    primary site is named), ``clarity`` (clear / moderate / hard) and ``flipped`` (fields changed by label noise).

    Args:
        n, seed, ocr_noise, label_noise, organs, empty_fraction: As for :func:`generate_reports`.
    """
    if n < 0 or not 0 <= ocr_noise < 1 or not 0 <= label_noise < 1 or not 0 <= empty_fraction <= 1:
        raise ValueError("need n >= 0, ocr_noise and label_noise in [0, 1), empty_fraction in [0, 1]")
    names = list(dict.fromkeys(organs)) if organs is not None else list(ORGAN_NAMES)
    if not names or any(o not in ORGAN_BY_NAME for o in names):
        raise ValueError(f"organs must be a non-empty subset of {ORGAN_NAMES}, got {names}")
    pool = [ORGAN_BY_NAME[o] for o in names]
    records, cases, patients = [], [], set()
    for i in range(n):
        rng = random.Random(f"{seed}:{i}:content")
        c = _make_case(rng, pool)
        patient = ""
        while not patient or patient in patients:
            code = "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(4))
            patient = f"TCGA-{rng.choice(V.TSS_CODES)}-{code}"
        patients.add(patient)
        uid = str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()
        text = _ocr(random.Random(f"{seed}:{i}:ocr"), _render(rng, c, uid, patient), ocr_noise, patient)
        rec = {"id": uuid.uuid5(uuid.NAMESPACE_OID, f"reportkd-synthetic:{seed}:{i}:{patient}").hex[:16],
               "source_file": f"{patient}.{uid}.PDF" if rng.random() < 0.6 else f"{patient}.pdf", "patient": patient,
               "text": text, **c["labels"], "llm_output": None, "raw_labels": None}  # fmt: skip
        rec = {k: rec.get(k) for k in SCHEMA_KEYS}
        rec["synoptic"] = synoptic_line(rec)
        records.append(rec)
        cases.append(c)
    _apply_label_noise(cases, records, seed, label_noise)
    truths = [{**c["labels"], "modes": c["modes"], "info": c["info"], "clarity": c["clarity"],
               "flipped": c["flipped"]} for c in cases]  # fmt: skip
    if empty_fraction > 0:
        records = corrupt_some(records, empty_fraction, seed=seed)
    return records, truths


def generate_reports(
    n: int = 3000,
    *,
    seed: int = 0,
    ocr_noise: float = 0.03,
    label_noise: float = 0.08,
    organs: Sequence[str] | None = None,
    empty_fraction: float = 0.0,
) -> list[dict]:
    """A synthetic TCGA-like pathology-report corpus.

    Each dict has exactly the TCGA schema keys (:data:`SCHEMA_KEYS`; ``llm_output`` and ``raw_labels`` are None),
    with label values from :data:`LABEL_SPACES`. Texts and clean labels of record ``i`` depend only on ``seed``,
    ``i`` and ``organs``; the noisy labels also on the corpus (the flip rate is normalised over it).

    Args:
        n: Number of reports.
        seed: Seed; the same arguments always give the same corpus, another seed another corpus.
        ocr_noise: Fraction of words hit by an OCR error; 0 turns OCR damage (and page-break lines) off.
        label_noise: Mean flip rate of each of :data:`NOISY_FIELDS`; organ and cancer_type are never flipped.
        organs: Restrict to these organ names (default: all of :data:`ORGAN_NAMES`).
        empty_fraction: Fraction of reports replaced by empty or near-empty text (see :func:`corrupt_some`).
    """
    return generate_reports_with_truth(n, seed=seed, ocr_noise=ocr_noise, label_noise=label_noise, organs=organs,
                                       empty_fraction=empty_fraction)[0]  # fmt: skip


def corrupt_some(records: list[dict], fraction: float, seed: int = 0) -> list[dict]:
    """Copies of ``records`` in which ``fraction`` of them have an empty or near-empty text (the real file has ~7%
    unusable OCR) and their extracted fields set to ``unknown``; organ and cancer_type are kept.

    Args:
        records: Records as returned by :func:`generate_reports`.
        fraction: Fraction in [0, 1] of the records to corrupt (rounded to a whole number).
        seed: Seed of the choice of records and junk texts.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    rng, out = random.Random(f"{seed}:corrupt"), [dict(r) for r in records]
    junk = ("", " ", "\n\n", "   \n ", "IIIII 1111 III", "Page 1 of 1", "[REDACTED]", "TCGA Redacted\nIIIII 11")
    for i in rng.sample(range(len(out)), round(fraction * len(out))):
        out[i].update(text=rng.choice(junk), **dict.fromkeys(NOISY_FIELDS, "unknown"))
        out[i]["synoptic"] = synoptic_line(out[i])
    return out


def write_reports(path: str | os.PathLike, records: list[dict]) -> Path:
    """Writes records as JSON lines, gzip-compressed (reproducibly) when the name ends in ``.gz``. Atomic: the file
    appears complete under its name or not at all.

    Args:
        path: Destination ``.jsonl`` or ``.jsonl.gz`` file; parent folders are created.
        records: JSON-serialisable dicts.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        stream = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if path.name.endswith(".gz") else raw
        with io.TextIOWrapper(stream, encoding="utf-8", newline="\n") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def read_reports(path: str | os.PathLike) -> list[dict]:
    """Reads a ``.jsonl`` or ``.jsonl.gz`` file such as :func:`write_reports` writes.

    Args:
        path: File to read.
    """
    with (gzip.open if str(path).endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
