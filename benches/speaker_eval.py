#!/usr/bin/env python3
"""Speaker identification with the GE2E encoder: accuracy after 1, 3 and 10 enrolment clips per
speaker, and how often a voice nobody enrolled is wrongly accepted.

Voices (Debian packages `flite` and `espeak-ng`): flite's awb, rms and slt are built from
recordings of three real people, kal16 from a fourth; espeak-ng's are formant-synthesised
variants. Enrolled: awb, rms, slt and two espeak-ng variants. Not enrolled ("impostors"):
flite kal16 (another real speaker) and a third espeak-ng variant, en-gb-scotland+m1, which is
the same formant synthesiser as the enrolled en-us+m3 with another accent: to a speaker
encoder nearly the same voice, so its false accepts measure accent, not identity, and are
reported apart. Enrolment and test clips say different sentences.

Everything goes through the real CLI, as a user would: `adaptd samples import DIR` with
DIR/<speaker>/*.wav, `adaptd train --head H --json`, `adaptd classify --format json` on the
test clips. Per setting it reports:

- accuracy: share of enrolled speakers' test clips named correctly (an `unknown` counts as
  wrong);
- closed_set_accuracy: share whose best-scoring class is right, whatever the threshold;
- false_accept_rate: share of the impostors' clips named as some enrolled speaker;
- threshold and how it was chosen (from `train --json`).

    benches/speaker_eval.py [--adaptd target/release/adaptd] [--model-dir models]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please turn on the kitchen lights and close the garage door.",
    "Tomorrow it will rain in the morning and clear up by the evening.",
    "I left my keys on the table next to the window this afternoon.",
    "Could you remind me to call the plumber at nine o'clock?",
    "The train to the city leaves from platform four every hour.",
    "My sister bought a new bicycle with a bright red basket.",
    "We should water the tomatoes before the sun gets too hot.",
    "The library closes early on Sundays during the summer.",
    "Turn the music down a little, the baby is sleeping upstairs.",
    "He parked the van behind the bakery on the corner of the street.",
    "Set an alarm for half past six and start the coffee machine.",
    "The children built a snowman in the garden after breakfast.",
    "There is a package waiting for you at the post office.",
    "Open the blinds in the living room and switch off the heater.",
    "Our neighbours are having a barbecue on Saturday afternoon.",
]
ENROL_MAX = 10  # sentences 0..9 enrol, 10..15 test
ENROLLED = [
    ("awb", ["flite", "-voice", "awb"]),
    ("rms", ["flite", "-voice", "rms"]),
    ("slt", ["flite", "-voice", "slt"]),
    ("espeak_m3", ["espeak-ng", "-v", "en-us+m3"]),
    ("espeak_f2", ["espeak-ng", "-v", "en+f2"]),
]
IMPOSTORS = [
    ("kal16", ["flite", "-voice", "kal16"]),
    ("espeak_scot", ["espeak-ng", "-v", "en-gb-scotland+m1"]),
]


def say(cmd, text, out):
    if cmd[0] == "flite":
        subprocess.run(cmd + ["-t", text, "-o", str(out)], check=True)
    else:
        subprocess.run(cmd + ["-w", str(out), text], check=True)


def adaptd(args, binary, model_dir, state):
    cmd = [binary, "--model-dir", str(model_dir)] + args + [
        "--model", "resemblyzer-ge2e", "--state-dir", str(state)]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def evaluate(binary, model_dir, clips, n, head, work):
    state = work / f"state-{head}-{n}"
    shutil.rmtree(state, ignore_errors=True)
    enrol = work / f"enrol-{n}"
    if not enrol.exists():
        for name, _ in ENROLLED:
            (enrol / name).mkdir(parents=True)
            for i in range(n):
                shutil.copy(clips[(name, i)], enrol / name / f"{i}.wav")
    adaptd(["samples", "import", str(enrol)], binary, model_dir, state)
    report = json.loads(adaptd(["train", "--head", head, "--json"], binary, model_dir, state))
    tests = [(name, clips[(name, i)]) for name, _ in ENROLLED + IMPOSTORS
             for i in range(ENROL_MAX, len(SENTENCES))]
    out = adaptd(["classify", "--format", "json"] + [str(p) for _, p in tests],
                 binary, model_dir, state)
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    enrolled = {name for name, _ in ENROLLED}
    correct = closed = n_known = accepted_impostors = n_impostors = 0
    per_impostor = {}
    for (truth, _), r in zip(tests, rows):
        best = r["probabilities"][0]["label"] if r["probabilities"] else None
        if truth in enrolled:
            n_known += 1
            correct += r["label"] == truth and not r["unknown"]
            closed += best == truth
        else:
            n_impostors += 1
            accepted_impostors += not r["unknown"]
            a, t = per_impostor.get(truth, (0, 0))
            per_impostor[truth] = (a + (not r["unknown"]), t + 1)
    rep = report.get("report", report)
    return {
        "head": head,
        "clips_per_speaker": n,
        "accuracy": round(correct / n_known, 3),
        "closed_set_accuracy": round(closed / n_known, 3),
        "false_accept_rate": round(accepted_impostors / n_impostors, 3),
        "false_accepts": {k: f"{a}/{t}" for k, (a, t) in per_impostor.items()},
        "test_clips": n_known,
        "impostor_clips": n_impostors,
        "threshold": rep.get("threshold"),
        "threshold_rule": rep.get("threshold_rule"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adaptd", default="target/release/adaptd")
    ap.add_argument("--model-dir", default="models")
    ap.add_argument("--keep", help="keep the clips and state in this folder")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="adaptd-spk-"))
    work.mkdir(parents=True, exist_ok=True)
    clips = {}
    for name, cmd in ENROLLED + IMPOSTORS:
        for i, text in enumerate(SENTENCES):
            f = work / "clips" / f"{name}-{i:02}.wav"
            f.parent.mkdir(parents=True, exist_ok=True)
            if not f.exists():
                say(cmd, text, f)
            clips[(name, i)] = f
    results = []
    for head, ns in (("centroid", (1, 3, 10)), ("softmax", (3, 10))):
        for n in ns:
            r = evaluate(args.adaptd, Path(args.model_dir), clips, n, head, work)
            results.append(r)
            print(json.dumps(r), flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
