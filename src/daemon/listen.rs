//! The audio side of the inference thread: one voice print per utterance, the head's verdict
//! on it, and `events` when the speaker changes.
//!
//! An utterance is a whole decision, not one of thirty similar frames a second, so consensus
//! is one of one ([`SPEAKER_CONSENSUS`]): each utterance says who spoke, an utterance nobody
//! enrolled (below the head's threshold) ends the current speaker. `[consensus]` tunes the
//! camera pipeline only.

use std::collections::BTreeMap;
use std::time::Instant;

use super::infer::{Analyzer, EmbedInput, Job};
use super::pipeline::{head_label, FrameResult, HeadSlot, Item, UtteranceInfo};
use crate::audio::model::AudioModel;
use crate::audio::stream::UtteranceMsg;
use crate::consensus::{Consensus, ConsensusConfig};
use crate::source::pace::Pacer;

/// The consensus track of the speaker (the `track` of its `events`).
pub const SPEAKER_TRACK: &str = "speaker";

/// The backbone's own label for an utterance (an audio model has no classes of its own).
pub const SPEECH_LABEL: &str = "speech";

/// One utterance decides (see the module docs). `min_score` 0: the head's open-set threshold
/// has already decided whether the speaker is known.
pub const SPEAKER_CONSENSUS: ConsensusConfig = ConsensusConfig {
    n: 1,
    m: 1,
    min_score: 0.0,
};

/// The speaker encoder, the head slot and the speaker track.
pub struct AudioPipeline {
    model: AudioModel,
    head: HeadSlot,
    consensus: Consensus,
}

impl AudioPipeline {
    pub fn new(model: AudioModel, head: HeadSlot) -> AudioPipeline {
        AudioPipeline {
            model,
            head,
            consensus: Consensus::new(SPEAKER_CONSENSUS),
        }
    }
}

impl Analyzer for AudioPipeline {
    type Input = UtteranceMsg;

    fn analyze(&mut self, u: &UtteranceMsg) -> Result<FrameResult, String> {
        let start = Instant::now();
        let embedding = self.model.embed(&u.samples).map_err(|e| e.to_string())?;
        let head = self.head.load_full();
        let verdict = head.as_deref().and_then(|h| head_label(h, &embedding));
        let mut observations = BTreeMap::new();
        if let Some(v) = verdict.as_ref().filter(|v| !v.unknown) {
            observations.insert(SPEAKER_TRACK.to_string(), (v.label.clone(), v.score));
        }
        let events = self.consensus.observe(&observations);
        Ok(FrameResult {
            frame_id: u.seq,
            time_unix_ms: u.unix_ms,
            width: 0,
            height: 0,
            utterance: Some(UtteranceInfo {
                start_s: u.start_s,
                duration_s: u.duration_s(),
                level_dbfs: u.level_dbfs,
                snr_db: u.snr_db,
            }),
            items: vec![Item {
                label: SPEECH_LABEL.into(),
                score: 1.0,
                bbox: None,
                head: verdict,
            }],
            inference_ms: start.elapsed().as_secs_f64() * 1e3,
            events,
            embeddings: vec![embedding],
        })
    }

    fn consensus_mut(&mut self) -> &mut Consensus {
        &mut self.consensus
    }

    fn serve(&mut self, job: Job, _cap: &mut Pacer) {
        match job {
            Job::Embed { input, reply } => {
                let result = match input {
                    EmbedInput::Audio(samples) => {
                        self.model.embed(&samples).map_err(|e| e.to_string())
                    }
                    EmbedInput::Image(_) => {
                        Err("this daemon runs an audio model: send a WAV clip, not an image".into())
                    }
                };
                let _ = reply.send(result);
            }
            // Consensus is fixed for audio (module docs); fps caps and detector thresholds do
            // not apply to utterances.
            Job::Settings { .. } => {}
        }
    }
}
