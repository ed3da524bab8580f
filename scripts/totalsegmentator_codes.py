#!/usr/bin/env python3
"""Refreshes src/import/totalsegmentator_snomed_mapping.csv (the SNOMED CT codes and
colours `segnode import-nnunet` gives TotalSegmentator's classes) from the
TotalSegmentator package on PyPI: downloads its wheel without dependencies, copies the
file unmodified and prints its checksum for src/import/NOTICE.

Usage (project root): .venv/bin/python scripts/totalsegmentator_codes.py [VERSION]
"""

import hashlib
import pathlib
import subprocess
import sys
import tempfile
import zipfile

MEMBER = "totalsegmentator/resources/totalsegmentator_snomed_mapping.csv"
TARGET = pathlib.Path(__file__).resolve().parent.parent / "src" / "import" / "totalsegmentator_snomed_mapping.csv"


def main():
    version = sys.argv[1] if len(sys.argv) > 1 else "2.18.0"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        f"totalsegmentator=={version}", "-d", tmp], check=True)
        wheel = next(pathlib.Path(tmp).glob("*.whl"))
        data = zipfile.ZipFile(wheel).read(MEMBER)
    TARGET.write_bytes(data)
    print(f"TotalSegmentator {version}: {MEMBER}, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
