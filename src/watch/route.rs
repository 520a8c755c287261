//! Which part of the view a topic feeds, and which topics to subscribe to.
//!
//! Device-level topics sit directly under the base (`<base>/state`); per-camera ones one level
//! down (`<base>/<camera>/state`). A second level is a camera only when it passes the
//! stream-name rule, which also excludes the device's own words: `<base>/samples/state` is a
//! sample labeled `state` (JPEG bytes), not the state of a camera called `samples`.

use crate::wire::check_stream_name;

/// A per-camera topic the view reads (`snapshot`, a JPEG, is left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraTopic {
    /// `<camera>/state` (retained).
    State,
    /// `<camera>/detections`.
    Detections,
    /// `<camera>/events`.
    Events,
}

/// Where one message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `available` (retained).
    Available,
    /// `state` (retained).
    DeviceState,
    /// `stats`.
    Stats,
    /// `training`.
    Training,
    /// `reply`.
    Reply,
    /// `<camera>/state|detections|events`.
    Camera {
        /// The stream's name (checked: safe to show and to key on).
        name: String,
        topic: CameraTopic,
    },
    /// Anything else: `snapshot`s, `cmd/...` and `samples/...` that other clients publish,
    /// topics a newer daemon adds. Ignored without a problem, so a caller may subscribe to
    /// `<base>/#`.
    Ignored,
}

impl Route {
    /// Whether the topic is live: retained topics (`available`, `state`, `<camera>/state`)
    /// do not say the device is there now, since the broker replays them on subscribe
    /// however long the device has been gone.
    pub fn is_live(&self) -> bool {
        match self {
            Route::Stats | Route::Training | Route::Reply => true,
            Route::Camera { topic, .. } => *topic != CameraTopic::State,
            Route::Available | Route::DeviceState | Route::Ignored => false,
        }
    }
}

/// Routes a topic relative to `<prefix>/<device>/` (leading and trailing slashes tolerated).
pub fn route(subtopic: &str) -> Route {
    let topic = subtopic.trim_matches('/');
    let mut levels = topic.split('/');
    match (levels.next(), levels.next(), levels.next()) {
        (Some(one), None, None) => match one {
            "available" => Route::Available,
            "state" => Route::DeviceState,
            "stats" => Route::Stats,
            "training" => Route::Training,
            "reply" => Route::Reply,
            _ => Route::Ignored,
        },
        (Some(name), Some(what), None) if check_stream_name(name).is_ok() => {
            let topic = match what {
                "state" => CameraTopic::State,
                "detections" => CameraTopic::Detections,
                "events" => CameraTopic::Events,
                _ => return Route::Ignored,
            };
            Route::Camera {
                name: name.to_owned(),
                topic,
            }
        }
        _ => Route::Ignored,
    }
}

/// The topic filters to subscribe to under `base`: the device's topics, and the per-camera
/// ones of every camera (`+`) or only of `camera`.
pub fn subscriptions(base: &str, camera: Option<&str>) -> Vec<String> {
    let device = ["available", "state", "stats", "training", "reply"];
    let level = camera.unwrap_or("+");
    device
        .iter()
        .map(|t| format!("{base}/{t}"))
        .chain(
            ["state", "detections", "events"]
                .iter()
                .map(|t| format!("{base}/{level}/{t}")),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(name: &str, topic: CameraTopic) -> Route {
        Route::Camera {
            name: name.into(),
            topic,
        }
    }

    #[test]
    fn device_and_camera_topics() {
        assert_eq!(route("available"), Route::Available);
        assert_eq!(route("/state/"), Route::DeviceState);
        assert_eq!(route("stats"), Route::Stats);
        assert_eq!(route("training"), Route::Training);
        assert_eq!(route("reply"), Route::Reply);
        assert_eq!(route("front/state"), camera("front", CameraTopic::State));
        assert_eq!(
            route("back-2/detections"),
            camera("back-2", CameraTopic::Detections)
        );
        assert_eq!(route("hall/events"), camera("hall", CameraTopic::Events));
    }

    #[test]
    fn everything_else_is_ignored() {
        for topic in [
            "",
            "snapshot",
            "front/snapshot",
            "cmd/train",
            "cmd/state",
            "samples/cat",
            "samples/state",
            "front/samples/cat",
            "Front/state",
            "front door/state",
            "front/state/extra",
            "detections",
            "events",
            "something-new",
        ] {
            assert_eq!(route(topic), Route::Ignored, "{topic}");
        }
    }

    #[test]
    fn live_topics() {
        assert!(!route("available").is_live());
        assert!(!route("state").is_live());
        assert!(!route("front/state").is_live());
        assert!(route("front/detections").is_live());
        assert!(route("front/events").is_live());
        assert!(route("stats").is_live() && route("reply").is_live());
    }

    #[test]
    fn subscription_filters() {
        let all = subscriptions("adaptd/shed", None);
        assert!(all.contains(&"adaptd/shed/state".to_string()));
        assert!(all.contains(&"adaptd/shed/+/detections".to_string()));
        assert!(!all.iter().any(|t| t.ends_with("snapshot")));
        let one = subscriptions("adaptd/shed", Some("front"));
        assert!(one.contains(&"adaptd/shed/front/events".to_string()));
        assert!(one.contains(&"adaptd/shed/stats".to_string()));
        assert!(!one.iter().any(|t| t.contains('+')));
    }
}
