"""Package layout: ``reportkd/`` is ``reportkd``, ``text/`` is ``reportkd.text``, ``vlm/`` is ``reportkd.vlm``.

No top-level ``text`` or ``vlm`` package is ever installed (a ``vlm`` package exists on PyPI).
"""

from setuptools import find_packages, setup

ROOTS = {"reportkd": "reportkd", "reportkd.text": "text", "reportkd.vlm": "vlm"}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [
        f"{name}.{sub}"
        for sub in find_packages(folder)
        if not (name == "reportkd" and sub.split(".")[0] in ("text", "vlm"))
    ]

setup(
    packages=packages,
    package_dir=ROOTS,
    include_package_data=True,
    package_data={"": ["*.json", "*.py.j2", "*.md", "*.html"]},
)
