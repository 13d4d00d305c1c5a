"""Builds the multi-label curriculum set described in ../shared/data/README.md:
pairs of maths questions from two different modules, labelled with both modules.

    python3 Tests/Benchmarks/make_multilabel.py ../shared/data/splits OUT_DIR

Reads math_modules.{train,val,test}.csv (columns text,label,module) and writes
math_pairs.{train,val,test}.csv with columns text,label where label is
"moduleA|moduleB" (sorted). Each question is used once; pairing is seeded (42).
Standard library only.
"""
import csv, os, random, sys

src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
for split in ("train", "val", "test"):
    with open(os.path.join(src, f"math_modules.{split}.csv"), newline="", encoding="utf-8") as f:
        rows = [(r["text"], r["module"]) for r in csv.DictReader(f)]
    rng = random.Random(42)
    rng.shuffle(rows)
    pairs, pending = [], []
    for row in rows:
        partner = next((i for i, p in enumerate(pending) if p[1] != row[1]), None)
        if partner is None:
            pending.append(row)
        else:
            a = pending.pop(partner)
            pairs.append((f"{a[0]} {row[0]}", "|".join(sorted({a[1], row[1]}))))
    with open(os.path.join(out, f"math_pairs.{split}.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(pairs)
    print(f"{split}: {len(pairs)} pairs from {len(rows)} questions")
