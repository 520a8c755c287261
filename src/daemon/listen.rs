//! The audio side of the inference thread: one voice print per utterance, the head's verdict
//! on it, and `events` when the speaker changes.
//!
//! An utterance is a whole decision, not one of thirty similar frames a second, so consensus
//! is one of one ([`SPEAKER_CONSENSUS`]): each utterance says who spoke, an utterance nobody
//! enrolled (below the head's threshold) ends the current speaker. `[consensus]` tunes the
//! camera pipeline only.

use std::collections::BTreeMap;
use std::time::Instant;

use super::infer::{EmbedInput, InferError, LaneSettings, Medium};
use super::pipeline::{head_label, FrameResult, HeadSlot, Item, UtteranceInfo};
use crate::audio::model::AudioModel;
use crate::consensus::{Consensus, ConsensusConfig};
use crate::source::microphone::UtteranceMsg;

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

/// The loaded speaker encoders of the audio worker, shared by every microphone naming them.
pub type AudioEngines = Vec<AudioModel>;

/// One microphone's analysis: which encoder, the head slot and the speaker track.
pub struct AudioPipeline {
    engine: usize,
    head: HeadSlot,
    consensus: Consensus,
}

impl AudioPipeline {
    pub fn new(engine: usize, head: HeadSlot) -> AudioPipeline {
        AudioPipeline {
            engine,
            head,
            consensus: Consensus::new(SPEAKER_CONSENSUS),
        }
    }
}

/// Microphones: an utterance through its speaker encoder and the head.
pub struct Audio;

impl Medium for Audio {
    type Input = UtteranceMsg;
    type Engine = AudioModel;
    type Lane = AudioPipeline;

    fn analyze(
        engines: &mut [AudioModel],
        lane: &mut AudioPipeline,
        u: &UtteranceMsg,
    ) -> Result<FrameResult, InferError> {
        let start = Instant::now();
        let model = engines
            .get_mut(lane.engine)
            .ok_or(InferError::NoEngine(lane.engine))?;
        let embedding = model.embed(&u.samples)?;
        let head = lane.head.load_full();
        let verdict = head.as_deref().and_then(|h| head_label(h, &embedding));
        let mut observations = BTreeMap::new();
        if let Some(v) = verdict.as_ref().filter(|v| !v.unknown) {
            observations.insert(SPEAKER_TRACK.to_string(), (v.label.clone(), v.score));
        }
        let events = lane.consensus.observe(&observations);
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
                id: None,
                head: verdict,
                suppressed: false,
            }],
            inference_ms: start.elapsed().as_secs_f64() * 1e3,
            events,
            objects: Vec::new(),
            counts: Vec::new(),
            embeddings: vec![Some(embedding)],
        })
    }

    fn consensus_mut(lane: &mut AudioPipeline) -> &mut Consensus {
        &mut lane.consensus
    }

    fn embed(
        engines: &mut [AudioModel],
        engine: usize,
        input: EmbedInput,
    ) -> Result<Vec<f32>, InferError> {
        match input {
            EmbedInput::Audio(samples) => Ok(engines
                .get_mut(engine)
                .ok_or(InferError::NoEngine(engine))?
                .embed(&samples)?),
            EmbedInput::Image(_) => Err(InferError::WantAudio),
        }
    }

    // Consensus is fixed for audio (module docs); fps caps and detector thresholds do not
    // apply to utterances.
    fn apply(_lane: &mut AudioPipeline, _settings: &LaneSettings) {}
}
