//! The speaker encoder: an utterance in, one L2-normalised voice print out.
//!
//! The network (GE2E, `models/resemblyzer-ge2e.toml`) sees 1.6 s windows of mel frames; an
//! utterance of any length is cut into windows by the front end ([`super::mel::FrontEnd`]),
//! each window is embedded, and the window embeddings are averaged and re-normalised, as
//! Resemblyzer's `embed_utterance` does. The window shape is pinned (`[1, 160, 40]`) so the
//! backend (tract or onnxruntime, [`crate::runtime`]) optimises the graph once at load;
//! windows run one after another, which is also what is fastest per window with tract on
//! these CPUs.

use super::mel::{FrontEnd, MelConfig, MelNorm, MelScale, PadMode};
use super::AudioError;
use crate::model::manifest::OutputRole;
use crate::model::manifest::{AudioSpec, ModelKind};
use crate::model::ResolvedModel;
use crate::runtime::backbone::{Backbone, BackboneError};
use crate::runtime::BackendOptions;

/// Errors of loading or running the speaker encoder.
#[derive(Debug, thiserror::Error)]
pub enum AudioModelError {
    #[error("{model} is not an audio model: use it with images (adaptd infer / embed)")]
    NotAudio { model: String },
    #[error("{model}: the manifest's [audio] table cannot be used: {problem}")]
    Spec { model: String, problem: String },
    #[error(transparent)]
    Backbone(#[from] BackboneError),
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error("{model} produced no embedding for the window (the manifest's [embedding] tensor is missing from the outputs)")]
    NoEmbedding { model: String },
}

/// The manifest's `[audio]` table as the front end's configuration, field for field.
pub fn mel_config(model: &str, spec: &AudioSpec) -> Result<MelConfig, AudioModelError> {
    let bad = |problem: String| AudioModelError::Spec {
        model: model.to_owned(),
        problem,
    };
    if spec.log {
        return Err(bad(
            "log = true is not supported: the speaker encoder takes the linear power mel spectrogram"
                .into(),
        ));
    }
    let cfg = MelConfig {
        sample_rate: spec.sample_rate,
        n_fft: spec.n_fft,
        hop: spec.hop,
        n_mels: spec.n_mels,
        fmin: spec.fmin,
        fmax: spec.fmax,
        mel_scale: MelScale::from_name(&spec.mel_scale).map_err(|e| bad(e.to_string()))?,
        mel_norm: MelNorm::from_name(&spec.mel_norm).map_err(|e| bad(e.to_string()))?,
        power: spec.power,
        // librosa >= 0.10 pads centred frames with zeros (see `PadMode`).
        pad_mode: PadMode::Constant,
        target_dbfs: Some(spec.target_dbfs),
        window_frames: spec.window_frames,
        window_step: spec.window_step,
        min_coverage: 0.75,
    };
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}

/// A loaded speaker encoder with its front end.
pub struct AudioModel {
    pub model: ResolvedModel,
    front: FrontEnd,
    backbone: Backbone,
}

impl AudioModel {
    /// Loads the network (pinned to one window per run) with tract on one thread and plans
    /// the front end.
    pub fn load(model: ResolvedModel) -> Result<AudioModel, AudioModelError> {
        AudioModel::load_with(model, &BackendOptions::default())
    }

    /// Loads the network on the backend `opts` selects and plans the front end.
    pub fn load_with(
        model: ResolvedModel,
        opts: &BackendOptions,
    ) -> Result<AudioModel, AudioModelError> {
        let name = model.manifest.name.clone();
        let spec = match (&model.manifest.kind, &model.manifest.audio) {
            (ModelKind::Audio, Some(spec)) => spec.clone(),
            _ => return Err(AudioModelError::NotAudio { model: name }),
        };
        let cfg = mel_config(&name, &spec)?;
        let shape = &model.manifest.input.shape;
        if shape.len() != 3 || shape[1] != cfg.window_frames || shape[2] != cfg.n_mels {
            return Err(AudioModelError::Spec {
                model: name,
                problem: format!(
                    "[input].shape {shape:?} does not match [audio] window_frames = {} and n_mels = {}",
                    cfg.window_frames, cfg.n_mels
                ),
            });
        }
        let front = FrontEnd::new(&cfg).map_err(AudioError::from)?;
        let backbone = Backbone::load_with(&model, 1, opts)?;
        Ok(AudioModel {
            model,
            front,
            backbone,
        })
    }

    /// The engine running the encoder.
    pub fn backend(&self) -> crate::runtime::BackendKind {
        self.backbone.backend()
    }

    /// The front end's sample rate (16 kHz for GE2E): what utterances must be resampled to.
    pub fn sample_rate(&self) -> u32 {
        self.front.config().sample_rate
    }

    /// The voice print of one utterance (mono samples at [`AudioModel::sample_rate`]): the
    /// mean of its windows' embeddings, L2-normalised.
    pub fn embed(&mut self, utterance: &[f32]) -> Result<Vec<f32>, AudioModelError> {
        let windows = self.front.windows(utterance).map_err(AudioError::from)?;
        let mut sum: Vec<f32> = Vec::new();
        for i in 0..windows.count {
            let out = self.backbone.run(windows.window(i))?;
            let e =
                out.role(OutputRole::Embedding)
                    .ok_or_else(|| AudioModelError::NoEmbedding {
                        model: self.model.manifest.name.clone(),
                    })?;
            if sum.is_empty() {
                sum = vec![0.0; e.data.len()];
            }
            for (s, v) in sum.iter_mut().zip(&e.data) {
                *s += v;
            }
        }
        let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            sum.iter_mut().for_each(|v| *v /= norm);
        }
        Ok(sum)
    }
}
