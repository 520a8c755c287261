//! Transfer learning from the command line on the real backbone: `samples`, `train`, `eval`,
//! `classify` and `heads`, end to end, and what must hold up against bad input, a full disk and
//! `kill -9`.
//!
//! Labeled images are made in each test from the public-domain photos: seeded random crops,
//! flips and rescales of a photo are distinct samples of its label, and crops drawn with another
//! seed are held-out images of the same label. Every random choice is seeded.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use adaptd::adapt::workspace::Workspace;
use adaptd::model::{ModelDirs, ResolvedModel};
use adaptd::store::{NewSample, StoreError, StoreOptions};
use common::*;
use image::RgbImage;
use serde_json::{json, Value};

const MODEL: &str = "mobilenetv2";
/// `[embedding].dim` of the mobilenetv2 manifest.
const EMBEDDING_DIM: usize = 1280;

/// A label and the photos its samples are cropped from.
type Label = (&'static str, &'static [&'static str]);
const CAT: Label = ("cat", &["chelsea.png"]);
const COFFEE: Label = ("coffee", &["coffee.png"]);
const ROCKET: Label = ("rocket", &["rocket.jpg"]);
const TEXTURE: Label = ("texture", &["brick.png", "grass.png", "gravel.png"]);
const FOUR: [Label; 4] = [CAT, COFFEE, ROCKET, TEXTURE];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// SplitMix64: every random choice of these tests, reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n >= 1`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// The photos, decoded once per test binary.
fn photo(name: &str) -> &'static RgbImage {
    static PHOTOS: OnceLock<BTreeMap<String, RgbImage>> = OnceLock::new();
    let all = PHOTOS.get_or_init(|| {
        FOUR.iter()
            .flat_map(|(_, photos)| photos.iter())
            .map(|n| {
                let img = image::open(image(n))
                    .unwrap_or_else(|e| panic!("decode {n}: {e}"))
                    .to_rgb8();
                (n.to_string(), img)
            })
            .collect()
    });
    &all[name]
}

/// A random crop (55-90 % of the photo, aspect jittered), flipped half of the time, rescaled
/// to a shorter side of 150-260 pixels.
fn crop(img: &RgbImage, rng: &mut Rng) -> RgbImage {
    let (w, h) = img.dimensions();
    let f = rng.range(0.55, 0.9);
    let aspect = rng.range(0.85, 1.15);
    let cw = ((f64::from(w) * f * aspect).min(f64::from(w)) as u32).max(32);
    let ch = ((f64::from(h) * f / aspect).min(f64::from(h)) as u32).max(32);
    let x = rng.below(u64::from(w - cw) + 1) as u32;
    let y = rng.below(u64::from(h - ch) + 1) as u32;
    let mut c = image::imageops::crop_imm(img, x, y, cw, ch).to_image();
    if rng.below(2) == 1 {
        c = image::imageops::flip_horizontal(&c);
    }
    let s = rng.range(150.0, 260.0) / f64::from(cw.min(ch));
    image::imageops::resize(
        &c,
        (f64::from(cw) * s).round() as u32,
        (f64::from(ch) * s).round() as u32,
        image::imageops::FilterType::Triangle,
    )
}

/// `n` crops of `label`'s photos (taking them in turn) written to `dir` as
/// `<prefix>-<i>.png|jpg` (alternating formats).
fn write_crops(dir: &Path, prefix: &str, photos: &[&str], n: usize, rng: &mut Rng) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let img = crop(photo(photos[i % photos.len()]), rng);
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            let path = dir.join(format!("{prefix}-{i:02}.{ext}"));
            img.save(&path)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            path
        })
        .collect()
}

/// An ImageFolder tree `root/<label>/*` with `per_label` crops per label; (label, path) pairs.
fn make_folder(
    root: &Path,
    labels: &[Label],
    per_label: usize,
    seed: u64,
) -> Vec<(String, PathBuf)> {
    let mut rng = Rng(seed);
    labels
        .iter()
        .flat_map(|(label, photos)| {
            write_crops(&root.join(label), label, photos, per_label, &mut rng)
                .into_iter()
                .map(|p| (label.to_string(), p))
        })
        .collect()
}

/// `p` as `&str` (test paths are UTF-8).
fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `adaptd ARGS --model mobilenetv2 --state-dir STATE`.
fn cmd(state: &Path, args: &[&str]) -> Command {
    let mut c = adaptd();
    c.args(args)
        .args(["--model", MODEL, "--state-dir", s(state)]);
    c
}

fn cli(state: &Path, args: &[&str]) -> Output {
    cmd(state, args).output().expect("run adaptd")
}

/// Runs and asserts success.
fn cli_ok(state: &Path, args: &[&str]) -> Output {
    let o = cli(state, args);
    assert!(
        o.status.success(),
        "adaptd {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    o
}

/// `args` followed by `files`.
fn with_files<'a>(args: &[&'a str], files: &'a [PathBuf]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(files.iter().map(|p| s(p)));
    v
}

/// One `added #ID PATH (LABEL, SPLIT)` line.
#[derive(Debug, Clone, PartialEq)]
struct Added {
    id: i64,
    path: PathBuf,
    label: String,
    split: String,
}

fn parse_added(line: &str) -> Option<Added> {
    let rest = line.strip_prefix("added #")?;
    let (id, rest) = rest.split_once(' ')?;
    let open = rest.find(" (")?;
    let tail = &rest[open + 2..];
    let (label, split) = tail[..tail.find(')')?].split_once(", ")?;
    Some(Added {
        id: id.parse().ok()?,
        path: PathBuf::from(&rest[..open]),
        label: label.to_string(),
        split: split.to_string(),
    })
}

/// Every stdout line of an add/import, each of which must be an `added` line.
fn added(o: &Output) -> Vec<Added> {
    stdout(o)
        .lines()
        .map(|l| parse_added(l).unwrap_or_else(|| panic!("not an `added` line: {l:?}")))
        .collect()
}

/// `samples list --format json`: label -> (train, holdout).
fn counts(state: &Path) -> BTreeMap<String, (u64, u64)> {
    let o = cli_ok(state, &["samples", "list", "--format", "json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("samples list JSON");
    assert_eq!(v["other_backbones"], 0, "{v}");
    v["labels"]
        .as_array()
        .expect("labels array")
        .iter()
        .map(|c| {
            (
                c["label"].as_str().unwrap().to_string(),
                (c["train"].as_u64().unwrap(), c["holdout"].as_u64().unwrap()),
            )
        })
        .collect()
}

fn total(counts: &BTreeMap<String, (u64, u64)>) -> u64 {
    counts.values().map(|(t, h)| t + h).sum()
}

/// `classify --format json`: one object per image.
fn classify(state: &Path, images: &[PathBuf]) -> Vec<Value> {
    let o = cli_ok(
        state,
        &with_files(&["classify", "--format", "json"], images),
    );
    let out: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("classify JSON line"))
        .collect();
    assert_eq!(out.len(), images.len(), "{}", stdout(&o));
    out
}

fn json_out(o: &Output) -> Value {
    serde_json::from_str(stdout(o).trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// A number in [0, 1].
fn fraction(v: &Value) -> f64 {
    let x = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((0.0..=1.0).contains(&x), "{x} is not in [0, 1]");
    x
}

/// A `k x k` confusion matrix; returns its total.
fn square_confusion(m: &Value, k: usize) -> u64 {
    let rows = m["confusion"].as_array().expect("confusion matrix");
    assert_eq!(rows.len(), k, "{m}");
    rows.iter()
        .map(|r| {
            let r = r.as_array().unwrap();
            assert_eq!(r.len(), k, "{m}");
            r.iter().map(|x| x.as_u64().unwrap()).sum::<u64>()
        })
        .sum()
}

/// `heads list` rows (without the header): (is current, version).
fn heads(state: &Path) -> Vec<(bool, u32, String)> {
    let o = cli_ok(state, &["heads", "list"]);
    stdout(&o)
        .lines()
        .skip(1)
        .map(|l| {
            let current = l.starts_with('*');
            let v = l
                .trim_start_matches('*')
                .split_whitespace()
                .next()
                .and_then(|w| w.strip_prefix('v'))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("heads list row: {l:?}"));
            (current, v, l.to_string())
        })
        .collect()
}

fn current_head(state: &Path) -> Option<u32> {
    let rows = heads(state);
    assert!(rows.iter().filter(|r| r.0).count() <= 1, "{rows:?}");
    rows.iter().find(|r| r.0).map(|r| r.1)
}

/// The library's view of the state directory (the same code the CLI runs).
fn workspace(state: &Path) -> Workspace {
    static MODEL_FILES: OnceLock<ResolvedModel> = OnceLock::new();
    let model = MODEL_FILES.get_or_init(|| {
        ResolvedModel::resolve(MODEL, &ModelDirs::new(Some(&models_dir()), None))
            .expect("resolve mobilenetv2")
    });
    Workspace::open(state, model, StoreOptions::default()).expect("open the workspace")
}

/// Names of the files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn heads_dir(state: &Path) -> PathBuf {
    state.join("heads").join(MODEL)
}

/// One clear line on stderr, no panic, exit 1 or 2.
fn assert_refused(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        matches!(o.status.code(), Some(1 | 2)),
        "{:?}: {err}",
        o.status
    );
    for n in needles {
        assert!(err.contains(n), "stderr should name {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

// ---------------------------------------------------------------------------------------------
// 1. import + train + eval + classify
// ---------------------------------------------------------------------------------------------

#[test]
fn import_train_eval_classify_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let data = tmp.path().join("data");
    let files = make_folder(&data, &FOUR, 10, 1);

    let o = cli_ok(&state, &["samples", "import", s(&data)]);
    let lines = added(&o);
    assert!(
        stderr(&o).contains("imported 40 of 40 images"),
        "{}",
        stderr(&o)
    );
    // Every file once, under its folder's label, with ids in import order.
    let got: BTreeSet<(String, PathBuf)> = lines
        .iter()
        .map(|a| (a.label.clone(), a.path.clone()))
        .collect();
    assert_eq!(got, files.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(lines.len(), 40);
    assert!(lines.windows(2).all(|w| w[0].id < w[1].id), "{lines:?}");
    // 10 per label at the default holdout fraction 0.2: 8 train, 2 holdout, as reported.
    let want: BTreeMap<String, (u64, u64)> =
        FOUR.iter().map(|(l, _)| (l.to_string(), (8, 2))).collect();
    assert_eq!(counts(&state), want);
    assert_eq!(lines.iter().filter(|a| a.split == "holdout").count(), 8);

    let o = cli_ok(&state, &["train", "--json", "--seed", "7"]);
    let t = json_out(&o);
    assert_eq!(t["version"], 1, "{t}");
    assert_eq!(t["decision"]["deployed"], true, "{t}");
    assert!(
        t["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("first head"),
        "{t}"
    );
    assert_eq!(t["current_macro_f1"], Value::Null);
    let r = &t["report"];
    assert_eq!(r["classes"], json!(["cat", "coffee", "rocket", "texture"]));
    assert_eq!(r["dim"], EMBEDDING_DIM);
    assert_eq!(r["samples_per_class_train"], json!([8, 8, 8, 8]));
    assert_eq!(r["samples_per_class_holdout"], json!([2, 2, 2, 2]));
    assert_eq!(r["validation"], "holdout");
    assert_eq!(r["config"]["seed"], 7);
    let m = &r["metrics"];
    fraction(&m["accuracy"]);
    fraction(&m["macro_f1"]);
    assert_eq!(m["n"], 8);
    assert_eq!(square_confusion(m, 4), 8);
    assert_eq!(m["per_class"].as_array().unwrap().len(), 4);
    fraction(&r["threshold"]);

    // Held-out crops (another seed) of the same photos.
    let held = tmp.path().join("held");
    make_folder(&held, &FOUR, 4, 2);
    let e = json_out(&cli_ok(&state, &["eval", "--data", s(&held), "--json"]));
    assert_eq!(e["head_version"], 1, "{e}");
    assert_eq!(e["skipped"], 0, "{e}");
    assert_eq!(e["metrics"]["n"], 16, "{e}");
    assert_eq!(square_confusion(&e["metrics"], 4), 16);
    let accuracy = fraction(&e["accuracy"]);
    fraction(&e["macro_f1"]);
    fraction(&e["unknown_rate"]);
    assert!(accuracy >= 0.9, "held-out accuracy {accuracy}: {e}");
    let o = cli_ok(&state, &["eval", "--data", s(&held)]);
    assert!(stdout(&o).contains("head v1"), "{}", stdout(&o));

    // A new crop of every photo is classified as its label.
    let new = tmp.path().join("new");
    let mut rng = Rng(3);
    let mut images = Vec::new();
    let mut expected = Vec::new();
    for (label, photos) in FOUR {
        for p in photos {
            images.extend(write_crops(
                &new,
                &format!("{label}-{p}"),
                &[*p],
                1,
                &mut rng,
            ));
            expected.push(label);
        }
    }
    let out = classify(&state, &images);
    for ((v, want), path) in out.iter().zip(&expected).zip(&images) {
        assert_eq!(v["label"], *want, "{}: {v}", path.display());
        assert_eq!(v["image"], s(path));
        assert_eq!(v["head_version"], 1);
        assert_eq!(v["unknown"], false, "{v}");
        let probs = v["probabilities"].as_array().unwrap();
        assert_eq!(probs.len(), 4);
        assert_eq!(probs[0]["label"], *want, "ranked first: {v}");
        assert_eq!(probs[0]["score"], v["score"]);
        let scores: Vec<f64> = probs.iter().map(|p| fraction(&p["score"])).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted: {v}");
        assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{v}");
    }
    let o = cli_ok(&state, &["classify", "--format", "text", s(&images[0])]);
    assert!(
        stdout(&o).contains("cat (") && stdout(&o).contains("head v1"),
        "{}",
        stdout(&o)
    );

    let rows = heads(&state);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].0 && rows[0].1 == 1, "v1 is current: {rows:?}");
    let show = json_out(&cli_ok(&state, &["heads", "show", "1"]));
    assert_eq!(show["version"], 1);
    assert_eq!(show["deployed"], true);
    assert_eq!(show["classes"], r["classes"]);
}

// ---------------------------------------------------------------------------------------------
// 2. Deploy policy
// ---------------------------------------------------------------------------------------------

#[test]
fn a_worse_head_is_saved_not_deployed_force_deploys_it_rollback_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let data = tmp.path().join("data");
    make_folder(&data, &FOUR, 8, 11);
    let imported = added(&cli_ok(&state, &["samples", "import", s(&data)]));
    assert_eq!(imported.len(), 32);

    let t1 = json_out(&cli_ok(&state, &["train", "--json", "--seed", "1"]));
    assert_eq!(t1["decision"]["deployed"], true, "{t1}");
    let f1_v1 = fraction(&t1["report"]["metrics"]["macro_f1"]);
    // Probe images: a new cat crop and a new coffee crop.
    let mut rng = Rng(12);
    let probes: Vec<PathBuf> = [CAT, COFFEE]
        .iter()
        .flat_map(|(l, p)| write_crops(&tmp.path().join("probe"), l, p, 1, &mut rng))
        .collect();
    let v1_out = classify(&state, &probes);
    assert_eq!(v1_out[0]["label"], "cat", "{v1_out:?}");
    assert_eq!(v1_out[1]["label"], "coffee", "{v1_out:?}");

    // Equal is not worse: the same data and seed give the same head, which is deployed.
    let t2 = json_out(&cli_ok(&state, &["train", "--json", "--seed", "1"]));
    assert_eq!(t2["version"], 2);
    assert_eq!(t2["decision"]["deployed"], true, "{t2}");
    assert_eq!(t2["current_macro_f1"], t2["report"]["metrics"]["macro_f1"]);
    assert!(
        t2["decision"]["reason"].as_str().unwrap().contains(">="),
        "{t2}"
    );
    assert_eq!(current_head(&state), Some(2));

    // A harmful change: the training samples of cat and coffee are replaced by swapped ones
    // (cat photos labeled coffee and the other way round); the holdout is left as it is.
    let swapped_out: Vec<String> = imported
        .iter()
        .filter(|a| (a.label == "cat" || a.label == "coffee") && a.split == "train")
        .map(|a| a.id.to_string())
        .collect();
    assert_eq!(swapped_out.len(), 14, "8 per label: 7 train, 1 holdout");
    let mut rm = vec!["samples", "rm"];
    rm.extend(swapped_out.iter().map(String::as_str));
    let o = cli_ok(&state, &rm);
    assert_eq!(stdout(&o).lines().count(), 14, "{}", stdout(&o));
    let mut rng = Rng(13);
    let cats = write_crops(&tmp.path().join("mislabeled"), "cat", CAT.1, 8, &mut rng);
    let coffees = write_crops(
        &tmp.path().join("mislabeled"),
        "coffee",
        COFFEE.1,
        8,
        &mut rng,
    );
    let mut wrong = added(&cli_ok(
        &state,
        &with_files(&["samples", "add", "--label", "coffee"], &cats),
    ));
    wrong.extend(added(&cli_ok(
        &state,
        &with_files(&["samples", "add", "--label", "cat"], &coffees),
    )));
    assert!(wrong.iter().all(|a| a.split == "train"), "{wrong:?}");
    let c = counts(&state);
    assert_eq!(c["cat"], (8, 1));
    assert_eq!(c["coffee"], (8, 1));
    assert_eq!(c["rocket"], (7, 1));

    let o = cli_ok(&state, &["train", "--seed", "1"]);
    let out = stdout(&o);
    assert!(out.contains("trained v3"), "{out}");
    assert!(out.contains("NOT deployed"), "{out}");
    assert!(
        out.contains("keeping v2") && out.contains("--force"),
        "the reason is printed: {out}"
    );
    let rows = heads(&state);
    assert_eq!(current_head(&state), Some(2), "{rows:?}");
    let v3_row = &rows.iter().find(|r| r.1 == 3).expect("v3 is saved").2;
    assert!(v3_row.contains("keeping v2"), "{v3_row}");
    let show = json_out(&cli_ok(&state, &["heads", "show", "3"]));
    assert_eq!(show["deployed"], false, "{show}");
    let f1_v3 = fraction(&show["report"]["metrics"]["macro_f1"]);
    assert!(f1_v3 < f1_v1, "the swap must hurt: {f1_v3} vs {f1_v1}");
    // Still answering with the deployed head.
    for (now, before) in classify(&state, &probes).iter().zip(&v1_out) {
        assert_eq!(now["label"], before["label"]);
        assert_eq!(now["probabilities"], before["probabilities"]);
        assert_eq!(now["head_version"], 2);
    }

    // --force deploys it anyway, and says so.
    let t4 = json_out(&cli_ok(
        &state,
        &["train", "--json", "--seed", "1", "--force"],
    ));
    assert_eq!(t4["version"], 4);
    assert_eq!(t4["decision"]["deployed"], true, "{t4}");
    let reason = t4["decision"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("forced"), "{reason}");
    assert_eq!(current_head(&state), Some(4));
    let forced = classify(&state, &probes);
    assert_eq!(forced[0]["head_version"], 4);
    assert_eq!(
        forced[0]["probabilities"][0]["label"], "coffee",
        "the forced head learned the swap: {forced:?}"
    );
    assert_eq!(forced[1]["probabilities"][0]["label"], "cat", "{forced:?}");

    // Rollback to v1: it answers exactly as before.
    let o = cli_ok(&state, &["heads", "rollback", "1"]);
    assert!(
        stdout(&o).contains("current head is now v1") && stdout(&o).contains("from v4"),
        "{}",
        stdout(&o)
    );
    assert_eq!(current_head(&state), Some(1));
    assert_eq!(classify(&state, &probes), v1_out);
    // Every version is kept.
    let versions: Vec<u32> = heads(&state).iter().map(|r| r.1).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    let o = cli(&state, &["heads", "rollback", "9"]);
    assert_clean_failure(&o, 1, "v9 does not exist");
    assert_eq!(current_head(&state), Some(1));
}

// ---------------------------------------------------------------------------------------------
// 3. list, rm, export, import again
// ---------------------------------------------------------------------------------------------

#[test]
fn samples_list_rm_and_an_export_that_imports_again() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut rng = Rng(21);
    let mut ids: BTreeMap<&str, Vec<Added>> = BTreeMap::new();
    for ((label, photos), n) in [(CAT, 4), (COFFEE, 4), (ROCKET, 3)] {
        let files = write_crops(&tmp.path().join("in"), label, photos, n, &mut rng);
        let a = added(&cli_ok(
            &state,
            &with_files(&["samples", "add", "--label", label], &files),
        ));
        assert_eq!(a.len(), n);
        for (x, f) in a.iter().zip(&files) {
            assert_eq!((x.label.as_str(), &x.path), (label, f));
        }
        ids.insert(label, a);
    }

    let o = cli_ok(&state, &["samples", "list"]);
    let text = stdout(&o);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["label", "train", "holdout", "total"], "{text}");
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["cat", "3", "1", "4"],
            ["coffee", "3", "1", "4"],
            ["rocket", "2", "1", "3"]
        ]
        .map(|r| r.map(String::from).to_vec())
    );
    let c = counts(&state);
    assert_eq!(
        c,
        BTreeMap::from([
            ("cat".into(), (3, 1)),
            ("coffee".into(), (3, 1)),
            ("rocket".into(), (2, 1))
        ])
    );

    // By id.
    let (cat0, coffee0) = (
        ids["cat"][0].id.to_string(),
        ids["coffee"][0].id.to_string(),
    );
    let o = cli_ok(&state, &["samples", "rm", &cat0, &coffee0]);
    assert_eq!(stdout(&o), format!("removed #{cat0}\nremoved #{coffee0}\n"));
    let o = cli(&state, &["samples", "rm", &cat0]);
    assert_clean_failure(&o, 1, &format!("no sample #{cat0}"));
    // By label.
    let o = cli_ok(&state, &["samples", "rm", "--label", "rocket"]);
    assert!(
        stdout(&o).contains("removed 3 samples of 'rocket'"),
        "{}",
        stdout(&o)
    );
    let o = cli_ok(&state, &["samples", "rm", "--label", "rocket"]);
    assert!(stdout(&o).contains("removed 0 samples"), "{}", stdout(&o));
    assert_clean_failure(
        &cli(&state, &["samples", "rm"]),
        2,
        "give sample ids or --label",
    );
    assert_refused(
        &cli(&state, &["samples", "rm", "--label", "Rocket!"]),
        &["Rocket!"],
    );
    let c = counts(&state);
    assert_eq!(c.keys().collect::<Vec<_>>(), ["cat", "coffee"]);
    assert_eq!(total(&c), 6);

    // Export: DIR/<label>/<id>.jpg for exactly the remaining samples, each the stored thumbnail.
    let remaining: BTreeSet<(String, i64)> = ids
        .values()
        .flatten()
        .filter(|a| a.label != "rocket" && a.id.to_string() != cat0 && a.id.to_string() != coffee0)
        .map(|a| (a.label.clone(), a.id))
        .collect();
    let export = tmp.path().join("export");
    let o = cli_ok(&state, &["samples", "export", s(&export)]);
    assert!(
        stdout(&o).contains("exported 6 thumbnails"),
        "{}",
        stdout(&o)
    );
    let mut exported = BTreeSet::new();
    let ws = workspace(&state);
    for label in listing(&export) {
        for file in listing(&export.join(&label)) {
            let id: i64 = file
                .strip_suffix(".jpg")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{label}/{file}"));
            let bytes = std::fs::read(export.join(&label).join(&file)).unwrap();
            let sample = ws.store.get(id).unwrap().expect("exported sample exists");
            assert_eq!(sample.label, label);
            assert_eq!(sample.thumbnail_jpeg.as_deref(), Some(&bytes[..]));
            let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
                .expect("a JPEG");
            assert!(img.width().min(img.height()) <= 256);
            exported.insert((label.clone(), id));
        }
    }
    drop(ws);
    assert_eq!(exported, remaining);

    // ... which `samples import` takes as it is.
    let state2 = tmp.path().join("state2");
    let o = cli_ok(&state2, &["samples", "import", s(&export)]);
    let again = added(&o);
    assert_eq!(again.len(), 6);
    assert!(stderr(&o).contains("imported 6 of 6"), "{}", stderr(&o));
    let c2 = counts(&state2);
    assert_eq!(
        c2.iter()
            .map(|(l, (t, h))| (l.clone(), t + h))
            .collect::<Vec<_>>(),
        c.iter()
            .map(|(l, (t, h))| (l.clone(), t + h))
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn train_without_two_labels_and_classify_without_a_head_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut rng = Rng(41);
    let cats = write_crops(&tmp.path().join("in"), "cat", CAT.1, 3, &mut rng);

    for args in [&["train"][..], &["train", "--json"]] {
        let o = cli(&state, args);
        assert_clean_failure(&o, 1, "no samples");
        assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    }
    assert!(heads(&state).is_empty());

    cli_ok(
        &state,
        &with_files(&["samples", "add", "--label", "cat"], &cats),
    );
    let o = cli(&state, &["train"]);
    assert_clean_failure(&o, 1, "at least two");
    assert!(heads(&state).is_empty());
    assert!(
        listing(&heads_dir(&state))
            .iter()
            .all(|f| !f.starts_with('v') && f != "current"),
        "no head file: {:?}",
        listing(&heads_dir(&state))
    );

    let o = cli(&state, &["classify", s(&cats[0])]);
    assert_clean_failure(
        &o,
        1,
        "no head has been trained for model 'mobilenetv2' yet",
    );
    let labeled = tmp.path().join("labeled");
    make_folder(&labeled, &[CAT, COFFEE], 1, 42);
    let o = cli(&state, &["eval", "--data", s(&labeled)]);
    assert_clean_failure(
        &o,
        1,
        "no head has been trained for model 'mobilenetv2' yet",
    );
    let o = cli(&state, &["heads", "rollback", "1"]);
    assert_clean_failure(&o, 1, "v1 does not exist");
}

#[test]
fn bad_labels_are_refused_by_name_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let img = image("chelsea.png");
    for (label, needles) in [
        ("Bad Label!", &["Bad Label!", "lower-case"][..]),
        ("unknown", &["\"unknown\"", "reserved"]),
        ("Cat", &["\"Cat\"", "use \"cat\""]),
        ("a/b", &["a/b"]),
        ("-x", &["-x"]),
    ] {
        let flag = format!("--label={label}");
        let o = cli(&state, &["samples", "add", &flag, s(&img)]);
        assert_refused(&o, needles);
        assert!(stdout(&o).is_empty(), "{label}: {}", stdout(&o));
        assert!(counts(&state).is_empty(), "{label}: nothing stored");
    }
    // A label folder in an import is held to the same rule.
    for bad in ["Cats", "unknown"] {
        let dir = tmp.path().join(format!("import-{bad}"));
        std::fs::create_dir_all(dir.join(bad)).unwrap();
        std::fs::copy(&img, dir.join(bad).join("a.png")).unwrap();
        let o = cli(&state, &["samples", "import", s(&dir)]);
        assert_refused(&o, &[bad]);
        assert!(counts(&state).is_empty(), "{bad}: nothing stored");
    }
}

#[test]
fn undecodable_files_in_an_import_are_skipped_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let data = tmp.path().join("data");
    make_folder(&data, &[CAT, COFFEE], 3, 51);
    let good = std::fs::read(data.join("cat").join("cat-01.jpg")).unwrap();
    std::fs::write(data.join("cat").join("broken.jpg"), &good[..good.len() / 3]).unwrap();
    std::fs::write(data.join("coffee").join("empty.png"), b"").unwrap();
    std::fs::write(data.join("coffee").join("notes.txt"), b"not an image").unwrap();

    let o = cli(&state, &["samples", "import", s(&data)]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for name in ["broken.jpg", "empty.png"] {
        let line = err
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} is not named: {err}"));
        assert!(line.starts_with("adaptd: skipped: "), "{line}");
    }
    assert!(!err.contains("notes.txt"), "not an image file: {err}");
    assert!(err.contains("imported 6 of 8 images"), "{err}");
    let a = added(&o);
    assert_eq!(a.len(), 6);
    assert!(a
        .iter()
        .all(|x| !s(&x.path).contains("broken") && !s(&x.path).contains("empty")));
    let c = counts(&state);
    assert_eq!(total(&c), 6);
    assert_eq!(c["cat"].0 + c["cat"].1, 3);
}

#[test]
fn a_corrupt_database_is_refused_by_name_and_left_byte_for_byte_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image("chelsea.png");
    let folder = tmp.path().join("data");
    make_folder(&folder, &[CAT, COFFEE], 2, 61);
    let commands: [Vec<&str>; 6] = [
        vec!["samples", "list"],
        vec!["samples", "add", "--label", "cat", s(&img)],
        vec!["samples", "import", s(&folder)],
        vec!["train"],
        vec!["classify", s(&img)],
        vec!["heads", "list"],
    ];

    // Random bytes: not even SQLite.
    let state = tmp.path().join("random");
    std::fs::create_dir_all(&state).unwrap();
    let mut rng = Rng(62);
    let junk: Vec<u8> = (0..65536).map(|_| rng.next() as u8).collect();
    let db = state.join("samples.db");
    std::fs::write(&db, &junk).unwrap();
    for args in &commands {
        let o = cli(&state, args);
        assert_clean_failure(&o, 1, &format!("{}: not an adaptd sample store", s(&db)));
        assert!(stderr(&o).contains("NOT modified"), "{}", stderr(&o));
        assert_eq!(
            std::fs::read(&db).unwrap(),
            junk,
            "{args:?} changed the file"
        );
        assert_eq!(
            listing(&state),
            ["samples.db"],
            "{args:?}: no -wal/-shm/-journal"
        );
    }

    // A real store with its pages scrambled after the first (the header still says SQLite).
    let state = tmp.path().join("scrambled");
    let db = state.join("samples.db");
    cli_ok(&state, &["samples", "import", s(&folder)]);
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 4 * 4096);
    for b in &mut bytes[4096..] {
        *b = rng.next() as u8;
    }
    std::fs::write(&db, &bytes).unwrap();
    let before = listing(&state);
    for args in &commands {
        let o = cli(&state, args);
        assert_clean_failure(&o, 1, &format!("{}: the sample store is corrupt", s(&db)));
        assert!(stderr(&o).contains("NOT modified"), "{}", stderr(&o));
        assert_eq!(
            std::fs::read(&db).unwrap(),
            bytes,
            "{args:?} changed the file"
        );
        assert_eq!(listing(&state), before, "{args:?}");
    }
}

/// An OS error is stated once: `main` prints the error chain (`{e:#}`), and error types that
/// already write their `source` into their own message must not print it a second time.
#[test]
fn an_error_line_states_its_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    // The state directory cannot be created: its parent is a file.
    std::fs::write(tmp.path().join("file"), b"x").unwrap();
    let state = tmp.path().join("file").join("state");
    // The heads directory cannot be created: `heads` is a file.
    let state2 = tmp.path().join("state2");
    std::fs::create_dir_all(&state2).unwrap();
    std::fs::write(state2.join("heads"), b"x").unwrap();
    let mut repeated = Vec::new();
    for (state, needle) in [(&state, "state directory"), (&state2, "heads")] {
        let o = cli(state, &["heads", "list"]);
        assert_refused(&o, &[needle, "Not a directory (os error 20)"]);
        if stderr(&o).matches("Not a directory").count() != 1 {
            repeated.push(stderr(&o));
        }
    }
    assert!(
        repeated.is_empty(),
        "the cause is repeated:\n{}",
        repeated.concat()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Full disk and write errors
// ---------------------------------------------------------------------------------------------

/// A tmpfs of `size` mounted on a fresh temporary directory, unmounted on drop. `None` where
/// mounting is not permitted (not root, or a container without CAP_SYS_ADMIN).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `path` until the file system refuses; returns the bytes written.
    fn fill(path: &Path) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(path).unwrap();
        let block = vec![0x5a_u8; 4096];
        let mut n = 0;
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        let _ = f.sync_all();
        n
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

#[test]
fn a_full_disk_is_reported_cleanly_and_changes_nothing() {
    let Some(fs) = Tmpfs::mount("16m") else {
        eprintln!(
            "a_full_disk_is_reported_cleanly_and_changes_nothing: SKIPPED, cannot mount a tmpfs \
             here (needs root); write_errors_are_reported_cleanly still covers write failures"
        );
        return;
    };
    let state = fs.path().join("state");
    let data = fs.path().join("data");
    make_folder(&data, &[CAT, COFFEE], 4, 71);
    cli_ok(&state, &["samples", "import", s(&data)]);
    cli_ok(&state, &["train", "--seed", "1"]);
    let mut rng = Rng(72);
    let extra = write_crops(&fs.path().join("extra"), "cat", CAT.1, 2, &mut rng);
    let before = counts(&state);
    let heads_before = listing(&heads_dir(&state));

    // Hold the store open the way the running daemon does (its WAL and WAL index stay in
    // place; the last connection to close would remove them), then fill the disk.
    let mut ws = workspace(&state);
    let filler = fs.path().join("filler");
    assert!(Tmpfs::fill(&filler) > 0);

    let o = cli(&state, &["samples", "add", "--label", "cat", s(&extra[0])]);
    assert_clean_failure(&o, 1, "disk full while writing");
    assert!(
        stderr(&o).contains(s(&state.join("samples.db"))),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("nothing was written"), "{}", stderr(&o));
    assert!(
        stdout(&o).is_empty(),
        "nothing reported as added: {}",
        stdout(&o)
    );

    let o = cli(&state, &["train", "--seed", "2"]);
    assert_clean_failure(&o, 1, "No space left on device");
    assert!(
        stderr(&o).contains("v0002"),
        "names the file: {}",
        stderr(&o)
    );

    // The library reports the same condition as its own error variant.
    let stored = ws.store.list(None, 1, 0).unwrap()[0].id;
    let stored = ws.store.get(stored).unwrap().unwrap();
    let sample = NewSample {
        label: "cat".into(),
        embedding: stored.embedding.clone(),
        backbone: stored.backbone.clone(),
        source: stored.source.clone(),
        created_unix_ms: stored.created_unix_ms,
        thumbnail_jpeg: stored.thumbnail_jpeg.clone(),
    };
    let err = ws.store.add(sample.clone()).unwrap_err();
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");

    // Nothing changed: same samples, same heads, v1 still current and complete.
    assert_eq!(counts(&state), before);
    assert_eq!(
        listing(&heads_dir(&state)),
        heads_before,
        "no partial head file left"
    );
    assert_eq!(current_head(&state), Some(1));
    assert_eq!(ws.registry.current().unwrap().unwrap().0, 1);

    // With room again, the same operations succeed.
    std::fs::remove_file(&filler).unwrap();
    ws.store.add(sample).unwrap();
    drop(ws);
    let a = added(&cli_ok(
        &state,
        &["samples", "add", "--label", "cat", s(&extra[0])],
    ));
    assert_eq!(a.len(), 1);
    assert_eq!(total(&counts(&state)), total(&before) + 2);
    let t = json_out(&cli_ok(&state, &["train", "--json", "--seed", "2"]));
    assert_eq!(t["version"], 2, "{t}");
}

/// Where a tmpfs cannot be mounted: a file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so
/// that the write fails with EFBIG instead of killing the process) makes writes fail as a
/// full disk does, without root.
#[test]
fn write_errors_are_reported_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let data = tmp.path().join("data");
    make_folder(&data, &[CAT, COFFEE], 4, 81);
    cli_ok(&state, &["samples", "import", s(&data)]);
    cli_ok(&state, &["train", "--seed", "1"]);
    let mut rng = Rng(82);
    let extra = write_crops(&tmp.path().join("extra"), "cat", CAT.1, 1, &mut rng);
    let before = counts(&state);
    let heads_before = listing(&heads_dir(&state));
    // Keep the WAL and its index in place (as the daemon does) so that the failing writes
    // are the commit's and the head files', not the creation of the WAL index.
    let ws = workspace(&state);

    let limited = |args: &[&str]| -> Output {
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -f 16 && trap '' XFSZ && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_adaptd"))
            .arg("--model-dir")
            .arg(models_dir())
            .args(args)
            .args(["--model", MODEL, "--state-dir", s(&state)])
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let o = limited(&["samples", "add", "--label", "cat", s(&extra[0])]);
    assert_refused(&o, &[s(&state.join("samples.db"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    let o = limited(&["train", "--seed", "2"]);
    assert_refused(&o, &["v0002"]);
    assert_eq!(o.status.code(), Some(1));

    drop(ws);
    assert_eq!(counts(&state), before);
    assert_eq!(listing(&heads_dir(&state)), heads_before);
    assert_eq!(current_head(&state), Some(1));
    cli_ok(&state, &["samples", "add", "--label", "cat", s(&extra[0])]);
    cli_ok(&state, &["train", "--seed", "2"]);
}

// ---------------------------------------------------------------------------------------------
// 6. kill -9
// ---------------------------------------------------------------------------------------------

/// After a kill: the store opens (CLI and library), every sample reported as added is there
/// with its label, and the current head loads completely and serves.
fn check_after_kill(state: &Path, reported: &BTreeMap<i64, String>, probe: &Path, round: usize) {
    let c = counts(state);
    assert!(
        total(&c) >= reported.len() as u64,
        "round {round}: {c:?} < {} reported",
        reported.len()
    );
    let ws = workspace(state);
    for (id, label) in reported {
        let sample = ws
            .store
            .get(*id)
            .unwrap()
            .unwrap_or_else(|| panic!("round {round}: sample #{id} was reported but is gone"));
        assert_eq!(&sample.label, label, "round {round}: #{id}");
        assert_eq!(sample.embedding.len(), EMBEDDING_DIM);
        assert!(sample.thumbnail_jpeg.is_some());
    }
    let (version, head, meta) = ws
        .registry
        .current()
        .unwrap_or_else(|e| panic!("round {round}: the current head does not load: {e}"))
        .unwrap_or_else(|| panic!("round {round}: no current head any more"));
    assert_eq!(head.classes(), meta.classes.as_slice());
    assert_eq!(meta.version, version);
    drop(ws);
    assert_eq!(current_head(state), Some(version), "round {round}");
    let out = classify(state, &[probe.to_path_buf()]);
    assert_eq!(out[0]["head_version"], version, "round {round}");
}

#[test]
fn kill_9_during_import_and_train_loses_nothing_that_was_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    // A store and a deployed head to protect. (Killing the very creation of a store is the
    // next test's subject.)
    let base = tmp.path().join("base");
    make_folder(&base, &[CAT, COFFEE], 3, 91);
    let mut reported: BTreeMap<i64, String> =
        added(&cli_ok(&state, &["samples", "import", s(&base)]))
            .into_iter()
            .map(|a| (a.id, a.label))
            .collect();
    cli_ok(&state, &["train", "--seed", "1"]);
    let probe = base.join("cat").join("cat-00.png");

    let mut rng = Rng(0x9e11);
    let mut killed = 0;
    for round in 0..12 {
        let folder = tmp.path().join(format!("round{round}"));
        let labels = [FOUR[round % 4], FOUR[(round + 1) % 4]];
        // Import rounds are killed after k reported samples plus a random pause; train rounds
        // after a random delay (with --data, the import inside train may be hit too).
        let (args, lines_before_kill, pause_ms): (Vec<String>, usize, u64) = match round % 3 {
            0 | 1 => {
                make_folder(&folder, &labels, 3, 100 + round as u64);
                let args = vec!["samples".into(), "import".into(), s(&folder).into()];
                // Half of the time the kill follows the k-th `added` line at once: a line
                // printed before its commit were durable would then be caught.
                let pause = if rng.below(2) == 0 { 0 } else { rng.below(40) };
                (args, rng.below(6) as usize, pause)
            }
            _ if round % 2 == 0 => {
                let args = vec!["train".into(), "--seed".into(), round.to_string()];
                (args, 0, rng.below(150))
            }
            _ => {
                make_folder(&folder, &labels, 1, 100 + round as u64);
                let args = vec![
                    "train".into(),
                    "--data".into(),
                    s(&folder).into(),
                    "--seed".into(),
                    round.to_string(),
                ];
                (args, 0, rng.below(700))
            }
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = cmd(&state, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        while lines.len() < lines_before_kill {
            let mut l = String::new();
            if out.read_line(&mut l).unwrap() == 0 {
                break;
            }
            lines.push(l);
        }
        std::thread::sleep(Duration::from_millis(pause_ms));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if status.signal() == Some(9) {
            killed += 1;
        } else {
            assert!(status.success(), "round {round} {args:?}: {status:?}");
        }
        // Lines printed before the kill were committed too.
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        for a in lines
            .iter()
            .map(String::as_str)
            .chain(rest.lines())
            .filter_map(parse_added)
        {
            reported.insert(a.id, a.label);
        }
        check_after_kill(&state, &reported, &probe, round);
    }
    eprintln!(
        "kill -9: {killed} of 12 rounds killed mid-run, {} reported samples checked",
        reported.len()
    );
    assert!(
        killed >= 4,
        "only {killed} of 12 rounds were killed mid-run"
    );

    // And the state keeps working: a clean import and train still succeed.
    let last = tmp.path().join("last");
    make_folder(&last, &FOUR, 2, 200);
    cli_ok(&state, &["samples", "import", s(&last)]);
    let t = json_out(&cli_ok(&state, &["train", "--json", "--seed", "3"]));
    assert!(t["version"].as_u64().unwrap() >= 2, "{t}");
    check_after_kill(&state, &reported, &probe, 99);
}

/// SQLite creates a new database in rollback-journal mode and switches it to WAL in a small
/// transaction of its own: `samples.db-journal` exists from its first fsync until its unlink,
/// three fsyncs later (tens of ms on an SD card, during the daemon's first start). A kill or a
/// power cut in that window leaves an empty database (0 bytes, or only the first page) beside
/// a journal recording an original size of 0 pages: there is nothing to roll back and nothing
/// to lose, yet every later start must open the store, or the daemon can never start again.
///
/// The two states are built byte for byte as the kill leaves them (checked against
/// `strace -e inject=unlink:signal=KILL` and `inject=pwrite64:signal=KILL:when=3`) and, where
/// strace is available, also made by a real SIGKILL at the journal's unlink.
#[test]
fn kill_9_while_a_new_store_is_created_leaves_a_usable_store() {
    let tmp = tempfile::tempdir().unwrap();
    // The journal header SQLite has fsynced at that point: magic, 0 records, nonce, original
    // size 0 pages, sector size 512, page size 4096.
    let mut journal = vec![0u8; 512];
    journal[..8].copy_from_slice(&[0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7]);
    journal[12..16].copy_from_slice(&0x3c5c_113b_u32.to_be_bytes());
    journal[20..24].copy_from_slice(&512u32.to_be_bytes());
    journal[24..28].copy_from_slice(&4096u32.to_be_bytes());
    // Page 1 of an empty database already switched to WAL (what SQLite writes before it
    // deletes the journal).
    let first_page = {
        let p = tmp.path().join("empty.db");
        let conn = rusqlite::Connection::open(&p).unwrap();
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        std::fs::read(&p).unwrap()
    };
    assert_eq!(first_page.len(), 4096);

    let mut states: Vec<(String, PathBuf)> = Vec::new();
    for (what, db) in [
        ("killed before the first page was written", Vec::new()),
        ("killed before the journal was deleted", first_page),
    ] {
        let state = tmp.path().join(format!("built{}", states.len()));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("samples.db"), db).unwrap();
        std::fs::write(state.join("samples.db-journal"), &journal).unwrap();
        states.push((what.to_string(), state));
    }
    let strace_works = Command::new("strace")
        .args(["-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if strace_works {
        let state = tmp.path().join("strace");
        let o = Command::new("strace")
            .args(["-f", "-o", "/dev/null", "-e", "trace=unlink"])
            .args(["-e", "inject=unlink:signal=KILL:when=1"])
            .arg(env!("CARGO_BIN_EXE_adaptd"))
            .arg("--model-dir")
            .arg(models_dir())
            .args([
                "samples",
                "list",
                "--model",
                MODEL,
                "--state-dir",
                s(&state),
            ])
            .output()
            .unwrap();
        // Whatever the kill left (it hits the journal's unlink as SQLite creates stores
        // today), the store must open afterwards.
        eprintln!("strace kill: {:?}, left {:?}", o.status, listing(&state));
        states.push(("SIGKILL at the first unlink (strace)".into(), state));
    } else {
        eprintln!("strace is not available: only the byte-for-byte states are tested");
    }

    let img = image("chelsea.png");
    let mut failures = Vec::new();
    for (what, state) in &states {
        let o = cli(state, &["samples", "list", "--format", "json"]);
        if !o.status.success() {
            failures.push(format!("{what}: {}", stderr(&o).trim()));
            continue;
        }
        assert!(counts(state).is_empty(), "{what}");
        let a = added(&cli_ok(
            state,
            &["samples", "add", "--label", "cat", s(&img)],
        ));
        assert_eq!(a.len(), 1, "{what}");
        assert_eq!(total(&counts(state)), 1, "{what}");
    }
    assert!(
        failures.is_empty(),
        "the store must open after a crash during its creation:\n{}",
        failures.join("\n")
    );
}
