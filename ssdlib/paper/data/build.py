"""Regenerate this folder's CSV files from the paper's data files (run once; the package never reads the source).

Usage: ``python ssdlib/paper/data/build.py /path/to/shared/paper``. It copies every value of both versions'
tables verbatim (the printed digits are kept as text), adding the version and the subject of each table, and
copies the prose-claims file unchanged. ``tests/test_paper.py`` checks the result against the source files.
"""
from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (source file, version) -> {table number: (subject, short title in this project's words)}
CATALOGUE = {
    ("ssd-paper-tables.csv", "submitted"): {
        1: ("soft_label_attacks", "Mirror and C2F against each defense, three settings"),
        2: ("hard_label_attacks", "BREP and LOKT against each defense, three settings"),
        3: ("utility", "test accuracy, mean and largest L1 change of the outputs"),
        4: ("hyperparameters", "settings of every defense per setting"),
        5: ("timing", "inference time without and with SSD (512 samples x 100 passes)"),
        6: ("solver_time", "GPU water-filling time per number of classes |Y|"),
        7: ("q_estimator", "attacks when q^y comes from D_valid or D_train"),
        8: ("q_estimator", "utility when q^y comes from D_valid or D_train"),
        9: ("rlb_attack", "RLB against each defense, IR-152/CelebA"),
        10: ("high_resolution", "Mirror at 224x224 against each defense"),
        11: ("high_resolution", "utility and defense settings at 224x224"),
    },
    ("iclr2025-tables.csv", "iclr2025"): {
        1: ("soft_label_attacks", "Mirror and C2F against each defense, three settings"),
        2: ("hard_label_attacks", "BREP and LOKT against each defense, three settings"),
        3: ("utility", "test accuracy and mean L1 change of the outputs"),
        4: ("timing", "inference time without and with SSD (512 samples x 100 passes)"),
        5: ("hyperparameters", "settings of every defense per setting"),
        6: ("rlb_attack", "RLB against each defense, IR-152/CelebA"),
        7: ("purifier", "a CVAE purifier against SSD, IR-152/CelebA, four attacks and utility"),
        8: ("high_resolution", "Mirror at 224x224: attacks, utility and defense settings"),
    },
}
COLUMNS = ["version", "table", "subject", "setting", "attack", "row", "metric", "value", "unit"]


def build(source: Path) -> None:
    rows, catalogue = [], []
    for (name, version), tables in CATALOGUE.items():
        with open(source / name, newline="", encoding="utf-8") as fh:
            found = list(csv.DictReader(fh))
        counts = {}
        for rec in found:
            number = int(rec["table"])
            if number not in tables:
                raise ValueError(f"{name}: table {number} is not in the catalogue of {version}")
            rows.append({**rec, "version": version, "table": number, "subject": tables[number][0]})
            counts[number] = counts.get(number, 0) + 1
        for number, (subject, title) in tables.items():
            if number not in counts:
                raise ValueError(f"{name}: catalogued table {number} has no values")
            catalogue.append({"version": version, "table": number, "subject": subject, "title": title,
                              "n_values": counts[number]})
    with open(HERE / "tables.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: r[k] for k in COLUMNS} for r in rows)
    with open(HERE / "catalogue.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["version", "table", "subject", "title", "n_values"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(catalogue)
    shutil.copyfile(source / "ssd-paper-text-claims.csv", HERE / "text_claims.csv")
    print(f"wrote {len(rows)} values of {len(catalogue)} tables to {HERE}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build(Path(sys.argv[1]))
