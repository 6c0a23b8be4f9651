"""The tiny BU training run shared by test_multiprocess.py and its worker processes."""

import numpy as np

from bu_jax import features, models, train

TINY = models.ModelPreset("tiny", features.FeatureConfig(n_mels=8, context=1),
                          hidden_layers=1, units=16, bottleneck=4)
SEGMENT = 2048


def config():
  return train.TrainConfig(loss="bu", model=TINY, segment_seconds=SEGMENT / 16000,
                           segments_per_mixture=4, mixtures_per_step=4, epochs=1,
                           steps_per_epoch=3, decay_start_epoch=1, max_clip_seconds=0.25,
                           learning_rate=1e-2)


def host_corpus():
  rng = np.random.default_rng(0)
  t = np.arange(SEGMENT) / 16000
  segments = np.stack([0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(SEGMENT)
                       for f in (300, 300, 300, 1200, 3000)]).astype(np.float32)
  clips = np.zeros((2, 3000), np.float32)
  clips[0, :1500] = rng.standard_normal(1500)
  clips[1] = np.sign(np.sin(2 * np.pi * 700 * np.arange(3000) / 16000))
  return segments, clips, np.array([1500, 3000], np.int32)
