#!/usr/bin/env python3
"""Generates testset.json: school-like sentences with planted PII and gold spans.

Names are drawn from the scrubber's own default lists (parsed from
Sources/PandoData/PII/Names.swift) plus a pool of *unlisted* surnames that only the
"First Last" rule can find. Names that are also common words (the ambiguous list) are
planted only where the policy says they count: in "First Last" pairs or after a title.
Distractor sentences hold numbers, years, decimals, times, dates, scores and the
ambiguous words used as words, to measure precision.

Spans: start/end are UTF-8 byte offsets (what PIIScrubber.spans reports), cstart/cend
are character offsets (what Presidio reports). Deterministic (seed 16).

Usage: python3 make_pii_testset.py  (writes testset.json beside this script)
"""
import json
import os
import random
import re

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES_SWIFT = os.path.join(HERE, "..", "..", "..", "Sources", "PandoData", "PII", "Names.swift")


def swift_list(text, name):
    m = re.search(r"static let %s: \[String\] = \"\"\"(.*?)\"\"\"" % name, text, re.S)
    return sorted(set(m.group(1).split()))


src = open(NAMES_SWIFT).read()
FIRST = swift_list(src, "firstNames")
LAST = swift_list(src, "lastNames")
AMBIG = set(swift_list(src, "ambiguousNames"))
FIRST_OK = [n for n in FIRST if n not in AMBIG]
LAST_OK = [n for n in LAST if n not in AMBIG and "'" not in n]
ANY_LISTED = sorted(set(FIRST) | set(LAST) | AMBIG)
UNLISTED_LAST = ["Kowalczyk", "Abernathy", "Villanueva", "Okoro", "Brennan", "Haddad", "Lindqvist",
                 "Moreau", "Takahashi", "Delacroix", "Oyelaran", "Pietrowski", "Castellano", "Whitfield"]
TITLES = ["Mr.", "Mrs.", "Ms.", "Dr.", "Coach", "Principal"]

rng = random.Random(16)
cap = lambda s: s[0].upper() + s[1:]


def name_piece():
    r = rng.random()
    if r < 0.35:
        a, b = rng.choice(FIRST), rng.choice(LAST)
        return [("%s %s" % (cap(a), cap(b)), "name")]
    if r < 0.6:
        return [(cap(rng.choice(FIRST_OK)), "name")]
    if r < 0.75:
        return [(cap(rng.choice(FIRST_OK)) + " " + rng.choice(UNLISTED_LAST), "name")]
    if r < 0.9:
        return [(rng.choice(TITLES) + " ", None), (cap(rng.choice(LAST)), "name")]
    return [(cap(rng.choice(LAST_OK)), "name")]


def email():
    f, l = rng.choice(FIRST_OK), rng.choice(LAST_OK)
    user = rng.choice(["%s.%s" % (f, l), "%s%s%d" % (f[0], l, rng.randint(1, 99)), "%s_%s" % (f, l),
                       "%s+homework" % f, "%s.%s%d" % (l, f[0], rng.randint(2005, 2015))])
    dom = rng.choice(["gmail.com", "yahoo.com", "lincoln.k12.il.us", "students.westfield-usd.org",
                      "outlook.com", "mail.school.edu"])
    return user + "@" + dom


def phone():
    a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    fmt = rng.choice([
        "(%d) %03d-%04d", "%d-%03d-%04d", "%d.%03d.%04d", "%d %03d %04d", "+1 %d %03d %04d",
        "+1-%d-%03d-%04d", "1-%d-%03d-%04d", "+1 (%d) %03d-%04d", "%d%03d%04d",
        "(%d) %03d-%04d ext. 12", "%d-%03d-%04d x204", "INTL"])
    if fmt == "INTL":
        return rng.choice(["+44 20 7946 %04d" % c, "+33 1 23 45 67 %02d" % (c % 100),
                           "+49 30 1234%04d" % c, "+52 55 1234 %04d" % c, "+91 98765 %05d" % (c * 7 % 100000),
                           "+81 3-1234-%04d" % c])
    return fmt % (a, b, c)


def url():
    path = rng.choice(["", "/", "/homework", "/class/7b/reading-list", "/forms?id=%d" % rng.randint(1, 999),
                       "/watch?v=dQw4w9WgXcQ", "/~jsmith/projects/volcano.html"])
    host = rng.choice(["khanacademy.org", "www.lincoln-high.org", "docs.google.com", "quizlet.com",
                       "en.wikipedia.org", "westfield.k12.nj.us", "scratch.mit.edu", "youtube.com"])
    r = rng.random()
    if r < 0.5:
        return rng.choice(["https://", "http://"]) + host + path
    if r < 0.75 and host.startswith("www."):
        return host + path
    return host + (path if path not in ("", "/") else "/homework")


def address():
    num = str(rng.choice([rng.randint(1, 99), rng.randint(100, 9999), rng.randint(10000, 99999)]))
    d = rng.choice(["", "", "", "N. ", "S ", "East ", "West "])
    street = rng.choice(["Elm", "Oak", "Maple", "Main", "Cedar", "Pine", "Washington", "Lincoln", "Park",
                         "Martin Luther King", "5th", "42nd", "Willow Creek", "Sunset", "Highland", "River"])
    suf = rng.choice(["St", "Street", "Ave", "Avenue", "Rd", "Road", "Blvd", "Lane", "Ln", "Dr", "Drive",
                      "Court", "Ct", "Way", "Place", "Terrace", "Circle"])
    unit = rng.choice(["", "", "", ", Apt 4B", " Apt. 12", " Unit 3", ", Suite 200", " #7"])
    return "%s %s%s %s%s" % (num, d, street, suf, unit)


def student_id():
    return rng.choice(["S%07d" % rng.randint(0, 9999999), "s%06d" % rng.randint(0, 999999),
                       "ID: %d" % rng.randint(10000, 99999999), "ID# %d" % rng.randint(10000, 999999),
                       "ID %d" % rng.randint(100000, 9999999)])


GEN = {"EMAIL": ("email", email), "PHONE": ("phone", phone), "URL": ("url", url),
       "ADDR": ("address", address), "SID": ("student_id", student_id)}

TEMPLATES = [
    "My email is {EMAIL} if you have questions about the project.",
    "Please send the lab report to {EMAIL}.",
    "You can reach {NAME} at {EMAIL} or call {PHONE}.",
    "{NAME} said the field trip form is due Friday (contact {EMAIL}).",
    "Call my mom at {PHONE} after 3:45 because she works until then.",
    "The front office number is {PHONE}, and the fax is {PHONE}.",
    "If I am absent, text {PHONE}.",
    "I found the answer on {URL} last night.",
    "Our class reading list is at {URL}.",
    "{NAME} shared a video ({URL}) about volcanoes.",
    "Check {URL} for the rubric, it explains everything.",
    "I live at {ADDR} with my grandparents and two dogs.",
    "The bus stops at {ADDR} every morning at 7:15.",
    "Send the permission slip to {ADDR}.",
    "My student number is {SID} and I am in grade 7.",
    "{NAME} forgot their {SID} badge again, so {NAME} had to sign in at the office.",
    "Please write your {SID} on the top of the test.",
    "Yesterday {NAME} and {NAME} worked on the science fair project together.",
    "I think {NAME} is the best teacher because she explains fractions slowly.",
    "When {NAME} moved to {ADDR}, the new phone number was {PHONE}.",
    "{NAME} wrote about the Civil War, and {NAME} helped with the map.",
    "Our group ({NAME}, {NAME} and me) finished the poster early.",
    "My essay is about my grandmother {NAME}, who grew up on a farm.",
    "Email {EMAIL} or visit {URL} to sign up for the chess club.",
    "The coach, {NAME}, posted the schedule at {URL}.",
    "I told {NAME} my address is {ADDR}, but I am not sure that was okay.",
    "For tutoring, contact {NAME} at {PHONE} or {EMAIL}.",
    "My best friend is {NAME} and we sit together at lunch.",
    "{NAME} and I built a model of the solar system.",
    "Ask {NAME} for the notes; {NAME} always has them.",
]

DISTRACTORS = [
    "In 2019 we went to the museum and saw 12 dinosaur skeletons.",
    "The answer to question 4 is 3.14159, rounded to 3.14.",
    "Class starts at 8:30 and lunch is at 11:45.",
    "May I go to the library during study hall?",
    "Will you help me with problem 17 on page 212?",
    "The brown dog ran across the green field.",
    "Grace period for late homework is 2 days.",
    "Rose petals were used in the experiment, about 25 of them.",
    "We read chapters 3-5 and answered questions 10-15.",
    "My score was 87/100 and the class average was 78.5.",
    "The test is on 10/12/2023, which is a Thursday.",
    "Our school raised $1,250 for the food bank in 2022.",
    "About 1,000,000 people live in the city, according to the 2020 census.",
    "Room 204 is next to the gym.",
    "The temperature dropped from 72 to 55 degrees overnight.",
    "Hope is the thing with feathers, wrote the poet.",
    "Young people should get 9 to 12 hours of sleep.",
    "Mark the correct answer with an X.",
    "Bill of Rights has 10 amendments.",
    "The main idea of paragraph 2 is that plants need light.",
    "In 1492 Columbus sailed across the ocean.",
    "The ratio was 3:2 and the probability was 0.25.",
    "Between 2015 and 2018 the population grew by 4.5 percent.",
    "We need 2 cups of flour, 1.5 cups of sugar and 3 eggs.",
    "The Great Depression began in 1929.",
    "June is my favorite month because school ends.",
    "King Tut was a pharaoh of ancient Egypt.",
    "White blood cells fight infection.",
    "Version 2.0.1 of the app crashed 3 times.",
    "The train left at 6:05 and arrived at 9:40.",
    "Lincoln High School won 21-14 on Friday.",
    "The Pythagorean theorem says a^2 + b^2 = c^2.",
    "I ran 5 km in 31 minutes and 20 seconds.",
    "Day 3 of the project went better than day 2.",
    "Jack and the Beanstalk is a fairy tale.",
    "Sum of 123 and 456 is 579.",
    "The code for the locker is 12 34 56.",
    "Use a No. 2 pencil for the exam.",
    "Ivy grows on the old brick walls.",
    "Frank discussions help the class.",
]


def render(template):
    pieces = []
    for tok in re.split(r"(\{[A-Z]+\})", template):
        if not tok:
            continue
        if tok == "{NAME}":
            pieces += name_piece()
        elif tok.startswith("{"):
            kind, fn = GEN[tok[1:-1]]
            pieces.append((fn(), kind))
        else:
            pieces.append((tok, None))
    text, spans, b, c = "", [], 0, 0
    for s, kind in pieces:
        if kind:
            spans.append({"start": b, "end": b + len(s.encode()), "cstart": c, "cend": c + len(s), "kind": kind})
        text += s
        b += len(s.encode())
        c += len(s)
    return {"text": text, "spans": spans}


def main():
    items = []
    for i in range(360):
        items.append(render(TEMPLATES[i % len(TEMPLATES)]))
    for i in range(120):
        d = DISTRACTORS[i % len(DISTRACTORS)]
        if i >= len(DISTRACTORS):  # vary the numbers a little
            d = re.sub(r"\d+", lambda m: str(int(m.group()) + i % 7), d)
        items.append({"text": d, "spans": []})
    # A couple of non-ASCII sentences so byte and character offsets differ.
    items.append(render("Our café opens at 7:30, {NAME} said; email {EMAIL}."))
    items.append(render("The naïve robot’s page is {URL} and the number is {PHONE}."))
    rng.shuffle(items)
    out = {"description": "Generated by make_pii_testset.py (seed 16). start/end: UTF-8 byte offsets; "
                          "cstart/cend: character offsets.",
           "sentences": items}
    with open(os.path.join(HERE, "testset.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    kinds = {}
    for it in items:
        for s in it["spans"]:
            kinds[s["kind"]] = kinds.get(s["kind"], 0) + 1
    print(len(items), "sentences", kinds)


if __name__ == "__main__":
    main()
