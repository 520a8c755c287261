//! The command parser's tests: every verb, every kind of refusal and its message.

use super::*;
use crate::label::Label;
use serde_json::json;

fn ok(verb: &str, payload: &str) -> Request {
    match Request::parse(verb, payload.as_bytes()) {
        Ok(r) => r,
        Err(e) => panic!("{verb} {payload}: {}", e.error),
    }
}

fn err(verb: &str, payload: &str) -> Rejected {
    match Request::parse(verb, payload.as_bytes()) {
        Ok(r) => panic!("{verb} {payload} should fail, got {r:?}"),
        Err(e) => e,
    }
}

fn label(s: &str) -> Label {
    Label::parse(s).expect("valid label")
}

#[test]
fn every_verb_parses() {
    assert_eq!(
        ok("label", r#"{"label": "cat"}"#).command,
        Command::Label {
            label: label("cat"),
            target: LabelTarget::Latest
        }
    );
    assert_eq!(
        ok("label", r#"{"label": "dog-2", "detection": 3, "id": "a"}"#),
        Request {
            id: Some(RequestId::Text("a".into())),
            camera: None,
            command: Command::Label {
                label: label("dog-2"),
                target: LabelTarget::Detection {
                    frame_id: None,
                    index: 3
                }
            },
        }
    );
    let target = |json: &str| match ok("label", json).command {
        Command::Label { target, .. } => target,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        target(r#"{"label": "alice", "object": "1795987200.456-kqxzab"}"#),
        LabelTarget::Object("1795987200.456-kqxzab".into())
    );
    assert_eq!(
        target(r#"{"label": "alice", "frame_id": 88, "detection": 1}"#),
        LabelTarget::Detection {
            frame_id: Some(88),
            index: 1
        }
    );
    assert_eq!(
        target(r#"{"label": "alice", "frame_id": 88, "box": [1, 2.5, 30, 40]}"#),
        LabelTarget::Box {
            frame_id: 88,
            bbox: [1.0, 2.5, 30.0, 40.0]
        }
    );
    assert_eq!(
        target(r#"{"label": "kitchen", "frame_id": 7}"#),
        LabelTarget::Frame { frame_id: 7 }
    );
    assert_eq!(
        ok(
            "events",
            r#"{"label": "person", "limit": 5, "after": 1795987200}"#
        )
        .command,
        Command::Events(EventFilter {
            label: Some("person".into()),
            after: Some(1795987200.0),
            limit: 5,
            ..EventFilter::default()
        })
    );
    assert_eq!(
        ok("events", "").command,
        Command::Events(EventFilter {
            limit: 50,
            ..EventFilter::default()
        })
    );
    assert_eq!(ok("train", "").command, Command::Train { force: false });
    assert_eq!(ok("train", "{}").command, Command::Train { force: false });
    assert_eq!(
        ok("train", r#"{"force": true}"#).command,
        Command::Train { force: true }
    );
    assert_eq!(
        ok("rollback", r#"{"version": 3}"#).command,
        Command::Rollback {
            target: RollbackTarget::Version(3)
        }
    );
    assert_eq!(
        ok("rollback", r#"{"version": "previous"}"#).command,
        Command::Rollback {
            target: RollbackTarget::Previous
        }
    );
    assert_eq!(ok("pause", "").command, Command::Pause);
    assert_eq!(ok("resume", " \n").command, Command::Resume);
    assert_eq!(ok("snapshot", "{}").command, Command::Snapshot);
    assert_eq!(
        ok("status", r#"{"id": 7}"#).id,
        Some(RequestId::Number(7.into()))
    );
    assert_eq!(
        ok("set", r#"{"score_threshold": 0.4, "consensus": 3, "fps": 5, "auto_train": false, "unknown_threshold": 1}"#)
            .command,
        Command::Set(Settings {
            score_threshold: Some(0.4),
            unknown_threshold: Some(1.0),
            consensus: Some(3),
            fps: Some(5.0),
            auto_train: Some(false),
            detect: None,
        })
    );
    assert_eq!(
        ok("forget", r#"{"label": "cat"}"#).command,
        Command::Forget {
            label: label("cat")
        }
    );
    assert_eq!(
        ok("false_positive", r#"{"object": "1.000-abcdef"}"#).command,
        Command::FalsePositive {
            target: LabelTarget::Object("1.000-abcdef".into())
        }
    );
    assert_eq!(
        ok("false_positive", r#"{"frame_id": 7, "detection": 1}"#).command,
        Command::FalsePositive {
            target: LabelTarget::Detection {
                frame_id: Some(7),
                index: 1
            }
        }
    );
    let whole_frame = Request::parse("false_positive", br#"{"frame_id": 7}"#).unwrap_err();
    assert!(
        whole_frame.error.to_string().contains("say which object"),
        "{}",
        whole_frame.error
    );
    let labelled = Request::parse("false_positive", br#"{"object": "x", "label": "none"}"#);
    assert!(labelled.is_err(), "no `label`: the verb says it");
    // Verbs whose fields are all optional accept an empty payload.
    for verb in VERBS {
        let needs_fields = ["label", "rollback", "set", "forget", "false_positive"].contains(verb);
        assert_eq!(Request::parse(verb, b"").is_ok(), !needs_fields, "{verb}");
    }
}

#[test]
fn verb_names_round_trip() {
    for verb in ["pause", "resume", "snapshot", "status", "train"] {
        assert_eq!(ok(verb, "").command.verb(), verb);
    }
}

#[test]
fn malformed_json() {
    let e = err("train", "{force: true");
    assert!(matches!(e.error, CommandError::Malformed(_)));
    assert!(
        e.error.to_string().contains("not valid JSON"),
        "{}",
        e.error
    );
    assert_eq!(e.verb, "train");
    assert!(matches!(
        err("train", "\u{0}\u{1}").error,
        CommandError::Malformed(_)
    ));
    let e = Request::parse("train", &[0xff, 0xfe]).expect_err("binary");
    assert!(matches!(e.error, CommandError::Malformed(_)));
}

#[test]
fn not_an_object() {
    for (payload, name) in [
        ("[1]", "an array"),
        ("\"x\"", "a string"),
        ("3", "a number"),
        ("null", "null"),
    ] {
        let e = err("status", payload);
        assert_eq!(e.error, CommandError::NotAnObject(name), "{payload}");
    }
}

#[test]
fn unknown_verb_keeps_the_id() {
    let e = err("explode", r#"{"id": "x1"}"#);
    assert_eq!(e.error, CommandError::UnknownVerb("explode".into()));
    assert_eq!(e.id, Some(RequestId::Text("x1".into())));
    assert!(e.error.to_string().contains("label, train, rollback"));
}

#[test]
fn wrong_types() {
    let cases = [
        ("train", r#"{"force": "yes"}"#, "force"),
        ("label", r#"{"label": 5}"#, "label"),
        (
            "label",
            r#"{"label": "cat", "detection": "1"}"#,
            "detection",
        ),
        (
            "label",
            r#"{"label": "cat", "detection": 1.5}"#,
            "detection",
        ),
        ("rollback", r#"{"version": "latest"}"#, "version"),
        ("rollback", r#"{"version": [1]}"#, "version"),
        ("set", r#"{"fps": "fast"}"#, "fps"),
        ("set", r#"{"auto_train": 1}"#, "auto_train"),
        ("status", r#"{"id": {"a": 1}}"#, "id"),
        ("status", r#"{"id": true}"#, "id"),
    ];
    for (verb, payload, field) in cases {
        match err(verb, payload).error {
            CommandError::WrongType { field: f, .. } => {
                assert_eq!(f, field, "{verb} {payload}")
            }
            other => panic!("{verb} {payload}: expected WrongType, got {other:?}"),
        }
    }
    let msg = err("train", r#"{"force": "yes"}"#).error.to_string();
    assert_eq!(msg, "`force` must be true or false, not a string (\"yes\")");
}

#[test]
fn missing_fields() {
    for (verb, payload, field) in [
        ("label", "{}", "label"),
        ("label", r#"{"detection": 1}"#, "label"),
        ("forget", "", "label"),
        ("rollback", "{}", "version"),
        ("rollback", r#"{"version": null}"#, "version"),
    ] {
        match err(verb, payload).error {
            CommandError::MissingField { field: f, .. } => assert_eq!(f, field),
            other => panic!("{verb} {payload}: expected MissingField, got {other:?}"),
        }
    }
    assert!(err("rollback", "{}")
        .error
        .to_string()
        .contains(r#"{"version": "previous"}"#));
    assert!(matches!(
        err("set", "{}").error,
        CommandError::NothingToSet(_)
    ));
}

#[test]
fn out_of_range() {
    for (verb, payload, field) in [
        ("set", r#"{"score_threshold": 1.5}"#, "score_threshold"),
        ("set", r#"{"unknown_threshold": -0.1}"#, "unknown_threshold"),
        ("set", r#"{"consensus": 0}"#, "consensus"),
        ("set", r#"{"consensus": 101}"#, "consensus"),
        ("set", r#"{"consensus": -1}"#, "consensus"),
        ("set", r#"{"fps": 0}"#, "fps"),
        ("set", r#"{"fps": 61}"#, "fps"),
        ("rollback", r#"{"version": 0}"#, "version"),
        ("rollback", r#"{"version": 4294967296}"#, "version"),
        ("rollback", r#"{"version": 1e30}"#, "version"),
        (
            "label",
            r#"{"label": "cat", "detection": 1000}"#,
            "detection",
        ),
        ("label", r#"{"label": "cat", "detection": -1}"#, "detection"),
        (
            "label",
            r#"{"label": "cat", "frame_id": 1, "box": [5, 5, 1, 1]}"#,
            "box",
        ),
        ("events", r#"{"limit": 0}"#, "limit"),
    ] {
        match err(verb, payload).error {
            CommandError::OutOfRange { field: f, .. } => assert_eq!(f, field, "{payload}"),
            other => panic!("{verb} {payload}: expected OutOfRange, got {other:?}"),
        }
    }
    assert_eq!(
        err("set", r#"{"consensus": 0}"#).error.to_string(),
        "`consensus` = 0 is out of range: it must be a whole number from 1 to 100 (frames)"
    );
    // Whole numbers written as floats are fine.
    assert_eq!(
        ok("rollback", r#"{"version": 2.0}"#).command,
        Command::Rollback {
            target: RollbackTarget::Version(2)
        }
    );
}

#[test]
fn unknown_fields() {
    let e = err("set", r#"{"treshold": 0.5}"#).error;
    assert!(matches!(&e, CommandError::UnknownField { field, .. } if field == "treshold"));
    assert!(
        e.to_string()
            .contains("score_threshold (a number from 0 to 1)"),
        "{e}"
    );
    let e = err("pause", r#"{"now": true}"#).error;
    assert!(e.to_string().contains("none besides `id`"), "{e}");
    let e = err("train", r#"{"forse": true}"#).error;
    assert!(e.to_string().contains("its fields are: force"), "{e}");
    assert_eq!(
        err("label", r#"{"label": "cat", "image": "..."}"#).error,
        CommandError::ImageNotAccepted
    );
}

#[test]
fn labels() {
    for good in ["cat", "a", "0", "dog_2", "x-y", &"a".repeat(64), "unknown2"] {
        assert!(Label::parse(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "Cat",
        "a cat",
        "-cat",
        "_cat",
        "ü",
        "a/b",
        "a+b",
        "#",
        "unknown",
        &"a".repeat(65),
    ] {
        let payload = json!({ "label": bad }).to_string();
        assert!(
            matches!(
                err("label", &payload).error,
                CommandError::InvalidLabel { .. }
            ),
            "{bad}"
        );
    }
    let e = err("label", r#"{"label": "unknown", "id": 1}"#);
    assert!(e.error.to_string().contains("reserved"), "{}", e.error);
    assert_eq!(e.id, Some(RequestId::Number(1.into())));
    assert!(matches!(
        err("forget", r#"{"label": "Big Cat"}"#).error,
        CommandError::InvalidLabel { .. }
    ));
}

#[test]
fn reply_json() {
    let r = Reply::ok(
        Some(RequestId::Text("a".into())),
        "train",
        json!({"version": 4}),
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&r.to_json()).expect("json"),
        json!({"id": "a", "cmd": "train", "ok": true, "result": {"version": 4}})
    );
    let rejected = err("set", r#"{"id": 9, "fps": 100}"#);
    let v: Value = serde_json::from_slice(&rejected.reply().to_json()).expect("json");
    assert_eq!(v["id"], json!(9));
    assert_eq!(v["cmd"], json!("set"));
    assert_eq!(v["ok"], json!(false));
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|s| s.contains("`fps` = 100")),
        "{v}"
    );
    assert!(v.get("result").is_none());
    let v = Reply::error(None, None, "too big").to_value();
    assert_eq!(v, json!({"id": null, "ok": false, "error": "too big"}));
    // A malformed payload has no readable id: the reply says null.
    let v = err("train", "{").reply().to_value();
    assert_eq!(v["id"], Value::Null);
}

#[test]
fn long_garbage_is_shortened() {
    let verb = "v".repeat(500);
    let e = err(&verb, "{}");
    assert!(e.verb.chars().count() <= 65);
    assert!(e.error.to_string().len() < 300);
}

#[test]
fn camera_on_every_verb() {
    for (verb, payload) in [
        ("label", r#"{"label": "cat", "camera": "front"}"#),
        ("train", r#"{"camera": "front"}"#),
        ("rollback", r#"{"version": 2, "camera": "front"}"#),
        ("pause", r#"{"camera": "front"}"#),
        ("resume", r#"{"camera": "front"}"#),
        ("snapshot", r#"{"camera": "front"}"#),
        ("set", r#"{"fps": 2, "camera": "front"}"#),
        ("forget", r#"{"label": "cat", "camera": "front"}"#),
        ("status", r#"{"camera": "front", "id": 3}"#),
    ] {
        assert_eq!(ok(verb, payload).camera.as_deref(), Some("front"), "{verb}");
    }
    assert_eq!(ok("pause", "").camera, None);
    assert_eq!(ok("pause", r#"{"camera": null}"#).camera, None);
}

#[test]
fn camera_names_are_checked() {
    for (payload, why) in [
        (r#"{"camera": ""}"#, "it is empty"),
        (r#"{"camera": "Front"}"#, "only lower-case"),
        (r#"{"camera": "front door"}"#, "only lower-case"),
        (r#"{"camera": "_x"}"#, "start with a letter or a digit"),
        (r#"{"camera": "state"}"#, "device-level topic word"),
    ] {
        let e = err("pause", &format!(r#"{{"id": "p", {}"#, &payload[1..]));
        assert!(
            matches!(&e.error, CommandError::InvalidCamera { .. }),
            "{payload}: {:?}",
            e.error
        );
        assert!(e.error.to_string().contains(why), "{payload}: {}", e.error);
        assert_eq!(e.id, Some(RequestId::Text("p".into())), "the id survives");
    }
    let e = err("pause", &format!(r#"{{"camera": "{}"}}"#, "a".repeat(300)));
    let msg = e.error.to_string();
    assert!(
        msg.contains("longer than 32 characters") && msg.len() < 200,
        "{msg}"
    );
    assert_eq!(
        err("pause", r#"{"camera": "Front"}"#).error.to_string(),
        "invalid camera name \"Front\": only lower-case a-z, digits, `_` and `-` are allowed \
         (write \"front\", not \"Front\" or \"front door\")"
    );
    assert_eq!(
        err("train", r#"{"camera": 2}"#).error.to_string(),
        "`camera` must be the name of a camera or microphone (a string), not a number (2)"
    );
    // A bad camera is reported before the command's own fields.
    assert!(matches!(
        err("set", r#"{"camera": "A", "fps": 100}"#).error,
        CommandError::InvalidCamera { .. }
    ));
    assert!(err("pause", r#"{"now": 1}"#)
        .error
        .to_string()
        .contains("none besides `id` and `camera`"));
}

#[test]
fn label_targets_that_cannot_be_are_refused_naming_the_field() {
    for (payload, says) in [
        (r#"{"label": "cat", "box": [1, 2, 3]}"#, "`box` must be"),
        (r#"{"label": "cat", "frame_id": "x"}"#, "`frame_id` must be"),
        (r#"{"label": "cat", "frame_id": -3}"#, "`frame_id` must be"),
        (r#"{"label": "cat", "object": 3}"#, "`object` must be"),
        (
            r#"{"label": "cat", "box": [1, 2, 30, 40]}"#,
            "`box` needs the `frame_id`",
        ),
        (
            r#"{"label": "cat", "object": "a", "detection": 1}"#,
            "`object` names an object by itself",
        ),
        (
            r#"{"label": "cat", "frame_id": 2, "detection": 1, "box": [1, 2, 30, 40]}"#,
            "not both",
        ),
        (r#"{"label": "cat", "track": 1}"#, "has no field `track`"),
    ] {
        let e = err("label", payload).error.to_string();
        assert!(e.contains(says), "{payload}: {e}");
    }
    let e = err("events", r#"{"after": "yesterday"}"#).error.to_string();
    assert!(e.contains("`after` must be unix seconds"), "{e}");
}
