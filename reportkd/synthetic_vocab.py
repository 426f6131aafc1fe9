"""Vocabulary tables for :mod:`reportkd.synthetic`: organs, TCGA projects, histologies, grade and stage wording.

Label values follow the normalised TCGA pathology-report corpus (``tcga-reports``): organ names, TCGA project
codes, ``G1``-``G4``, ``T1``-``T4``/``Tis``/``TX`` and lower-case histology text, with ``unknown`` for "not stated".
Frequencies are rough imitations of that corpus, not statistics to rely on.
"""

from __future__ import annotations

from dataclasses import dataclass

GRADES = ("G1", "G2", "G3", "G4", "unknown")
T_STAGES = ("T1", "T2", "T3", "T4", "Tis", "TX", "unknown")
LATERALITIES = ("left", "right", "bilateral", "midline", "unknown")
BEHAVIORS = ("malignant", "benign", "in_situ", "uncertain", "unknown")


@dataclass(frozen=True)
class Histology:
    """One histologic type of an organ: its normalised label and how reports phrase it."""

    label: str
    weight: float
    cancer_type: str
    grading: str  # key of GRADE_WORDS, or "none" (never graded -> grade "unknown")
    grade_weights: tuple[float, float, float, float]  # G1..G4
    surface: tuple[str, ...]  # how the final diagnosis names it
    generic: str  # the vaguer term a terse report uses instead
    micro: tuple[str, ...]  # microscopic description that hints at the type
    confusable: tuple[str, ...]  # labels an extractor plausibly confuses it with (same organ)
    behavior: str = "malignant"
    t_fixed: str | None = None  # e.g. "Tis" for in situ lesions


@dataclass(frozen=True)
class Organ:
    """An organ of the corpus with its projects, histologies, sites, procedures and stage distribution."""

    name: str
    weight: float
    sex: str  # "M", "F" or "" (either)
    words: tuple[str, ...]  # organ words used in running text
    histologies: tuple[Histology, ...]
    procedures: tuple[str, ...]
    sided: tuple[str, ...]  # primary-site phrases with a {side} slot (laterality left/right)
    plain: tuple[str, ...]  # primary-site phrases without laterality
    lat_weights: dict[str, float]
    subsites: tuple[str, ...]
    t_weights: dict[str, float]  # empty: never staged (brain)
    t_sub: dict[str, tuple[str, ...]]
    t_desc: dict[str, str]
    nodes: tuple[str, ...]
    extras: tuple[str, ...]  # other (benign) specimens of the same operation
    history: tuple[str, ...]
    bilateral: tuple[str, ...] = ()
    midline: tuple[str, ...] = ()
    grade_omit: float = 0.25
    t_omit: float = 0.3
    alt_type: tuple[str, float, tuple[str, ...]] | None = None  # (project, probability, its sites), e.g. READ


# grade wording per grading system: G-label -> phrasings (weak forms need the system to be read correctly)
GRADE_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "diff": {
        "G1": ("well differentiated", "well-differentiated", "G1", "grade 1", "grade I of III"),
        "G2": ("moderately differentiated", "moderately-differentiated", "G2", "grade 2", "grade II of III"),
        "G3": ("poorly differentiated", "poorly-differentiated", "G3", "grade 3", "grade III of III", "high grade"),
        "G4": ("undifferentiated", "G4", "grade 4", "anaplastic"),
    },
    "fuhrman": {
        "G1": ("Fuhrman nuclear grade 1", "Fuhrman grade 1/4", "nuclear grade I", "ISUP grade 1", "G1"),
        "G2": ("Fuhrman nuclear grade 2", "Fuhrman grade 2 of 4", "nuclear grade II", "ISUP grade 2", "G2"),
        "G3": ("Fuhrman nuclear grade 3", "Fuhrman grade 3/4", "nuclear grade III", "ISUP grade 3", "G3"),
        "G4": ("Fuhrman nuclear grade 4", "Fuhrman grade 4 of 4", "nuclear grade IV", "ISUP grade 4", "G4"),
    },
    "who": {
        "G1": ("WHO grade I", "WHO grade 1"),
        "G2": ("WHO grade II", "WHO grade 2", "WHO grade II of IV"),
        "G3": ("WHO grade III", "WHO grade 3", "WHO grade III of IV"),
        "G4": ("WHO grade IV", "WHO grade 4", "WHO grade IV of IV"),
    },
    "gleason": {
        "G1": ("Gleason score 3+3=6", "Gleason 6 (3+3)", "Gleason grade group 1 (3+3=6)"),
        "G2": ("Gleason score 3+4=7", "Gleason score 4+3=7", "Gleason 7 (3+4)", "Gleason grade group 3 (4+3=7)"),
        "G3": ("Gleason score 4+4=8", "Gleason score 4+5=9", "Gleason 9 (5+4)", "Gleason score 5+5=10"),
        "G4": ("Gleason score 5+5=10",),
    },
    "figo": {
        "G1": ("FIGO grade 1", "FIGO grade I", "well differentiated", "G1"),
        "G2": ("FIGO grade 2", "FIGO grade II", "moderately differentiated", "G2"),
        "G3": ("FIGO grade 3", "FIGO grade III", "poorly differentiated", "high grade", "G3"),
        "G4": ("undifferentiated", "G4"),
    },
    "urothelial": {
        "G1": ("low grade", "low-grade", "WHO 1973 grade 1", "G1"),
        "G2": ("grade 2 (WHO 1973)", "moderately differentiated", "G2"),
        "G3": ("high grade", "high-grade", "grade 3", "poorly differentiated", "G3"),
        "G4": ("undifferentiated", "G4"),
    },
    "edmondson": {
        "G1": ("Edmondson-Steiner grade I", "well differentiated", "G1"),
        "G2": ("Edmondson-Steiner grade II", "moderately differentiated", "G2"),
        "G3": ("Edmondson-Steiner grade III", "poorly differentiated", "G3"),
        "G4": ("Edmondson-Steiner grade IV", "undifferentiated", "G4"),
    },
}
HEDGED_GRADE = {  # "moderately to poorly differentiated" -> worst component (CAP convention)
    "G2": ("well to moderately differentiated", "grade 1-2", "low to intermediate grade"),
    "G3": ("moderately to poorly differentiated", "grade 2-3", "focally poorly differentiated"),
    "G4": ("poorly differentiated to undifferentiated", "grade 3-4", "with focal anaplasia"),
}

_SQ_MICRO = ("nests of atypical squamous cells with keratin pearls and intercellular bridges",)
_AD_MICRO = ("infiltrating malignant glands lined by columnar cells with nuclear stratification",)
_SARC_MICRO = ("fascicles of pleomorphic spindle cells with brisk mitotic activity and tumor necrosis",)


def H(label, weight, ctype, grading, gw, surface, generic, micro, conf, behavior="malignant", t_fixed=None):  # noqa: N802
    """Compact :class:`Histology` constructor for the tables below."""
    return Histology(label, weight, ctype, grading, tuple(gw), tuple(surface), generic, tuple(micro), tuple(conf),
                     behavior, t_fixed)  # fmt: skip


_NODES_PELVIC = ("right pelvic", "left pelvic", "right obturator", "left obturator", "common iliac", "external iliac")
_SUB_T = {"T1": ("1", "1a", "1b"), "T2": ("2", "2a", "2b"), "T3": ("3", "3a", "3b"), "T4": ("4", "4a")}

# fmt: off
ORGANS: tuple[Organ, ...] = (
    Organ(
        "kidney", 752, "", ("kidney", "renal"),
        (
            H("renal cell carcinoma, clear cell type", 55, "KIRC", "fuhrman", (1, 5, 4, 1),
              ("renal cell carcinoma, clear cell type", "clear cell renal cell carcinoma", "clear cell RCC", "ccRCC",
               "renal cell carcinoma, conventional (clear cell) type", "conventional renal cell carcinoma"),
              "renal cell carcinoma", ("sheets and nests of cells with optically clear cytoplasm and a delicate "
                                       "arborizing capillary network",),
              ("papillary renal cell carcinoma", "renal cell carcinoma, chromophobe type")),
            H("papillary renal cell carcinoma", 24, "KIRP", "fuhrman", (1, 5, 4, 0.5),
              ("papillary renal cell carcinoma", "renal cell carcinoma, papillary type", "papillary RCC",
               "papillary renal cell carcinoma, type 1", "papillary renal cell carcinoma, type 2"),
              "renal cell carcinoma", ("papillae with fibrovascular cores, foamy macrophages and psammoma bodies",),
              ("renal cell carcinoma, clear cell type", "renal cell carcinoma, chromophobe type")),
            H("renal cell carcinoma, chromophobe type", 10, "KICH", "fuhrman", (0.5, 4, 3, 0.3),
              ("chromophobe renal cell carcinoma", "renal cell carcinoma, chromophobe type", "chromophobe RCC"),
              "renal cell carcinoma", ("large polygonal cells with pale reticulated cytoplasm, perinuclear halos and "
                                       "raisinoid nuclei; Hale colloidal iron positive",),
              ("oncocytoma", "renal cell carcinoma, clear cell type")),
            H("renal cell carcinoma with sarcomatoid features", 3, "KIRC", "fuhrman", (0, 0, 1, 6),
              ("renal cell carcinoma with sarcomatoid differentiation", "sarcomatoid renal cell carcinoma"),
              "renal cell carcinoma", _SARC_MICRO, ("renal cell carcinoma, clear cell type",)),
            H("multilocular cystic renal cell carcinoma", 1.5, "KIRC", "fuhrman", (5, 2, 0, 0),
              ("multilocular cystic renal cell carcinoma", "cystic clear cell renal cell carcinoma"),
              "renal cell carcinoma", ("cyst walls lined by a single layer of clear cells without expansile nodules",),
              ("renal cell carcinoma, clear cell type",)),
            H("oncocytoma", 1.5, "KICH", "none", (0, 0, 0, 0), ("renal oncocytoma", "oncocytoma"),
              "oncocytic renal neoplasm", ("nests of cells with granular eosinophilic cytoplasm in edematous stroma",),
              ("renal cell carcinoma, chromophobe type",), "benign"),
        ),
        ("radical nephrectomy", "partial nephrectomy", "laparoscopic radical nephrectomy", "nephrectomy"),
        ("kidney, {side}", "{side} kidney", "{side} renal mass", "kidney, {side}, upper pole"),
        ("kidney", "renal mass"),
        {"left": 38, "right": 32, "bilateral": 1, "unknown": 29},
        ("upper pole", "lower pole", "mid kidney", "interpolar region", "renal hilum"),
        {"T1": 45, "T2": 23, "T3": 29, "T4": 2, "TX": 1}, {"T1": ("1a", "1b"), "T2": ("2", "2a", "2b"),
                                                           "T3": ("3a", "3b"), "T4": ("4",)},
        {"T1": "tumor limited to the kidney, 7 cm or less", "T2": "tumor limited to the kidney, more than 7 cm",
         "T3": "tumor extends into the renal vein or perinephric fat", "T4": "tumor invades beyond Gerota fascia"},
        ("hilar", "renal hilar", "para-aortic", "paracaval", "interaortocaval"),
        ("Adrenal gland, {side}, adrenalectomy: benign adrenal cortex", "Ureter margin: negative for carcinoma"),
        ("renal mass", "incidental renal mass on CT", "hematuria and flank pain", "enhancing renal lesion"),
        bilateral=("bilateral kidneys",), grade_omit=0.3,
    ),
    Organ(
        "lung", 716, "", ("lung", "pulmonary"),
        (
            H("adenocarcinoma", 40, "LUAD", "diff", (1, 5, 5, 0.2),
              ("adenocarcinoma", "invasive adenocarcinoma", "adenocarcinoma of lung, acinar predominant",
               "lung adenocarcinoma", "pulmonary adenocarcinoma, papillary predominant"),
              "non-small cell carcinoma", ("acinar and papillary glands; tumor cells TTF-1 and napsin A positive, "
                                           "p40 negative",),
              ("squamous cell carcinoma", "adenosquamous carcinoma", "mucinous adenocarcinoma")),
            H("mucinous adenocarcinoma", 3, "LUAD", "diff", (2, 4, 2, 0),
              ("invasive mucinous adenocarcinoma", "mucinous adenocarcinoma"), "non-small cell carcinoma",
              ("goblet and columnar cells with abundant intracytoplasmic mucin lining alveolar walls",),
              ("adenocarcinoma", "bronchioloalveolar carcinoma")),
            H("bronchioloalveolar carcinoma", 3, "LUAD", "diff", (4, 4, 1, 0),
              ("bronchioloalveolar carcinoma", "adenocarcinoma, bronchioloalveolar pattern", "BAC"),
              "adenocarcinoma", ("lepidic growth of atypical pneumocytes along intact alveolar septa",),
              ("adenocarcinoma", "mucinous adenocarcinoma")),
            H("squamous cell carcinoma", 44, "LUSC", "diff", (0.5, 5, 5, 0.2),
              ("squamous cell carcinoma", "invasive squamous cell carcinoma", "keratinizing squamous cell carcinoma",
               "squamous carcinoma of lung", "SCC"),
              "non-small cell carcinoma", (_SQ_MICRO[0] + "; tumor cells p40 and CK5/6 positive, TTF-1 negative",),
              ("adenocarcinoma", "basaloid squamous cell carcinoma", "adenosquamous carcinoma")),
            H("basaloid squamous cell carcinoma", 2, "LUSC", "diff", (0, 1, 5, 0),
              ("basaloid squamous cell carcinoma", "squamous cell carcinoma, basaloid variant"),
              "non-small cell carcinoma", ("lobules of small basaloid cells with peripheral palisading",),
              ("squamous cell carcinoma",)),
            H("adenosquamous carcinoma", 2, "LUAD", "diff", (0, 2, 5, 0),
              ("adenosquamous carcinoma",), "non-small cell carcinoma",
              ("both glandular and squamous components, each exceeding 10% of the tumor",),
              ("adenocarcinoma", "squamous cell carcinoma")),
        ),
        ("lobectomy", "pneumonectomy", "wedge resection", "segmentectomy", "bilobectomy"),
        ("lung, {side} upper lobe", "{side} lower lobe of lung", "lung, {side}", "{side} lung mass"), ("lung",),
        {"left": 36, "right": 40, "bilateral": 1, "unknown": 23},
        ("peripheral parenchyma", "hilar region", "subpleural parenchyma", "apical segment", "superior segment"),
        {"T1": 20, "T2": 60, "T3": 12, "T4": 6, "TX": 1}, {"T1": ("1a", "1b"), "T2": ("2a", "2b"), "T3": ("3",),
                                                          "T4": ("4",)},
        {"T1": "tumor 3 cm or less surrounded by lung", "T2": "tumor invades the visceral pleura",
         "T3": "tumor invades the chest wall", "T4": "tumor invades the mediastinum"},
        ("level 7 (subcarinal)", "level 4R", "level 4L", "level 10", "level 11", "level 5", "hilar"),
        ("Rib, resection: benign bone and marrow", "Bronchial margin: negative for carcinoma"),
        ("lung mass", "lung nodule on CT", "non-small cell lung cancer", "hemoptysis and cough, lung mass"),
        grade_omit=0.3,
    ),
    Organ(
        "brain", 743, "", ("brain", "cerebral"),
        (
            H("glioblastoma", 40, "GBM", "who", (0, 0, 0, 1),
              ("glioblastoma", "glioblastoma multiforme", "GBM", "glioblastoma, WHO grade IV"), "high grade glioma",
              ("hypercellular astrocytic neoplasm with microvascular proliferation and pseudopalisading necrosis",),
              ("anaplastic astrocytoma", "gliosarcoma")),
            H("gliosarcoma", 2, "GBM", "who", (0, 0, 0, 1), ("gliosarcoma",), "high grade glioma",
              ("biphasic glial and sarcomatous (reticulin-rich spindle cell) components",), ("glioblastoma",)),
            H("astrocytoma", 8, "LGG", "who", (0, 1, 0, 0),
              ("diffuse astrocytoma", "astrocytoma", "fibrillary astrocytoma", "low grade astrocytoma"), "glioma",
              ("moderately hypercellular infiltrating astrocytic glioma without mitoses or necrosis",),
              ("anaplastic astrocytoma", "oligoastrocytoma")),
            H("anaplastic astrocytoma", 13, "LGG", "who", (0, 0, 1, 0),
              ("anaplastic astrocytoma", "astrocytoma, anaplastic"), "high grade glioma",
              ("infiltrating astrocytic glioma with nuclear atypia and mitoses, no necrosis",),
              ("glioblastoma", "astrocytoma")),
            H("oligodendroglioma", 14, "LGG", "who", (0, 1, 0, 0),
              ("oligodendroglioma", "oligodendroglioma, 1p/19q codeleted"), "glioma",
              ("round nuclei with perinuclear halos and a chicken-wire capillary network",),
              ("anaplastic oligodendroglioma", "oligoastrocytoma")),
            H("anaplastic oligodendroglioma", 10, "LGG", "who", (0, 0, 1, 0),
              ("anaplastic oligodendroglioma",), "high grade glioma", ("oligodendroglial cells with brisk mitoses",),
              ("oligodendroglioma", "anaplastic oligoastrocytoma")),
            H("oligoastrocytoma", 6, "LGG", "who", (0, 1, 0, 0), ("oligoastrocytoma", "mixed glioma"), "glioma",
              ("mixed oligodendroglial and astrocytic components",), ("oligodendroglioma", "astrocytoma")),
            H("anaplastic oligoastrocytoma", 4, "LGG", "who", (0, 0, 1, 0),
              ("anaplastic oligoastrocytoma", "anaplastic mixed glioma"), "high grade glioma",
              ("mixed glioma with increased mitotic activity",), ("oligoastrocytoma", "anaplastic oligodendroglioma")),
            H("diffuse large b-cell lymphoma", 0.7, "DLBC", "none", (0, 0, 0, 0),
              ("diffuse large B-cell lymphoma", "primary CNS lymphoma, diffuse large B-cell type"),
              "malignant neoplasm",
              ("angiocentric sheets of large atypical lymphoid cells, CD20 positive",), ("glioblastoma",)),
        ),
        ("craniotomy, resection", "stereotactic biopsy", "craniotomy, tumor resection", "gross total resection"),
        ("{side} frontal lobe", "{side} temporal lobe", "brain, {side} parietal", "{side} temporal mass"),
        ("brain", "brain tumor", "brain lesion"), {"left": 28, "right": 31, "midline": 1, "unknown": 40},
        ("cortex and white matter", "periventricular region", "deep white matter", "insula"),
        {}, {}, {}, (), ("Dura, excision: fibrous dura without tumor",),
        ("seizures and headache, brain mass", "enhancing brain lesion on MRI", "new onset seizures"),
        midline=("corpus callosum, midline", "midline thalamic mass"), grade_omit=0.22, t_omit=1.0,
    ),
    Organ(
        "colorectal", 508, "", ("colon", "colonic", "bowel"),
        (
            H("adenocarcinoma", 72, "COAD", "diff", (1, 7, 2, 0),
              ("adenocarcinoma", "invasive adenocarcinoma", "adenocarcinoma of the colon", "colonic adenocarcinoma",
               "adenocarcinoma of the colorectal type"),
              "carcinoma", ("cribriform glands with dirty necrosis invading through the muscularis propria",),
              ("mucinous adenocarcinoma", "signet ring cell carcinoma")),
            H("mucinous adenocarcinoma", 10, "COAD", "diff", (0.5, 5, 3, 0),
              ("mucinous adenocarcinoma", "adenocarcinoma, mucinous type", "colloid carcinoma"), "adenocarcinoma",
              ("pools of extracellular mucin (>50% of the tumor) containing floating malignant epithelium",),
              ("adenocarcinoma", "signet ring cell carcinoma")),
            H("signet ring cell carcinoma", 1.5, "COAD", "diff", (0, 0, 1, 0),
              ("signet ring cell carcinoma", "adenocarcinoma with signet ring cell features"), "adenocarcinoma",
              ("discohesive cells with intracytoplasmic mucin displacing the nucleus",),
              ("mucinous adenocarcinoma", "adenocarcinoma")),
            H("medullary carcinoma", 1, "COAD", "diff", (0, 0, 1, 0), ("medullary carcinoma",), "carcinoma",
              ("solid sheets of cells with vesicular nuclei and prominent intraepithelial lymphocytes",),
              ("adenocarcinoma",)),
            H("intramucosal adenocarcinoma", 1.2, "COAD", "diff", (1, 3, 0, 0),
              ("intramucosal adenocarcinoma", "adenocarcinoma in situ arising in a tubulovillous adenoma",
               "high grade dysplasia / intramucosal carcinoma"),
              "adenocarcinoma", ("neoplastic glands confined to the lamina propria, no submucosal invasion",),
              ("adenocarcinoma", "tubulovillous adenoma"), "in_situ", "Tis"),
            H("tubulovillous adenoma", 0.8, "COAD", "none", (0, 0, 0, 0),
              ("tubulovillous adenoma", "tubulovillous adenoma with low grade dysplasia"), "polyp",
              ("villous and tubular architecture with low grade dysplasia; no invasion",),
              ("intramucosal adenocarcinoma",), "benign"),
        ),
        ("right hemicolectomy", "sigmoid colectomy", "segmental colectomy", "low anterior resection",
         "abdominoperineal resection", "total colectomy"),
        ("{side} colon", "colon, {side} hemicolectomy"), ("sigmoid colon", "transverse colon", "cecum",
                                                         "ascending colon", "colon"),
        {"right": 10, "left": 3, "unknown": 87},
        ("mucosa", "ileocecal valve region", "bowel wall", "hepatic flexure", "splenic flexure"),
        {"T1": 4, "T2": 19, "T3": 62, "T4": 15}, _SUB_T,
        {"T1": "tumor invades submucosa", "T2": "tumor invades muscularis propria",
         "T3": "tumor invades through the muscularis propria into pericolorectal tissues",
         "T4": "tumor penetrates the visceral peritoneum"},
        ("pericolic", "mesenteric", "ileocolic", "perirectal", "apical"),
        ("Appendix: no diagnostic abnormality", "Terminal ileum: benign small bowel mucosa",
         "Omentum, biopsy: negative for malignancy"),
        ("colon mass on colonoscopy", "anemia and change in bowel habits", "rectal bleeding, mass on colonoscopy"),
        grade_omit=0.2, t_omit=0.2,
        alt_type=("READ", 0.25, ("rectum", "rectosigmoid junction", "rectal mass", "rectum and sigmoid colon")),
    ),
    Organ(
        "head_and_neck", 418, "", ("oral cavity", "tongue", "larynx"),
        (
            H("squamous cell carcinoma", 72, "HNSC", "diff", (1.5, 6, 3, 0),
              ("squamous cell carcinoma", "invasive squamous cell carcinoma", "SCC", "squamous carcinoma",
               "squamous cell carcinoma, conventional"),
              "carcinoma", _SQ_MICRO, ("keratinizing squamous cell carcinoma", "basaloid squamous cell carcinoma")),
            H("keratinizing squamous cell carcinoma", 9, "HNSC", "diff", (2, 5, 1, 0),
              ("keratinizing squamous cell carcinoma", "squamous cell carcinoma, keratinizing type"), "carcinoma",
              ("abundant keratinization with keratin pearls",), ("squamous cell carcinoma", "verrucous carcinoma")),
            H("basaloid squamous cell carcinoma", 4, "HNSC", "diff", (0, 1, 5, 0),
              ("basaloid squamous cell carcinoma",), "carcinoma", ("basaloid nests with comedo necrosis",),
              ("squamous cell carcinoma",)),
            H("verrucous carcinoma", 2, "HNSC", "diff", (5, 1, 0, 0), ("verrucous carcinoma",), "carcinoma",
              ("exophytic, bland, pushing-border squamous proliferation",), ("keratinizing squamous cell carcinoma",)),
            H("spindle cell carcinoma", 1.5, "HNSC", "diff", (0, 0, 3, 1),
              ("spindle cell (sarcomatoid) squamous cell carcinoma", "sarcomatoid carcinoma"), "carcinoma",
              _SARC_MICRO, ("squamous cell carcinoma",)),
            H("squamous cell carcinoma in situ", 1.5, "HNSC", "none", (0, 0, 0, 0),
              ("squamous cell carcinoma in situ", "carcinoma in situ, severe dysplasia"), "dysplasia",
              ("full-thickness atypia without invasion through the basement membrane",),
              ("squamous cell carcinoma",), "in_situ", "Tis"),
        ),
        ("partial glossectomy", "total laryngectomy", "composite resection", "hemiglossectomy", "tonsillectomy",
         "wide local excision"),
        ("{side} lateral tongue", "tongue, {side} lateral", "{side} tonsil", "{side} floor of mouth",
         "{side} alveolar ridge"), ("larynx, supraglottic", "larynx", "oral cavity", "hypopharynx"),
        {"left": 27, "right": 30, "bilateral": 14, "midline": 2, "unknown": 27},
        ("mucosal surface", "deep musculature", "ventral surface", "lateral border"),
        {"T1": 10, "T2": 38, "T3": 22, "T4": 30}, {"T1": ("1",), "T2": ("2",), "T3": ("3",), "T4": ("4a", "4b")},
        {"T1": "tumor 2 cm or less", "T2": "tumor more than 2 cm but not more than 4 cm",
         "T3": "tumor more than 4 cm", "T4": "tumor invades adjacent structures"},
        ("level II", "level III", "level IV", "level IB", "submandibular", "level V"),
        ("Submandibular gland, excision: benign salivary gland", "Thyroid, partial: benign thyroid tissue"),
        ("oral tongue lesion", "hoarseness, laryngeal mass", "neck mass", "nonhealing ulcer of the tongue"),
        bilateral=("bilateral tonsils", "tongue base, bilateral"),
        midline=("floor of mouth, midline", "base of tongue, midline"),
        grade_omit=0.3, t_omit=0.35,
    ),
    Organ(
        "prostate", 400, "M", ("prostate", "prostatic"),
        (
            H("adenocarcinoma", 88, "PRAD", "gleason", (1, 5, 3, 0),
              ("adenocarcinoma", "prostatic adenocarcinoma", "adenocarcinoma, acinar type", "acinar adenocarcinoma",
               "adenocarcinoma of prostate, usual type"),
              "carcinoma", ("small crowded infiltrative glands with prominent nucleoli lacking basal cells",),
              ("ductal adenocarcinoma", "mucinous adenocarcinoma")),
            H("ductal adenocarcinoma", 3.5, "PRAD", "gleason", (0, 1, 3, 0),
              ("ductal adenocarcinoma", "prostatic ductal adenocarcinoma"), "adenocarcinoma",
              ("tall pseudostratified columnar cells in papillary and cribriform arrangements",),
              ("adenocarcinoma",)),
            H("mucinous adenocarcinoma", 1.5, "PRAD", "gleason", (0, 2, 2, 0),
              ("mucinous adenocarcinoma", "adenocarcinoma with mucinous features"), "adenocarcinoma",
              ("glands floating in extracellular mucin",), ("adenocarcinoma",)),
            H("small cell carcinoma", 0.6, "PRAD", "none", (0, 0, 0, 0), ("small cell carcinoma",), "carcinoma",
              ("sheets of small cells with nuclear molding, synaptophysin positive",), ("adenocarcinoma",)),
        ),
        ("radical prostatectomy", "radical retropubic prostatectomy", "robotic-assisted radical prostatectomy"),
        ("prostate, {side} lobe", "{side} lobe of prostate", "{side} apex of prostate"),
        ("prostate", "prostate gland"),
        {"bilateral": 42, "right": 13, "left": 6, "unknown": 39},
        ("peripheral zone", "posterior", "apex", "base", "transition zone"),
        {"T2": 44, "T3": 53, "T4": 3}, {"T2": ("2", "2a", "2b", "2c"), "T3": ("3a", "3b"), "T4": ("4",)},
        {"T2": "organ confined", "T3": "extraprostatic extension", "T4": "tumor invades the bladder neck or rectum"},
        _NODES_PELVIC, ("Seminal vesicles: negative for carcinoma", "Vas deferens, {side}: no tumor"),
        ("elevated PSA", "elevated PSA, prostate cancer on biopsy", "adenocarcinoma on needle biopsy"),
        bilateral=("prostate, bilateral lobes", "both lobes of prostate"), grade_omit=0.3, t_omit=0.22,
    ),
    Organ(
        "uterus", 394, "F", ("uterus", "endometrium", "endometrial"),
        (
            H("endometrioid adenocarcinoma", 68, "UCEC", "figo", (4, 3, 2, 0),
              ("endometrioid adenocarcinoma", "endometrial adenocarcinoma, endometrioid type",
               "adenocarcinoma, endometrioid type", "endometrioid carcinoma"),
              "adenocarcinoma", ("back-to-back endometrioid glands with squamous morules",),
              ("serous adenocarcinoma", "mixed endometrioid and serous adenocarcinoma")),
            H("serous adenocarcinoma", 9, "UCEC", "figo", (0, 0, 1, 0),
              ("serous adenocarcinoma", "uterine papillary serous carcinoma", "papillary serous carcinoma", "UPSC"),
              "adenocarcinoma", ("papillae lined by markedly pleomorphic cells; p53 aberrant, WT-1 negative",),
              ("endometrioid adenocarcinoma", "clear cell carcinoma")),
            H("mixed endometrioid and serous adenocarcinoma", 3, "UCEC", "figo", (0, 0, 1, 0),
              ("mixed endometrioid and serous adenocarcinoma", "mixed cell type adenocarcinoma"), "adenocarcinoma",
              ("endometrioid and serous components",), ("endometrioid adenocarcinoma", "serous adenocarcinoma")),
            H("clear cell carcinoma", 2, "UCEC", "figo", (0, 0, 1, 0), ("clear cell carcinoma",), "adenocarcinoma",
              ("hobnail cells with clear cytoplasm",), ("serous adenocarcinoma",)),
            H("carcinosarcoma", 8, "UCS", "figo", (0, 0, 1, 0),
              ("carcinosarcoma", "malignant mixed mullerian tumor", "MMMT", "carcinosarcoma (MMMT)"),
              "malignant neoplasm", ("biphasic high grade carcinoma with heterologous rhabdomyoblastic sarcoma",),
              ("serous adenocarcinoma", "leiomyosarcoma")),
            H("leiomyosarcoma", 5, "SARC", "diff", (0, 1, 3, 0),
              ("leiomyosarcoma", "uterine leiomyosarcoma"), "sarcoma", _SARC_MICRO,
              ("carcinosarcoma", "endometrial stromal sarcoma")),
            H("endometrial stromal sarcoma", 1.2, "SARC", "diff", (3, 1, 0, 0),
              ("low grade endometrial stromal sarcoma", "endometrial stromal sarcoma"), "sarcoma",
              ("tongue-like myometrial infiltration by uniform stromal cells",), ("leiomyosarcoma",)),
        ),
        ("total abdominal hysterectomy and bilateral salpingo-oophorectomy", "total laparoscopic hysterectomy",
         "robotic hysterectomy", "TAH-BSO", "radical hysterectomy"),
        (), ("uterus", "uterus, cervix, tubes and ovaries", "endometrium", "uterine corpus"),
        {"bilateral": 24, "unknown": 76},
        ("fundus", "posterior wall", "anterior wall", "lower uterine segment", "endometrial cavity"),
        {"T1": 67, "T2": 16, "T3": 15, "T4": 1, "TX": 1}, {"T1": ("1a", "1b"), "T2": ("2",), "T3": ("3a", "3b"),
                                                          "T4": ("4",)},
        {"T1": "tumor confined to the corpus uteri", "T2": "tumor invades cervical stroma",
         "T3": "tumor involves serosa or adnexa", "T4": "tumor invades bladder mucosa"},
        _NODES_PELVIC + ("para-aortic",), ("Omentum, omentectomy: negative for malignancy",),
        ("postmenopausal bleeding", "endometrial carcinoma on biopsy", "abnormal uterine bleeding"),
        bilateral=("uterus, cervix, bilateral tubes and ovaries", "uterus with bilateral adnexa"),
        grade_omit=0.25, t_omit=0.3,
    ),
    Organ(
        "bladder", 349, "", ("bladder", "urinary bladder", "vesical"),
        (
            H("urothelial carcinoma", 62, "BLCA", "urothelial", (0.3, 0.5, 9, 0.2),
              ("urothelial carcinoma", "invasive urothelial carcinoma", "transitional cell carcinoma",
               "high grade invasive urothelial carcinoma", "infiltrating urothelial carcinoma"),
              "carcinoma", ("nests of pleomorphic urothelial cells invading the muscularis propria",),
              ("papillary urothelial carcinoma", "urothelial carcinoma with squamous differentiation")),
            H("papillary urothelial carcinoma", 10, "BLCA", "urothelial", (1, 1, 5, 0),
              ("papillary urothelial carcinoma", "transitional cell carcinoma, papillary"), "carcinoma",
              ("papillary fronds lined by atypical urothelium with stromal invasion",), ("urothelial carcinoma",)),
            H("urothelial carcinoma with squamous differentiation", 8, "BLCA", "urothelial", (0, 0.5, 6, 0),
              ("urothelial carcinoma with squamous differentiation",), "carcinoma",
              ("urothelial carcinoma with foci of keratinization",),
              ("squamous cell carcinoma", "urothelial carcinoma")),
            H("micropapillary urothelial carcinoma", 3, "BLCA", "urothelial", (0, 0, 1, 0),
              ("micropapillary urothelial carcinoma", "urothelial carcinoma, micropapillary variant"), "carcinoma",
              ("small nests in retraction spaces",), ("urothelial carcinoma",)),
            H("squamous cell carcinoma", 4, "BLCA", "diff", (0.5, 3, 3, 0), ("squamous cell carcinoma",),
              "carcinoma", _SQ_MICRO, ("urothelial carcinoma with squamous differentiation",)),
            H("adenocarcinoma", 2, "BLCA", "diff", (0, 3, 3, 0), ("adenocarcinoma", "adenocarcinoma of bladder"),
              "carcinoma", _AD_MICRO, ("urothelial carcinoma",)),
            H("small cell carcinoma", 1.5, "BLCA", "urothelial", (0, 0, 0, 1),
              ("small cell carcinoma", "small cell neuroendocrine carcinoma"), "carcinoma",
              ("sheets of small cells with nuclear molding, synaptophysin positive",), ("urothelial carcinoma",)),
            H("urothelial carcinoma in situ", 2, "BLCA", "urothelial", (0, 0, 1, 0),
              ("urothelial carcinoma in situ", "carcinoma in situ of the bladder"), "carcinoma",
              ("flat urothelium with full-thickness high grade atypia, no invasion",),
              ("urothelial carcinoma",), "in_situ", "Tis"),
        ),
        ("radical cystectomy", "cystoprostatectomy", "transurethral resection of bladder tumor", "partial cystectomy",
         "anterior exenteration"),
        ("bladder, {side} lateral wall", "{side} lateral wall of bladder", "{side} ureteral orifice"),
        ("bladder", "urinary bladder", "bladder dome", "bladder, trigone", "posterior bladder wall"),
        {"left": 11, "right": 13, "bilateral": 22, "unknown": 54},
        ("dome", "trigone", "posterior wall", "bladder neck", "lateral wall"),
        {"T1": 6, "T2": 45, "T3": 35, "T4": 13, "TX": 1}, {"T1": ("1",), "T2": ("2a", "2b"), "T3": ("3a", "3b"),
                                                          "T4": ("4a",)},
        {"T1": "tumor invades lamina propria", "T2": "tumor invades muscularis propria",
         "T3": "tumor invades perivesical tissue", "T4": "tumor invades prostatic stroma"},
        _NODES_PELVIC, ("Ureter, {side}, margin: negative for carcinoma", "Urethral margin: negative"),
        ("hematuria, bladder tumor", "muscle invasive bladder cancer on TURBT", "gross hematuria"),
        bilateral=("bladder with bilateral ureters", "bladder, bilateral lateral walls"), grade_omit=0.3, t_omit=0.3,
    ),
    Organ(
        "liver", 336, "", ("liver", "hepatic"),
        (
            H("hepatocellular carcinoma", 82, "LIHC", "edmondson", (2, 5, 3, 0.2),
              ("hepatocellular carcinoma", "HCC", "hepatocellular carcinoma, trabecular type",
               "hepatocellular carcinoma, pseudoglandular pattern"),
              "carcinoma", ("thickened hepatocellular trabeculae lacking reticulin, with bile production",),
              ("cholangiocarcinoma", "combined hepatocellular-cholangiocarcinoma")),
            H("fibrolamellar carcinoma", 1.2, "LIHC", "none", (0, 0, 0, 0),
              ("fibrolamellar hepatocellular carcinoma", "fibrolamellar carcinoma"), "carcinoma",
              ("large oncocytic cells separated by lamellar collagen bands",), ("hepatocellular carcinoma",)),
            H("combined hepatocellular-cholangiocarcinoma", 2, "LIHC", "diff", (0, 2, 3, 0),
              ("combined hepatocellular-cholangiocarcinoma", "mixed hepatocellular and cholangiocarcinoma"),
              "carcinoma", ("areas of hepatocellular and glandular differentiation",),
              ("hepatocellular carcinoma", "cholangiocarcinoma")),
            H("cholangiocarcinoma", 10, "CHOL", "diff", (1, 5, 3, 0),
              ("intrahepatic cholangiocarcinoma", "cholangiocarcinoma", "adenocarcinoma consistent with "
                                                                         "cholangiocarcinoma"),
              "adenocarcinoma", ("desmoplastic stroma with infiltrating CK7 positive glands",),
              ("hepatocellular carcinoma", "combined hepatocellular-cholangiocarcinoma")),
            H("hepatocellular adenoma", 1, "LIHC", "none", (0, 0, 0, 0), ("hepatocellular adenoma",),
              "hepatocellular neoplasm", ("benign hepatocytes in plates without portal tracts",),
              ("hepatocellular carcinoma",), "benign"),
        ),
        ("partial hepatectomy", "segmentectomy", "right hepatectomy", "left lateral segmentectomy", "wedge resection"),
        ("liver, {side} lobe", "{side} lobe of liver", "{side} hepatic lobe"), ("liver", "liver, segment 6",
                                                                           "liver, segments 5 and 8"),
        {"right": 11, "left": 10, "unknown": 79},
        ("subcapsular parenchyma", "central parenchyma", "region of the hepatic vein", "segment 7"),
        {"T1": 25, "T2": 50, "T3": 22, "T4": 3}, _SUB_T,
        {"T1": "solitary tumor without vascular invasion", "T2": "solitary tumor with vascular invasion",
         "T3": "multiple tumors, any more than 5 cm", "T4": "tumor invades adjacent organs"},
        ("hilar", "portal", "hepatic artery"), ("Gallbladder, cholecystectomy: chronic cholecystitis",),
        ("liver mass, hepatitis C cirrhosis", "elevated AFP, liver lesion", "hepatic mass on CT"),
        grade_omit=0.3, t_omit=0.35,
    ),
    Organ(
        "ovary", 302, "F", ("ovary", "ovarian", "adnexa"),
        (
            H("serous adenocarcinoma", 74, "OV", "figo", (0.3, 1, 8, 0),
              ("serous adenocarcinoma", "high-grade serous carcinoma", "papillary serous adenocarcinoma",
               "serous carcinoma", "papillary serous carcinoma"),
              "adenocarcinoma",
              ("slit-like spaces and papillae lined by atypical cells; WT-1 positive, p53 aberrant",),
              ("endometrioid adenocarcinoma", "clear cell carcinoma", "carcinosarcoma")),
            H("endometrioid adenocarcinoma", 6, "OV", "figo", (2, 3, 2, 0),
              ("endometrioid adenocarcinoma", "endometrioid carcinoma of ovary"), "adenocarcinoma",
              ("endometrioid glands with squamous differentiation",), ("serous adenocarcinoma",)),
            H("clear cell carcinoma", 4, "OV", "figo", (0, 0, 1, 0), ("clear cell carcinoma",), "adenocarcinoma",
              ("hobnail and clear cells in tubulocystic patterns",), ("serous adenocarcinoma",)),
            H("mucinous adenocarcinoma", 3, "OV", "figo", (2, 3, 1, 0), ("mucinous adenocarcinoma",),
              "adenocarcinoma", ("intestinal-type mucinous epithelium with expansile invasion",),
              ("serous adenocarcinoma",)),
            H("carcinosarcoma", 3, "OV", "figo", (0, 0, 1, 0), ("carcinosarcoma", "malignant mixed mullerian tumor"),
              "malignant neoplasm", ("malignant epithelial and sarcomatous elements",), ("serous adenocarcinoma",)),
            H("serous borderline tumor", 2, "OV", "none", (0, 0, 0, 0),
              ("serous borderline tumor", "atypical proliferative serous tumor"), "serous tumor",
              ("hierarchical papillary branching without destructive stromal invasion",),
              ("serous adenocarcinoma",), "uncertain"),
        ),
        ("bilateral salpingo-oophorectomy", "tumor debulking", "total abdominal hysterectomy with BSO",
         "salpingo-oophorectomy"),
        ("ovary, {side}", "{side} ovary", "{side} ovary and fallopian tube", "{side} adnexal mass"),
        ("ovary", "adnexal mass", "pelvic mass"), {"bilateral": 45, "left": 18, "right": 19, "unknown": 18},
        ("surface", "cortex", "hilum", "solid and cystic parenchyma"),
        {"T1": 12, "T2": 13, "T3": 75}, {"T1": ("1a", "1c"), "T2": ("2a", "2b"), "T3": ("3a", "3b", "3c")},
        {"T1": "tumor limited to ovaries", "T2": "tumor with pelvic extension",
         "T3": "peritoneal metastasis beyond the pelvis"},
        _NODES_PELVIC + ("para-aortic",), ("Omentum, omentectomy: metastatic carcinoma", "Uterus: benign"),
        ("pelvic mass, elevated CA-125", "ovarian mass", "ascites and elevated CA-125"),
        bilateral=("bilateral ovaries", "ovaries, bilateral", "right and left ovaries"), grade_omit=0.3, t_omit=0.35,
    ),
    Organ(
        "cervix", 259, "F", ("cervix", "cervical"),
        (
            H("squamous cell carcinoma", 62, "CESC", "diff", (1, 5, 3, 0),
              ("squamous cell carcinoma", "invasive squamous cell carcinoma", "squamous carcinoma of the cervix"),
              "carcinoma", _SQ_MICRO,
              ("squamous cell carcinoma, non-keratinizing", "squamous cell carcinoma, keratinizing")),
            H("squamous cell carcinoma, non-keratinizing", 9, "CESC", "diff", (0.5, 4, 4, 0),
              ("squamous cell carcinoma, non-keratinizing", "non-keratinizing squamous cell carcinoma",
               "squamous cell carcinoma, large cell non-keratinizing"),
              "carcinoma", ("sheets of polygonal cells without keratin pearls",), ("squamous cell carcinoma",)),
            H("squamous cell carcinoma, keratinizing", 4, "CESC", "diff", (2, 4, 1, 0),
              ("squamous cell carcinoma, keratinizing", "keratinizing squamous cell carcinoma"), "carcinoma",
              ("keratin pearls",), ("squamous cell carcinoma",)),
            H("endocervical adenocarcinoma", 12, "CESC", "diff", (2, 4, 2, 0),
              ("endocervical adenocarcinoma", "adenocarcinoma, endocervical type",
               "mucinous adenocarcinoma of endocervical type"),
              "adenocarcinoma", ("endocervical-type glands with apical mitoses and apoptotic bodies; p16 positive",),
              ("adenosquamous carcinoma",)),
            H("adenosquamous carcinoma", 3, "CESC", "diff", (0, 2, 3, 0), ("adenosquamous carcinoma",), "carcinoma",
              ("glandular and squamous components",),
              ("endocervical adenocarcinoma", "squamous cell carcinoma")),
            H("squamous cell carcinoma in situ", 1.5, "CESC", "none", (0, 0, 0, 0),
              ("squamous cell carcinoma in situ", "CIN III / carcinoma in situ", "high grade squamous "
                                                                                 "intraepithelial lesion (CIN 3)"),
              "dysplasia", ("full-thickness dysplasia without stromal invasion",),
              ("squamous cell carcinoma",), "in_situ", "Tis"),
        ),
        ("radical hysterectomy", "cold knife cone biopsy", "trachelectomy", "LEEP excision"),
        ("cervix, {side} parametrium", "{side} cervical wall"), ("cervix", "uterine cervix", "cervix, 12 o'clock",
                                                                "uterus and cervix"),
        {"bilateral": 9, "right": 2, "left": 2, "unknown": 87},
        ("transformation zone", "ectocervix", "endocervical canal", "anterior lip"),
        {"T1": 60, "T2": 33, "T3": 5, "T4": 2}, {"T1": ("1b1", "1b2", "1a2"), "T2": ("2a", "2b"), "T3": ("3",),
                                                "T4": ("4",)},
        {"T1": "carcinoma confined to the cervix", "T2": "tumor invades beyond the uterus",
         "T3": "tumor extends to the pelvic wall", "T4": "tumor invades bladder mucosa"},
        _NODES_PELVIC, ("Ovaries, bilateral: benign", "Vaginal cuff: negative for carcinoma"),
        ("abnormal Pap smear", "cervical mass", "postcoital bleeding, cervical lesion"),
        bilateral=("cervix with bilateral parametria",), grade_omit=0.35, t_omit=0.5,
    ),
    Organ(
        "pancreas", 149, "", ("pancreas", "pancreatic"),
        (
            H("ductal adenocarcinoma", 80, "PAAD", "diff", (0.5, 5, 4, 0),
              ("ductal adenocarcinoma", "invasive ductal adenocarcinoma", "pancreatic ductal adenocarcinoma",
               "adenocarcinoma, ductal type", "adenocarcinoma"),
              "adenocarcinoma", ("haphazard infiltrating glands in desmoplastic stroma with perineural invasion",),
              ("adenosquamous carcinoma", "colloid carcinoma")),
            H("adenosquamous carcinoma", 3, "PAAD", "diff", (0, 1, 4, 0), ("adenosquamous carcinoma",), "carcinoma",
              ("glandular and squamous differentiation",), ("ductal adenocarcinoma",)),
            H("colloid carcinoma", 3, "PAAD", "diff", (1, 3, 1, 0),
              ("colloid carcinoma", "mucinous noncystic carcinoma"), "adenocarcinoma", ("mucin pools",),
              ("ductal adenocarcinoma",
               "invasive carcinoma arising in intraductal papillary mucinous neoplasm")),
            H("invasive carcinoma arising in intraductal papillary mucinous neoplasm", 3, "PAAD", "diff", (1, 3, 1, 0),
              ("invasive carcinoma arising in an intraductal papillary mucinous neoplasm", "IPMN with invasive "
                                                                                          "carcinoma"),
              "adenocarcinoma", ("dilated ducts with papillary mucinous epithelium and an invasive component",),
              ("ductal adenocarcinoma", "colloid carcinoma")),
            H("neuroendocrine tumor", 4, "PAAD", "diff", (4, 3, 0, 0),
              ("well-differentiated neuroendocrine tumor", "pancreatic neuroendocrine tumor", "PanNET"),
              "neoplasm", ("nests of monotonous cells with salt-and-pepper chromatin, chromogranin positive",),
              ("ductal adenocarcinoma",)),
            H("acinar cell carcinoma", 1, "PAAD", "diff", (0, 2, 2, 0), ("acinar cell carcinoma",), "carcinoma",
              ("acini of cells with granular cytoplasm, trypsin positive",), ("neuroendocrine tumor",)),
        ),
        ("pancreaticoduodenectomy (Whipple)", "distal pancreatectomy and splenectomy", "total pancreatectomy",
         "Whipple procedure"),
        (), ("pancreas, head", "pancreatic head", "pancreas, tail", "pancreas, body and tail", "pancreas"),
        {"unknown": 100}, ("head", "uncinate process", "neck", "body"),
        {"T1": 3, "T2": 30, "T3": 65, "T4": 2}, _SUB_T,
        {"T1": "tumor limited to the pancreas, 2 cm or less", "T2": "tumor limited to the pancreas, more than 2 cm",
         "T3": "tumor extends beyond the pancreas", "T4": "tumor involves the celiac axis"},
        ("peripancreatic", "superior pancreatic", "aortocaval", "hepatic artery"),
        ("Gallbladder: chronic cholecystitis", "Spleen, splenectomy: benign spleen", "Bile duct margin: no tumor"),
        ("painless jaundice, pancreatic head mass", "pancreatic mass on CT", "weight loss and jaundice"),
        grade_omit=0.3, t_omit=0.3,
    ),
)
# fmt: on
ORGAN_BY_NAME: dict[str, Organ] = {o.name: o for o in ORGANS}
# TCGA tissue-source-site codes, shared by all projects on purpose: in the barcode they would leak the project
TSS_CODES = (
    "02",
    "05",
    "06",
    "13",
    "18",
    "22",
    "24",
    "2Z",
    "33",
    "44",
    "55",
    "60",
    "A3",
    "A6",
    "AA",
    "AX",
    "B0",
    "BA",
    "BC",
    "BT",
    "CJ",
    "CS",
    "CV",
    "D1",
    "DD",
    "DK",
    "DU",
    "EJ",
    "F2",
    "FD",
    "HT",
    "HZ",
    "KL",
    "XN",
)

HOSPITALS = ("[REDACTED] Medical Center", "University Hospital, Department of Pathology", "[redacted] Cancer Center",
             "Department of Anatomic Pathology", "Regional Medical Center Laboratory Services")  # fmt: skip
TITLES = ("SURGICAL PATHOLOGY REPORT", "Surgical Pathology Report", "SURGICAL PATHOLOGY", "PATHOLOGY REPORT",
          "FINAL SURGICAL PATHOLOGY REPORT", "Surgical Pathology Consultation Report")  # fmt: skip
DX_HEADINGS = ("FINAL DIAGNOSIS:", "DIAGNOSIS:", "FINAL PATHOLOGIC DIAGNOSIS:", "Diagnosis:", "PATHOLOGIC DIAGNOSIS:")
GROSS_HEADINGS = ("GROSS DESCRIPTION:", "Gross Description:", "MACROSCOPIC DESCRIPTION:", "GROSS:")
MICRO_HEADINGS = ("MICROSCOPIC DESCRIPTION:", "Microscopic Description:", "MICROSCOPY:", "MICROSCOPIC EXAMINATION")
HISTORY_HEADINGS = ("CLINICAL HISTORY:", "Clinical History:", "CLINICAL INFORMATION:", "HISTORY:")
SPECIMEN_HEADINGS = ("SPECIMEN(S) SUBMITTED:", "SPECIMENS:", "Specimen(s) Received:", "SOURCE OF SPECIMEN:")
SYNOPTIC_HEADINGS = ("CAP CANCER SYNOPTIC REPORT", "SYNOPTIC REPORT", "Tumor Summary (CAP checklist):",
                     "SURGICAL PATHOLOGY CANCER CASE SUMMARY", "TUMOR CHARACTERISTICS:")  # fmt: skip
DISTRACTOR_HISTORY = ("history of breast cancer, status post lumpectomy", "remote history of melanoma",
                      "history of colon polyps", "prior history of thyroid nodule", "history of basal cell carcinoma",
                      "history of hepatitis C", "status post cholecystectomy", "history of lung nodule, stable",
                      "history of benign prostatic hyperplasia", "prior hysterectomy for fibroids")  # fmt: skip
BOILERPLATE = (
    "Current NCCN practice guidelines recommend determination of EGFR and KRAS mutation status in appropriate "
    "tumors to help select patients for targeted therapy. Testing is available upon request.",
    "Some immunohistochemical antibodies are analyte specific reagents (ASRs) validated by this laboratory. These "
    "ASRs are clinically useful indicators that do not require FDA approval. Positive and negative controls "
    "stained appropriately.",
    "As the attending pathologist, I attest that I examined the relevant preparations for the specimens and "
    "rendered the diagnoses. Electronically signed out by [REDACTED], MD.",
    "The specimen was fixed in 10% neutral buffered formalin for more than 6 and less than 72 hours. Cold "
    "ischemia time less than one hour.",
    "This case was reviewed at the intradepartmental consensus conference. Selected slides were shown to a "
    "second pathologist who concurs with the interpretation.",
    "Portions of the tumor were procured for the tissue bank prior to fixation. Tissue was submitted for "
    "molecular studies and results will be reported in an addendum.",
    "Pathologic staging is based on the AJCC Cancer Staging Manual, 7th edition, and is provided for information "
    "only; final staging requires clinical correlation.",
)  # fmt: skip
QC_FORM = ("Criteria", "Diagnosis Discrepancy", "Primary Tumor Site Discrepancy", "HIPAA Discrepancy",
           "Prior Malignancy History", "Dual/Synchronous Primary Noted", "Case is (circle): QUALIFIED / DISQUALIFIED",
           "Reviewer Initials ____ Date Reviewed: ____")  # fmt: skip
MARGINS = ("Margins: uninvolved by invasive carcinoma", "All surgical margins are free of tumor",
           "Margins negative; closest margin 4 mm", "Margins free; tumor 1.2 cm from the nearest margin",
           "Surgical margins: negative for malignancy")  # fmt: skip
LVI = ("Lymphovascular invasion: not identified", "Lymph-vascular invasion: present", "Perineural invasion: present",
       "Angiolymphatic invasion: not identified")  # fmt: skip
CASSETTES = ("tumor", "tumor with margin", "normal parenchyma", "margin en face", "tumor to capsule",
             "representative sections", "vascular margin", "tumor and adjacent tissue")  # fmt: skip
COLORS = ("tan-white", "tan-yellow", "gray-white", "variegated yellow-red", "pink-tan", "white firm")
FILLER = (
    "Processing information: H&E, initial x {k}; levels x {k}; frozen section control x 1; touch prep x 1.",
    "Ki-67 proliferation index is approximately {k}% in the most active areas. Controls stained appropriately.",
    "Immunohistochemical stains were performed on block A{k} with appropriate positive and negative controls; "
    "results will be reported in an addendum.",
    "Slides and blocks were reviewed. Outside material was received for consultation and is being returned to "
    "the referring institution.",
    "Intraoperative consultation was rendered by [REDACTED], MD, and communicated to the operating surgeon at "
    "{hh}:{mm}.",
    "Time of removal: {hh}:{mm}. Time placed in formalin: {hh}:{mm}. Total cold ischemia time under 30 minutes.",
    "Tissue procurement: {k} cryovials of tumor and normal tissue were obtained for the tumor bank prior to fixation.",
    "Specimen photographed. Tissue remaining in formalin will be retained for four weeks after sign-out.",
)
CONSISTENCY = ("firm", "soft", "focally hemorrhagic", "necrotic", "well circumscribed", "infiltrative", "fleshy")
